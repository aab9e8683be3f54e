"""Concept frequency vs zero-shot accuracy (``ssl-zoo concepts``).

Counting: a class name occurs in a caption when every one of its words occurs
in it as a whole word (word boundaries, case-insensitive), singular or plural
("box" matches "boxes", "cat" does not match "concatenate"). The count is the
number of captions that mention the concept (document frequency), the
quantity the "concept frequency" literature relates zero-shot accuracy to.

Fit: zero-shot per-class accuracy against log10(count): ordinary least squares
(scipy.stats.linregress; slope with a t-based 95% CI, R^2) and Spearman's rho
with a seeded percentile-bootstrap 95% CI. Concepts with count 0 have no
log-frequency: they are reported but left out of the fit.
"""
from __future__ import annotations

import csv
import json
import re
import tarfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ssl_zoo.errors import UserError

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def word_forms(word: str) -> set[str]:
    """The word and its regular English plurals (box->boxes, berry->berries, leaf->leaves)."""
    forms = {word, word + "s", word + "es"}
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.add(word[:-1] + "ies")
    if word.endswith("f"):
        forms.add(word[:-1] + "ves")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    return forms


def count_concepts(captions: Iterable[str], concepts: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Captions mentioning each concept; ``concepts`` maps a class to its names
    (the class name itself, or aliases: any alias counts)."""
    # each alias is a list of word-form sets; an inverted index on the first word
    # keeps the per-caption work proportional to the words it contains
    aliases = [(c, [word_forms(w) for w in words(a)]) for c, names in concepts.items() for a in names]
    index: dict[str, list[int]] = {}
    for i, (_, forms) in enumerate(aliases):
        if forms:
            for f in forms[0]:
                index.setdefault(f, []).append(i)
    counts = dict.fromkeys(concepts, 0)
    for caption in captions:
        toks = set(words(caption))
        hit = set()
        for i in {i for t in toks for i in index.get(t, ())}:
            concept, forms = aliases[i]
            if concept not in hit and all(toks & f for f in forms):
                hit.add(concept)
        for concept in hit:
            counts[concept] += 1
    return counts


def _table_column(rows: Iterator[list[str]], column: str, path: Path) -> Iterator[str]:
    header = next(rows, None) or []
    if column not in header:
        raise UserError(f"{path}: no column {column!r} (columns: {', '.join(header) or 'none'}); set --column")
    k = header.index(column)
    for row in rows:
        if len(row) > k:
            yield row[k]


def read_captions(path: str | Path, column: str = "caption") -> Iterator[str]:
    """Captions from a text file (one per line), a CSV/TSV/parquet column, or a
    webdataset shard (.tar: its .txt members), or a directory of such files."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise UserError(f"--corpus {path}: empty directory")
        for p in files:
            yield from read_captions(p, column)
        return
    if not path.is_file():
        raise UserError(f"--corpus {path}: no such file (accepted: .txt, .csv, .tsv, .parquet, .tar shards, a directory)")
    suffix = path.suffix.lower()
    if path.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".txt"):
                    yield tar.extractfile(member).read().decode("utf-8", errors="replace")
    elif suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            yield from _table_column(csv.reader(f, delimiter="\t" if suffix == ".tsv" else ","), column, path)
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("reading .parquet captions needs pyarrow (pip install pyarrow)") from None
        table = pq.read_table(path)
        if column not in table.column_names:
            raise UserError(f"{path}: no column {column!r} (columns: {', '.join(table.column_names)}); set --column")
        yield from (str(c) for c in table.column(column).to_pylist() if c is not None)
    else:  # plain text, one caption per line
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from (line.rstrip("\n") for line in f if line.strip())


def read_counts(path: str | Path) -> dict[str, int]:
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"--counts {path}: not a readable JSON file ({exc.__class__.__name__}); "
                        f"expected {{\"class name\": count, ...}}") from None
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in data.values()):
        raise UserError(f"--counts {path}: expected a JSON object {{\"class name\": count >= 0, ...}}")
    return {str(k): int(v) for k, v in data.items()}


