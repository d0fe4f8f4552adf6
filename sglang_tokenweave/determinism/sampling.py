"""Seeded sampling whose result for a row depends on that row alone.

``sample(logits, plan)`` returns, for each row, a token that is a function of the row's logits,
its sampling parameters and its (seed, position) key only: not of the other rows, their
number, their order or their parameters. The fast path and the verifier therefore pick the
same token whenever they see the same logits, and the verifier's picks are reproducible.

How (the Gumbel-max trick, noise keyed by (seed, position, token)):
1. Greedy rows (temperature ~0 or top_k == 1): argmax, the lowest index on ties.
2. Otherwise s = logit / temperature - row max, in float32; r = exp(s).
3. top_k keeps every token whose r is >= the k-th largest (ties at the edge all stay); top_p
   then keeps the heaviest tokens until their share of the top-k mass reaches top_p (ties at
   the edge all stay; shares in integer weights round(r * 2**32)); min_p keeps r >= min_p.
4. The token is the argmax (lowest index on ties) over the kept tokens of the float64 score
   s - log(-log(u)), where u is the token's uniform under the row's (seed, position) draw key
   (``seeds.token_uniform``): a draw from softmax(logit / temperature) over the kept tokens.

Every reduction over the vocabulary is a max, an argmax, a sort or an integer sum, which are
exact whatever the kernel's reduction order; everything else is element-wise. Float sums
(softmax, float cumsum) are avoided because their rounding changes with the kernel
configuration, which changes with the number of rows.

Why Gumbel-max and not inverse-CDF sampling (one uniform per row, the first token whose running
probability exceeds it): the fast path's logits differ from the verifier's in the last bits, and
a token is rolled back wherever that changes the pick. Inverse CDF compares the uniform with a
running sum into which every earlier token's error flows, so near-flat distributions flip often;
here a pick changes only when the top two scores lie within the logits' own error. Simulated on
512-token distributions with bf16-sized relative errors (``scripts/sampler_flip_rates.py``):
3-34x fewer changed picks where the distribution spreads over 3 to 127 tokens, 1.4-1.9x fewer
where it is peaked; about as few as greedy rows have.

``sample(..., kernel="triton")`` runs steps 1, 2, 4 (and min_p) as Triton kernels for rows
without top-k / top-p (``sampling_kernel``: one launch, or three for large vocabularies); rows
with them take this module's PyTorch ops.

Plan/run split: ``plan_sampling`` turns host-side per-row parameters into device tensors (one
copy) and decides which filters run, once per batch; ``sample`` runs with no host sync.
Neither waits for the GPU: the copy goes through pinned memory (``pinned_staging``), so the overlap
scheduler's host work still overlaps the step that is running.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch

from .config import SAMPLING_KERNELS
from .pinned_staging import array_to_device
from .sampling_kernel import sample_unfiltered
from .sampling_kernel import write_at_batch_rows as write_kernel
from .sampling_plan import RowParams, SamplingPlan, check_row
from .seeds import draw_keys, token_uniforms

_WEIGHT_BITS = 32
_WEIGHT_SCALE = float(1 << _WEIGHT_BITS)
# Keeps top_p's total integer weight (<= vocab * 2**32) exactly representable in float64.
MAX_VOCAB = 1 << (53 - _WEIGHT_BITS)
# Tokens' noise computed at once by the PyTorch path (rows x vocabulary): 32 MiB per temporary.
_NOISE_ELEMENTS = 1 << 22


def plan_sampling(
    rows: Sequence[RowParams],
    vocab_size: int,
    device: torch.device | str = "cpu",
    batch_rows: Sequence[int] = (),
) -> SamplingPlan:
    """Validate the rows' parameters, key their (seed, position) draws, move them to ``device``.

    ``batch_rows``: optionally, the index of each row in a larger batch, moved along in the same
    copy (``sample_at_batch_rows`` reads the rows there)."""
    if not 0 < vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be in [1, {MAX_VOCAB}], got {vocab_size}")
    if len(batch_rows) and len(batch_rows) != len(rows):
        raise ValueError(f"{len(batch_rows)} batch rows for {len(rows)} rows")
    greedy, temperature, min_p, k_rows, p_rows, f_rows = [], [], [], [], [], []
    for i, r in enumerate(rows):
        check_row(r)
        g = r.greedy
        top_k = not g and 0 < r.top_k < vocab_size
        top_p = not g and r.top_p < 1.0
        greedy.append(float(g))
        temperature.append(1.0 if g else r.temperature)
        min_p.append(0.0 if g else r.min_p)
        if top_k:
            k_rows.append(i)
        if top_p:
            p_rows.append(i)
        if top_k or top_p:
            f_rows.append(i)
    fields = np.concatenate([
        draw_keys([r.seed for r in rows], [r.position for r in rows]),
        # float32 parameters rounded here, once: the device reads the same value on either path.
        np.asarray(temperature + min_p, dtype=np.float32),
        np.asarray(greedy + list(batch_rows) + k_rows + [rows[i].top_k for i in k_rows] + p_rows
                   + [rows[i].top_p for i in p_rows] + f_rows, dtype=np.float64),
    ], dtype=np.float64)
    return SamplingPlan(
        array_to_device(fields, device),
        num_rows=len(rows),
        vocab_size=vocab_size,
        num_top_k=len(k_rows),
        num_top_p=len(p_rows),
        num_filtered=len(f_rows),
        indexed=bool(len(batch_rows)),
        all_greedy=all(greedy),
        max_top_k=max((rows[i].top_k for i in k_rows), default=0),
        any_min_p=any(p > 0.0 for p in min_p),
    )


def sample(logits: torch.Tensor, plan: SamplingPlan, kernel: str = "torch") -> torch.Tensor:
    """Token ids (int64 [N]) for logits [N, V] (any float dtype), one per row of the plan.

    ``kernel="triton"`` samples the rows without top-k / top-p with Triton kernels
    (``sampling_kernel``; CUDA, or Triton's interpreter); the others take the PyTorch path
    either way, so which path a row takes depends on that row alone."""
    if tuple(logits.shape) != (plan.num_rows, plan.vocab_size):
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} for a plan of {plan.num_rows} x {plan.vocab_size}"
        )
    _check_kernel(kernel)
    if kernel == "triton":
        ids = sample_unfiltered(logits, plan)
        if plan.any_filtered:  # the PyTorch path for those rows only (F x V, not N x V)
            ids[plan.filtered_rows] = _sample_torch(logits, plan, plan.filtered_rows)
        return ids
    return _sample_torch(logits, plan)


def sample_at_batch_rows(logits: torch.Tensor, plan: SamplingPlan, kernel: str = "torch") -> torch.Tensor:
    """``sample`` of the plan's rows read at ``plan.batch_rows`` of a batch's logits [M, V]: the
    same tokens as ``sample(logits[batch_rows], plan)``. The Triton kernels read the rows in
    place when none has top-k / top-p (no gathered copy: two fewer launches per step)."""
    if not plan.indexed and plan.num_rows:
        raise ValueError("sample_at_batch_rows needs a plan made with batch_rows")
    _check_kernel(kernel)
    if kernel == "triton" and not plan.any_filtered and logits.shape[1] == plan.vocab_size:
        return sample_unfiltered(logits, plan, at_batch_rows=True)
    return sample(logits.index_select(0, plan.batch_rows), plan, kernel)


def write_at_batch_rows(target: torch.Tensor, values: torch.Tensor, plan: SamplingPlan, kernel: str = "torch") -> None:
    """``target[plan.batch_rows] = values`` (cast to ``target``'s dtype): a step's sampled rows
    put into the batch's token ids (none where a plan that ``skips_rows`` holds -1)."""
    _check_kernel(kernel)
    if kernel == "triton" and target.dim() == 1 and target.is_contiguous():
        write_kernel(target, values, plan)
    elif plan.skips_rows:  # row i is batch row i: no indexed write (no -1 index either)
        target.copy_(torch.where(plan.batch_rows >= 0, values.to(target.dtype), target))
    else:
        target[plan.batch_rows] = values.to(target.dtype)


def _check_kernel(kernel: str) -> None:
    if kernel not in SAMPLING_KERNELS:
        raise ValueError(f"sampling kernel must be one of {SAMPLING_KERNELS}, got {kernel!r}")


def _sample_torch(logits: torch.Tensor, plan: SamplingPlan, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Tokens of every row, or of ``rows`` only (ascending indices, every top-k / top-p row among
    them): then only those rows' logits are scaled, filtered and searched."""
    fields = _RowFields.of(plan, rows)
    if rows is not None:
        logits = logits.index_select(0, rows)
    greedy_ids = torch.argmax(logits, dim=-1)
    if plan.all_greedy:
        return greedy_ids

    scaled = torch.div(logits.float(), fields.temperature[:, None])  # s: a new tensor, updated in place
    scaled.sub_(scaled.amax(dim=-1, keepdim=True))
    rel = scaled.exp()
    if plan.max_top_k:
        rel = _on_rows(rel, fields.top_k_rows, lambda r: _top_k_filter(r, plan.top_k, plan.max_top_k))
    if fields.top_p_rows.numel():
        rel = _on_rows(rel, fields.top_p_rows, lambda r: _top_p_filter(r, plan.top_p))
    if plan.any_min_p:
        rel.mul_(rel >= fields.min_p[:, None])
    # Filtered tokens have r = 0. So do tokens with s below -87 (float32's exp underflows), which
    # the Triton kernels keep: neither kind can win, as no token's noise exceeds 37.
    return torch.where(fields.greedy, greedy_ids, _gumbel_argmax(scaled, rel > 0, fields.draw_key))


@dataclasses.dataclass
class _RowFields:
    """The PyTorch path's per-row inputs, of every row of a plan or of some of its rows."""

    temperature: torch.Tensor
    min_p: torch.Tensor
    greedy: torch.Tensor
    draw_key: torch.Tensor
    top_k_rows: torch.Tensor  # indices among the rows taken
    top_p_rows: torch.Tensor

    @classmethod
    def of(cls, plan: SamplingPlan, rows: torch.Tensor | None) -> "_RowFields":
        per_row = (plan.temperature, plan.min_p, plan.greedy, plan.draw_key)
        if rows is None:
            return cls(*per_row, plan.top_k_rows, plan.top_p_rows)
        # A filtered row's place among ``rows`` (ascending, so a binary search finds it).
        return cls(*(values.index_select(0, rows) for values in per_row),
                   torch.searchsorted(rows, plan.top_k_rows), torch.searchsorted(rows, plan.top_p_rows))


def _gumbel_argmax(scaled: torch.Tensor, kept: torch.Tensor, draw_key: torch.Tensor) -> torch.Tensor:
    """argmax of s - log(-log(u)) over kept tokens, a block of rows at a time (the float64 and
    int64 temporaries of a verification pass's rows would take gigabytes at once)."""
    n, vocab = scaled.shape
    block = max(1, _NOISE_ELEMENTS // vocab)
    out = torch.empty(n, dtype=torch.int64, device=scaled.device)
    for start in range(0, n, block):
        end = min(n, start + block)
        noise = token_uniforms(draw_key[start:end], vocab).log_().neg_().log_()  # -Gumbel noise
        score = scaled[start:end].to(torch.float64).sub_(noise).masked_fill_(~kept[start:end], -math.inf)
        out[start:end] = score.argmax(dim=-1)
    return out


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
