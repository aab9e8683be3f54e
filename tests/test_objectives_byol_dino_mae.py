"""BYOL, DINO and MAE against formulas written here (never only against
themselves), plus real smoke trainings through the CLI."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional as F

from conftest import run_cli
from ssl_zoo.backbones import build_backbone
from ssl_zoo.errors import UserError
from ssl_zoo.objectives.base import DataInfo
from ssl_zoo.objectives.byol import BYOL
from ssl_zoo.objectives.dino import DINO, allow_any_image_size
from ssl_zoo.objectives.mae import MAE, masked_patch_loss

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
VIT = {"name": "vit_tiny_patch16_224", "patch_size": 4, "kwargs": {"depth": 1}}


def _cfg(name: str, **over) -> dict:
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    cfg.update({"hidden_dim": 32, "out_dim": 16, **over})
    return cfg


def _make(cls, name: str, backbone=VIT, **over):
    torch.manual_seed(0)
    return cls(build_backbone(backbone, 16), _cfg(name, **over), DataInfo(16))


def _cos_momentum(p: float, start: float) -> float:
    return 1 - (1 - start) * (math.cos(math.pi * p) + 1) / 2


def _images(n: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)


# ---------------------------------------------------------------- BYOL

def test_byol_loss_is_symmetrised_two_minus_two_cos():
    byol = _make(BYOL, "byol")
    p0, p1, z0, z1 = torch.randn(4, 6, 16).unbind(0)

    def term(p, z):  # 2 - 2 cos(p, z) = || p/|p| - z/|z| ||^2, batch mean
        return ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(1).mean()

    torch.testing.assert_close(byol.loss(p0, p1, z0, z1), term(p0, z1) + term(p1, z0), rtol=1e-5, atol=1e-5)


def test_byol_target_is_frozen_and_follows_the_ema_formula():
    byol = _make(BYOL, "byol")
    assert not any(p.requires_grad for p in byol.target_backbone.parameters())
    optimized = {id(p) for g in byol.parameter_groups(0.05) for p in g["params"]}
    assert not optimized & {id(p) for p in byol.target_projection.parameters()}
    byol.training_step({"image": _images()}, 0.0)["loss"].backward()
    with torch.no_grad():  # move the online net so the update is not a no-op
        for p in byol.backbone.parameters():
            p.add_(torch.randn_like(p))
    online = byol.backbone.model.blocks[0].attn.qkv.weight.detach().clone()
    before = byol.target_backbone.model.blocks[0].attn.qkv.weight.detach().clone()
    byol.after_step(0.3)
    m = _cos_momentum(0.3, 0.99)
    torch.testing.assert_close(byol.target_backbone.model.blocks[0].attn.qkv.weight, m * before + (1 - m) * online)


# ---------------------------------------------------------------- DINO

def test_dino_loss_and_center_follow_the_formula():
    dino = _make(DINO, "dino", out_dim=5)
    c = dino.cfg
    torch.manual_seed(1)
    teacher = [torch.randn(3, 5) for _ in range(2)]
    student = [torch.randn(3, 5) for _ in range(4)]
    center = torch.zeros(5)
    for progress in (0.1, 0.6):  # mid warm-up, then after it; the 2nd call uses a non-zero center
        t_temp = c["warmup_teacher_temp"] + min(1.0, progress / c["warmup_fraction"]) * (
            c["teacher_temp"] - c["warmup_teacher_temp"])
        terms = [-(F.softmax((t - center) / t_temp, -1) * F.log_softmax(s / c["student_temp"], -1)).sum(-1).mean()
                 for i, t in enumerate(teacher) for j, s in enumerate(student) if i != j]
        expected = torch.stack(terms).mean()
        torch.testing.assert_close(dino.loss(teacher, student, progress), expected, rtol=1e-5, atol=1e-6)
        center = c["center_momentum"] * center + (1 - c["center_momentum"]) * torch.cat(teacher).mean(0)
        torch.testing.assert_close(dino.criterion.center.flatten(), center)
        assert dino.teacher_temp(progress) == pytest.approx(t_temp)


def test_dino_teacher_is_frozen_and_follows_the_ema_formula():
    dino = _make(DINO, "dino")
    assert not any(p.requires_grad for p in dino.teacher_head.parameters())
    assert not any(p.requires_grad for p in dino.teacher_backbone.parameters())
    for online, teacher in zip(dino.head.state_dict().values(), dino.teacher_head.state_dict().values()):
        assert torch.equal(online, teacher)  # the teacher starts as the student
    with torch.no_grad():
        for p in dino.head.parameters():
            p.add_(torch.randn_like(p))
    online = dino.head.layers[0].weight.detach().clone()
    before = dino.teacher_head.layers[0].weight.detach().clone()
    dino.after_step(0.5)
    m = _cos_momentum(0.5, dino.cfg["momentum_start"])
    torch.testing.assert_close(dino.teacher_head.layers[0].weight, m * before + (1 - m) * online)


def test_dino_vit_takes_half_size_local_crops_and_keeps_global_outputs():
    bb = build_backbone(VIT, 16)
    x = torch.randn(2, 3, 16, 16)
    bb.eval()
    with torch.no_grad():
        before = bb(x)
        allow_any_image_size(bb.model)
        torch.testing.assert_close(bb(x), before)  # same weights, same result at the global size
        assert bb(torch.randn(2, 3, 8, 8)).shape == (2, bb.dim)

    dino = _make(DINO, "dino", n_local=2)
    assert dino.local_size == 8
    assert dino.local_view(_images()).shape == (8, 3, 8, 8)
    with pytest.raises(UserError, match="multiple of the ViT patch size"):
        _make(DINO, "dino", local_size=6)


def test_dino_last_layer_gets_no_update_in_the_first_epoch():
    dino = _make(DINO, "dino", n_local=1)
    last = dino.head.last_layer.weight_v
    for epoch, frozen in ((0, True), (1, False)):
        dino.zero_grad(set_to_none=True)
        dino.training_step({"image": _images()}, 0.0)["loss"].backward()
        assert last.grad is not None
        dino.before_optimizer_step(epoch)
        assert (last.grad is None) == frozen
        assert dino.head.layers[0].weight.grad is not None  # the rest of the head still trains


# ---------------------------------------------------------------- MAE

def test_mae_loss_matches_formula_and_reads_masked_patches_only():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 8, 8)  # 4 patches of 4x4
    idx_mask = torch.tensor([[0, 3, 2], [1, 2, 0]])  # patch indices, 3 of 4 masked
    pred = torch.randn(2, 3, 48)
    loss = masked_patch_loss(pred, images, idx_mask, 4)

    # the formula: patches in (row, col) order flattened as (y, x, channel), each
    # standardised (unbiased variance, eps 1e-6), MSE over the masked ones
    patches = images.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, 2, 2, 4, 4)
    patches = patches.permute(0, 2, 3, 4, 5, 1).reshape(2, 4, 48)
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    expected = torch.stack([((pred[b] - target[b, idx_mask[b]]) ** 2).mean() for b in range(2)]).mean()
    torch.testing.assert_close(loss, expected)

    unmasked = images.clone()
    unmasked[0, :, 0:4, 4:8] += 5.0  # patch 1 of image 0: not masked there
    assert masked_patch_loss(pred, unmasked, idx_mask, 4) == loss
    masked = images.clone()
    masked[0, 1, 5, 6] += 5.0  # patch 3 of image 0: masked
    assert masked_patch_loss(pred, masked, idx_mask, 4) != loss


def test_mae_trains_the_backbone_it_evaluates_and_pools_as_configured():
    mae = _make(MAE, "mae")
    mae.training_step({"image": _images()}, 0.0)["loss"].backward()
    assert mae.backbone.model.patch_embed.proj.weight.grad is not None
    x = torch.randn(3, 3, 16, 16)
    mae.eval()
    with torch.no_grad():
        tokens = mae.backbone.forward_tokens(x)  # timm's own forward
        torch.testing.assert_close(mae.encode(x), tokens[:, 1:].mean(1))
        mae.cfg["pool"] = "cls"
        torch.testing.assert_close(mae.encode(x), mae.backbone(x))  # timm's class-token pooling


def test_mae_refuses_a_cnn_backbone():
    with pytest.raises(UserError, match="VisionTransformer"):
        _make(MAE, "mae", backbone={"name": "resnet18", "small_stem": True})


# ---------------------------------------------------------------- real runs

def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _column(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.mark.slow
@pytest.mark.parametrize("backbone,methods", [("vit_tiny", "byol,dino,mae"), ("resnet18", "dino")])
def test_smoke_training_logs_schedules_and_writes_rows(tmp_path, backbone, methods):
    # resnet18: DINO's multi-crop on a CNN, at the digits' native 8 px and fp32
    # (bf16 autocast convolutions were ~4x slower than fp32 on the 2-core CPU)
    extra = ["backbone.kwargs.depth=2"] if backbone == "vit_tiny" else ["data.image_size=8", "trainer.precision=32-true"]
    proc = run_cli("train", "-m", f"method={methods}", f"backbone={backbone}", "trainer=smoke", *extra,
                   "eval.baselines=[]", f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${method.name}",
                   timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in methods.split(","):
        run = tmp_path / method
        rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
        assert {r["objective"] for r in rows} == {method}
        metrics = _metrics(run)
        assert len(_column(metrics, "train/loss")) == 4
        if method in ("byol", "dino"):
            m = _column(metrics, "train/momentum")
            assert len(m) == 4 and m == sorted(m) and m[0] < m[-1] <= 1.0
        if method == "dino":
            t = _column(metrics, "train/teacher_temp")
            # from warmup_teacher_temp, reaching teacher_temp after 30% of the 4 steps
            assert t == pytest.approx([0.04, 0.04 + 0.03 * (0.25 / 0.3), 0.07, 0.07], abs=1e-6)
