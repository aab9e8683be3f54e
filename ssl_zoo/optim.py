"""The optimizer factory (``trainer.optim``), shared by every objective.

- ``name``: adamw | adamw_bf16 | sgd. ``adamw_bf16`` is ``adamw`` with
  ``state_dtype=bf16``.
- ``state_dtype``: fp32 | bf16. bf16 keeps AdamW's two moment buffers in
  bfloat16 (half the optimizer memory); the update itself is computed in
  fp32 by torchao's Adam kernel (``torchao.optim.adam.single_param_adam``).
- ``bf16_weights``: names of submodules (e.g. ``[text]``) whose weights are
  stored in bfloat16 and updated with stochastic rounding (torchao), so small
  updates are not lost to rounding on average. Needs bf16 autocast.
- ``compile``: torchao compiles its per-parameter step with torch.compile;
  on CPU that costs about a minute of C++ compilation on the first step and
  again for every new parameter shape, so the default (``auto``) compiles on
  GPU only and runs the same kernel eagerly on CPU.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable

import torch
from torch import nn

from ssl_zoo.errors import UserError

OPTIMIZERS = ("adamw", "adamw_bf16", "sgd")
STATE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.cache
def low_precision_adamw() -> type:
    """The class, built on first use: importing torchao takes seconds."""
    from torchao.optim import _AdamW
    from torchao.optim.adam import single_param_adam

    class LowPrecisionAdamW(_AdamW):
        """torchao's AdamW with moment buffers in ``state_dtype`` and bf16
        stochastic rounding of bf16 weights."""

        def __init__(self, params, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.01, *,
                     state_dtype: torch.dtype = torch.bfloat16, compile: bool = False):
            super().__init__(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, bf16_stochastic_round=True)
            self.state_dtype = state_dtype
            self.compile = compile

        def _new_buffer(self, p: torch.Tensor, signed: bool) -> torch.Tensor:
            return torch.zeros_like(p, dtype=self.state_dtype, memory_format=torch.preserve_format)

        @torch.no_grad()
        def step(self, closure=None):
            if self.compile:
                return super().step(closure)
            # torchao's step loop, with its kernel called eagerly (see module docstring)
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if not state:
                        state["step"] = torch.tensor(0.0)
                        state["exp_avg"] = self._new_buffer(p, True)
                        state["exp_avg_sq"] = self._new_buffer(p, False)
                    state["step"] += 1
                    single_param_adam(p.detach(), p.grad, state["step"], state["exp_avg"], state["exp_avg_sq"], None,
                                      group["lr"], group["betas"][0], group["betas"][1], group["weight_decay"],
                                      group["eps"], True, p.dtype is torch.bfloat16)
            return loss

    return LowPrecisionAdamW


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's per-parameter state tensors."""
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))


def cast_bf16_weights(model: nn.Module, names: Iterable[str]) -> None:
    """Store the weights of the named submodules in bfloat16 (in place)."""
    for name in names:
        try:
            model.get_submodule(str(name)).to(torch.bfloat16)
        except AttributeError:
            children = ", ".join(n for n, _ in model.named_children())
            raise UserError(f"trainer.optim.bf16_weights: no submodule {name!r}; available: {children}") from None


def make_optimizer(optim: dict[str, Any], groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    lr, name = float(optim["lr"]), str(optim.get("name", "adamw"))
    state = str(optim.get("state_dtype", "fp32"))
    if name == "adamw_bf16":
        name, state = "adamw", "bf16"
    if state not in STATE_DTYPES:
        raise UserError(f"unknown trainer.optim.state_dtype {state!r}; available: {', '.join(STATE_DTYPES)}")
    betas = tuple(optim.get("betas", (0.9, 0.999)))
    low_precision = state != "fp32" or bool(optim.get("bf16_weights"))
    if name == "adamw" and not low_precision:
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "adamw":
        compile = optim.get("compile", "auto")
        if compile == "auto":
            compile = torch.cuda.is_available() and all(p.is_cuda for g in groups for p in g["params"])
        return low_precision_adamw()(groups, lr=lr, betas=betas, state_dtype=STATE_DTYPES[state], compile=bool(compile))
    if name == "sgd":
        if low_precision:
            raise UserError("trainer.optim.state_dtype=bf16 and bf16_weights need an AdamW optimizer (adamw, adamw_bf16)")
        return torch.optim.SGD(groups, lr=lr, momentum=float(optim.get("momentum", 0.9)))
    raise UserError(f"unknown trainer.optim.name {name!r}; available: {', '.join(OPTIMIZERS)}")
