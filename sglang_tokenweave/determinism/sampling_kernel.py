"""``sampling.sample`` for rows without top-k / top-p, as Triton kernels.

The PyTorch path launches about 25 small kernels per call; on a fast-path decode step that is
host time the whole batch waits for. Here one program samples one row, in two passes over its
vocabulary (max; then each token's score s - log(-log(u)) and their argmax), so a row's token
depends on that row alone, as in the PyTorch path. The arithmetic is the same (float32 s, the
uniforms of ``seeds.token_uniform`` from the same 64-bit integer steps, float64 scores, the
lowest index on ties), except that exp and log are Triton's: they can differ from PyTorch's in
the last bit, which changes a token only where two scores tie to that bit (or where a token's
exp sits on the min_p bound). A server samples every deterministic row with the same kernel
(fast path and verifier alike), so its outputs stay reproducible; switching kernels is a change
of numerics, like any other flag.

Large vocabularies: one program walking a 151,936-token row three times took about 470 us on an
H100. Above ``SPLIT_ABOVE`` tokens the same passes run as three kernels over chunks of the row
(one program per row and chunk, then one per row to reduce): per chunk its max, its argmax and
its max of s; then per chunk its best score and where it is; the row's picks are reductions of
those partials (maxes, lowest index on ties: exact in any order). Every score is computed by the
same ``_scores`` from the same inputs, so both strategies return the same tokens.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import sampling_plan, seeds
from .sampling_plan import SamplingPlan

_BLOCK = 1024
_CHUNK = 2048  # tokens per program of the split strategy
SPLIT_ABOVE = 8 * _BLOCK  # vocabularies larger than this take the split strategy
# As seeds.mix64, seeds.draw_keys and seeds.token_uniform: the mixer's multipliers, the
# golden-ratio step, the draw key's bits, and a token's uniform (bits + 0.5) / 2**TOKEN_BITS.
_MIX_MUL1 = tl.constexpr(seeds.MIX_MUL1)
_MIX_MUL2 = tl.constexpr(seeds.MIX_MUL2)
_GOLDEN = tl.constexpr(seeds.GOLDEN)
_DRAW_KEY_SHIFT = tl.constexpr(seeds.DRAW_KEY_SHIFT)
_TOKEN_SHIFT = tl.constexpr(64 - seeds.TOKEN_BITS)
_TOKEN_SCALE = tl.constexpr(1.0 / (1 << seeds.TOKEN_BITS))
# Offsets of the per-row fields in SamplingPlan.fields, in units of the plan's rows.
_DRAW_KEY = tl.constexpr(sampling_plan.DRAW_KEY)
_TEMPERATURE = tl.constexpr(sampling_plan.TEMPERATURE)
_MIN_P = tl.constexpr(sampling_plan.MIN_P)
_GREEDY = tl.constexpr(sampling_plan.GREEDY)
_BATCH_ROWS = tl.constexpr(sampling_plan.BATCH_ROWS)
# Columns of row_table.RowTable.values.
_COLUMNS = tl.constexpr(sampling_plan.COLUMNS)
_ACTIVE = tl.constexpr(sampling_plan.ACTIVE)
_IS_GREEDY = tl.constexpr(sampling_plan.IS_GREEDY)
_SEED_KEY = tl.constexpr(sampling_plan.SEED_KEY)
_TEMPERATURE_BITS = tl.constexpr(sampling_plan.TEMPERATURE_BITS)
_MIN_P_BITS = tl.constexpr(sampling_plan.MIN_P_BITS)
# The kernels take the number of rows (``rows``) unspecialised: Triton would compile another
# kernel for one row, mid-serving, the first time a step has a single deterministic row.


@triton.jit
def _field(fields_ptr, field, rows, row):
    """A row's value of a per-row field of the plan (float64)."""
    return tl.load(fields_ptr + field * rows + row)


@triton.jit
def _logits_row(logits_ptr, row_stride, fields_ptr, rows, row, INDEXED: tl.constexpr):
    """Pointer to the row's logits: the plan's row itself, or its batch row (INDEXED)."""
    at = row.to(tl.int64)
    if INDEXED:
        at = _field(fields_ptr, _BATCH_ROWS, rows, row).to(tl.int64)
    return logits_ptr + at * row_stride


