"""Configuration bounds, agreement with the launcher's flags, and the counters."""

import pytest

from sglang_tokenweave.config import OverlayConfig, split_overlay_argv
from sglang_tokenweave.determinism.config import (
    DEFAULT_LOOKAHEAD_BLOCKS,
    DeterminismConfig,
    resolve_sampling_kernel,
    sampling_kernel_error,
)
from sglang_tokenweave.determinism.metrics import DeterminismMetrics
from sglang_tokenweave.determinism.state import DeterministicRequest


def test_defaults_agree_with_launcher_flags():
    assert DeterminismConfig.from_flags(OverlayConfig()) == DeterminismConfig()
    flags, rest = split_overlay_argv(["--deterministic-window", "16", "--deterministic-verify-rows", "4", "--x"])
    config = DeterminismConfig.from_flags(flags)
    assert (config.window, config.verify_rows, config.tokens_per_pass) == (16, 4, 64) and rest == ["--x"]
    assert not config.verify_eager
    flags, _ = split_overlay_argv(["--deterministic-verify-eager"])
    assert DeterminismConfig.from_flags(flags).verify_eager
    assert config.sampling_kernel == "auto"
    flags, _ = split_overlay_argv(["--deterministic-sampling-kernel", "triton"])
    assert DeterminismConfig.from_flags(flags).sampling_kernel == "triton"


def test_triton_sampling_kernel_is_for_cuda_only():
    assert sampling_kernel_error("triton", "cuda") is None and sampling_kernel_error("torch", "cpu") is None
    assert sampling_kernel_error("auto", "cpu") is None
    assert "--deterministic-sampling-kernel triton needs CUDA GPUs (--device cpu)" in sampling_kernel_error("triton", "cpu")
    with pytest.raises(ValueError, match="needs CUDA GPUs"):
        DeterminismConfig(sampling_kernel="triton").for_device("cpu")


@pytest.mark.parametrize("kernel, device, chosen", [("auto", "cuda", "triton"), ("auto", "cpu", "torch"),
                                                    ("auto", "xpu", "torch"), ("torch", "cuda", "torch"),
                                                    ("triton", "cuda", "triton")])
def test_the_server_resolves_the_sampling_kernel_for_its_device(kernel, device, chosen):
    assert resolve_sampling_kernel(kernel, device) == chosen
    config = DeterminismConfig(window=16, sampling_kernel=kernel).for_device(device)
    assert config.sampling_kernel == chosen and config.window == 16


def test_default_lookahead_never_exceeds_the_verification_rows():
    assert DeterminismConfig().lookahead_blocks == DEFAULT_LOOKAHEAD_BLOCKS > 1
    assert DeterminismConfig(verify_rows=1).lookahead_blocks == 1
    flags, _ = split_overlay_argv(["--deterministic-verify-rows", "1"])  # no error about an unset L
    assert DeterminismConfig.from_flags(flags).lookahead_blocks == 1
    flags, _ = split_overlay_argv(["--deterministic-lookahead-blocks", "1"])
    assert DeterminismConfig.from_flags(flags).lookahead_blocks == 1


@pytest.mark.parametrize("kwargs", [dict(window=0), dict(window=513), dict(verify_rows=0), dict(perturb_logits=-1.0),
                                    dict(verify_rows=2, lookahead_blocks=3), dict(lookahead_blocks=0),
                                    dict(sampling_kernel="cuda")])
def test_out_of_range_values_are_rejected(kwargs):
    with pytest.raises(ValueError):
        DeterminismConfig(**kwargs)


def test_metrics_count_commits_and_rollbacks():
    metrics = DeterminismMetrics()
    state = DeterministicRequest(3, 4)
    metrics.on_request()
    metrics.on_commit(state.on_prefill_token(1))
    for t in (2, 3, 4, 5):
        state.on_fast_token(t)
    metrics.on_pass(real_rows=1, phases={"build": 0.125, "wait": 0.0625, "apply": 0.0625})
    with pytest.raises(ValueError, match="unknown pass phase"):
        metrics.on_pass(real_rows=1, phases={"compile": 1.0})
    metrics.on_commit(state.apply_verification([2, 9, 9, 9]), tokens_verified=4)
    metrics.on_restart()
    metrics.on_drain(0.5)
    metrics.on_drain(0.25)
    metrics.on_sampled(is_decode=False, seconds=0.5)
    metrics.on_sampled(is_decode=True, seconds=0.25)
    metrics.on_sampled(is_decode=True, seconds=0.25)
    assert metrics.snapshot() == {
        "requests": 1,
        "verification_passes": 1,
        "verification_rows": 1,
        "verification_seconds": 0.25,
        "verification_build_seconds": 0.125,
        "verification_forward_seconds": 0.0,
        "verification_wait_seconds": 0.0625,
        "verification_apply_seconds": 0.0625,
        "verification_drains": 2,
        "verification_drain_seconds": 0.75,
        "tokens_verified": 4,
        "tokens_committed": 3,
        "tokens_rolled_back": 3,
        "rollback_events": 1,
        "restarts": 1,
        "isolated_prefills": 1,
        "fast_path_steps": 2,
        "sampler_seconds": 1.0,
        "tokens_verified_greedy": 0,
        "tokens_rolled_back_greedy": 0,
        "mismatch_offset_0_3": 1,  # the first mismatch was the window's second token
        "mismatch_offset_4_15": 0,
        "mismatch_offset_16_31": 0,
        "mismatch_offset_32_up": 0,
    }
