"""Zero-shot equals CLIP_benchmark's evaluate on the same open_clip model
(tiny, random init, saved to a file and loaded by path), images and prompts."""
import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ssl_zoo.data.datasets import load_dataset
from ssl_zoo.data.prompts import classnames_for, prompt_hash, templates_for
from ssl_zoo.errors import UserError
from ssl_zoo.eval.models import build_source
from ssl_zoo.eval.runner import evaluate

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
TEMPLATES = ["a photo of the number {c}.", "a drawing of a {c}.", "the digit {c}."]
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("oc")
    (root / "tiny-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(root / "tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip")
    with torch.no_grad():  # spread the random image embeddings so predictions are not all one class
        model.visual.proj.mul_(20.0)
    torch.save(model.state_dict(), root / "tiny.pt")
    cfg = {"model": {"kind": "open_clip", "name": "tiny-clip", "pretrained": str(root / "tiny.pt"),
                     "config": str(root / "tiny-clip.json")}}
    return model.eval(), cfg, root


def _numpy2_accuracy(output, target, topk=(1,)):
    """clip-benchmark 1.6.2's ``accuracy`` verbatim except ``.item()``: its
    ``float(1-element array)`` is a TypeError under NumPy >= 2.4."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def test_zero_shot_equals_clip_benchmark(tiny_clip, tmp_path, monkeypatch):
    import clip_benchmark.metrics.zeroshot_classification as cb
    import open_clip

    monkeypatch.setattr(cb, "accuracy", _numpy2_accuracy)
    cb_evaluate = cb.evaluate

    model, cfg, _ = tiny_clip
    bundle = load_dataset({"name": "digits", "image_size": 16, "split_seed": 0, "test_fraction": 0.2,
                           "classnames": NAMES})
    source = build_source(cfg, bundle)
    eval_cfg = {"protocols": ["zero_shot"], "cache_dir": None, "zero_shot": {"templates": TEMPLATES, "classnames": NAMES}}
    rows = {r["metric"]: r for r in evaluate(source, bundle, eval_cfg, results_path=str(tmp_path / "r.jsonl"),
                                             run="t", cfg_hash="x")}
    images = source.transform(bundle.test.images)  # the same model input for both
    assert images.shape[-1] == 32 and torch.allclose(source.transform.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    dataset = TensorDataset(images, bundle.test.labels)
    dataset.classes = NAMES  # clip-benchmark reads it to decide on top-5
    loader = DataLoader(dataset, batch_size=128)
    ref = cb_evaluate(model, loader, open_clip.get_tokenizer("tiny-clip"), NAMES, TEMPLATES, "cpu", amp=False)
    assert rows["top1"]["value"] == pytest.approx(ref["acc1"], abs=1e-6)
    assert rows["top5"]["value"] == pytest.approx(ref["acc5"], abs=1e-6)
    assert rows["mean_per_class_recall"]["value"] == pytest.approx(ref["mean_per_class_recall"], abs=1e-6)
    assert 0.0 < ref["acc1"] < 1.0 and len({p for p in rows["top1"]["per_class"].values()}) > 1
    top1 = rows["top1"]
    assert top1["params"] == {"templates": 3} and top1["prompt_hash"] == prompt_hash(NAMES, TEMPLATES)
    assert set(top1["per_class"]) == set(NAMES) and top1["n_train"] == 0
    assert top1["objective"] == "open_clip:tiny-clip/tiny.pt"


def test_zero_shot_skipped_without_text_tower(tmp_path):
    from ssl_zoo.build import pixels_source

    bundle = load_dataset({"name": "digits", "image_size": 8})
    rows = evaluate(pixels_source(), bundle, {"protocols": ["zero_shot"], "cache_dir": None},
                    results_path=str(tmp_path / "r.jsonl"), run="t", cfg_hash="x")
    assert rows == []


def test_prompt_sources(tmp_path):
    imagenet = templates_for("imagenet")
    assert len(imagenet) == 80 and all("{c}" in t for t in imagenet)  # clip-benchmark's JSON
    assert len(templates_for("cifar10")) == 18
    assert templates_for("digits") != templates_for("fashion_mnist")
    f = tmp_path / "t.json"
    f.write_text(json.dumps(["a {c}.", "an image of {c}."]))
    assert templates_for("digits", str(f)) == ["a {c}.", "an image of {c}."]
    assert templates_for("digits", ["x {c}"]) == ["x {c}"]
    with pytest.raises(UserError, match="placeholder"):
        templates_for("digits", ["no class here"])
    with pytest.raises(UserError, match="no such file"):
        templates_for("digits", str(tmp_path / "missing.json"))
    names = [f"n{i}" for i in range(1000)]
    assert classnames_for("imagenet", names, user_given=False)[0] == "tench"
    assert classnames_for("imagenet", names, user_given=True) == names
    assert prompt_hash(["a"], ["{c}"]) != prompt_hash(["b"], ["{c}"])


def test_classname_length_mismatch_is_user_error():
    with pytest.raises(UserError, match="3 names but the dataset has 10 classes"):
        load_dataset({"name": "digits", "image_size": 8, "classnames": ["a", "b", "c"]})
