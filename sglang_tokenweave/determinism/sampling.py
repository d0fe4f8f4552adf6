"""Seeded sampling whose result for a row depends on that row alone.

``sample(logits, plan)`` returns, for each row, a token that is a function of the row's logits,
its sampling parameters and its (seed, position) key only: not of the other rows, their
number, their order or their parameters. The fast path and the verifier therefore pick the
same token whenever they see the same logits, and the verifier's picks are reproducible.

How (inverse-CDF sampling on integer weights):
1. Greedy rows (temperature ~0 or top_k == 1): argmax, the lowest index on ties.
2. Otherwise r = exp((logit - row max) / temperature) in float32; the max token gets exactly 1.
3. top_k keeps every token whose r is >= the k-th largest (ties at the edge all stay); top_p
   then keeps the heaviest tokens until their share of the top-k mass reaches top_p (ties at
   the edge all stay); min_p keeps tokens with r >= min_p.
4. Integer weights w = round(r * 2**32); target = floor(u * sum(w)), u the (seed, position)
   uniform; the token is the first index whose running weight sum exceeds target (found per
   block of the vocabulary, then inside the block).

Every reduction over the vocabulary is an integer sum, a max or a sort, which are exact
whatever the kernel's reduction order; everything else is element-wise. Float sums (softmax,
float cumsum) are avoided because their rounding changes with the kernel configuration, which
changes with the number of rows. Cost of the quantisation: a token whose probability is below
2**-33 of the most likely token's is never drawn.

``sample(..., kernel="triton")`` runs steps 1, 2, 4 (and min_p) as Triton kernels for rows
without top-k / top-p (``sampling_kernel``: one launch, or three for large vocabularies); rows
with them take this module's PyTorch ops.

Plan/run split: ``plan_sampling`` turns host-side per-row parameters into device tensors (one
copy) and decides which filters run, once per batch; ``sample`` runs with no host sync.
Neither waits for the GPU: the copy goes through pinned memory (``to_device``), so the overlap
scheduler's host work still overlaps the step that is running.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from .config import SAMPLING_KERNELS
from .seeds import position_uniforms

# SGLang treats temperatures below this as greedy.
GREEDY_TEMPERATURE = 1e-6
_WEIGHT_BITS = 32
_WEIGHT_SCALE = float(1 << _WEIGHT_BITS)
# Keeps the total integer weight (<= vocab * 2**32) exactly representable in float64.
MAX_VOCAB = 1 << (53 - _WEIGHT_BITS)


@dataclasses.dataclass(frozen=True)
class RowParams:
    """Sampling parameters of one row (one token to sample).

    ``seed`` is the choice's sampling seed (``seeds.choice_seed``); ``position`` the index in
    the full sequence (prompt + output) of the token being sampled. top_k <= 0 or >= vocab
    (SGLang's "all" is 2**30), top_p >= 1 and min_p <= 0 switch the filter off.
    """

    seed: int
    position: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
    """Device tensors for one batch of rows, plus the host-side decisions of which filters run."""

    num_rows: int
    vocab_size: int
    greedy: torch.Tensor  # bool [N]
    temperature: torch.Tensor  # float32 [N]; 1.0 on greedy rows
    uniform: torch.Tensor  # float64 [N], in [0, 1)
    min_p: torch.Tensor  # float32 [N]; 0 where off
    top_k_rows: torch.Tensor  # int64 [R_k]: rows with top_k enabled
    top_k: torch.Tensor  # int64 [R_k]
    top_p_rows: torch.Tensor  # int64 [R_p]
    top_p: torch.Tensor  # float64 [R_p]
    filtered: torch.Tensor  # int64 [N]: 1 on rows with top_k or top_p enabled
    batch_rows: torch.Tensor  # int64 [N] or [0]: where each row sits in its batch, if given
    all_greedy: bool
    max_top_k: int  # 0 when no row uses top_k
    any_min_p: bool


def plan_sampling(
    rows: Sequence[RowParams],
    vocab_size: int,
    device: torch.device | str = "cpu",
    batch_rows: Sequence[int] = (),
) -> SamplingPlan:
    """Validate the rows' parameters, draw their (seed, position) uniforms, move them to ``device``.

    ``batch_rows``: optionally, the index of each row in a larger batch, moved along in the same
    copy (a caller that gathers and scatters the rows needs it on the device)."""
    if not 0 < vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be in [1, {MAX_VOCAB}], got {vocab_size}")
    if len(batch_rows) and len(batch_rows) != len(rows):
        raise ValueError(f"{len(batch_rows)} batch rows for {len(rows)} rows")
    for r in rows:
        if not r.temperature >= 0.0 or not 0.0 < r.top_p or not 0.0 <= r.min_p <= 1.0:
            raise ValueError(f"invalid sampling parameters: {r}")
    n = len(rows)
    greedy = [r.greedy for r in rows]
    k_rows = [i for i, r in enumerate(rows) if not greedy[i] and 0 < r.top_k < vocab_size]
    p_rows = [i for i, r in enumerate(rows) if not greedy[i] and r.top_p < 1.0]
    filtered = [False] * n
    for i in k_rows + p_rows:
        filtered[i] = True
    min_p = [0.0 if g else r.min_p for g, r in zip(greedy, rows)]
    k = len(k_rows)
    # One host-to-device copy of every field (a copy costs more host time than a few small
    # fields), each read on the device as a view of its own dtype: no conversion kernels.
    packed = _Packed()
    uniform = packed.add(position_uniforms([r.seed for r in rows], [r.position for r in rows]), np.float64)
    top_p = packed.add([rows[i].top_p for i in p_rows], np.float64)
    ints = packed.add(filtered + k_rows + [rows[i].top_k for i in k_rows] + p_rows + list(batch_rows), np.int64)
    temperature = packed.add([1.0 if g else r.temperature for g, r in zip(greedy, rows)], np.float32)
    min_p_field = packed.add(min_p, np.float32)
    greedy_field = packed.add(greedy, np.bool_)
    on_device = to_device(torch.from_numpy(packed.buffer()), device)
    ints = ints(on_device)
    return SamplingPlan(
        num_rows=n,
        vocab_size=vocab_size,
        greedy=greedy_field(on_device),
        temperature=temperature(on_device),
        uniform=uniform(on_device),
        min_p=min_p_field(on_device),
        top_k_rows=ints[n : n + k],
        top_k=ints[n + k : n + 2 * k],
        top_p_rows=ints[n + 2 * k : n + 2 * k + len(p_rows)],
        top_p=top_p(on_device),
        filtered=ints[:n],
        batch_rows=ints[n + 2 * k + len(p_rows) :],
        all_greedy=all(greedy),
        max_top_k=max((rows[i].top_k for i in k_rows), default=0),
        any_min_p=any(p > 0.0 for p in min_p),
    )


_TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32, np.int64: torch.int64, np.bool_: torch.bool}


class _Packed:
    """Arrays of several dtypes in one byte buffer, each at an 8-byte aligned offset so that a
    slice of the buffer can be viewed as its dtype (on any device)."""

    _ALIGN = 8

    def __init__(self):
        self._parts: list[tuple[int, np.ndarray]] = []  # (offset, array)
        self._size = 0

    def add(self, values, dtype):
        """Queue ``values``; returns a function that reads them back from the buffer's tensor."""
        array = np.asarray(values, dtype=dtype).reshape(-1)
        start, nbytes = self._size, array.nbytes
        self._parts.append((start, array))
        self._size += -(-nbytes // self._ALIGN) * self._ALIGN
        torch_dtype = _TORCH_DTYPES[array.dtype.type]
        if not nbytes:  # an empty byte slice cannot be viewed as a wider dtype
            return lambda buffer: torch.empty(0, dtype=torch_dtype, device=buffer.device)
        return lambda buffer: buffer[start : start + nbytes].view(torch_dtype)

    def buffer(self) -> np.ndarray:
        out = np.zeros(self._size, dtype=np.uint8)
        for start, array in self._parts:
            out[start : start + array.nbytes] = array.view(np.uint8)
        return out


def to_device(host: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``host.to(device)`` without waiting for the device: a copy from pageable memory waits for
    every kernel queued before it, a copy from pinned memory does not."""
    device = torch.device(device)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def sample(logits: torch.Tensor, plan: SamplingPlan, kernel: str = "torch") -> torch.Tensor:
    """Token ids (int64 [N]) for logits [N, V] (any float dtype), one per row of the plan.

    ``kernel="triton"`` samples the rows without top-k / top-p with Triton kernels
    (``sampling_kernel``; CUDA, or Triton's interpreter); the others take the PyTorch path
    either way, so which path a row takes depends on that row alone."""
    if tuple(logits.shape) != (plan.num_rows, plan.vocab_size):
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} for a plan of {plan.num_rows} x {plan.vocab_size}"
        )
    if kernel not in SAMPLING_KERNELS:
        raise ValueError(f"sampling kernel must be one of {SAMPLING_KERNELS}, got {kernel!r}")
    if kernel == "triton":
        from .sampling_kernel import sample_unfiltered

        ids = sample_unfiltered(logits, plan)
        if plan.max_top_k or plan.top_p_rows.numel():
            ids = torch.where(plan.filtered != 0, _sample_torch(logits, plan), ids)
        return ids
    return _sample_torch(logits, plan)


def _sample_torch(logits: torch.Tensor, plan: SamplingPlan) -> torch.Tensor:
    greedy_ids = torch.argmax(logits, dim=-1)
    if plan.all_greedy:
        return greedy_ids

    rel = torch.div(logits.float(), plan.temperature[:, None])  # a new tensor: updated in place
    rel.sub_(rel.amax(dim=-1, keepdim=True)).exp_()
    if plan.max_top_k:
        rel = _on_rows(rel, plan.top_k_rows, lambda r: _top_k_filter(r, plan.top_k, plan.max_top_k))
    if plan.top_p_rows.numel():
        rel = _on_rows(rel, plan.top_p_rows, lambda r: _top_p_filter(r, plan.top_p))
    if plan.any_min_p:
        rel.mul_(rel >= plan.min_p[:, None])
    return torch.where(plan.greedy, greedy_ids, _inverse_cdf(_weights(rel), plan.uniform))


def _on_rows(rel: torch.Tensor, rows: torch.Tensor, filter_fn) -> torch.Tensor:
    """Apply a filter to some rows; to all of them without gathering when it is all rows."""
    if rows.numel() == rel.shape[0]:  # row lists are ascending and unique: all rows, in order
        return filter_fn(rel)
    rel[rows] = filter_fn(rel[rows])
    return rel


def _weights(rel: torch.Tensor) -> torch.Tensor:
    return torch.round(rel * _WEIGHT_SCALE).to(torch.int64)


def _top_k_filter(rel: torch.Tensor, top_k: torch.Tensor, max_k: int) -> torch.Tensor:
    # Value threshold rather than index selection: exact and free of tie-breaking rules.
    kth = torch.topk(rel, max_k, dim=-1).values.gather(1, (top_k - 1)[:, None])
    return rel.mul_(rel >= kth)


def _top_p_filter(rel: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    heavy_first = torch.sort(rel, dim=-1, descending=True).values
    running = _weights(heavy_first).cumsum_(dim=-1)  # weights are sorted too: rounding is monotone
    # Sorted token i is inside iff the mass before it, running[i-1], is below top_p * total; for
    # integers that is running[i-1] < ceil(top_p * total) (exact: totals are below 2**53).
    bound = torch.ceil(top_p[:, None] * running[:, -1:].to(torch.float64)).to(torch.int64)
    last_inside = torch.searchsorted(running, bound)  # running[-1] = total >= bound
    return rel.mul_(rel >= heavy_first.gather(1, last_inside))


def _inverse_cdf(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """First index whose running weight sum exceeds floor(u * total), block by block."""
    n, vocab = weights.shape
    block = _block_size(vocab)
    blocks = weights.view(n, vocab // block, block)
    block_sums = blocks.sum(dim=-1)
    block_running = block_sums.cumsum(dim=-1)
    total = block_running[:, -1]  # >= 2**32: the max token survives every filter
    target = torch.floor(uniform * total.to(torch.float64)).to(torch.int64)
    target = torch.minimum(target, total - 1)[:, None]
    chosen = (block_running <= target).sum(dim=-1, keepdim=True)  # < number of blocks
    before = block_running.gather(1, chosen) - block_sums.gather(1, chosen)
    inner = blocks[torch.arange(n, device=weights.device), chosen[:, 0]]
    offset = (inner.cumsum(dim=-1) <= target - before).sum(dim=-1)
    return chosen[:, 0] * block + offset


def _block_size(vocab: int) -> int:
    """The largest power of two up to 1024 that divides the vocabulary size."""
    return min(vocab & -vocab, 1024)
