"""The token-split plan of one forward pass.

A batch of T token rows (extend/prefill requests laid out one after another, then any padding
rows) is either run whole or cut once into two splits, A = rows [0, cut) and B = rows
[cut, T), so that one split's communication overlaps the other's attention and MLP. The cut
is at token granularity: a request may straddle it, and then its part in B attends to its
part in A as if that part were already-cached prefix.

The plan is a pure function of plain integers that every tensor-parallel rank holds
identically (the batch's lengths, the tuned offset, the world size), so every rank computes
the same plan and the fused kernel's cross-rank barriers line up. It is made once per forward
("plan"), and the layers only read it ("run").

Row ownership. The fused all-reduce + residual + RMSNorm kernel is token-sharded: within each
split, every rank owns a contiguous, balanced share of the split's rows
(``comm.sharding.owned_rows``; the fused op must use the same rule). The residual stream is only kept on owned rows,
so ownership must be the same in every layer, which it is because the plan is fixed for the
whole forward. The cut is a multiple of ``align`` (itself a multiple of W), so every rank owns
exactly the same number of split A's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from sglang_tokenweave.comm.sharding import owned_rows

# Split A's length is a multiple of this: the row-tile height of the large GEMMs, so A's GEMMs
# run no partly filled tile. It is also a multiple of world sizes 2, 4 and 8; other world sizes
# align to the least common multiple (``split_align``).
DEFAULT_ALIGN = 128


def split_align(world_size: int) -> int:
    """The default alignment of the cut for ``world_size`` ranks: a multiple of both the GEMM
    tile height and W, so split A fills whole tiles and splits evenly across ranks (W = 3: 384)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return math.lcm(DEFAULT_ALIGN, world_size)


@dataclass(frozen=True)
class Piece:
    """The part of one request's extend tokens that falls into one split."""

    request: int  # index of the request in batch order
    start: int  # first token of the piece within the request's extend part
    length: int
    prefix_len: int  # tokens of this request already in the KV cache when the piece runs
    token_start: int  # row of the piece's first token in the whole batch

    @property
    def seq_len(self) -> int:
        """KV length after this piece: what attention's ``seq_lens`` must say for it."""
        return self.prefix_len + self.length

    @property
    def position_start(self) -> int:
        """Absolute position of the piece's first token (positions run consecutively)."""
        return self.prefix_len

    @property
    def token_end(self) -> int:
        return self.token_start + self.length


@dataclass(frozen=True)
class Split:
    """A contiguous range of batch rows and the request pieces whose tokens lie in it.

    Rows past the last piece (if any) are padding rows of the batch: they belong to no request
    and attention must not see them.
    """

    token_start: int
    token_end: int
    pieces: tuple[Piece, ...]
    world_size: int

    @property
    def num_tokens(self) -> int:
        return self.token_end - self.token_start

    @property
    def token_slice(self) -> slice:
        """Rows of this split in batch-wide per-token tensors (input_ids, positions,
        out_cache_loc, hidden states)."""
        return slice(self.token_start, self.token_end)

    @property
    def num_real_tokens(self) -> int:
        return sum(p.length for p in self.pieces)

    @property
    def request_start(self) -> int:
        return self.pieces[0].request if self.pieces else 0

    @property
    def request_end(self) -> int:
        return self.pieces[-1].request + 1 if self.pieces else 0

    @property
    def request_slice(self) -> slice:
        """Rows of this split in batch-wide per-request tensors (req_pool_indices)."""
        return slice(self.request_start, self.request_end)

    @property
    def batch_size(self) -> int:
        return len(self.pieces)

    @property
    def seq_lens(self) -> tuple[int, ...]:
        return tuple(p.seq_len for p in self.pieces)

    @property
    def extend_prefix_lens(self) -> tuple[int, ...]:
        return tuple(p.prefix_len for p in self.pieces)

    @property
    def extend_seq_lens(self) -> tuple[int, ...]:
        return tuple(p.length for p in self.pieces)

    @property
    def extend_start_loc(self) -> tuple[int, ...]:
        """Each piece's first row, counted from the start of this split."""
        return tuple(p.token_start - self.token_start for p in self.pieces)

    def owned_rows(self, rank: int) -> tuple[int, int]:
        """[start, end) of the rows ``rank`` reduces, normalises and keeps the residual of,
        counted from the start of this split."""
        return owned_rows(self.num_tokens, self.world_size, rank)


@dataclass(frozen=True)
class SplitPlan:
    """The plan of one forward (``plan_forward``): ``splits`` cover the batch's rows
    ``[0, num_tokens)`` in order, without gaps or overlap. Immutable and the same on every rank:
    made once per forward, then only read by the layers."""

    num_tokens: int
    world_size: int
    splits: tuple[Split, ...]  # one split (run whole) or two (A, B)

    @property
    def is_split(self) -> bool:
        return len(self.splits) == 2

    @property
    def cut(self) -> Optional[int]:
        return self.splits[1].token_start if self.is_split else None



