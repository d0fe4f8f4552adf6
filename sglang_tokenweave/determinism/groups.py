"""Packing requests that are ready for verification into passes of fixed shape B rows x W tokens.

Every verification pass has the same shape whatever the load: exactly ``rows`` rows of exactly
``window`` token slots. That is what makes the verifier's numerics (kernel choice, reduction
splits) independent of traffic, so a request's committed tokens depend on its own content only.

Rules (the passes are a function of the set of ready requests alone):
- A request's replay may span several blocks (lookahead): it takes one row per block, and all
  of its rows go in the same pass.
- Selection: ready requests are taken oldest first (ascending ``key``, the request's arrival
  number, unique); a request whose rows do not fit in the current pass opens the next one, so
  no request waits behind newer ones.
- Layout inside a pass: full rows (``num_tokens == window``) first, then partial rows
  (``num_tokens < window``), each in ascending (key, part); then dummy rows up to ``rows``.
- Row r occupies token slots ``[r * window, (r + 1) * window)``: its real tokens first, then
  padding.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional


@dataclasses.dataclass(frozen=True)
class ReadyRequest:
    key: int  # arrival number: unique, and orders requests oldest first
    num_tokens: int  # the replay's inputs, from its block's start: one row per ``window`` of them

    def row_lengths(self, window: int) -> list[int]:
        full, rest = divmod(self.num_tokens, window)
        return [window] * full + ([rest] if rest else [])


@dataclasses.dataclass(frozen=True)
class VerifyRow:
    key: Optional[int]  # None for a dummy row
    num_tokens: int  # real tokens; 0 for a dummy row
    window: int
    part: int = 0  # which of its request's rows (blocks), in order

    @property
    def kind(self) -> str:
        if self.key is None:
            return "dummy"
        return "full" if self.num_tokens == self.window else "partial"

    @property
    def num_padding(self) -> int:
        return self.window - self.num_tokens


@dataclasses.dataclass(frozen=True)
class VerifyPass:
    rows: tuple[VerifyRow, ...]
    window: int

    @property
    def num_slots(self) -> int:
        return len(self.rows) * self.window

    @property
    def num_real_rows(self) -> int:
        return sum(row.key is not None for row in self.rows)

    def real_slots(self, row_index: int) -> range:
        """Flat token slots holding row ``row_index``'s real tokens."""
        start = row_index * self.window
        return range(start, start + self.rows[row_index].num_tokens)

    def real_slot_mask(self) -> list[bool]:
        """One flag per token slot: True for a real token, False for padding or dummy."""
        return [i < row.num_tokens for row in self.rows for i in range(self.window)]


def plan_verify_passes(
    ready: Iterable[ReadyRequest], rows: int, window: int, max_passes: Optional[int] = None
) -> list[VerifyPass]:
    """Passes for the ready requests (the oldest ``max_passes * rows`` when limited)."""
    if rows < 1 or window < 1:
        raise ValueError(f"rows and window must be >= 1, got rows={rows}, window={window}")
    ordered = sorted(ready, key=lambda r: r.key)
    for a, b in zip(ordered, ordered[1:]):
        if a.key == b.key:
            raise ValueError(f"request key {a.key} is ready twice")
    for r in ordered:
        if not 1 <= r.num_tokens <= rows * window:
            raise ValueError(f"request {r.key} has {r.num_tokens} tokens to verify; a pass holds "
                             f"{rows} rows of {window}")
    groups: list[list[VerifyRow]] = []
    for r in ordered:
        request_rows = [VerifyRow(r.key, n, window, part) for part, n in enumerate(r.row_lengths(window))]
        if not groups or len(groups[-1]) + len(request_rows) > rows:
            if max_passes is not None and len(groups) == max_passes:
                break
            groups.append([])
        groups[-1].extend(request_rows)
    passes = []
    for chosen in groups:
        full = [row for row in chosen if row.num_tokens == window]
        partial = [row for row in chosen if row.num_tokens < window]
        layout = full + partial
        layout += [VerifyRow(None, 0, window)] * (rows - len(layout))
        passes.append(VerifyPass(tuple(layout), window))
    return passes
