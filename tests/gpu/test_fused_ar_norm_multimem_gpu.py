"""The multimem (NVLink multicast) variant against the reference.

It runs only where multicast is on and supported. On machines where multicast is switched
off it skips before anything touches a GPU, with the reason.
"""

import pytest
import torch

from dist_harness import run_on_gpus
from sglang_tokenweave.comm import MULTIMEM, FusedARNorm, owned_rows
from sglang_tokenweave.comm.multicast import multimem_refusal
from sglang_tokenweave.comm.reference import add_rmsnorm, reduce_partials

pytestmark = pytest.mark.gpu


def check_multimem(rank, world, failures):
    op = FusedARNorm(None, 4096, 8192, torch.bfloat16, 1e-5, use_multimem=True, timeout_ms=60000)
    if op.multimem_refusal:
        failures.append(f"multimem refused after the environment allowed it: {op.multimem_refusal}")
        return
    for tokens in (1, 7, 1000, 4096):
        g = torch.Generator(device="cuda").manual_seed(tokens)
        partials = [torch.randn(tokens, 8192, device="cuda", generator=g).bfloat16() for _ in range(world)]
        residual = torch.randn(tokens, 8192, device="cuda", generator=g).bfloat16()
        weight = torch.ones(8192, dtype=torch.bfloat16, device="cuda")
        want_out, want_res = add_rmsnorm(reduce_partials(partials), residual, weight, 1e-5)
        op.buffer(tokens).copy_(partials[rank])
        torch.distributed.barrier()
        out = op.run(tokens, residual, weight, mode=MULTIMEM)
        torch.cuda.synchronize()
        start, end = owned_rows(tokens, world, rank)
        # the switch's reduction order is its own: compare with tolerance, residual too
        if not torch.allclose(out.float(), want_out.float(), rtol=2e-2, atol=2e-2):
            failures.append(f"multimem T={tokens}: out off")
        if not torch.allclose(residual[start:end].float(), want_res[start:end].float(), rtol=2e-2, atol=2e-2):
            failures.append(f"multimem T={tokens}: residual off")


@pytest.mark.parametrize("world", [2, 4])
def test_multimem_kernel_matches_reference(world, tmp_path):
    reason = multimem_refusal(True, multicast_ptr=1)  # the environment's verdict, no GPU touched
    if reason:
        pytest.skip(f"multimem variant not run here: {reason}")
    if not torch.cuda.is_available() or torch.cuda.device_count() < world:
        pytest.skip(f"needs {world} CUDA GPUs")
    bad = run_on_gpus(check_multimem, world, tmp_path, env={})
    assert not bad, bad
