"""Gradient caching gives the full-batch loss and gradients (fp32, 1e-5), for
SimCLR's NT-Xent (lightly) and CLIP's ClipLoss (open_clip), and trains
through the engine exactly like the full-batch step."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from ssl_zoo.backbones import build_backbone
from ssl_zoo.engine import SSLModule
from ssl_zoo.errors import UserError
from ssl_zoo.gradcache import grad_cached_step
from ssl_zoo.objectives.base import DataInfo

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_VIT = {"name": "vit_tiny_patch16_224", "patch_size": 4, "kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
INFO = DataInfo(16, [str(i) for i in range(10)], (0.5,) * 3, (0.5,) * 3)
TOL = dict(rtol=1e-5, atol=1e-5)


pytestmark = pytest.mark.usefixtures("one_thread")

def method_cfg(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{name}.yaml"))
    if name == "clip":
        cfg["text"].update(width=32, layers=1, heads=2, context_length=16)
    else:
        cfg.update(hidden_dim=32, out_dim=16)
    return cfg


def build(name: str):
    from ssl_zoo.objectives.clip import CLIP
    from ssl_zoo.objectives.simclr import SimCLR

    torch.manual_seed(0)
    model = (CLIP if name == "clip" else SimCLR)(build_backbone(TINY_VIT, 16), method_cfg(name), INFO)
    for m in model.modules():  # chunked BN uses chunk statistics: see ssl_zoo.gradcache
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def batch(n: int) -> dict:
    g = torch.Generator().manual_seed(3)
    return {"image": torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
            "label": torch.arange(n) % 10}


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name,chunk", [("simclr", 4), ("clip", 3)])  # 3 leaves a short last chunk
def test_grad_cached_step_equals_the_full_batch(name, chunk):
    b = batch(10)
    model = build(name)
    torch.manual_seed(7)
    full = model.training_step(b, 0.0)["loss"]
    full.backward()
    want = grads(model)

    model.zero_grad()
    torch.manual_seed(7)  # same views and captions: they are drawn in the same order
    got = grad_cached_step(*model.grad_cache_parts(b, 0.0), chunk_size=chunk)
    torch.testing.assert_close(got, full.detach(), **TOL)
    have = grads(model)
    assert have.keys() == want.keys() and len(want) > 5
    for key, g in want.items():
        torch.testing.assert_close(have[key], g, **TOL, msg=key)
    if name == "clip":  # the logit scale lives in the loss, not in an encoder
        assert "logit_scale" in have and have["logit_scale"].abs() > 0


def test_clip_loss_matches_open_clip_on_two_independent_towers():
    """The CLIP case on plain modules: an image MLP and a text tower over token ids."""
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    image = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.GELU(), nn.Linear(32, 8))
    text = nn.Sequential(nn.Embedding(50, 16), nn.Flatten(), nn.Linear(16 * 5, 8))
    scale = nn.Parameter(torch.tensor(2.0))
    params = [*image.parameters(), *text.parameters(), scale]
    x, tokens = torch.randn(12, 3, 4, 4), torch.randint(0, 50, (12, 5))
    clip_loss = ClipLoss()

    def loss_fn(z):
        return clip_loss(nn.functional.normalize(z[0], dim=-1), nn.functional.normalize(z[1], dim=-1), scale.exp())

    full = loss_fn([image(x), text(tokens)])
    want = torch.autograd.grad(full, params)
    got = grad_cached_step([image, text], [x, tokens], loss_fn, chunk_size=5)
    torch.testing.assert_close(got, full.detach(), **TOL)
    for p, g in zip(params, want):
        torch.testing.assert_close(p.grad, g, **TOL)


def test_dropout_masks_are_replayed_in_the_second_forward():
    """With dropout, the cached step must differentiate the function its first
    forward computed: the reference runs the same chunks, from the same RNG
    state, with one graph through everything."""
    from lightly.loss import NTXentLoss

    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(20, 32), nn.Dropout(0.3), nn.ReLU(), nn.Linear(32, 8)).train()
    x0, x1 = torch.randn(2, 12, 20)
    nt_xent = NTXentLoss(temperature=0.5)

    def loss_fn(z):
        return nt_xent(z[0], z[1])

    torch.manual_seed(5)
    ref = loss_fn([torch.cat([enc(c) for c in x.split(4)]) for x in (x0, x1)])
    want = torch.autograd.grad(ref, list(enc.parameters()))
    after_ref = torch.rand(1)
    torch.manual_seed(5)
    got = grad_cached_step([enc, enc], [x0, x1], loss_fn, chunk_size=4)
    torch.testing.assert_close(got, ref.detach(), **TOL)
    for p, g in zip(enc.parameters(), want):
        torch.testing.assert_close(p.grad, g, **TOL)
    # the replay leaves the caller's RNG where the first forward left it
    torch.testing.assert_close(torch.rand(1), after_ref)


def _one_step(chunk: int) -> dict[str, torch.Tensor]:
    """One real Lightning optimizer step (SGD, fp32) of CLIP through the engine."""
    model = build("clip")
    optim = {"name": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0, "warmup_fraction": 0.0}
    module = SSLModule(model, optim, {"objective": "clip"}, grad_cache_chunk=chunk)
    b = batch(12)
    data = DataLoader([{"image": b["image"][i], "label": b["label"][i]} for i in range(12)], batch_size=12)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", precision="32-true", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    L.seed_everything(11, verbose=False)
    trainer.fit(module, data)
    assert trainer.global_step == 1
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_engine_step_with_grad_cache_equals_the_automatic_step():
    start = {k: v.clone() for k, v in build("clip").state_dict().items()}
    auto, cached = _one_step(0), _one_step(5)
    moved = [k for k in auto if not torch.equal(auto[k], start[k])]
    assert len(moved) > 5
    for key in auto:
        torch.testing.assert_close(cached[key], auto[key], **TOL, msg=key)


def test_objective_without_grad_cache_parts_is_a_user_error():
    class Plain(nn.Module):
        name = "plain"

    with pytest.raises(UserError, match="grad_cache_chunk"):
        SSLModule(Plain(), {"lr": 1e-3, "weight_decay": 0.0}, {}, grad_cache_chunk=4)
