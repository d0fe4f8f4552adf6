"""The layout that the sampler (``sampling``), its Triton kernels (``sampling_kernel``) and the
row table (``row_table``) share: a row's sampling parameters, a plan's device fields and where
each field starts, and the row table's columns.

Its own module so that the three import it, and each other, without a loop.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

# SGLang treats temperatures below this as greedy.
GREEDY_TEMPERATURE = 1e-6


@dataclasses.dataclass(slots=True)
class RowParams:
    """Sampling parameters of one row (one token to sample).

    ``seed`` is the choice's sampling seed (``seeds.choice_seed``); ``position`` the index in
    the full sequence (prompt + output) of the token being sampled. top_k <= 0 or >= vocab
    (SGLang's "all" is 2**30), top_p >= 1 and min_p <= 0 switch the filter off.
    Not frozen: a frozen dataclass takes three times as long to build, and a verification pass
    builds hundreds.
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


# Where each per-row field starts in ``SamplingPlan.fields``, in units of N (the plan's rows).
# The Triton kernels read the fields at these offsets.
DRAW_KEY, TEMPERATURE, MIN_P, GREEDY, BATCH_ROWS = range(5)


class SamplingPlan:
    """A batch of rows' sampling inputs on the device, and the host-side decisions of which
    filters run.

    Every input is in one float64 tensor, ``fields`` (one host-to-device copy; a copy costs far
    more host time than the bytes): N values each of draw key, temperature (1.0 on greedy rows),
    min_p (0 where off) and greedy (0/1), then ``batch_rows`` (N or none), top_k_rows and top_k
    (K each), top_p_rows and top_p (P each), and filtered_rows (F: the rows with either).
    float64 holds each exactly (draw keys are integers below 2**53); temperature and min_p are
    float32 values (rounded on the host), as the sampler computes in float32. The Triton kernels
    read ``fields`` directly; the typed tensors below, for the PyTorch path, are made on first use.
    """

    def __init__(self, fields: torch.Tensor, num_rows: int, vocab_size: int, num_top_k: int, num_top_p: int,
                 indexed: bool, all_greedy: bool, max_top_k: int, any_min_p: bool, skips_rows: bool = False,
                 num_filtered: int = 0):
        self.fields = fields
        self.num_rows = num_rows
        self.vocab_size = vocab_size
        self.indexed = indexed  # whether batch_rows is given
        # A plan of every row of a batch, in order, of which only some are ours: batch_rows holds
        # i at row i where it is ours and -1 where not (``row_table``); only ours are written.
        self.skips_rows = skips_rows
        self.all_greedy = all_greedy
        self.max_top_k = max_top_k  # 0 when no row uses top_k
        self.any_min_p = any_min_p
        self._num_top_k, self._num_top_p, self._num_filtered = num_top_k, num_top_p, num_filtered

    def _part(self, start: int, length: int, dtype: torch.dtype) -> torch.Tensor:
        values = self.fields[start : start + length]
        return values if dtype == torch.float64 else values.to(dtype)

    def _row_field(self, field: int, dtype: torch.dtype) -> torch.Tensor:
        return self._part(field * self.num_rows, self.num_rows, dtype)

    @functools.cached_property
    def draw_key(self) -> torch.Tensor:  # float64 [N], integers below 2**53; a view of ``fields``
        return self._row_field(DRAW_KEY, torch.float64)

    @functools.cached_property
    def temperature(self) -> torch.Tensor:  # float32 [N]
        return self._row_field(TEMPERATURE, torch.float32)

    @functools.cached_property
    def min_p(self) -> torch.Tensor:  # float32 [N]
        return self._row_field(MIN_P, torch.float32)

    @functools.cached_property
    def greedy(self) -> torch.Tensor:  # bool [N]
        return self._row_field(GREEDY, torch.bool)

    @functools.cached_property
    def batch_rows(self) -> torch.Tensor:  # int64 [N] or [0]: where each row sits in its batch (or -1)
        return self._part(BATCH_ROWS * self.num_rows, self.num_rows if self.indexed else 0, torch.int64)

    def _after_batch_rows(self, skip: int, length: int, dtype: torch.dtype) -> torch.Tensor:
        start = (BATCH_ROWS + self.indexed) * self.num_rows + skip
        return self._part(start, length, dtype)

    @functools.cached_property
    def top_k_rows(self) -> torch.Tensor:  # int64 [K]: rows with top_k enabled
        return self._after_batch_rows(0, self._num_top_k, torch.int64)

    @functools.cached_property
    def top_k(self) -> torch.Tensor:  # int64 [K]
        return self._after_batch_rows(self._num_top_k, self._num_top_k, torch.int64)

    @functools.cached_property
    def top_p_rows(self) -> torch.Tensor:  # int64 [P]
        return self._after_batch_rows(2 * self._num_top_k, self._num_top_p, torch.int64)

    @functools.cached_property
    def top_p(self) -> torch.Tensor:  # float64 [P]
        return self._after_batch_rows(2 * self._num_top_k + self._num_top_p, self._num_top_p, torch.float64)

    @functools.cached_property
    def filtered_rows(self) -> torch.Tensor:  # int64 [F]: rows with top_k or top_p enabled, ascending
        return self._after_batch_rows(2 * (self._num_top_k + self._num_top_p), self._num_filtered, torch.int64)

    @property
    def any_filtered(self) -> bool:
        return bool(self._num_filtered)


def check_row(r: RowParams) -> None:
    if not r.temperature >= 0.0 or not 0.0 < r.top_p or not 0.0 <= r.min_p <= 1.0:
        raise ValueError(f"invalid sampling parameters: {r}")


# Columns of the row table (int64): whether the row is a deterministic request's, whether it is
# greedy, its seed_key, and the float32 bits of its temperature (1.0 when greedy) and min_p.
ACTIVE, IS_GREEDY, SEED_KEY, TEMPERATURE_BITS, MIN_P_BITS = range(5)
COLUMNS = 5
