"""Decisions made once per call size: which variant runs and with how many blocks.

Every input here is identical on all ranks (token count, world size, hidden size), so every
rank decides the same and the kernels' cross-rank barriers pair up. Defaults come from
benchmarks/results/bench_fused_allreduce_rmsnorm/bench_fused_allreduce_rmsnorm_h100_tp{2,4}.json (see docs/kernel-notes.md).
"""

from dataclasses import dataclass

from .launch_shape import LaunchShape, make_shape
from .sharding import owned_rows

SHARDED, ONESHOT, MULTIMEM = "sharded", "oneshot", "multimem"
MODES = (SHARDED, ONESHOT, MULTIMEM)

# Largest token count for which one-shot beats the sharded kernel, per world size. Measured
# on H100 (TP2, TP4; H 5120 and 8192): one-shot wins at 2 tokens, loses from 16 on.
ONESHOT_MAX_TOKENS = {2: 2, 4: 2, 8: 2}
ONESHOT_BLOCKS = 16

# Blocks (one per SM) for the sharded kernel, per world size: (up to tokens, blocks). On
# H100, TP4 gets within 1.1-1.2x of the NVLink floor at 16 blocks (32 gain <= 3%); at TP2
# each rank owns twice the rows and needs 32 blocks (16 are up to 1.6x slower from 1K tokens
# on). Overlapped schedules pass their own budget.
SHARDED_BLOCKS = {
    2: ((16, 16), (1 << 30, 32)),
    4: ((1 << 30, 16),),
    8: ((1 << 30, 16),),
}


@dataclass(frozen=True)
class RunPlan:
    num_tokens: int
    mode: str
    row_begin: int  # rows this rank reduces
    row_end: int
    shape: LaunchShape


def default_mode(num_tokens: int, world_size: int, multimem_allowed: bool = False) -> str:
    if multimem_allowed:
        return MULTIMEM
    return ONESHOT if num_tokens <= ONESHOT_MAX_TOKENS.get(world_size, 0) else SHARDED


def default_num_blocks(num_tokens: int, world_size: int, mode: str) -> int:
    if mode == ONESHOT:
        return ONESHOT_BLOCKS
    table = SHARDED_BLOCKS.get(world_size, SHARDED_BLOCKS[8])
    for limit, blocks in table:
        if num_tokens <= limit:
            return blocks
    return table[-1][1]


def make_plan(num_tokens: int, world_size: int, rank: int, hidden: int, *, mode: str | None = None,
              multimem_allowed: bool = False, num_blocks: int | None = None,
              vecs_per_thread: int | None = None, rows_per_block: int | None = None) -> RunPlan:
    mode = mode or default_mode(num_tokens, world_size, multimem_allowed)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if mode == MULTIMEM and not multimem_allowed:
        raise ValueError("multimem mode is not allowed here (see FusedARNorm.multimem_refusal)")
    if mode == ONESHOT:
        begin, end = 0, num_tokens
    else:
        begin, end = owned_rows(num_tokens, world_size, rank)
    blocks = num_blocks or default_num_blocks(num_tokens, world_size, mode)
    shape = make_shape(hidden, blocks, vecs_per_thread, rows_per_block)
    return RunPlan(num_tokens, mode, begin, end, shape)
