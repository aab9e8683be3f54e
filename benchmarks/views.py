"""Views throughput: ssl_zoo's batched kornia views against lightly's per-sample
transforms in DataLoader workers, on the same images, same recipe, one run.

    python benchmarks/views.py [--n 4096] [--batch 256] [--workers 2] [--epochs 3] [--threads N]

Both paths produce two 32 px SimCLR views per image (crop scale 0.3-1, flip 0.5,
colour jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2, no blur, ImageNet
normalisation) as float tensors in the training process. Images/s counts source
images (each giving two views), timed over the epochs after the first (workers
are persistent, so their start-up is excluded, which favours the per-sample path).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset

from ssl_zoo.data.datasets import ImageDataset
from ssl_zoo.data.shapes import ShapesSpec
from ssl_zoo.data.views import View

RECIPE = {"crop_scale": [0.3, 1.0], "flip": 0.5, "grayscale": 0.2, "blur": 0.0,
          "jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "p": 0.8}}


class PILDataset(Dataset):
    """The same uint8 images as PIL, through a per-sample transform (the usual torchvision/lightly way)."""

    def __init__(self, images: torch.Tensor, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i].permute(1, 2, 0).numpy()))


def collate_views(batch):
    return [torch.stack([b[k] for b in batch]) for k in range(2)]


def timed(epochs: int, run_epoch) -> float:
    run_epoch()  # warm-up: worker start, kornia/MKL first-call costs
    t0 = time.perf_counter()
    for _ in range(epochs - 1):
        run_epoch()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads of the batched path (0: default)")
    args = ap.parse_args()
    if args.threads:  # on an oversubscribed machine 1 thread avoids OpenMP spin-wait collapse
        torch.set_num_threads(args.threads)
    from lightly.transforms import SimCLRTransform

    images = torch.from_numpy(ShapesSpec({"n_train": args.n}).sample("train", args.n)["images"])

    view = View(RECIPE, 32)
    batched = DataLoader(ImageDataset(images, torch.zeros(len(images))), batch_size=args.batch, shuffle=True)

    def batched_epoch():
        for batch in batched:
            v0, v1 = view(batch["image"]), view(batch["image"])
            assert v0.shape == v1.shape == (len(batch["image"]), 3, 32, 32)

    lightly_tf = SimCLRTransform(input_size=32, cj_prob=0.8, cj_strength=1.0, cj_bright=0.4, cj_contrast=0.4,
                                 cj_sat=0.2, cj_hue=0.1, min_scale=0.3, random_gray_scale=0.2, gaussian_blur=0.0,
                                 hf_prob=0.5, vf_prob=0.0, rr_prob=0.0)
    per_sample = DataLoader(PILDataset(images, lightly_tf), batch_size=args.batch, shuffle=True,
                            num_workers=args.workers, persistent_workers=args.workers > 0, collate_fn=collate_views)

    def per_sample_epoch():
        for v0, v1 in per_sample:
            assert v0.shape == v1.shape == (len(v0), 3, 32, 32)

    n_timed = args.n * (args.epochs - 1)
    t_lightly = timed(args.epochs, per_sample_epoch)
    t_batched = timed(args.epochs, batched_epoch)
    ips_l, ips_b = n_timed / t_lightly, n_timed / t_batched
    print(f"torch threads: {torch.get_num_threads()}, images: {args.n} x {args.epochs - 1} timed epochs, "
          f"batch {args.batch}, two 32 px views per image")
    print(f"lightly SimCLRTransform, per sample, {args.workers} DataLoader workers: {ips_l:8.0f} img/s")
    print(f"ssl_zoo View (kornia), batched, main process:          {ips_b:8.0f} img/s")
    print(f"ratio batched / per-sample: {ips_b / ips_l:.2f}x")


if __name__ == "__main__":
    main()
