"""Float32 logits (--deterministic-logits): the dtype choice, the LM head, the mismatch counters."""

import pytest
import torch

from sglang_tokenweave.config import OverlayConfig, split_overlay_argv
from sglang_tokenweave.determinism.config import DeterminismConfig, resolve_logits_dtype
from sglang_tokenweave.determinism.lm_head import logits_float32
from sglang_tokenweave.determinism.metrics import DeterminismMetrics
from sglang_tokenweave.determinism.state import CommitResult


@pytest.mark.parametrize("choice, device, expected", [
    ("auto", "cuda", "float32"), ("auto", "cpu", "model"),
    ("float32", "cpu", "float32"), ("model", "cuda", "model"),
])
def test_logits_dtype_resolves_per_device(choice, device, expected):
    assert resolve_logits_dtype(choice, device) == expected
    assert DeterminismConfig(logits_dtype=choice).for_device(device).logits_dtype == expected


def test_logits_dtype_is_checked():
    with pytest.raises(ValueError, match="logits_dtype"):
        DeterminismConfig(logits_dtype="float16")
    with pytest.raises(SystemExit):
        split_overlay_argv(["--deterministic-logits", "float16"])
    flags, _ = split_overlay_argv(["--deterministic-logits", "model"])
    assert DeterminismConfig.from_flags(flags).logits_dtype == "model"
    assert OverlayConfig(deterministic_logits="model").to_argv() == ["--deterministic-logits", "model"]


@pytest.mark.parametrize("tokens, hidden, vocab", [(1, 64, 1000), (7, 576, 4099), (33, 128, 512)])
def test_float32_logits_are_the_unrounded_product(tokens, hidden, vocab):
    gen = torch.Generator().manual_seed(tokens * vocab)
    h = torch.randn(tokens, hidden, generator=gen).to(torch.bfloat16)
    w = (torch.randn(vocab, hidden, generator=gen) / hidden ** 0.5).to(torch.bfloat16)
    out = logits_float32(h, w)
    assert out.dtype == torch.float32 and out.shape == (tokens, vocab)
    exact = h.double() @ w.double().t()
    assert torch.allclose(out.double(), exact, rtol=1e-5, atol=1e-5)
    # SGLang's model-dtype logits are rounded to bf16: far coarser than the float32 result.
    rounded = (h @ w.t()).float()
    assert (rounded.double() - exact).abs().max() > 10 * (out.double() - exact).abs().max()


def _result(accepted: int, dropped: int) -> CommitResult:
    return CommitResult(num_accepted=accepted, committed_ids=tuple(range(accepted + (dropped > 0))),
                        num_dropped=dropped, free_kv_positions=range(0), output_len=0, kv_len=0,
                        stream=range(0), finish=None)


def test_mismatch_counters_split_greedy_and_bucket_the_offset():
    m = DeterminismMetrics()
    m.on_commit(_result(32, 0), tokens_verified=32, greedy=True)  # no mismatch
    m.on_commit(_result(0, 32), tokens_verified=32, greedy=True)
    m.on_commit(_result(5, 27), tokens_verified=32)
    m.on_commit(_result(20, 12), tokens_verified=32)
    m.on_commit(_result(40, 24), tokens_verified=64)
    snap = m.snapshot()
    assert snap["tokens_verified_greedy"] == 64 and snap["tokens_rolled_back_greedy"] == 32
    assert snap["tokens_verified"] == 192 and snap["tokens_rolled_back"] == 95
    assert [snap[f"mismatch_offset_{b}"] for b in ("0_3", "4_15", "16_31", "32_up")] == [1, 1, 1, 1]


@pytest.mark.gpu
@pytest.mark.parametrize("tokens, hidden, vocab", [(1, 576, 49152), (64, 576, 49152), (256, 2048, 32000)])
def test_float32_logits_on_cuda_keep_the_accumulator_under_graph_replay(tokens, hidden, vocab):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    gen = torch.Generator(device="cuda").manual_seed(tokens + hidden)
    h = torch.randn(tokens, hidden, device="cuda", generator=gen).to(torch.bfloat16)
    w = (torch.randn(vocab, hidden, device="cuda", generator=gen) / hidden ** 0.5).to(torch.bfloat16)
    out = logits_float32(h, w)
    exact = h.double() @ w.double().t()
    assert out.dtype == torch.float32 and out.shape == (tokens, vocab)
    assert ((out.double() - exact).norm() / exact.norm()).item() < 1e-5  # float32 accumulation
    rounded_error = ((h @ w.t()).double() - exact).norm() / exact.norm()
    assert rounded_error > 10 * ((out.double() - exact).norm() / exact.norm())
    graph, static_h = torch.cuda.CUDAGraph(), h.clone()
    logits_float32(static_h, w)  # warm-up outside capture (cuBLAS workspace)
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        static_out = logits_float32(static_h, w)
    fresh = torch.randn(tokens, hidden, device="cuda", generator=gen).to(torch.bfloat16)
    static_out.fill_(float("nan"))  # poison: the replay must write every element
    static_h.copy_(fresh)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, logits_float32(fresh, w))  # same GEMM, same bits
