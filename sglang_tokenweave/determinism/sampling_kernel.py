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

from . import row_table, sampling
from .sampling import SamplingPlan

_BLOCK = 1024
_CHUNK = 2048  # tokens per program of the split strategy
SPLIT_ABOVE = 8 * _BLOCK  # vocabularies larger than this take the split strategy
_WEIGHT_SCALE = tl.constexpr(4294967296.0)  # 2**32, as in sampling._WEIGHT_SCALE
# Offsets of the per-row fields in SamplingPlan.fields, in units of the plan's rows.
_UNIFORM = tl.constexpr(sampling.UNIFORM)
_TEMPERATURE = tl.constexpr(sampling.TEMPERATURE)
_MIN_P = tl.constexpr(sampling.MIN_P)
_GREEDY = tl.constexpr(sampling.GREEDY)
_BATCH_ROWS = tl.constexpr(sampling.BATCH_ROWS)
_FILTERED = tl.constexpr(sampling.FILTERED)
# Columns of row_table.RowTable.values.
_COLUMNS = tl.constexpr(row_table.COLUMNS)
_ACTIVE = tl.constexpr(row_table.ACTIVE)
_IS_GREEDY = tl.constexpr(row_table.IS_GREEDY)
_SEED_KEY = tl.constexpr(row_table.SEED_KEY)
_TEMPERATURE_BITS = tl.constexpr(row_table.TEMPERATURE_BITS)
_MIN_P_BITS = tl.constexpr(row_table.MIN_P_BITS)
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

    # Pass 2: the total integer weight.
    min_p = _field(fields_ptr, _MIN_P, rows, row).to(tl.float32)
    total = tl.full((), 0, tl.int64)
    for start in range(0, vocab, BLOCK):
        index = start + offs
        x = tl.load(base + index, mask=index < vocab, other=float("-inf")).to(tl.float32)
        total += tl.sum(_weights(x, temperature, rel_max, min_p), axis=0)

    # Pass 3: the first index whose running weight exceeds the target is the number of indices
    # whose running weight does not (running sums never fall; padding adds nothing past the end).
    target = tl.floor(_field(fields_ptr, _UNIFORM, rows, row) * total.to(tl.float64)).to(tl.int64)
    target = tl.minimum(target, total - 1)
    running = tl.full((), 0, tl.int64)
    chosen = tl.full((), 0, tl.int64)
    for start in range(0, vocab, BLOCK):
        index = start + offs
        x = tl.load(base + index, mask=index < vocab, other=float("-inf")).to(tl.float32)
        w = _weights(x, temperature, rel_max, min_p)
        chosen += tl.sum((tl.cumsum(w, axis=0) + running <= target).to(tl.int64), axis=0)
        running += tl.sum(w, axis=0)

    greedy = _field(fields_ptr, _GREEDY, rows, row) != 0
    tl.store(out_ptr + row, tl.where(greedy, best_index, chosen))


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


@triton.jit
def _row_rel_max(rel_max_ptr, row, chunks, MAX_CHUNKS: tl.constexpr):
    offs = tl.arange(0, MAX_CHUNKS)
    return tl.max(tl.load(rel_max_ptr + row * chunks + offs, mask=offs < chunks, other=float("-inf")), axis=0)


@triton.jit(do_not_specialize=["rows"])
def _chunk_total_kernel(logits_ptr, row_stride, vocab, fields_ptr, rows, rel_max_ptr, total_ptr,
                        chunks, CHUNK: tl.constexpr, MAX_CHUNKS: tl.constexpr, INDEXED: tl.constexpr):
    """Per (row, chunk): the chunk's total integer weight."""
    row, chunk = tl.program_id(0), tl.program_id(1)
    rel_max = _row_rel_max(rel_max_ptr, row, chunks, MAX_CHUNKS)
    index = chunk * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(_logits_row(logits_ptr, row_stride, fields_ptr, rows, row, INDEXED) + index, mask=index < vocab,
                other=float("-inf")).to(tl.float32)
    w = _weights(x, _field(fields_ptr, _TEMPERATURE, rows, row).to(tl.float32), rel_max,
                 _field(fields_ptr, _MIN_P, rows, row).to(tl.float32))
    tl.store(total_ptr + row * chunks + chunk, tl.sum(w, axis=0))


