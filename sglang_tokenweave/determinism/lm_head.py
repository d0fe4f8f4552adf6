"""The LM head with float32 logits (see ``config.resolve_logits_dtype`` for why).

``logits_float32(hidden, weight)``: hidden [T, H] and weight [V, H] of the model dtype ->
logits [T, V] float32, nothing written in place. On CUDA it is the model's own GEMM (model-dtype
operands, float32 accumulation) with its float32 result kept; elsewhere the operands are
upcast (no float32-output GEMM on CPUs).
"""

from __future__ import annotations

import torch

_HALF_DTYPES = (torch.bfloat16, torch.float16)


def logits_float32(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    hidden = hidden.to(weight.dtype)
    if hidden.is_cuda and weight.dtype in _HALF_DTYPES:
        return torch.mm(hidden, weight.t(), out_dtype=torch.float32)
    return torch.matmul(hidden.float(), weight.float().t())