def fit(frequency: Sequence[float], accuracy: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Accuracy against log10(frequency): OLS slope (95% CI), R^2, Spearman rho (bootstrap 95% CI)."""
    from scipy import stats

    f, a = np.asarray(frequency, float), np.asarray(accuracy, float)
    keep = f > 0
    x, y = np.log10(f[keep]), a[keep]
    out: dict[str, Any] = {"n": int(keep.sum()), "n_zero_count": int((~keep).sum())}
    if len(x) < 3 or np.ptp(x) == 0:
        return {**out, "slope": None, "slope_ci95": None, "intercept": None, "r2": None, "p_slope": None,
                "spearman_rho": None, "spearman_p": None, "spearman_ci95": None}
    lr = stats.linregress(x, y)
    half = float(stats.t.ppf(0.975, len(x) - 2) * lr.stderr)
    rho, p = stats.spearmanr(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(len(x), size=len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:  # a constant resample has no rank correlation
            boots.append(stats.spearmanr(x[i], y[i])[0])
    ci = [float(q) for q in np.percentile(boots, [2.5, 97.5])] if boots else None
    return {**out, "slope": float(lr.slope), "slope_ci95": [float(lr.slope) - half, float(lr.slope) + half],
            "intercept": float(lr.intercept), "r2": float(lr.rvalue ** 2), "p_slope": float(lr.pvalue),
            "spearman_rho": None if np.isnan(rho) else float(rho), "spearman_p": None if np.isnan(p) else float(p),
            "spearman_ci95": ci}


def per_class_accuracy(rows: Iterable[Mapping[str, Any]], objective: str | None = None,
                       eval_data: str | None = None) -> dict[tuple[str, str], dict[str, float]]:
    """{(objective, eval_data): {class: accuracy}} from zero-shot top-1 rows (their ``per_class``)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        if r.get("protocol") != "zero_shot" or r.get("metric") != "top1" or not r.get("per_class"):
            continue
        if (objective and objective not in str(r.get("objective"))) or (eval_data and r.get("eval_data") != eval_data):
            continue
        out.setdefault((str(r["objective"]), str(r["eval_data"])), {}).update(r["per_class"])
    return out


def fit_text(f: Mapping[str, Any]) -> str:
    if f.get("slope") is None:
        return f"n={f['n']}: too few concepts with distinct non-zero counts for a fit"
    s, r = f["slope_ci95"], f["spearman_ci95"]
    rho_ci = f" [{r[0]:+.2f}, {r[1]:+.2f}]" if r else ""
    return (f"slope {f['slope']:+.3f} per decade [{s[0]:+.3f}, {s[1]:+.3f}], R^2 {f['r2']:.2f}, "
            f"Spearman rho {f['spearman_rho']:+.2f}{rho_ci} (n={f['n']})")


def plot(points: Mapping[str, Sequence[tuple[str, float, float]]], fits: Mapping[str, Mapping[str, Any]],
         path: Path, title: str) -> Path:
    """One panel per group: accuracy against log10(count), with the OLS line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(points)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, g in zip(axes[0], groups):
        pts = [(n, c, a) for n, c, a in points[g] if c > 0]
        x, y = np.log10([c for _, c, _ in pts]), np.array([a for _, _, a in pts])
        ax.scatter(x, y, s=18)
        for (name, _, _), xi, yi in zip(pts, x, y):
            ax.annotate(name, (xi, yi), fontsize=7, alpha=0.7)
        f = fits[g]
        if f.get("slope") is not None:
            xs = np.linspace(x.min(), x.max(), 2)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color="C3")
        ax.set(xlabel="log10(concept frequency)", ylabel="zero-shot accuracy", ylim=(-0.03, 1.03))
        ax.set_title(f"{g}\n{fit_text(f).replace(', Spearman', chr(10) + 'Spearman')}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
