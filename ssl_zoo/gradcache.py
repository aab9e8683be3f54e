"""Gradient caching (Gao et al., 2021; open_clip's ``--accum-freq``): a
contrastive loss over a batch far larger than fits in memory, with the same
loss and gradients as the full batch.

1. forward every chunk without a graph -> embeddings of the whole batch;
2. the loss on all embeddings, backward to the embeddings only (and to the
   parameters used inside the loss, e.g. CLIP's logit scale);
3. forward each chunk again, with a graph, and push the cached embedding
   gradient into it. Only one chunk's activations are alive at a time.

The two forwards of a chunk must compute the same function: random view
augmentation is done once, outside (the caller passes the finished views),
and the torch RNG state is saved per chunk and replayed for dropout.
BatchNorm is not batch-independent: with chunks it normalises with chunk
statistics, so a model with BN in train mode gives (slightly) different
results from the full batch.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch import distributed as dist

Encoder = Callable[[object], torch.Tensor]


def _chunks(x, size: int) -> list:
    return [x[i:i + size] for i in range(0, len(x), size)]  # tensors and lists of captions alike


def _rng_state() -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


@contextmanager
def _replayed(state: tuple[torch.Tensor, torch.Tensor | None]) -> Iterator[None]:
    """Run with a saved RNG state; the caller's RNG continues afterwards as if nothing ran."""
    cpu, cuda = state
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda is not None else []):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)
        yield


def grad_cached_step(encoders: Sequence[Encoder], inputs: Sequence, loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
                     chunk_size: int) -> torch.Tensor:
    """Backward of ``loss_fn([enc(x) for enc, x in zip(encoders, inputs)])``,
    computed ``chunk_size`` rows at a time. Gradients accumulate in ``.grad``
    as after ``loss.backward()``; returns the loss (detached)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    states: list[list] = []
    reps: list[torch.Tensor] = []
    for encode, x in zip(encoders, inputs, strict=True):
        rng, embs = [], []
        for part in _chunks(x, chunk_size):
            rng.append(_rng_state())
            with torch.no_grad():
                embs.append(encode(part))
        states.append(rng)
        reps.append(torch.cat(embs).detach().requires_grad_())
    loss = loss_fn(reps)
    loss.backward()
    for encode, x, rep, rng in zip(encoders, inputs, reps, states):
        for part, grad, state in zip(_chunks(x, chunk_size), rep.grad.split(chunk_size), rng):
            with _replayed(state):
                torch.autograd.backward(encode(part), grad)
    return loss.detach()


def average_gradients(module: nn.Module) -> None:
    """Average ``.grad`` over processes, as DDP's reducer would. Gradient
    caching runs several backward passes per step, which DDP's reducer does
    not allow, so under ``trainer.grad_cache_chunk`` the sync happens here,
    once per step. Every rank reduces every trainable parameter, in order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    # one flat buffer per dtype: a few large messages instead of one per parameter
    for dtype in sorted({p.grad.dtype for p in params}, key=str):  # same order on every rank
        grads = [p.grad for p in params if p.grad.dtype == dtype]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)
