"""Fused tensor-parallel all-reduce + residual-add + RMSNorm (TokenWeave's communication op).

Public names: ``FusedARNorm`` (the op), the variants its ``mode`` takes (``SHARDED``,
``ONESHOT``, ``MULTIMEM``, ``MODES``), ``RunPlan`` (what ``FusedARNorm.plan`` returns) and
``owned_rows`` (which residual rows a rank keeps). Everything else is imported from its own
module (``plan``, ``launch_shape``, ``sharding``, ``reference``, ``multicast``, ``build``).

Importing this package imports no torch (``FusedARNorm`` is loaded on first access), so the
pure planners that use ``sharding`` work without it. It compiles nothing and needs no GPU;
the CUDA kernels are built on first GPU use (see ``build``).
"""

from .plan import MODES, MULTIMEM, ONESHOT, SHARDED, RunPlan
from .sharding import owned_rows

__all__ = [
    "FusedARNorm",
    "MODES",
    "MULTIMEM",
    "ONESHOT",
    "RunPlan",
    "SHARDED",
    "owned_rows",
]


def __getattr__(name: str):
    # FusedARNorm needs torch: loaded on first use, not when a torch-free module imports ours.
    if name == "FusedARNorm":
        from .fused_ar_norm import FusedARNorm

        globals()[name] = FusedARNorm
        return FusedARNorm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