@triton.jit(do_not_specialize=["rows"])
def _chunk_search_kernel(logits_ptr, row_stride, vocab, fields_ptr, rows,
                         best_ptr, best_index_ptr, rel_max_ptr, total_ptr, out_ptr, chunks,
                         CHUNK: tl.constexpr, MAX_CHUNKS: tl.constexpr, INDEXED: tl.constexpr):
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
    target = tl.floor(_field(fields_ptr, _UNIFORM, rows, row) * total.to(tl.float64)).to(tl.int64)
    target = tl.minimum(target, total - 1)
    # The first chunk whose running weight exceeds the target, and the weight before it.
    chunk = tl.sum((running <= target).to(tl.int64), axis=0)
    before = tl.sum(tl.where(offs.to(tl.int64) < chunk, totals, 0), axis=0)

    rel_max = _row_rel_max(rel_max_ptr, row, chunks, MAX_CHUNKS)
    index = chunk * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(_logits_row(logits_ptr, row_stride, fields_ptr, rows, row, INDEXED) + index, mask=index < vocab,
                other=float("-inf")).to(tl.float32)
    w = _weights(x, _field(fields_ptr, _TEMPERATURE, rows, row).to(tl.float32), rel_max,
                 _field(fields_ptr, _MIN_P, rows, row).to(tl.float32))
    chosen = chunk * CHUNK + tl.sum((tl.cumsum(w, axis=0) + before <= target).to(tl.int64), axis=0)

    greedy = _field(fields_ptr, _GREEDY, rows, row) != 0
    tl.store(out_ptr + row, tl.where(greedy, best_index, chosen))


@triton.jit(do_not_specialize=["rows"])
def _write_at_batch_rows_kernel(values_ptr, fields_ptr, rows, out_ptr, BLOCK: tl.constexpr):
    """out[batch_rows[i]] = values[i], cast to out's dtype, where batch_rows[i] >= 0."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = i < rows
    at = tl.load(fields_ptr + _BATCH_ROWS * rows + i, mask=inside, other=-1).to(tl.int64)
    values = tl.load(values_ptr + i, mask=inside)
    tl.store(out_ptr + at, values.to(out_ptr.dtype.element_ty), mask=at >= 0)


@triton.jit
def _mix64(x):
    """seeds.mix64 on uint64 (wrapping products, logical shifts)."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    return x ^ (x >> 31)


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
    # The key of (seed, position + 1), as seeds.position_keys: golden-ratio step, then mix64.
    position = tl.load(positions_ptr + i, mask=inside, other=0).to(tl.int64) + 1
    key = _table_column(entry, _SEED_KEY, inside).to(tl.uint64, bitcast=True)
    key = _mix64(key + position.to(tl.uint64, bitcast=True) * 0x9E3779B97F4A7C15)
    uniform = (key >> 11).to(tl.float64) * (1.0 / 9007199254740992.0)  # 53 bits / 2**53
    temperature = tl.where(active, _float32_column(entry, _TEMPERATURE_BITS, inside), 1.0)
    min_p = tl.where(active, _float32_column(entry, _MIN_P_BITS, inside), 0.0)
    batch_row = tl.where(active, i.to(tl.float64), -1.0)
    tl.store(fields_ptr + _UNIFORM * rows + i, uniform, mask=inside)
    tl.store(fields_ptr + _TEMPERATURE * rows + i, temperature, mask=inside)
    tl.store(fields_ptr + _MIN_P * rows + i, min_p, mask=inside)
    tl.store(fields_ptr + _GREEDY * rows + i, greedy.to(tl.float64), mask=inside)
    tl.store(fields_ptr + _FILTERED * rows + i, tl.zeros_like(uniform), mask=inside)
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
    ints = torch.empty(2, rows, chunks, dtype=torch.int64, device=logits.device)  # argmax, total weight
    _chunk_max_kernel[(rows, chunks)](*common, floats[0], ints[0], floats[1], chunks, CHUNK=_CHUNK, INDEXED=indexed)
    _chunk_total_kernel[(rows, chunks)](*common, floats[1], ints[1], chunks, CHUNK=_CHUNK, MAX_CHUNKS=max_chunks,
                                        INDEXED=indexed)
    _chunk_search_kernel[(rows,)](*common, floats[0], ints[0], floats[1], ints[1], out, chunks, CHUNK=_CHUNK,
                                  MAX_CHUNKS=max_chunks, INDEXED=indexed)
    return out
