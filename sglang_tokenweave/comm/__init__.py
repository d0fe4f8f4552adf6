"""Fused tensor-parallel all-reduce + residual-add + RMSNorm (TokenWeave's communication op).

Importing this package compiles nothing and needs no GPU; the CUDA kernels are built on
first GPU use (see ``build``).
"""

from .fused_ar_norm import FusedARNorm
from .launch_shape import LaunchShape, make_shape
from .multicast import multimem_refusal
from .plan import MODES, MULTIMEM, ONESHOT, SHARDED, RunPlan, make_plan
from .reference import add_rmsnorm, fused_allreduce_add_rmsnorm, reduce_partials
from .sharding import all_owned_rows, owned_rows

__all__ = [
    "FusedARNorm",
    "LaunchShape",
    "MODES",
    "MULTIMEM",
    "ONESHOT",
    "RunPlan",
    "SHARDED",
    "add_rmsnorm",
    "all_owned_rows",
    "fused_allreduce_add_rmsnorm",
    "make_plan",
    "make_shape",
    "multimem_refusal",
    "owned_rows",
    "reduce_partials",
]
