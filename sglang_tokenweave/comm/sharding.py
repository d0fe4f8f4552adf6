"""Which token rows each rank owns in the token-sharded fused all-reduce.

Ownership is a pure function of (num_tokens, world_size, rank), so every rank and every
layer agree on it without talking. Rows are split into contiguous, balanced shares: the
first ``num_tokens % world_size`` ranks get one extra row. With fewer tokens than ranks,
the last ranks own nothing.
"""


def owned_rows(num_tokens: int, world_size: int, rank: int) -> tuple[int, int]:
    """Half-open row range [start, end) that ``rank`` reduces, normalises and keeps
    the residual for."""
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    base, extra = divmod(num_tokens, world_size)
    start = rank * base + min(rank, extra)
    end = start + base + (1 if rank < extra else 0)
    return start, end


def all_owned_rows(num_tokens: int, world_size: int) -> list[tuple[int, int]]:
    """Every rank's share, in rank order."""
    return [owned_rows(num_tokens, world_size, r) for r in range(world_size)]
