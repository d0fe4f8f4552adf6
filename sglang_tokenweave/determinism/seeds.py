"""Seeds of deterministic requests and the random draw keyed by (seed, position).

Every random decision of a deterministic request is a pure function of its seed and of the
position of the token being sampled, never of a generator's state, of the batch it runs in or
of the device. That is what lets the fast path and the verifier draw the same number for the
same token, and a restarted request redraw exactly what it drew before.

Seeds are 64-bit: a user's seed may be any int64 (negative ones are read in two's complement);
internally seeds are unsigned in [0, 2**64).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

MASK64 = (1 << 64) - 1
SEED_MIN = -(1 << 63)
SEED_MAX = (1 << 63) - 1

# Used when a deterministic request carries no seed: the same request without a seed must
# return the same output every time, so the default cannot be random.
DEFAULT_SEED = 0

# Odd constant (2**64 / golden ratio): multiplying by it is a bijection modulo 2**64, so
# distinct indices or positions give distinct inputs to the mixer below.
GOLDEN = 0x9E3779B97F4A7C15
# SplitMix64's two multipliers (mix64; the Triton kernels use them too).
MIX_MUL1 = 0xBF58476D1CE4E5B9
MIX_MUL2 = 0x94D049BB133111EB


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a bijection on 64-bit integers with full avalanche."""
    x &= MASK64
    x = ((x ^ (x >> 30)) * MIX_MUL1) & MASK64
    x = ((x ^ (x >> 27)) * MIX_MUL2) & MASK64
    return x ^ (x >> 31)


def request_seed(seed: Optional[int]) -> int:
    """The request's base seed as an unsigned 64-bit integer (DEFAULT_SEED when absent)."""
    if seed is None:
        seed = DEFAULT_SEED
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"seed must be in [{SEED_MIN}, {SEED_MAX}], got {seed}")
    return seed & MASK64


def choice_seed(seed: Optional[int], index: int) -> int:
    """The sampling seed of choice ``index`` (0-based) of a request with ``n`` choices.

    Choice 0 of an n > 1 request equals the only choice of the same request with n = 1.
    For one base seed, distinct indices always give distinct seeds (an injective index map
    followed by a bijection), and the result never depends on ``n``.
    """
    if index < 0:
        raise ValueError(f"choice index must be >= 0, got {index}")
    return mix64(request_seed(seed) + index * GOLDEN)


def _mix64_array(x: np.ndarray) -> np.ndarray:
    # Same function as mix64, on uint64 arrays (numpy wraps uint64 arithmetic modulo 2**64).
    x = (x ^ (x >> np.uint64(30))) * np.uint64(MIX_MUL1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(MIX_MUL2)
    return x ^ (x >> np.uint64(31))


# Below this many pairs the keys are computed on Python integers: about 2 us per pair on a CPU
# core, against about 50 us for numpy's dozen calls on small arrays. A fast-path step samples a
# handful of deterministic rows; a verification pass, hundreds.
_NUMPY_FROM = 32


def position_keys(seeds: Sequence[int], positions: Sequence[int]) -> np.ndarray:
    """64-bit random keys, one per (sampling seed, token position) pair, as uint64.

    key = mix64(mix64(seed) + position * GOLDEN): for one seed, distinct positions give
    distinct keys.
    """
    if len(seeds) != len(positions):
        raise ValueError(f"{len(seeds)} seeds but {len(positions)} positions")
    if any(p < 0 for p in positions):
        raise ValueError("positions must be >= 0")
    if len(seeds) < _NUMPY_FROM:
        return np.array([mix64(mix64(s) + p * GOLDEN) for s, p in zip(seeds, positions)], dtype=np.uint64)
    s = np.asarray([x & MASK64 for x in seeds], dtype=np.uint64)
    p = np.asarray(positions, dtype=np.uint64)
    return _mix64_array(_mix64_array(s) + p * np.uint64(GOLDEN))


# A row's draw key: the top 53 bits of its (seed, position) key, which a float64 holds exactly,
# so that it travels in a sampling plan's float64 fields.
DRAW_KEY_SHIFT = 11
# Bits of a token's uniform: 52, so that (bits + 0.5) / 2**52 is exact and strictly inside (0, 1).
TOKEN_BITS = 52


def draw_keys(seeds: Sequence[int], positions: Sequence[int]) -> np.ndarray:
    """The draw key of each (seed, position) pair: an integer below 2**53, as float64."""
    return (position_keys(seeds, positions) >> np.uint64(DRAW_KEY_SHIFT)).astype(np.float64)


def token_uniform(draw_key: int, token: int) -> float:
    """The uniform in (0, 1) of one token of the vocabulary under one draw key: the scalar
    definition that ``token_uniforms`` and the Triton kernels compute in bulk."""
    bits = mix64(draw_key + (token + 1) * GOLDEN) >> (64 - TOKEN_BITS)
    return (bits + 0.5) / (1 << TOKEN_BITS)


# Keys and uniforms as tensors: draw keys of plans built on the device (``row_table``), every
# token's uniform for the sampler. torch has no unsigned 64-bit arithmetic: the same bits travel
# as int64, whose +, * and ^ wrap modulo 2**64 exactly as uint64's do; only the right shift
# differs (arithmetic), so it is masked.


def seed_key(seed: int) -> int:
    """mix64(seed) as a signed 64-bit integer: the part of a (seed, position) key that does not
    depend on the position, in the form an int64 tensor holds it."""
    return _signed64(mix64(seed))


def _signed64(x: int) -> int:
    return x - (1 << 64) if x >> 63 else x


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64_tensor(x: torch.Tensor) -> torch.Tensor:
    x = (x ^ _shift_right(x, 30)) * _signed64(MIX_MUL1)
    x = (x ^ _shift_right(x, 27)) * _signed64(MIX_MUL2)
    return x ^ _shift_right(x, 31)


def draw_keys_on_device(seed_keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``draw_keys`` (float64) from int64 ``seed_keys`` (``seed_key`` of each seed) and int64
    positions, computed where the tensors are."""
    keys = _mix64_tensor(seed_keys + positions * _signed64(GOLDEN))
    return _shift_right(keys, DRAW_KEY_SHIFT).to(torch.float64)


def token_uniforms(draw_keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``token_uniform`` of every token for each draw key: float64 [N, vocab_size]."""
    tokens = torch.arange(1, vocab_size + 1, dtype=torch.int64, device=draw_keys.device) * _signed64(GOLDEN)
    bits = _shift_right(_mix64_tensor(draw_keys.to(torch.int64)[:, None] + tokens), 64 - TOKEN_BITS)
    return (bits.to(torch.float64) + 0.5) * (1.0 / (1 << TOKEN_BITS))
