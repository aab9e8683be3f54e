"""The two products of every logistic-regression evaluation with fixed
features x (n, D): logits ``rows @ x.T`` (M, n) and gradient ``g @ x`` (M, D).

With M = P * C of about 10 rows, plain ``matmul`` is slow on CPU: MKL's fp32
GEMM, and oneDNN's bf16 one, which gives bitwise the same results as on
operands laid out beforehand, at a third of the speed. So on
CPU both products go to oneDNN's inner product (``torch.ops.mkldnn``, what
torch.compile's CPU freezing uses), with x as the weight of a linear layer of
n outputs and x^T as that of one of D outputs. ``benchmarks/feature_products.py``
on 40,000 x 512, 2 cores, logits + gradient per evaluation:

- ``pack`` (a lambda sweep: tens to hundreds of evaluations): x laid out once
  into oneDNN's blocked format (~0.1 s). bf16 3.3 ms against 9.4 for plain
  matmuls (bitwise the same results); fp32 6.2 ms against 22.5.
- ``dense`` (a few exact fp32 evaluations): oneDNN on x as it is, nothing to
  prepare; fp32 12.8 ms.
- ``plain``: matmul; small problems (few-shot), CUDA, a torch without the ops.
"""
from __future__ import annotations

import copy

import torch

MODES = ("pack", "dense", "plain")


def transposed(x: torch.Tensor, dtype: torch.dtype, rows: int = 512) -> torch.Tensor:
    """x (n, D) as a contiguous (D, n) of ``dtype``, one cache-sized block of rows at a time
    (3x faster than ``x.T.contiguous()`` on 40,000 x 512)."""
    out = torch.empty(x.shape[1], len(x), dtype=dtype, device=x.device)
    for i in range(0, len(x), rows):
        out[:, i:i + rows] = x[i:i + rows].T
    return out


def _onednn_ok(x: torch.Tensor, dtype: torch.dtype) -> bool:
    if x.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_onednn_ok(x: torch.Tensor) -> bool:
    """x is on a CPU whose oneDNN runs bf16 natively (AVX512-BF16 / AMX): FeatureProducts can pack it."""
    return _onednn_ok(x, torch.bfloat16)


def _linear(inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """inp (M, K) @ weight (N, K)^T by oneDNN; ``weight`` packed or dense."""
    return torch.ops.mkldnn._linear_pointwise(inp, weight, None, "none", [None], "")


class FeatureProducts:
    """x (n, D) held in ``dtype`` for ``logits`` and ``grad``; results come back in ``dtype``.
    ``mode``: one of MODES (see above); ``pack`` and ``dense`` fall back to ``plain`` off CPU.
    ``split``: prepare rows [0, split) and [split, n) as separate blocks, so that
    ``head()`` serves the first alone (the lambda sweep's fitting rows) without a second copy."""

    def __init__(self, x: torch.Tensor, dtype: torch.dtype = torch.float32, mode: str = "pack",
                 split: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: expected one of {MODES}")
        self.dtype = dtype
        self.mode = mode if mode == "plain" or _onednn_ok(x, dtype) else "plain"
        parts = [x] if split is None else [x[:split], x[split:]]
        self.sizes = [len(p) for p in parts]
        self.blocks = [self._prepare(p) for p in parts]

    def _prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.to(self.dtype)
        if self.mode == "plain":
            return (x,)
        if self.mode == "dense":
            return x, x.T
        reorder = torch.ops.mkldnn._reorder_linear_weight
        return reorder(x), reorder(transposed(x, self.dtype))  # layers of n and of D outputs

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def head(self) -> "FeatureProducts":
        """The first block alone."""
        head = copy.copy(self)
        head.sizes, head.blocks = self.sizes[:1], self.blocks[:1]
        return head

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (M, D) -> rows @ x.T (M, n)."""
        rows = rows.to(self.dtype)
        out = [(b[0] @ rows.T).T if self.mode == "plain" else _linear(rows, b[0]) for b in self.blocks]
        return out[0] if len(out) == 1 else torch.cat(out, 1)

    def grad(self, g: torch.Tensor) -> torch.Tensor:
        """g (M, n) -> g @ x (M, D)."""
        g, out, start = g.to(self.dtype), None, 0
        for b, size in zip(self.blocks, self.sizes):
            part = g[:, start:start + size]
            part = part @ b[0] if self.mode == "plain" else _linear(part.contiguous(), b[1])
            out = part if out is None else out.float().add_(part)
            start += size
        return out