@triton.jit
def _mix64(x):
    """seeds.mix64 on uint64 (wrapping products, logical shifts)."""
    x = (x ^ (x >> 30)) * _MIX_MUL1
    x = (x ^ (x >> 27)) * _MIX_MUL2
    return x ^ (x >> 31)


@triton.jit
def _scores(x, index, temperature, rel_max, min_p, draw_key):
    """Float64 s - log(-log(u)) of tokens ``index`` with logits ``x`` (-inf where exp(s) < min_p)."""
    s = tl.div_rn(x, temperature) - rel_max
    bits = _mix64(draw_key + (index + 1).to(tl.uint64) * _GOLDEN) >> _TOKEN_SHIFT
    u = (bits.to(tl.float64) + 0.5) * _TOKEN_SCALE
    score = s.to(tl.float64) - tl.log(-tl.log(u))
    return tl.where(tl.exp(s) >= min_p, score, float("-inf"))


@triton.jit
def _draw_key(fields_ptr, rows, row):
    return _field(fields_ptr, _DRAW_KEY, rows, row).to(tl.uint64)


@triton.jit(do_not_specialize=["rows"])
def _seeded_sample_kernel(logits_ptr, row_stride, vocab, fields_ptr, rows, out_ptr, BLOCK: tl.constexpr,
                          INDEXED: tl.constexpr):
    row = tl.program_id(0)
    base = _logits_row(logits_ptr, row_stride, fields_ptr, rows, row, INDEXED)
    offs = tl.arange(0, BLOCK)
    temperature = _field(fields_ptr, _TEMPERATURE, rows, row).to(tl.float32)

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

    # Pass 2 (sampled rows): the argmax of the scores, lowest index on ties as above.
    chosen = best_index
    if _field(fields_ptr, _GREEDY, rows, row) == 0:
        min_p = _field(fields_ptr, _MIN_P, rows, row).to(tl.float32)
        draw_key = _draw_key(fields_ptr, rows, row)
        top = tl.full((), float("-inf"), tl.float64)
        for start in range(0, vocab, BLOCK):
            index = start + offs
            x = tl.load(base + index, mask=index < vocab, other=float("-inf")).to(tl.float32)
            score = _scores(x, index, temperature, rel_max, min_p, draw_key)
            block_top = tl.max(score, axis=0)
            take = block_top > top
            chosen = tl.where(take, start + tl.argmax(score, axis=0).to(tl.int64), chosen)
            top = tl.where(take, block_top, top)
    tl.store(out_ptr + row, chosen)


@triton.jit(do_not_specialize=["rows"])
def _chunk_max_kernel(logits_ptr, row_stride, vocab, fields_ptr, rows, best_ptr, best_index_ptr, rel_max_ptr,
                      chunks, CHUNK: tl.constexpr, INDEXED: tl.constexpr):
    """Per (row, chunk): the max logit, its lowest index, and the max of logits / T."""
    row, chunk = tl.program_id(0), tl.program_id(1)
    index = chunk * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(_logits_row(logits_ptr, row_stride, fields_ptr, rows, row, INDEXED) + index, mask=index < vocab,
                other=float("-inf")).to(tl.float32)
    temperature = _field(fields_ptr, _TEMPERATURE, rows, row).to(tl.float32)
    at = row * chunks + chunk
    tl.store(best_ptr + at, tl.max(x, axis=0))
    tl.store(best_index_ptr + at, chunk * CHUNK + tl.argmax(x, axis=0).to(tl.int64))
    tl.store(rel_max_ptr + at, tl.max(tl.div_rn(x, temperature), axis=0))


