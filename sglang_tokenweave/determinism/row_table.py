"""The sampling parameters of decoding deterministic requests, on the device, by request row.

A fast-path decode step samples each deterministic row with its (seed, position) key and its
parameters. Planning that on the host every step (a loop over the batch for its deterministic
rows, their keys, a copy to the device) took most of the seeded sampling's host time, which the
whole batch waits for when the model is small. Here a request's parameters are written once,
when it is prefilled, at its row of SGLang's request-to-token pool; a decode step's plan is then
made on the device from the batch's request rows and positions (``plan``): no work per row on
the host, no copy. Every row of the batch is in that plan; rows of other requests are inactive
(``SamplingPlan.skips_rows``): sampled as greedy rows, never written back.

The plan holds exactly what ``plan_sampling`` would put there for the same rows (the same draw
keys, the same float32 parameters), so a row gets the same token from either plan.
Verification passes plan their rows from the table too (``plan_windows``), when it holds every
request of the pass. Rows with top-k or top-p cannot live here (those filters take the PyTorch
path, which needs the host's row lists): ``supports``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .config import SAMPLING_KERNELS
from .pinned_staging import array_to_device
from .sampling_kernel import plan_fields_from_table
from .sampling_plan import (ACTIVE, BATCH_ROWS, COLUMNS, DRAW_KEY, GREEDY, IS_GREEDY, MIN_P, MIN_P_BITS, SEED_KEY,
                            TEMPERATURE, TEMPERATURE_BITS, RowParams, SamplingPlan, check_row)
from .seeds import draw_keys_on_device, seed_key

# SGLang's top_k when the request sets none.
TOP_K_ALL = 1 << 30


def supports(row: RowParams) -> bool:
    """Whether the row's top-k and top-p are off whatever the vocabulary (filters need the host plan)."""
    return row.greedy or ((row.top_k <= 0 or row.top_k >= TOP_K_ALL) and row.top_p >= 1.0)


def _float32_bits(value: float) -> int:
    return int(np.float32(value).view(np.int32))


def table_entry(row: RowParams) -> list[int]:
    """A row's table columns, as ``plan_sampling`` would set its fields."""
    check_row(row)
    if not supports(row):
        raise ValueError(f"top-k / top-p rows take the host plan: {row}")
    greedy = row.greedy
    return [1, int(greedy), seed_key(row.seed), _float32_bits(1.0 if greedy else row.temperature),
            _float32_bits(0.0 if greedy else row.min_p)]


class RowTable:
    """``values[r]``: the columns of request row ``r`` (zero where no deterministic request holds it)."""

    def __init__(self, rows: int, device: torch.device | str):
        self.device = torch.device(device)
        self.values = torch.zeros(rows, COLUMNS, dtype=torch.int64, device=self.device)
        self.marked: set[int] = set()  # rows with an entry

    def mark(self, request_rows: Sequence[int], params: Sequence[RowParams]) -> None:
        """Give each request row its request's parameters (one copy, one indexed write)."""
        if len(request_rows) != len(params):
            raise ValueError(f"{len(request_rows)} request rows for {len(params)} parameter sets")
        if not request_rows:
            return
        packed = np.array([[r, *table_entry(p)] for r, p in zip(request_rows, params)], dtype=np.int64)
        on_device = array_to_device(packed.reshape(-1), self.device).view(len(request_rows), COLUMNS + 1)
        self.values[on_device[:, 0]] = on_device[:, 1:]
        self.marked.update(request_rows)

    def unmark(self, request_rows: Sequence[int]) -> None:
        """Clear the entries of these rows (another request holds them now)."""
        rows = [r for r in request_rows if r in self.marked]
        if rows:
            self.marked.difference_update(rows)
            self.values[array_to_device(np.asarray(rows, dtype=np.int64), self.device)] = 0

    def plan(self, request_rows: torch.Tensor, input_positions: torch.Tensor, vocab_size: int,
             kernel: str = "torch") -> SamplingPlan:
        """The plan of a decode step: batch row i holds request row ``request_rows[i]`` and its
        input token at ``input_positions[i]``, so it samples the token at that position + 1.
        ``kernel``: "triton" makes it in one launch, "torch" with PyTorch ops."""
        rows = request_rows.shape[0]
        if input_positions.shape != (rows,):
            raise ValueError(f"{tuple(input_positions.shape)} positions for {rows} request rows")
        if kernel == "triton":
            fields = plan_fields_from_table(self.values, request_rows, input_positions)
        elif kernel == "torch":
            fields = self._fields_torch(request_rows, input_positions)
        else:
            raise ValueError(f"sampling kernel must be one of {SAMPLING_KERNELS}, got {kernel!r}")
        return SamplingPlan(fields, num_rows=rows, vocab_size=vocab_size, num_top_k=0, num_top_p=0, indexed=True,
                            all_greedy=False, max_top_k=0, any_min_p=True, skips_rows=True)

    def plan_windows(self, request_rows: torch.Tensor, row_starts: torch.Tensor, window: int, vocab_size: int,
                     kernel: str = "torch") -> SamplingPlan:
        """The plan of a verification pass's rows, flattened row by row: row r holds ``window``
        inputs of request row ``request_rows[r]`` from position ``row_starts[r]`` on (input j
        samples the token at ``row_starts[r] + j + 1``). No work per row on the host."""
        if row_starts.shape != request_rows.shape:
            raise ValueError(f"{tuple(row_starts.shape)} row starts for {request_rows.shape[0]} request rows")
        offsets = torch.arange(window, dtype=torch.int64, device=row_starts.device)
        positions = (row_starts.to(torch.int64)[:, None] + offsets).reshape(-1)
        return self.plan(request_rows.repeat_interleave(window), positions, vocab_size, kernel=kernel)

    def _fields_torch(self, request_rows: torch.Tensor, input_positions: torch.Tensor) -> torch.Tensor:
        entries = self.values[request_rows.to(torch.int64)]
        active = entries[:, ACTIVE] != 0
        greedy = (entries[:, IS_GREEDY] != 0) | ~active
        bits = entries[:, TEMPERATURE_BITS : MIN_P_BITS + 1].to(torch.int32).view(torch.float32).to(torch.float64)
        fields = torch.empty(BATCH_ROWS + 1, request_rows.shape[0], dtype=torch.float64, device=self.device)
        fields[DRAW_KEY] = draw_keys_on_device(entries[:, SEED_KEY], input_positions.to(torch.int64) + 1)
        fields[TEMPERATURE] = torch.where(active, bits[:, 0], 1.0)
        fields[MIN_P] = torch.where(active, bits[:, 1], 0.0)
        fields[GREEDY] = greedy.to(torch.float64)
        batch_rows = torch.arange(request_rows.shape[0], device=self.device, dtype=torch.float64)
        fields[BATCH_ROWS] = torch.where(active, batch_rows, -1.0)
        return fields.reshape(-1)
