"""How the fused kernel maps token rows onto threads (pure logic, mirrored in csrc).

A row group of ``threads_per_row`` threads owns one token row; each thread holds
``vecs_per_thread`` 16-byte vectors (8 half-precision values each) of it. A block holds
``rows_per_block`` row groups. A row's arithmetic depends only on (hidden, vecs_per_thread),
never on the batch or grid, so results are batch-invariant as long as ``vecs_per_thread``
is chosen from the hidden size alone, which ``default_vecs_per_thread`` does.
"""

from dataclasses import dataclass

ELEMS_PER_VEC = 8  # 16 bytes of bf16/fp16
VECS_PER_THREAD = (1, 2, 4)


def max_block_threads(vecs_per_thread: int) -> int:
    # Register budget: 64 per thread at 1024 threads, 128 at 512 (matches __launch_bounds__).
    return 1024 if vecs_per_thread == 1 else 512


@dataclass(frozen=True)
class LaunchShape:
    num_blocks: int
    vecs_per_thread: int
    threads_per_row: int
    rows_per_block: int

    @property
    def block_threads(self) -> int:
        return self.threads_per_row * self.rows_per_block


def shape_error(shape: LaunchShape, hidden: int) -> str:
    """Why the shape cannot run this hidden size ('' when it can); same rules as csrc."""
    if hidden <= 0 or hidden % ELEMS_PER_VEC:
        return "hidden size must be a positive multiple of 8"
    if shape.vecs_per_thread not in VECS_PER_THREAD:
        return "vecs_per_thread must be 1, 2 or 4"
    if shape.threads_per_row <= 0 or shape.threads_per_row % 32:
        return "threads_per_row must be a positive multiple of 32"
    if shape.threads_per_row * shape.vecs_per_thread * ELEMS_PER_VEC < hidden:
        return "threads_per_row * vecs_per_thread * 8 must cover the hidden size"
    if shape.rows_per_block < 1 or shape.block_threads > max_block_threads(shape.vecs_per_thread):
        return "threads_per_row * rows_per_block exceeds the block limit for vecs_per_thread"
    if shape.num_blocks < 1:
        return "num_blocks must be >= 1"
    return ""


def default_vecs_per_thread(hidden: int) -> int:
    """Fewest vectors per thread whose row group fits one block."""
    nvec = -(-hidden // ELEMS_PER_VEC)
    for vpt in VECS_PER_THREAD:
        if -(-nvec // vpt) <= max_block_threads(vpt):
            return vpt
    raise ValueError(f"hidden size {hidden} is larger than the kernel supports (16384)")


def make_shape(hidden: int, num_blocks: int, vecs_per_thread: int | None = None,
               rows_per_block: int | None = None) -> LaunchShape:
    """The launch shape for a hidden size; rows_per_block defaults to as many rows as fill
    the block's thread limit."""
    vpt = vecs_per_thread or default_vecs_per_thread(hidden)
    nvec = -(-hidden // ELEMS_PER_VEC)
    tpr = -(-nvec // vpt)
    tpr = -(-tpr // 32) * 32
    rows = rows_per_block or max(1, max_block_threads(vpt) // tpr)
    shape = LaunchShape(num_blocks, vpt, tpr, rows)
    err = shape_error(shape, hidden)
    if err:
        raise ValueError(f"no launch shape for hidden={hidden}, {shape}: {err}")
    return shape
