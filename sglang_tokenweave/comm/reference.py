"""The semantics of the fused all-reduce + residual-add + RMSNorm, in plain PyTorch.

This is the oracle every kernel test compares against, and the implementation used when
the process group is not on CUDA (gloo in CPU tests). Rounding follows SGLang's unfused path
step by step, so that swapping in the fused op changes no bits beyond kernel-level float
differences:

1. ``x = round(sum_r fp32(partial_r))``: fp32 accumulation in fixed rank order 0..W-1, then
   one rounding to the model dtype (SGLang's custom all-reduce returns the dtype).
2. ``h = fp32(x) + fp32(residual)`` (just ``fp32(x)`` for the first layer, which has none).
3. ``new_residual = round(h)``.
4. ``out = round(h * rsqrt(mean(h^2) + eps) * fp32(weight))``: the norm reads the unrounded
   fp32 ``h``, as sgl_kernel's fused_add_rmsnorm and ``RMSNorm.forward_native`` both do.
"""

from typing import Optional, Sequence

import torch
import torch.distributed as dist


def reduce_partials(partials: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum per-rank partial sums in rank order, in fp32, rounded once to their dtype."""
    acc = partials[0].float()
    for p in partials[1:]:
        acc = acc + p.float()
    return acc.to(partials[0].dtype)


def add_rmsnorm(
    x: torch.Tensor,
    residual: Optional[torch.Tensor],
    weight: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-process math of steps 2-4: returns (out, new_residual), both in x's dtype."""
    h = x.float()
    if residual is not None:
        h = h + residual.float()
    variance = h.pow(2).mean(dim=-1, keepdim=True)
    out = (h * torch.rsqrt(variance + eps)) * weight.float()
    return out.to(x.dtype), h.to(x.dtype)


def gather_partials(partial: torch.Tensor, group: Optional[dist.ProcessGroup]) -> list[torch.Tensor]:
    """Every rank's partial, in rank order (an all-gather, so the sum order is ours, not the
    backend's: the result is the same whatever algorithm the backend picks)."""
    world = dist.get_world_size(group)
    parts = [torch.empty_like(partial) for _ in range(world)]
    dist.all_gather(parts, partial.contiguous(), group=group)
    return parts


def fused_allreduce_add_rmsnorm(
    partial: torch.Tensor,
    residual: Optional[torch.Tensor],
    weight: torch.Tensor,
    eps: float,
    group: Optional[dist.ProcessGroup] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distributed reference: every rank gets every row of ``out`` and of the new residual.

    The token-sharded op keeps only the owned rows of the residual; callers of this
    reference apply that restriction themselves (see ``FusedARNorm``).
    """
    x = reduce_partials(gather_partials(partial, group))
    return add_rmsnorm(x, residual, weight, eps)


def gather_rows(own: torch.Tensor, bounds: Sequence[tuple[int, int]],
                group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    """All ranks' row blocks ``own`` (rank r holds rows ``bounds[r]``), concatenated in row order.

    Blocks may differ in length by a row, so they travel padded to the longest.
    """
    longest = max(end - start for start, end in bounds)
    padded = own.new_zeros((longest, *own.shape[1:]))
    padded[: own.shape[0]] = own
    blocks = [torch.empty_like(padded) for _ in bounds]
    dist.all_gather(blocks, padded, group=group)
    return torch.cat([b[: end - start] for b, (start, end) in zip(blocks, bounds)])
