"""``sampling.sample`` for rows without top-k / top-p, as Triton kernels.

The PyTorch path launches about 25 small kernels per call; on a fast-path decode step that is
host time the whole batch waits for. Here one program samples one row, in three passes over
its vocabulary (max, total weight, position of the target), so a row's token depends on that
row alone, as in the PyTorch path. The arithmetic is the same (weights round(r * 2**32) as
integers, exact integer sums, ``floor(u * total)``), except that the exponential is Triton's:
it can differ from PyTorch's in the last bit, which moves a weight by a few units in 2**32 and
changes a token only where ``u`` falls within that distance of a boundary. A server samples
every deterministic row with the same kernel (fast path and verifier alike), so its outputs
stay reproducible; switching kernels is a change of numerics, like any other flag.

Large vocabularies: one program walking a 151,936-token row three times took about 470 us on an
H100. Above ``SPLIT_ABOVE`` tokens the same passes run as three kernels over chunks of the row
(one program per row and chunk, then one per row for the search): per chunk its max, its
argmax and its total weight; the row's max and total are reductions of those partials (a max
and an integer sum: exact in any order), and the target is found in the one chunk that holds
it. Every weight is computed by the same ``_weights`` from the same inputs, so both strategies
return the same tokens.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .sampling import SamplingPlan

_BLOCK = 1024
_CHUNK = 2048  # tokens per program of the split strategy
SPLIT_ABOVE = 8 * _BLOCK  # vocabularies larger than this take the split strategy
_WEIGHT_SCALE = tl.constexpr(4294967296.0)  # 2**32, as in sampling._WEIGHT_SCALE


@triton.jit
def _weights(x, temperature, rel_max, min_p):
    """round(exp(x / T - max) * 2**32) as int64, 0 below min_p (round half to even, as torch.round)."""
    e = tl.exp(tl.div_rn(x, temperature) - rel_max)
    e = tl.where(e >= min_p, e, 0.0)
    scaled = e.to(tl.float64) * _WEIGHT_SCALE  # exact: a power of two
    low = tl.floor(scaled)
    frac = scaled - low
    whole = low.to(tl.int64)
    up = (frac > 0.5) | ((frac == 0.5) & ((whole & 1) == 1))
    return whole + up.to(tl.int64)


@triton.jit
def _seeded_sample_kernel(logits_ptr, row_stride, vocab, greedy_ptr, temperature_ptr, uniform_ptr, min_p_ptr,
                          out_ptr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * row_stride
    offs = tl.arange(0, BLOCK)
    temperature = tl.load(temperature_ptr + row)

    # Pass 1: the argmax (lowest index on ties, as torch.argmax) and the max of logits / T.
    best = tl.full((), float("-inf"), tl.float32)
    best_index = tl.full((), 0, tl.int64)
    rel_max = tl.full((), float("-inf"), tl.float32)
    for start in range(0, vocab, BLOCK):
        index = start + offs
        x = tl.load(base + index, mask=index < vocab, other=float("-inf")).to(tl.float32)
        block_max = tl.max(x, axis=0)
        take = block_max > best  # strictly: an equal max in a later block keeps the earlier index
        best_index = tl.where(take, start + tl.argmax(x, axis=0).to(tl.int64), best_index)
        best = tl.where(take, block_max, best)
        rel_max = tl.maximum(rel_max, tl.max(tl.div_rn(x, temperature), axis=0))

    # Pass 2: the total integer weight.
    min_p = tl.load(min_p_ptr + row)
    total = tl.full((), 0, tl.int64)
    for start in range(0, vocab, BLOCK):
        index = start + offs
        x = tl.load(base + index, mask=index < vocab, other=float("-inf")).to(tl.float32)
        total += tl.sum(_weights(x, temperature, rel_max, min_p), axis=0)

    # Pass 3: the first index whose running weight exceeds the target is the number of indices
    # whose running weight does not (running sums never fall; padding adds nothing past the end).
    target = tl.floor(tl.load(uniform_ptr + row) * total.to(tl.float64)).to(tl.int64)
    target = tl.minimum(target, total - 1)
    running = tl.full((), 0, tl.int64)
    chosen = tl.full((), 0, tl.int64)
    for start in range(0, vocab, BLOCK):
        index = start + offs
        x = tl.load(base + index, mask=index < vocab, other=float("-inf")).to(tl.float32)
        w = _weights(x, temperature, rel_max, min_p)
        chosen += tl.sum((tl.cumsum(w, axis=0) + running <= target).to(tl.int64), axis=0)
        running += tl.sum(w, axis=0)

    greedy = tl.load(greedy_ptr + row) != 0
    tl.store(out_ptr + row, tl.where(greedy, best_index, chosen))


@triton.jit
def _chunk_max_kernel(logits_ptr, row_stride, vocab, temperature_ptr, best_ptr, best_index_ptr, rel_max_ptr,
                      chunks, CHUNK: tl.constexpr):
    """Per (row, chunk): the max logit, its lowest index, and the max of logits / T."""
    row, chunk = tl.program_id(0), tl.program_id(1)
    index = chunk * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(logits_ptr + row.to(tl.int64) * row_stride + index, mask=index < vocab,
                other=float("-inf")).to(tl.float32)
    temperature = tl.load(temperature_ptr + row)
    at = row * chunks + chunk
    tl.store(best_ptr + at, tl.max(x, axis=0))
    tl.store(best_index_ptr + at, chunk * CHUNK + tl.argmax(x, axis=0).to(tl.int64))
    tl.store(rel_max_ptr + at, tl.max(tl.div_rn(x, temperature), axis=0))


@triton.jit
def _row_rel_max(rel_max_ptr, row, chunks, MAX_CHUNKS: tl.constexpr):
    offs = tl.arange(0, MAX_CHUNKS)
    return tl.max(tl.load(rel_max_ptr + row * chunks + offs, mask=offs < chunks, other=float("-inf")), axis=0)


@triton.jit
def _chunk_total_kernel(logits_ptr, row_stride, vocab, temperature_ptr, min_p_ptr, rel_max_ptr, total_ptr,
                        chunks, CHUNK: tl.constexpr, MAX_CHUNKS: tl.constexpr):
    """Per (row, chunk): the chunk's total integer weight."""
    row, chunk = tl.program_id(0), tl.program_id(1)
    rel_max = _row_rel_max(rel_max_ptr, row, chunks, MAX_CHUNKS)
    index = chunk * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(logits_ptr + row.to(tl.int64) * row_stride + index, mask=index < vocab,
                other=float("-inf")).to(tl.float32)
    w = _weights(x, tl.load(temperature_ptr + row), rel_max, tl.load(min_p_ptr + row))
    tl.store(total_ptr + row * chunks + chunk, tl.sum(w, axis=0))


