"""``ssl-zoo concepts``: count class names in a caption corpus (or read counts),
join them with per-class zero-shot accuracy from results.jsonl, fit and plot."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssl_zoo.errors import UserError
from ssl_zoo.study.concepts import (count_concepts, fit, fit_text, per_class_accuracy, plot, read_captions,
                                    read_counts)

USAGE = """ssl-zoo concepts --results RESULTS.jsonl [...] (--corpus FILE|DIR [...] | --counts COUNTS.json)
                [--column caption] [--classes FILE.json] [--objective TEXT] [--eval-data NAME] [--out DIR]"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        raise UserError(f"{message} (ssl-zoo concepts --help shows the options)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ssl-zoo concepts", usage=USAGE, description=__doc__)
    p.add_argument("--results", nargs="+", required=True, help="results.jsonl files with zero_shot rows")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", nargs="+", help="captions: .txt (one per line), .csv/.tsv/.parquet column, .tar shards")
    src.add_argument("--counts", help='precomputed counts, JSON {"class": count}')
    p.add_argument("--column", default="caption", help="caption column of CSV/TSV/parquet files")
    p.add_argument("--classes", help='JSON list of class names, or {"class": ["alias", ...]} (default: the results\' classes)')
    p.add_argument("--objective", help="only rows whose objective contains this text")
    p.add_argument("--eval-data", help="only rows of this eval dataset")
    p.add_argument("--out", default=".", help="output directory (concepts.json, concepts.md, concepts.png)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CI of rho")
    p.add_argument("--seed", type=int, default=0)
    return p


def _classes(spec: str | None, names: list[str]) -> dict[str, list[str]]:
    if not spec:
        return {n: [n] for n in names}
    try:
        data = json.loads(Path(spec).expanduser().read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"--classes {spec}: not a readable JSON file (a list of names or {{class: [aliases]}})") from None
    if isinstance(data, list):
        return {str(n): [str(n)] for n in data}
    if isinstance(data, dict):
        return {str(k): [str(a) for a in (v if isinstance(v, list) else [v])] for k, v in data.items()}
    raise UserError(f"--classes {spec}: expected a JSON list of names or {{class: [aliases]}}")


def concepts_command(args: list[str]) -> dict:
    from ssl_zoo.results import read_rows

    a = parser().parse_args(args)
    rows = []
    for path in a.results:
        if not Path(path).is_file():
            raise UserError(f"--results {path}: no such file")
        rows += read_rows(path)
    groups = per_class_accuracy(rows, a.objective, a.eval_data)
    if not groups:
        raise UserError("no zero_shot top1 rows with per-class accuracies in --results "
                        "(run an eval with eval.protocols=[zero_shot]; check --objective / --eval-data)")
    names = sorted({c for acc in groups.values() for c in acc})
    concepts = _classes(a.classes, names)
    counts = read_counts(a.counts) if a.counts else \
        count_concepts((c for path in a.corpus for c in read_captions(path, a.column)), concepts)
    out = Path(a.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    report, points, fits = {"counts": counts, "groups": []}, {}, {}
    md = ["# Concept frequency vs zero-shot accuracy", "",
          f"Counts: {'--counts ' + a.counts if a.counts else 'captions of ' + ', '.join(a.corpus)}", ""]
    for (objective, data), acc in groups.items():
        joined = [(c, counts[c], acc[c]) for c in sorted(acc) if c in counts]
        missing = sorted(set(acc) - set(counts))
        label = f"{objective} on {data}"
        f = fit([n for _, n, _ in joined], [v for _, _, v in joined], a.bootstrap, a.seed)
        points[label], fits[label] = joined, f
        report["groups"].append({"objective": objective, "eval_data": data, "fit": f, "missing_counts": missing,
                                 "per_class": [{"class": c, "count": n, "accuracy": v} for c, n, v in joined]})
        md += [f"## {label}", "", fit_text(f), ""]
        if missing:
            md += [f"No count for: {', '.join(missing)}", ""]
        md += ["| class | count | zero-shot acc |", "|---|---:|---:|"]
        md += [f"| {c} | {n} | {100 * v:.1f} |" for c, n, v in sorted(joined, key=lambda t: -t[1])] + [""]
    plot(points, fits, out / "concepts.png", "zero-shot accuracy vs concept frequency")
    md += ["![accuracy vs frequency](concepts.png)", ""]
    (out / "concepts.json").write_text(json.dumps(report, indent=1))
    (out / "concepts.md").write_text("\n".join(md))
    for label, f in fits.items():
        print(f"{label}: {fit_text(f)}")
    print(f"-> {out / 'concepts.md'}, concepts.json, concepts.png", file=sys.stderr)
    return report