@triton.jit(do_not_specialize=["rows"])
def _chunk_score_kernel(logits_ptr, row_stride, vocab, fields_ptr, rows, rel_max_ptr, top_ptr, top_index_ptr,
                        chunks, CHUNK: tl.constexpr, MAX_CHUNKS: tl.constexpr, INDEXED: tl.constexpr):
    """Per (row, chunk) of a sampled row: the chunk's best score and its lowest index."""
    row, chunk = tl.program_id(0), tl.program_id(1)
    if _field(fields_ptr, _GREEDY, rows, row) == 0:
        offs = tl.arange(0, MAX_CHUNKS)
        rel_max = tl.max(tl.load(rel_max_ptr + row * chunks + offs, mask=offs < chunks, other=float("-inf")),
                         axis=0)
        index = chunk * CHUNK + tl.arange(0, CHUNK)
        x = tl.load(_logits_row(logits_ptr, row_stride, fields_ptr, rows, row, INDEXED) + index,
                    mask=index < vocab, other=float("-inf")).to(tl.float32)
        score = _scores(x, index, _field(fields_ptr, _TEMPERATURE, rows, row).to(tl.float32), rel_max,
                        _field(fields_ptr, _MIN_P, rows, row).to(tl.float32), _draw_key(fields_ptr, rows, row))
        at = row * chunks + chunk
        tl.store(top_ptr + at, tl.max(score, axis=0))
        tl.store(top_index_ptr + at, chunk * CHUNK + tl.argmax(score, axis=0).to(tl.int64))


@triton.jit
def _first_of_max(values, indices, valid, none):
    """The lowest index among the partials equal to the max (chunks are in order)."""
    top = tl.max(values, axis=0)
    return tl.min(tl.where(valid & (values == top), indices, none), axis=0)


@triton.jit(do_not_specialize=["rows"])
def _chunk_pick_kernel(fields_ptr, rows, best_ptr, best_index_ptr, top_ptr, top_index_ptr, out_ptr, vocab, chunks,
                       MAX_CHUNKS: tl.constexpr):
    """Per row: the greedy token, or the sampled one, from the chunks' partials."""
    row = tl.program_id(0)
    offs = tl.arange(0, MAX_CHUNKS)
    valid = offs < chunks
    at = row * chunks + offs
    if _field(fields_ptr, _GREEDY, rows, row) != 0:  # float32 maxima, widened to the scores' type
        values = tl.load(best_ptr + at, mask=valid, other=float("-inf")).to(tl.float64)
        indices = tl.load(best_index_ptr + at, mask=valid, other=0)
    else:
        values = tl.load(top_ptr + at, mask=valid, other=float("-inf"))
        indices = tl.load(top_index_ptr + at, mask=valid, other=0)
    tl.store(out_ptr + row, _first_of_max(values, indices, valid, vocab))


@triton.jit(do_not_specialize=["rows"])
def _write_at_batch_rows_kernel(values_ptr, fields_ptr, rows, out_ptr, BLOCK: tl.constexpr):
    """out[batch_rows[i]] = values[i], cast to out's dtype, where batch_rows[i] >= 0."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = i < rows
    at = tl.load(fields_ptr + _BATCH_ROWS * rows + i, mask=inside, other=-1).to(tl.int64)
    values = tl.load(values_ptr + i, mask=inside)
    tl.store(out_ptr + at, values.to(out_ptr.dtype.element_ty), mask=at >= 0)


@triton.jit
def _table_column(entry, column, inside):
    return tl.load(entry + column, mask=inside, other=0)


@triton.jit
def _float32_column(entry, column, inside):
    return _table_column(entry, column, inside).to(tl.int32).to(tl.float32, bitcast=True).to(tl.float64)


@triton.jit(do_not_specialize=["rows"])
def _plan_from_table_kernel(table_ptr, request_rows_ptr, positions_ptr, fields_ptr, rows, BLOCK: tl.constexpr):
    """A plan's fields for batch rows i: see row_table.RowTable.plan (its PyTorch path is the reference)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = i < rows
    entry = table_ptr + tl.load(request_rows_ptr + i, mask=inside, other=0).to(tl.int64) * _COLUMNS
    active = _table_column(entry, _ACTIVE, inside) != 0
    greedy = (_table_column(entry, _IS_GREEDY, inside) != 0) | (active == 0)
    # The draw key of (seed, position + 1), as seeds.draw_keys: golden-ratio step, mix64, top bits.
    position = tl.load(positions_ptr + i, mask=inside, other=0).to(tl.int64) + 1
    key = _table_column(entry, _SEED_KEY, inside).to(tl.uint64, bitcast=True)
    draw_key = (_mix64(key + position.to(tl.uint64, bitcast=True) * _GOLDEN) >> _DRAW_KEY_SHIFT).to(tl.float64)
    temperature = tl.where(active, _float32_column(entry, _TEMPERATURE_BITS, inside), 1.0)
    min_p = tl.where(active, _float32_column(entry, _MIN_P_BITS, inside), 0.0)
    batch_row = tl.where(active, i.to(tl.float64), -1.0)
    tl.store(fields_ptr + _DRAW_KEY * rows + i, draw_key, mask=inside)
    tl.store(fields_ptr + _TEMPERATURE * rows + i, temperature, mask=inside)
    tl.store(fields_ptr + _MIN_P * rows + i, min_p, mask=inside)
    tl.store(fields_ptr + _GREEDY * rows + i, greedy.to(tl.float64), mask=inside)
    tl.store(fields_ptr + _BATCH_ROWS * rows + i, batch_row, mask=inside)