def plan_forward(
    extend_lens: Sequence[int],
    prefix_lens: Sequence[int],
    *,
    world_size: int,
    threshold: Optional[int],
    split_offset: int = 0,
    align: Optional[int] = None,
    num_tokens: Optional[int] = None,
) -> SplitPlan:
    """Decide whether and where to cut this forward's tokens.

    Args:
        extend_lens: new tokens of each request, in batch order (each >= 1).
        prefix_lens: tokens of each request already in the KV cache, in batch order.
        world_size: tensor-parallel ranks sharing the fused kernel.
        threshold: split only when the batch has at least this many rows; None never splits.
        split_offset: rows added to T // 2 before rounding the cut to ``align`` (tuned per
            GPU, model shape, TP and bucket; may be negative).
        align: the cut is a multiple of this; must be a multiple of ``world_size``. None (the
            default): ``split_align(world_size)``, valid for every world size.
        num_tokens: rows of the batch, when it is padded past the last request's tokens;
            defaults to the sum of ``extend_lens``.

    Returns:
        A ``SplitPlan`` of ``num_tokens`` rows: two splits (``is_split``, cut at ``cut``) or one
        (the batch runs whole: below ``threshold``, or too small to cut). Each split's pieces
        give attention its per-request view and ``Split.owned_rows`` the fused op's row shares.

    Raises:
        ValueError: an input out of range (the message names it).
    """
    extend_lens = [int(n) for n in extend_lens]
    prefix_lens = [int(n) for n in prefix_lens]
    if align is None and world_size >= 1:
        align = split_align(world_size)
    _check_inputs(extend_lens, prefix_lens, world_size, threshold, align)
    real_tokens = sum(extend_lens)
    if num_tokens is None:
        num_tokens = real_tokens
    if num_tokens < real_tokens:
        raise ValueError(
            f"num_tokens {num_tokens} is less than the requests' {real_tokens} tokens"
        )

    cut = _choose_cut(num_tokens, real_tokens, threshold, split_offset, align)
    bounds = [(0, num_tokens)] if cut is None else [(0, cut), (cut, num_tokens)]
    splits = tuple(
        Split(
            token_start=start,
            token_end=end,
            pieces=_pieces_in(start, end, extend_lens, prefix_lens),
            world_size=world_size,
        )
        for start, end in bounds
    )
    return SplitPlan(num_tokens=num_tokens, world_size=world_size, splits=splits)


def _check_inputs(extend_lens, prefix_lens, world_size, threshold, align) -> None:
    if len(extend_lens) != len(prefix_lens):
        raise ValueError(
            f"{len(extend_lens)} extend lengths but {len(prefix_lens)} prefix lengths"
        )
    for i, n in enumerate(extend_lens):
        if n < 1:
            raise ValueError(f"extend length of request {i} is {n}; must be >= 1")
    for i, n in enumerate(prefix_lens):
        if n < 0:
            raise ValueError(f"prefix length of request {i} is {n}; must be >= 0")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if align is None or align < 1 or align % world_size:
        raise ValueError(
            f"align must be a positive multiple of world_size {world_size}, got {align}"
        )
    if threshold is not None and threshold < 0:
        raise ValueError(f"threshold must be >= 0 or None, got {threshold}")


def _choose_cut(num_tokens, real_tokens, threshold, split_offset, align) -> Optional[int]:
    """The first row of split B, or None to run the batch whole."""
    if threshold is None or num_tokens < threshold:
        return None
    # Both splits need work: A at least one aligned block, B at least one real token
    # (B, not A, takes any padding rows at the end of the batch).
    lowest = align
    highest = (real_tokens - 1) // align * align
    if highest < lowest:
        return None
    target = num_tokens // 2 + split_offset
    nearest = (target + align // 2) // align * align
    return min(max(nearest, lowest), highest)


def _pieces_in(start, end, extend_lens, prefix_lens) -> tuple[Piece, ...]:
    """The pieces of requests whose tokens intersect rows [start, end)."""
    pieces = []
    offset = 0
    for request, (length, prefix) in enumerate(zip(extend_lens, prefix_lens)):
        lo, hi = max(start, offset), min(end, offset + length)
        if lo < hi:
            # Tokens of this request before row `lo` (in an earlier split) are written to
            # the KV cache before this piece's attention runs, so they count as prefix.
            done = lo - offset
            pieces.append(
                Piece(
                    request=request,
                    start=done,
                    length=hi - lo,
                    prefix_len=prefix + done,
                    token_start=lo,
                )
            )
        offset += length
        if offset >= end:
            break
    return tuple(pieces)
