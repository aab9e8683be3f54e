"""CLIP objective, text towers and training captions."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ssl_zoo.backbones import build_backbone
from ssl_zoo.data.captions import CAPTION_TEMPLATES, batch_captions, check_templates
from ssl_zoo.errors import UserError
from ssl_zoo.objectives.base import DataInfo
from ssl_zoo.objectives.clip import CLIP
from ssl_zoo.text import MiniLMTextTower, build_text_tower, minilm_path

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_VIT = {"name": "vit_tiny_patch16_224", "patch_size": 4, "kwargs": {"depth": 2}}
DIGITS = [str(i) for i in range(10)]


def clip_cfg(**text):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "method" / "clip.yaml"))
    cfg["text"].update({"width": 32, "layers": 1, "heads": 2, "context_length": 16}, **text)
    return cfg


def tiny_clip(**text) -> CLIP:
    torch.manual_seed(0)
    return CLIP(build_backbone(TINY_VIT, 16), clip_cfg(**text), DataInfo(16, DIGITS, (0.5,) * 3, (0.5,) * 3))


def direct_clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE written out: row i's positive is column i, in both directions."""
    img, txt = img / img.norm(dim=1, keepdim=True), txt / txt.norm(dim=1, keepdim=True)
    sim = scale * img @ txt.T
    i2t = (torch.logsumexp(sim, dim=1) - sim.diag()).mean()
    t2i = (torch.logsumexp(sim, dim=0) - sim.diag()).mean()
    return (i2t + t2i) / 2


def test_loss_is_symmetric_cross_entropy_over_similarities():
    model = tiny_clip()
    images = torch.randn(8, 3, 16, 16)
    captions = [CAPTION_TEMPLATES[1].format(c=c) for c in "01234567"]
    with torch.no_grad():
        model.logit_scale.fill_(math.log(7.5))  # not the init: the scale must really be used
        got = model.loss(images, captions)
        want = direct_clip_loss(model.encode_image_projected(images), model.encode_text(captions), torch.tensor(7.5))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_logit_scale_starts_at_inverse_temperature_and_is_clamped():
    model = tiny_clip()
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert model.scale().item() == pytest.approx(100.0)
    no_decay = next(g["params"] for g in model.parameter_groups(0.1) if g["weight_decay"] == 0)
    assert any(p is model.logit_scale for p in no_decay)


def test_features_for_protocols_and_for_zero_shot():
    model = tiny_clip().eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        feats, proj = model.encode(x), model.encode_image_projected(x)
        text = model.encode_text(["this is 3.", "an image of 7."])
    assert feats.shape == (4, model.backbone.dim)  # pre-projection backbone output
    torch.testing.assert_close(proj, model.image_proj(feats))
    assert text.shape == (2, 128) and not torch.allclose(text.norm(dim=1), torch.ones(2))  # projected, not normalised


def test_captions_from_dataset_or_from_class_names():
    own = {"image": torch.zeros(2, 1, 8, 8), "label": torch.tensor([0, 1]), "caption": ["a red circle", "a blue square"]}
    assert batch_captions(own, DIGITS, CAPTION_TEMPLATES) == ["a red circle", "a blue square"]
    labelled = {"image": torch.zeros(64, 1, 8, 8), "label": torch.arange(64) % 10}
    caps = batch_captions(labelled, DIGITS, ["a {c}!", "the {c}?"], torch.Generator().manual_seed(0))
    assert all(c in (f"a {y}!", f"the {y}?") for c, y in zip(caps, (torch.arange(64) % 10).tolist()))
    assert len(set(c[0] for c in caps)) == 2  # both templates drawn
    with pytest.raises(UserError, match=r"\{c\}"):
        check_templates(["no placeholder"])


def test_training_captions_differ_from_zero_shot_prompts():
    prompts = pytest.importorskip("ssl_zoo.data.prompts")
    lists = list(prompts.TEMPLATES.values()) + [prompts.DEFAULT_TEMPLATES]
    assert all(not set(CAPTION_TEMPLATES) & set(v) for v in lists)  # not one sentence shared


