"""Peak memory of one CLIP-style contrastive training step vs batch size,
with and without the gradient cache (ssl_zoo.gradcache).

    python benchmarks/memory.py                       # batches 256 1024 4096, chunk 256
    python benchmarks/memory.py --batches 256 4096 --chunk 128

Each (batch, mode) runs in a fresh subprocess (peak RSS only grows within a
process). Reported: peak RSS of the process, and the step's own peak (peak
RSS during the step minus peak RSS before it), with ratios against the
full-batch step at the smallest batch, measured in the same run.
Model: a 2-block ViT on 16 px images + projection (image tower) and a
token-embedding MLP (text tower), open_clip's ClipLoss.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
from torch import nn


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def towers(embed: int = 64):
    import timm

    image = nn.Sequential(timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, embed_dim=96,
                                            num_heads=3, num_classes=0), nn.Linear(96, embed))
    text = nn.Sequential(nn.Embedding(1000, 64), nn.Flatten(), nn.Linear(64 * 16, 256), nn.GELU(), nn.Linear(256, embed))
    return image, text


def one(batch: int, chunk: int) -> dict:
    from open_clip.loss import ClipLoss

    from ssl_zoo.gradcache import grad_cached_step

    torch.manual_seed(0)
    image, text = towers()
    scale = nn.Parameter(torch.tensor(2.659))
    images, tokens = torch.randn(batch, 3, 16, 16), torch.randint(0, 1000, (batch, 16))
    clip = ClipLoss()

    def loss_fn(z):
        return clip(nn.functional.normalize(z[0], dim=-1), nn.functional.normalize(z[1], dim=-1), scale.exp())

    before = peak_mib()
    if chunk:
        loss = grad_cached_step([image, text], [images, tokens], loss_fn, chunk)
    else:
        loss = loss_fn([image(images), text(tokens)])
        loss.backward()
    after = peak_mib()
    return {"batch": batch, "chunk": chunk, "loss": round(loss.item(), 5), "peak_rss_mib": round(after, 1),
            "step_peak_mib": round(after - before, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--one", type=int, nargs=2, metavar=("BATCH", "CHUNK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        torch.set_num_threads(2)
        print(json.dumps(one(*args.one)))
        return
    rows = []
    for batch in args.batches:
        for chunk in (0, args.chunk):
            out = subprocess.run([sys.executable, __file__, "--one", str(batch), str(chunk)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"{'batch':>6} {'mode':>12} {'loss':>9} {'peak RSS MiB':>13} {'step peak MiB':>14} {'x RSS':>6} {'x step':>7}")
    for r in rows:
        mode = f"cache/{r['chunk']}" if r["chunk"] else "full"
        print(f"{r['batch']:>6} {mode:>12} {r['loss']:>9.4f} {r['peak_rss_mib']:>13.1f} {r['step_peak_mib']:>14.1f} "
              f"{r['peak_rss_mib'] / base['peak_rss_mib']:>6.2f} {r['step_peak_mib'] / max(base['step_peak_mib'], 1e-9):>7.2f}")


if __name__ == "__main__":
    main()