def plan_fields_from_table(table: torch.Tensor, request_rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``SamplingPlan.fields`` of a decode step whose batch rows hold ``request_rows`` of the row
    table and input tokens at ``positions`` (row_table.RowTable.plan), in one launch."""
    rows = request_rows.shape[0]
    fields = torch.empty((_BATCH_ROWS + 1) * rows, dtype=torch.float64, device=table.device)
    if rows:
        block = 128
        _plan_from_table_kernel[(triton.cdiv(rows, block),)](table, request_rows, positions, fields, rows,
                                                              BLOCK=block)
    return fields


def write_at_batch_rows(target: torch.Tensor, values: torch.Tensor, plan: SamplingPlan) -> None:
    """``target[plan.batch_rows] = values`` in one launch (the PyTorch way takes three: the
    index's and the values' dtype conversions, then the indexed write). The plan's batch rows
    must lie inside ``target``: the device does not check them."""
    rows = plan.num_rows
    if not plan.indexed or values.shape != (rows,) or target.dim() != 1 or target.stride(0) != 1:
        raise ValueError(f"write_at_batch_rows: {rows} plan rows (indexed: {plan.indexed}), values of "
                         f"shape {tuple(values.shape)}, target of shape {tuple(target.shape)}")
    if rows:
        block = 128
        _write_at_batch_rows_kernel[(triton.cdiv(rows, block),)](values.contiguous(), plan.fields, rows, target,
                                                                  BLOCK=block)


def sample_unfiltered(logits: torch.Tensor, plan: SamplingPlan, split: bool | None = None,
                      at_batch_rows: bool = False) -> torch.Tensor:
    """Token ids (int64 [N]) of every row as if none had top-k / top-p (the caller replaces the
    rows that have). ``logits``: [N, V], or with ``at_batch_rows`` a batch's [M, V] read at
    ``plan.batch_rows``. ``split``: the chunked strategy; default above ``SPLIT_ABOVE`` tokens."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    rows, vocab, indexed = plan.num_rows, plan.vocab_size, at_batch_rows
    if indexed and not plan.indexed:
        raise ValueError("at_batch_rows needs a plan made with batch_rows")
    if logits.shape[1] != vocab or (logits.shape[0] != rows and not indexed):
        raise ValueError(f"logits of shape {tuple(logits.shape)} for a plan of {rows} x {vocab}")
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    if not rows:
        return out
    if split is None:
        split = vocab > SPLIT_ABOVE
    common = (logits, logits.stride(0), vocab, plan.fields, rows)
    if not split:
        _seeded_sample_kernel[(rows,)](*common, out, BLOCK=_BLOCK, INDEXED=indexed)
        return out
    chunks = triton.cdiv(vocab, _CHUNK)
    max_chunks = triton.next_power_of_2(chunks)
    floats = torch.empty(2, rows, chunks, dtype=torch.float32, device=logits.device)  # max, max of x / T
    ints = torch.empty(2, rows, chunks, dtype=torch.int64, device=logits.device)  # argmax, argmax of scores
    top = torch.empty(rows, chunks, dtype=torch.float64, device=logits.device)  # best score
    _chunk_max_kernel[(rows, chunks)](*common, floats[0], ints[0], floats[1], chunks, CHUNK=_CHUNK, INDEXED=indexed)
    _chunk_score_kernel[(rows, chunks)](*common, floats[1], top, ints[1], chunks, CHUNK=_CHUNK, MAX_CHUNKS=max_chunks,
                                        INDEXED=indexed)
    _chunk_pick_kernel[(rows,)](plan.fields, rows, floats[0], ints[0], top, ints[1], out, vocab, chunks,
                                MAX_CHUNKS=max_chunks)
    return out
