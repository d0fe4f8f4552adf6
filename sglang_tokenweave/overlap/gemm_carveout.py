"""Leave SMs free for the communication kernel while GEMMs run beside it.

A GEMM launched with a grid sized for every SM, next to a communication kernel that holds
some of them, either runs a short extra wave on the SMs left or (a persistent kernel, whose
tiles are dealt out per CTA up front) waits for them. PyTorch's SM carve-out makes its
cuBLASLt GEMMs target ``SMs - n`` instead; plain cuBLAS ignores it, so cuBLASLt is preferred
for the same span. Both settings are host-side and read at each GEMM's launch.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def gemm_carveout(num_sms: int):
    """GEMMs launched inside leave ``num_sms`` SMs unused (no-op for 0 or off CUDA)."""
    if num_sms <= 0 or not torch.cuda.is_available():
        yield
        return
    previous_carveout = torch._C._get_sm_carveout_experimental()
    previous_library = torch.backends.cuda.preferred_blas_library()
    torch._C._set_sm_carveout_experimental(num_sms)
    torch.backends.cuda.preferred_blas_library("cublaslt")
    try:
        yield
    finally:
        torch._C._set_sm_carveout_experimental(previous_carveout)
        torch.backends.cuda.preferred_blas_library(previous_library)
