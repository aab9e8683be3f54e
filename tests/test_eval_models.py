"""Model sources (timm file, safe loading), the feature cache, and user
errors through the real CLI."""
import os
import subprocess
import sys

import pytest
import torch

from ssl_zoo.build import weights_key
from ssl_zoo.data.datasets import load_dataset
from ssl_zoo.data.views import EvalTransform
from ssl_zoo.errors import UserError
from ssl_zoo.eval.features import FeatureSource
from ssl_zoo.eval.models import build_source, load_train_checkpoint, safe_torch_load
from ssl_zoo.eval.runner import FeatureStore

DIGITS = {"name": "digits", "image_size": 8, "split_seed": 0, "test_fraction": 0.2}
TIMM = dict(name="vit_tiny_patch16_224", kwargs={"img_size": 16, "patch_size": 4, "depth": 2}, image_size=16)


class Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_timm_local_file_loads_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    ref = timm.create_model(TIMM["name"], num_classes=7, **TIMM["kwargs"]).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    bundle = load_dataset(DIGITS)
    images = bundle.test.images[:8]
    for f in ("w.pth", "w.safetensors"):
        src = build_source({"model": {"kind": "timm", "pretrained": str(tmp_path / f), **TIMM}}, bundle)
        x = src.transform(images)
        with torch.no_grad():
            assert torch.allclose(src.encode(x), ref.forward_head(ref.forward_features(x), pre_logits=True), atol=1e-5)
        assert src.objective == f"timm:{TIMM['name']}/{f}" and x.shape[-1] == 16
    random = build_source({"model": {"kind": "timm", "pretrained": None, **TIMM}}, bundle)
    assert random.key != src.key


def test_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "ssl_zoo": Evil(marker)}, bad)
    with pytest.raises(UserError, match="refused to load"):
        safe_torch_load(bad)
    with pytest.raises(UserError, match="refused to load"):
        load_train_checkpoint(bad)
    bundle = load_dataset(DIGITS)
    with pytest.raises(UserError, match="refused to load"):
        build_source({"model": {"kind": "timm", "pretrained": str(bad), **TIMM}}, bundle)
    assert not marker.exists()


def test_feature_cache_key_covers_everything(tmp_path):
    lin = torch.nn.Linear(3 * 8 * 8, 4)

    def source(module, size=8):
        return FeatureSource("toy", "toy", None, EvalTransform(size), lambda x: module(torch.nn.functional.interpolate(x, 8).flatten(1)),
                             module=module, encode_text=lambda c: torch.zeros(len(c), 4),
                             encode_zero_shot_image=lambda x: 2 * module(torch.nn.functional.interpolate(x, 8).flatten(1)),
                             key=weights_key(module))

    cfg = {"cache_dir": str(tmp_path / "cache"), "batch_size": 64}
    bundle = load_dataset(DIGITS)

    def misses(src, data, split="train", kind="backbone"):
        store = FeatureStore(src, data, cfg, "cpu")
        feats = store(split, kind)
        return store.cache.misses, feats

    first, a = misses(source(lin), bundle)
    again, b = misses(source(lin), bundle)
    assert (first, again) == (1, 0) and torch.equal(a.x, b.x)  # hit: same features back
    other = torch.nn.Linear(3 * 8 * 8, 4)
    assert misses(source(other), bundle)[0] == 1                                       # weights
    assert misses(source(lin), load_dataset({**DIGITS, "split_seed": 1}))[0] == 1       # dataset contents
    assert misses(source(lin), bundle, split="test")[0] == 1                           # split
    assert misses(source(lin, size=12), bundle)[0] == 1                                # transform
    n, proj = misses(source(lin), bundle, kind="projected")                            # feature kind
    assert n == 1 and torch.allclose(proj.x, 2 * a.x)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 6


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "ssl_zoo.cli", "eval", *args, f"hydra.run.dir={cwd}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def test_cli_eval_and_user_errors(tmp_path):
    import json

    ckpt = tmp_path / "simclr.ckpt"
    torch.save({"ssl_zoo": {"objective": "simclr", "config": "method: {name: simclr}"}, "state_dict": {}}, ckpt)
    good = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(3)}, good)
    blob = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(blob[: len(blob) // 2])
    runs = {name: tmp_path / name for name in ("ok", "objective", "trunc", "names")}
    for d in runs.values():
        d.mkdir()
    procs = {  # started together: the cost is mostly interpreter start-up
        "ok": _cli("model=pixels", "data=digits", "eval.protocols=[knn,linear_probe]", "eval.cache_dir=null", cwd=runs["ok"]),
        "objective": _cli("model=checkpoint", f"model.path={ckpt}", "model.objective=byol", cwd=runs["objective"]),
        "trunc": _cli("model=timm", "model.name=resnet18", f"model.pretrained={tmp_path / 'trunc.pth'}", cwd=runs["trunc"]),
        "names": _cli("model=pixels", "data.classnames=[a,b,c]", cwd=runs["names"]),
    }
    out = {k: (p.communicate(timeout=300), p.returncode) for k, p in procs.items()}
    (stdout, stderr), rc = out["ok"]
    assert rc == 0, stderr
    rows = [json.loads(line) for line in (runs["ok"] / "results.jsonl").read_text().splitlines()]
    assert {r["protocol"] for r in rows} == {"knn", "linear_probe"} and all(r["objective"] == "pixels" for r in rows)
    expected = {"objective": "a checkpoint of objective 'simclr', not 'byol'",
                "trunc": "not a readable weight file (truncated or corrupted?)",
                "names": "data.classnames has 3 names but the dataset has 10 classes"}
    for name, text in expected.items():
        (stdout, stderr), rc = out[name]
        lines = stderr.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and text in lines[0] and lines[0].startswith("ssl-zoo eval: error:"), stderr