@triton.jit
def _chunk_search_kernel(logits_ptr, row_stride, vocab, greedy_ptr, temperature_ptr, uniform_ptr, min_p_ptr,
                         best_ptr, best_index_ptr, rel_max_ptr, total_ptr, out_ptr, chunks,
                         CHUNK: tl.constexpr, MAX_CHUNKS: tl.constexpr):
    """Per row: the greedy token from the partials, or the target's chunk and then its index."""
    row = tl.program_id(0)
    offs = tl.arange(0, MAX_CHUNKS)
    valid = offs < chunks
    at = row * chunks + offs
    # Greedy: the max over chunks; on ties the first chunk's index, which is the lowest.
    best = tl.load(best_ptr + at, mask=valid, other=float("-inf"))
    best_index = tl.load(best_index_ptr + at, mask=valid, other=0)
    top = tl.max(best, axis=0)
    best_index = tl.min(tl.where(valid & (best == top), best_index, vocab), axis=0)

    totals = tl.load(total_ptr + at, mask=valid, other=0)
    running = tl.cumsum(totals, axis=0)
    total = tl.sum(totals, axis=0)
    target = tl.floor(tl.load(uniform_ptr + row) * total.to(tl.float64)).to(tl.int64)
    target = tl.minimum(target, total - 1)
    # The first chunk whose running weight exceeds the target, and the weight before it.
    chunk = tl.sum((running <= target).to(tl.int64), axis=0)
    before = tl.sum(tl.where(offs.to(tl.int64) < chunk, totals, 0), axis=0)

    rel_max = _row_rel_max(rel_max_ptr, row, chunks, MAX_CHUNKS)
    index = chunk * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(logits_ptr + row.to(tl.int64) * row_stride + index, mask=index < vocab,
                other=float("-inf")).to(tl.float32)
    w = _weights(x, tl.load(temperature_ptr + row), rel_max, tl.load(min_p_ptr + row))
    chosen = chunk * CHUNK + tl.sum((tl.cumsum(w, axis=0) + before <= target).to(tl.int64), axis=0)

    greedy = tl.load(greedy_ptr + row) != 0
    tl.store(out_ptr + row, tl.where(greedy, best_index, chosen))


def sample_unfiltered(logits: torch.Tensor, plan: SamplingPlan, split: bool | None = None) -> torch.Tensor:
    """Token ids (int64 [N]) of every row as if none had top-k / top-p (the caller replaces the
    rows that have). ``split``: the chunked strategy; default above ``SPLIT_ABOVE`` tokens."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    out = torch.empty(plan.num_rows, dtype=torch.int64, device=logits.device)
    if not plan.num_rows:
        return out
    if split is None:
        split = plan.vocab_size > SPLIT_ABOVE
    if not split:
        _seeded_sample_kernel[(plan.num_rows,)](
            logits, logits.stride(0), plan.vocab_size, plan.greedy, plan.temperature, plan.uniform, plan.min_p,
            out, BLOCK=_BLOCK)
        return out
    rows, chunks = plan.num_rows, triton.cdiv(plan.vocab_size, _CHUNK)
    max_chunks = triton.next_power_of_2(chunks)
    floats = torch.empty(2, rows, chunks, dtype=torch.float32, device=logits.device)  # max, max of x / T
    ints = torch.empty(2, rows, chunks, dtype=torch.int64, device=logits.device)  # argmax, total weight
    _chunk_max_kernel[(rows, chunks)](
        logits, logits.stride(0), plan.vocab_size, plan.temperature, floats[0], ints[0], floats[1], chunks,
        CHUNK=_CHUNK)
    _chunk_total_kernel[(rows, chunks)](
        logits, logits.stride(0), plan.vocab_size, plan.temperature, plan.min_p, floats[1], ints[1], chunks,
        CHUNK=_CHUNK, MAX_CHUNKS=max_chunks)
    _chunk_search_kernel[(rows,)](
        logits, logits.stride(0), plan.vocab_size, plan.greedy, plan.temperature, plan.uniform, plan.min_p,
        floats[0], ints[0], floats[1], ints[1], out, chunks, CHUNK=_CHUNK, MAX_CHUNKS=max_chunks)
    return out
