"""The controlled concept-frequency experiment (``ssl-zoo bench suite=concept_frequency``).

The bench trains CLIP per seed on captioned shapes whose shape and colour
frequencies follow a Zipf law (and, with a frozen pretrained text tower, on
Fashion-MNIST captions of only some classes). After the cells, ``run_study``
(the suite's ``study:`` section) re-opens each trained checkpoint and adds:

- per-concept zero-shot accuracy on the balanced test split for every
  attribute in ``study.attributes`` (shape, colour: 8-way tasks each), joined
  with the exact per-concept training counts of that seed's data, fitted per
  seed against log10(count) (ssl_zoo.study.concepts.fit);
- compositional zero-shot: ``label=shape_color`` (all pairs as classes) on
  the ``heldout`` split (pairs never seen in training) and on ``test`` (seen pairs);
- for a run with ``data.train_classes``: zero-shot over all classes, mean
  per-class accuracy reported separately for seen and unseen classes.

Its rows go to BENCH/study.jsonl (results schema, protocol zero_shot, with a
``study`` field); the summary to BENCH/concept_frequency.{md,json,png}.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ssl_zoo.study.concepts import fit, fit_text, plot

log = logging.getLogger(__name__)


def _t_ci(values: list[float]) -> float | None:
    from scipy import stats

    v = [x for x in values if x is not None]
    return float(stats.t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None


def _zero_shot(objective, train_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any], out: Path, tag: str,
               cfg_hash: str) -> tuple[dict[str, Any], Any]:
    """Zero-shot top-1 row of a trained objective on another view of its data."""
    from ssl_zoo.build import objective_source
    from ssl_zoo.data.datasets import load_dataset
    from ssl_zoo.eval.runner import evaluate

    bundle = load_dataset(data_cfg)
    eval_cfg = {**train_cfg["eval"], "protocols": ["zero_shot"], "cache_dir": None}
    rows = evaluate(objective_source(objective, train_cfg), bundle, eval_cfg, results_path=str(out),
                    run=tag, cfg_hash=cfg_hash, seed=int(train_cfg.get("seed", 0)))
    return next(r for r in rows if r["metric"] == "top1"), bundle


def _shapes(objective, train_cfg, study: Mapping[str, Any], out: Path, run: str, cfg_hash: str) -> dict[str, Any]:
    data = dict(train_cfg["data"])
    per_attr: dict[str, Any] = {}
    for attr in study.get("attributes", ["shape", "color"]):
        row, bundle = _zero_shot(objective, train_cfg, {**data, "label": attr, "eval_split": "test"}, out, run, cfg_hash)
        counts = bundle.meta["train_counts"][attr]
        pts = [(c, int(counts[c]), float(row["per_class"][c])) for c in bundle.classnames if c in row["per_class"]]
        per_attr[attr] = {"top1": row["value"], "points": pts}
    comp = {}
    if data.get("heldout_pairs"):
        for split in ("test", "heldout"):
            row, _ = _zero_shot(objective, train_cfg, {**data, "label": "shape_color", "eval_split": split}, out, run,
                                cfg_hash)
            comp[split] = row["value"]
    return {"attributes": per_attr, "compositional": comp}


def _seen_unseen(row: Mapping[str, Any], train_classes: list[str]) -> dict[str, Any]:
    acc = row["per_class"]
    seen = [acc[c] for c in acc if c in train_classes]
    unseen = [acc[c] for c in acc if c not in train_classes]
    return {"top1": row["value"], "seen": float(np.mean(seen)) if seen else None,
            "unseen": float(np.mean(unseen)) if unseen else None, "unseen_classes": [c for c in acc if c not in train_classes],
            "per_class": acc, "chance": 1.0 / len(acc)}


def run_study(suite: Mapping[str, Any], bench_dir: Path, rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    from ssl_zoo.eval.models import load_train_checkpoint

    study = dict(suite.get("study") or {})
    out = bench_dir / "study.jsonl"
    if out.exists():
        out.unlink()  # derived from the checkpoints: recomputed whole each time
    per_seed: dict[str, list[dict[str, Any]]] = {}
    cells = sorted({r["bench_cell"] for r in rows if r.get("bench_cell") and r.get("protocol") == "zero_shot"
                    and r.get("pretrain_data")})
    for cell in cells:
        ckpt = bench_dir / "cells" / cell / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            log.warning("study: %s has no checkpoint; skipped", cell)
            continue
        objective, train_cfg = load_train_checkpoint(ckpt)
        objective.eval()
        own = next(r for r in rows if r.get("bench_cell") == cell and r["protocol"] == "zero_shot" and r["metric"] == "top1")
        entry = {"cell": cell, "seed": int(train_cfg.get("seed", 0))}
        if train_cfg["data"]["name"] == "shapes":
            entry.update(_shapes(objective, train_cfg, study, out, cell, own["config_hash"]))
        if train_cfg["data"].get("train_classes"):
            entry["seen_unseen"] = _seen_unseen(own, [str(c) for c in train_cfg["data"]["train_classes"]])
        per_seed.setdefault(train_cfg["data"]["name"], []).append(entry)
    summary = summarise(per_seed, study)
    write_summary(summary, bench_dir)
    return summary


def summarise(per_seed: Mapping[str, list[dict[str, Any]]], study: Mapping[str, Any]) -> dict[str, Any]:
    n_boot, boot_seed = int(study.get("bootstrap", 2000)), int(study.get("bootstrap_seed", 0))
    out: dict[str, Any] = {"per_seed": [], "pooled": {}, "compositional": [], "seen_unseen": []}
    pooled: dict[str, dict[str, list]] = {}
    for data, entries in per_seed.items():
        for e in entries:
            for attr, v in e.get("attributes", {}).items():
                f = fit([c for _, c, _ in v["points"]], [a for _, _, a in v["points"]], n_boot, boot_seed)
                out["per_seed"].append({"data": data, "attribute": attr, "seed": e["seed"], "top1": v["top1"],
                                        "fit": f, "points": v["points"]})
                for name, count, acc in v["points"]:
                    p = pooled.setdefault(attr, {}).setdefault(name, [])
                    p.append((count, acc))
            if e.get("compositional"):
                out["compositional"].append({"seed": e["seed"], **e["compositional"]})
            if e.get("seen_unseen"):
                out["seen_unseen"].append({"data": data, "seed": e["seed"], **e["seen_unseen"]})
    for attr, by_name in pooled.items():  # seed-mean accuracy against seed-mean count
        pts = [(n, float(np.mean([c for c, _ in v])), float(np.mean([a for _, a in v]))) for n, v in by_name.items()]
        seeds = [s for s in out["per_seed"] if s["attribute"] == attr]
        slopes = [s["fit"]["slope"] for s in seeds]
        rhos = [s["fit"]["spearman_rho"] for s in seeds]
        out["pooled"][attr] = {"fit": fit([c for _, c, _ in pts], [a for _, _, a in pts], n_boot, boot_seed),
                               "points": pts, "seeds": len(seeds),
                               "slope_mean": _mean(slopes), "slope_ci95_over_seeds": _t_ci(slopes),
                               "rho_mean": _mean(rhos), "rho_ci95_over_seeds": _t_ci(rhos)}
    return out


def _mean(v: list) -> float | None:
    v = [x for x in v if x is not None]
    return float(np.mean(v)) if v else None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _ci(v: list | None, fmt: str = "+.3f") -> str:
    return "n/a" if not v else f"[{v[0]:{fmt}}, {v[1]:{fmt}}]"


def summary_markdown(s: Mapping[str, Any]) -> str:
    md = ["# Concept frequency study (controlled)", ""]
    if s["per_seed"]:
        md += ["## Zero-shot accuracy vs log10(training frequency), per seed", "",
               "| attribute | seed | zero-shot top-1 | slope / decade | slope 95% CI | R^2 | Spearman rho | rho 95% CI (bootstrap) |",
               "|---|---:|---:|---:|---|---:|---:|---|"]
        for r in s["per_seed"]:
            f = r["fit"]
            md.append(f"| {r['attribute']} | {r['seed']} | {_pct(r['top1'])} | {_num(f['slope'], '+.3f')} | "
                      f"{_ci(f['slope_ci95'])} | {_num(f['r2'], '.2f')} | {_num(f['spearman_rho'], '+.2f')} | "
                      f"{_ci(f['spearman_ci95'], '+.2f')} |")
        md += ["", "## Pooled over seeds (seed-mean accuracy per concept)", ""]
        for attr, p in s["pooled"].items():
            sci, rci = p["slope_ci95_over_seeds"], p["rho_ci95_over_seeds"]
            md += [f"- **{attr}**: {fit_text(p['fit'])}; over {p['seeds']} seeds: slope "
                   f"{_num(p['slope_mean'], '+.3f')}{'' if sci is None else f' ± {sci:.3f}'}, rho "
                   f"{_num(p['rho_mean'], '+.2f')}{'' if rci is None else f' ± {rci:.2f}'} (mean ± t 95% CI)"]
        md += ["", "| attribute | concept | train count (seed mean) | zero-shot acc (seed mean) |", "|---|---|---:|---:|"]
        for attr, p in s["pooled"].items():
            md += [f"| {attr} | {n} | {c:.0f} | {_pct(a)} |" for n, c, a in sorted(p["points"], key=lambda t: -t[1])]
        md += ["", "![accuracy vs frequency](concept_frequency.png)", ""]
    if s["compositional"]:
        md += ["## Compositional zero-shot (shape-colour pairs as classes)", "",
               "| seed | seen pairs (test) top-1 | held-out pairs top-1 |", "|---:|---:|---:|"]
        md += [f"| {c['seed']} | {_pct(c.get('test'))} | {_pct(c.get('heldout'))} |" for c in s["compositional"]] + [""]
    if s["seen_unseen"]:
        md += ["## Zero-shot on class names never seen in pretraining", "",
               "| data | seed | all classes top-1 | seen classes (mean per-class) | unseen classes | chance |",
               "|---|---:|---:|---:|---:|---:|"]
        md += [f"| {r['data']} | {r['seed']} | {_pct(r['top1'])} | {_pct(r['seen'])} | {_pct(r['unseen'])} | "
               f"{_pct(r['chance'])} |" for r in s["seen_unseen"]]
        md += ["", f"Unseen classes: {', '.join(s['seen_unseen'][0]['unseen_classes'])}", ""]
    return "\n".join(md)


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def write_summary(s: Mapping[str, Any], bench_dir: Path) -> None:
    (bench_dir / "concept_frequency.json").write_text(json.dumps(s, indent=1))
    (bench_dir / "concept_frequency.md").write_text(summary_markdown(s))
    if s["pooled"]:
        plot({a: p["points"] for a, p in s["pooled"].items()}, {a: p["fit"] for a, p in s["pooled"].items()},
             bench_dir / "concept_frequency.png", "controlled study: seed-mean zero-shot accuracy vs training frequency")
    print(summary_markdown(s))
