"""The reference's single-process math: independent float64 oracle and SGLang's own norm."""

import pytest
import torch

from sglang_tokenweave.comm.reference import add_rmsnorm, reduce_partials


def float64_oracle(partials, residual, weight, eps):
    x = sum(p.double() for p in partials).to(partials[0].dtype).double()  # AR result in dtype
    h = x + residual.double() if residual is not None else x
    out = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.double()
    return out, h


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_residual", [True, False])
def test_matches_float64_oracle(dtype, with_residual):
    g = torch.Generator().manual_seed(1)
    partials = [torch.randn(37, 256, generator=g).to(dtype) for _ in range(4)]
    residual = torch.randn(37, 256, generator=g).to(dtype) if with_residual else None
    weight = (1 + 0.1 * torch.randn(256, generator=g)).to(dtype)
    out, new_res = add_rmsnorm(reduce_partials(partials), residual, weight, 1e-6)
    ref_out, ref_h = float64_oracle(partials, residual, weight, 1e-6)
    assert out.dtype == new_res.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    assert ((out.double() - ref_out).norm() / ref_out.norm()).item() < tol
    assert torch.equal(new_res, ref_h.to(dtype))  # residual is the fp32 sum rounded once


def test_partials_are_summed_in_fp32_in_rank_order():
    # In bf16, 256 + 1 + 1 rounds to 256 step by step but to 258 with fp32 accumulation.
    parts = [torch.full((1, 8), v, dtype=torch.bfloat16) for v in (256.0, 1.0, 1.0)]
    assert reduce_partials(parts)[0, 0].item() == 258.0


def test_norm_reads_the_unrounded_sum():
    # h = 1 + 2^-9 is not representable in bf16; a norm of the rounded residual would give
    # exactly the weight, the fp32 sum gives a different value.
    x = torch.full((1, 8), 1.0, dtype=torch.bfloat16)
    residual = torch.full((1, 8), 2.0 ** -9, dtype=torch.bfloat16)
    residual[0, 0] = 0.5
    out, new_res = add_rmsnorm(x, residual, torch.ones(8, dtype=torch.bfloat16), 0.0)
    h = x.float() + residual.float()
    assert torch.equal(out, (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True))).bfloat16())
    assert torch.equal(new_res, h.bfloat16())


def test_matches_sglang_rmsnorm_forward_native():
    layernorm = pytest.importorskip("sglang.srt.layers.layernorm")
    g = torch.Generator().manual_seed(2)
    norm = layernorm.RMSNorm(512, eps=1e-5).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(512, generator=g))
    x = torch.randn(19, 512, generator=g).bfloat16()
    residual = torch.randn(19, 512, generator=g).bfloat16()
    with torch.no_grad():
        want_out, want_res = norm.forward_native(x.clone(), residual.clone())
        want_first = norm.forward_native(x.clone())
    out, new_res = add_rmsnorm(x, residual, norm.weight.detach(), 1e-5)
    first, _ = add_rmsnorm(x, None, norm.weight.detach(), 1e-5)
    assert torch.equal(out, want_out) and torch.equal(new_res, want_res)
    assert torch.equal(first, want_first)
