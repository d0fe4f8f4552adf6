"""Small host-to-device copies that never wait for the device, through reused pinned buffers.

A copy from pageable memory waits for every kernel queued before it; a copy from pinned memory
does not. ``Tensor.pin_memory()`` gets a fresh pinned block from PyTorch's caching host
allocator on every call; in a serving scheduler that call and the copy took about 180 us per
sampling plan (py-spy samples of the scheduler, 1 x H200, TP1, 10% deterministic traffic:
benchmarks/results/bench_determinism/bench_determinism_h200_tp1_llama-1b-1gpu_profile_ours_default_0.1.txt),
several times the rest of the plan's work. Here a ring of pinned byte buffers is allocated once
and reused: before a slot is written again, the copy that last read it must have run (its
event; with dozens of slots it always has). A copy may hold any numpy dtype: the bytes travel
and the device tensor is a view of them as that dtype.
"""

from __future__ import annotations

import numpy as np
import torch


class PinnedStaging:
    """A ring of ``slots`` pinned buffers of ``capacity`` bytes each (CUDA only)."""

    def __init__(self, slots: int = 32, capacity: int = 64 * 1024):
        self.slots, self.capacity = slots, capacity
        self._buffers = torch.empty(slots, capacity, dtype=torch.uint8, pin_memory=True)
        self._host = self._buffers.numpy()  # the same memory, written without torch's dispatch
        self._events: list[torch.cuda.Event | None] = [None] * slots
        self._next = 0

    def to_device(self, values: np.ndarray, device: torch.device) -> torch.Tensor:
        """A new tensor on ``device`` holding ``values`` (1-D, any numpy dtype), copied
        asynchronously on the device's current stream."""
        raw = np.ascontiguousarray(values).view(np.uint8)
        n = raw.shape[0]
        if n > self.capacity:
            return torch.from_numpy(values).pin_memory().to(device, non_blocking=True)
        slot, self._next = self._next, (self._next + 1) % self.slots
        event = self._events[slot]
        if event is None:
            event = self._events[slot] = torch.cuda.Event()
        else:
            event.synchronize()  # the copy that read this slot `slots` copies ago
        self._host[slot, :n] = raw
        out = torch.empty(n, dtype=torch.uint8, device=device)
        out.copy_(self._buffers[slot, :n], non_blocking=True)
        event.record(torch.cuda.current_stream(device))
        return out.view(_TORCH_DTYPES[values.dtype])


_TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.int64): torch.int64}
_staging: PinnedStaging | None = None


def array_to_device(values: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``values`` (1-D float64 or int64) as a tensor on ``device``, without waiting for the device."""
    if values.dtype not in _TORCH_DTYPES:
        raise TypeError(f"staged copies hold float64 or int64, got {values.dtype}")
    device = torch.device(device)
    if device.type != "cuda":
        return torch.from_numpy(values).to(device)
    global _staging
    if _staging is None:
        _staging = PinnedStaging()
    return _staging.to_device(values, device)
