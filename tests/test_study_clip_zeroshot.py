"""`ssl-zoo bench suite=clip_zeroshot` end to end: a small open_clip model
(random init, saved to a local file, custom config) evaluated zero-shot,
few-shot and by linear probe on two small on-disk/embedded datasets, with a
per-class zero-shot accuracy for every class of every dataset."""
import json

import numpy as np
import torch
from conftest import run_cli
from PIL import Image

from ssl_zoo.results import read_rows

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (40, 60, 220)}


def make_folder(root, n_train=20, n_test=6):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(rgb) + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


def test_clip_zeroshot_suite_keeps_per_class_accuracy_for_every_class(tmp_path):
    import open_clip

    (tmp_path / "tiny-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "tiny-clip.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-clip").state_dict(), tmp_path / "tiny.pt")
    folder = make_folder(tmp_path / "colours")
    model = f"{{kind:open_clip,name:tiny-clip,pretrained:'{tmp_path / 'tiny.pt'}',config:'{tmp_path / 'tiny-clip.json'}'}}"
    bench = tmp_path / "bench"
    proc = run_cli("bench", "suite=clip_zeroshot", f"suite.models=[{model}]", "suite.datasets=[digits,imagefolder]",
                   "suite.baselines=[]", f"+suite.per_data.imagefolder=['data.root={folder}']",
                   "suite.overrides=['eval.protocols=[zero_shot,few_shot,linear_probe]','eval.cache_dir=null',"
                   "'eval.few_shot.shots=[1,4]']", "isolate=false", "stream_cell_output=false",
                   f"hydra.run.dir={bench}", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(bench / "results.jsonl")
    assert {r["objective"] for r in rows} == {"open_clip:tiny-clip/tiny.pt"}
    expected = {"digits": [str(i) for i in range(10)], "imagefolder": sorted(COLOURS)}
    for data, names in expected.items():
        mine = [r for r in rows if r["eval_data"] == data]
        assert {r["protocol"] for r in mine} == {"zero_shot", "few_shot", "linear_probe"}
        top1 = [r for r in mine if r["protocol"] == "zero_shot" and r["metric"] == "top1"]
        assert len(top1) == 1 and sorted(top1[0]["per_class"]) == sorted(names)
        # the mean of the per-class accuracies is the mean per-class recall row
        recall = next(r for r in mine if r["protocol"] == "zero_shot" and r["metric"] == "mean_per_class_recall")
        assert np.mean(list(top1[0]["per_class"].values())) == pytest_approx(recall["value"])
    assert (bench / "table.md").is_file()


def pytest_approx(v):
    import pytest

    return pytest.approx(v, abs=1e-6)