def test_scratch_tower_tokenizes_offline_and_pools_the_end_token():
    tower = build_text_tower({"kind": "scratch", "width": 32, "layers": 1, "heads": 2, "context_length": 16}, 24)
    with torch.no_grad():
        out = tower(["an image of 3.", "an image of 3. and more words after it"])
    assert out.shape == (2, 24)
    # causal mask + end-token pooling: appending words changes the embedding
    assert not torch.allclose(out[0], out[1])
    long = tower(["word " * 100])  # truncated to the context, not an error
    assert long.shape == (1, 24)
    with pytest.raises(UserError, match="heads"):
        build_text_tower({"kind": "scratch", "width": 30, "heads": 4}, 8)
    with pytest.raises(UserError, match="scratch, minilm"):
        build_text_tower({"kind": "bert"}, 8)


def test_minilm_tower_matches_sentence_transformers_and_stays_frozen():
    st = pytest.importorskip("sentence_transformers")
    tower = MiniLMTextTower(embed_dim=16)
    texts = ["an image of a sandal.", "a picture showing 7.", "a", "an image of a sandal."]
    want = torch.as_tensor(st.SentenceTransformer(str(minilm_path()), device="cpu").encode(texts[:3]))
    got = tower.embed_frozen(texts)
    torch.testing.assert_close(got[:3], want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[3], got[0])
    # the cache gives the same result as a fresh computation, autocast or not
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(MiniLMTextTower(16).embed_frozen(texts[:1]), got[:1])
    tower.train()
    assert not tower.encoder.training
    assert [n for n, p in tower.named_parameters() if p.requires_grad] == ["proj.weight"]


def test_minilm_weights_stay_out_of_checkpoints():
    model = tiny_clip(kind="minilm")
    state = model.state_dict()
    assert not any(k.startswith("text.encoder.") for k in state) and "text.proj.weight" in state
    other = tiny_clip(kind="minilm")
    with torch.no_grad():
        other.text.proj.weight.zero_()
    other.load_state_dict(state)  # strict: the frozen encoder is filled from the package
    torch.testing.assert_close(other.text.proj.weight, model.text.proj.weight)
    with torch.no_grad():
        torch.testing.assert_close(other.encode_text(["this is 4."]), model.encode_text(["this is 4."]))


def test_train_smoke_writes_rows_and_a_loadable_checkpoint(tmp_path):
    from hydra import compose, initialize_config_module

    from ssl_zoo.eval.models import load_train_checkpoint
    from ssl_zoo.train import train

    overrides = ["method=clip", "trainer=smoke", "backbone.kwargs.depth=2", "method.text.width=32",
                 "method.text.layers=1", "method.text.heads=2", "eval.baselines=[]", "trainer.precision=32-true",
                 "eval.protocols=[knn,zero_shot]", "eval.cache_dir=null"]
    with initialize_config_module("ssl_zoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    out = train(cfg, tmp_path)
    assert out["train_steps"] == 4
    assert {r["objective"] for r in out["rows"]} == {"clip"}
    assert {r["protocol"] for r in out["rows"]} == {"knn", "zero_shot"}
    loaded, _ = load_train_checkpoint(tmp_path / "checkpoints" / "last.ckpt", "clip")
    assert loaded.has_text_tower and loaded.encode_text(["this is 1."]).shape == (1, 128)



def test_text_tower_grad_checkpointing_keeps_gradients_equal():
    from ssl_zoo.text import build_text_tower

    cfg = {"kind": "scratch", "width": 32, "layers": 2, "heads": 2, "context_length": 16}
    torch.manual_seed(0)
    plain = build_text_tower(cfg, 8)
    ckpt = build_text_tower({**cfg, "grad_checkpointing": True}, 8)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.transformer.transformer.grad_checkpointing and not plain.transformer.transformer.grad_checkpointing
    grads = []
    for tower in (plain, ckpt):
        tower.train()
        tower(["a red square", "a small blue circle at the top"]).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in tower.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
