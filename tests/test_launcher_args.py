"""The launcher's command line: SGLang's flags pass through, ours are validated, errors are clear."""

import dataclasses
import os
import subprocess
import sys

import pytest

from sglang_tokenweave.config import (
    ARGS_ENV,
    SWITCH_ENV,
    OverlayConfig,
    config_from_env,
    config_to_env,
    overlay_switched_on,
    split_overlay_argv,
)
from sglang_tokenweave.glue.cpu_support import cuda_available
from sglang_tokenweave.launch_server import deterministic_refusal, parse_launch_args


def run_launcher(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "sglang_tokenweave.launch_server", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_sglang_flags_pass_through_and_ours_are_taken_out():
    args = parse_launch_args(["--model-path", "dummy", "--tp", "2", "--enable-tokenweave",
                              "--tokenweave-sm-budget", "12", "--max-total-tokens", "1024",
                              "--enable-deterministic-requests", "--deterministic-window", "16"])
    assert args.server_args.tp_size == 2
    assert args.server_args.max_total_tokens == 1024
    assert args.server_args.model_path == "dummy"
    assert not args.used_default_model
    assert args.overlay == OverlayConfig(enable_tokenweave=True, tokenweave_sm_budget=12,
                                         enable_deterministic_requests=True, deterministic_window=16)


def test_smollm2_is_the_default(smollm2_path):
    args = parse_launch_args(["--tp", "1"])
    assert args.used_default_model
    assert args.server_args.model_path == smollm2_path
    assert args.server_args.served_model_name == "smollm2"
    if not cuda_available():  # a bf16 checkpoint runs in fp32 on CPUs (see launch_server)
        assert args.server_args.dtype == "float32"
    assert parse_launch_args(["--dtype", "bfloat16"]).server_args.dtype == "bfloat16"


def test_tiny_model_by_name():
    args = parse_launch_args(["--model-path", "tiny", "--tp", "1"])
    assert not args.used_default_model
    assert "tiny-llama" in args.server_args.model_path
    assert args.server_args.served_model_name == "tiny"
    assert args.server_args.dtype == "auto"


def test_a_model_that_cannot_be_made_ready_exits_with_one_message(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    result = run_launcher("--model-path", str(bad), env={"SGLANG_TOKENWEAVE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"sglang-tokenweave: cannot read {bad} as a GGUF model" in result.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--tokenweave-sm-budget", "0", "--tokenweave-sm-budget must be in [1, 256], got 0"),
    ("--tokenweave-sm-budget", "many", "--tokenweave-sm-budget must be an integer"),
    ("--tokenweave-split-threshold", "1", "--tokenweave-split-threshold must be in [2, 1048576], got 1"),
    ("--tokenweave-fused-threshold", "0", "--tokenweave-fused-threshold must be in [1, 1048576], got 0"),
    ("--deterministic-window", "513", "--deterministic-window must be in [1, 512], got 513"),
    ("--deterministic-verify-rows", "-3", "--deterministic-verify-rows must be in [1, 256], got -3"),
    ("--tokenweave-comm-variant", "nvls", "invalid choice: 'nvls'"),
    ("--deterministic-lookahead-blocks", "9", "--deterministic-lookahead-blocks must be in [1, 8], got 9"),
    ("--deterministic-sampling-kernel", "cuda", "invalid choice: 'cuda'"),
])
def test_our_flags_are_range_checked(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        split_overlay_argv([flag, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_lookahead_may_not_exceed_the_verification_rows(capsys):
    with pytest.raises(SystemExit) as exit_info:
        split_overlay_argv(["--deterministic-verify-rows", "2", "--deterministic-lookahead-blocks", "3"])
    assert exit_info.value.code == 2
    assert "--deterministic-lookahead-blocks (3) must be at most --deterministic-verify-rows (2)" in capsys.readouterr().err
    config, _ = split_overlay_argv(["--deterministic-verify-rows", "2", "--deterministic-lookahead-blocks", "2"])
    assert config.deterministic_lookahead_blocks == 2


def test_a_prefix_of_an_sglang_flag_is_not_taken_for_ours():
    config, rest = split_overlay_argv(["--enable-token", "x"])
    assert config == OverlayConfig()
    assert rest == ["--enable-token", "x"]


def test_config_round_trips_through_the_environment():
    config = OverlayConfig(enable_tokenweave=True, tokenweave_config="/a b/c.json", tokenweave_sm_budget=8,
                           tokenweave_comm_variant="p2p", deterministic_verify_rows=4,
                           deterministic_lookahead_blocks=2)
    env = config_to_env(config)
    assert overlay_switched_on(env)
    assert config_from_env(env) == config


def test_switch_off_by_default():
    assert not overlay_switched_on({})
    assert not overlay_switched_on({SWITCH_ENV: "0"})
    assert config_from_env({}) == OverlayConfig()


def test_foreign_flags_in_the_environment_are_refused():
    with pytest.raises(ValueError, match="--tp"):
        config_from_env({SWITCH_ENV: "1", ARGS_ENV: "--enable-tokenweave --tp 2"})


def test_unknown_flag_exits_non_zero_with_a_clear_message():
    result = run_launcher("--model-path", "dummy", "--no-such-flag", "3")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_bad_value_of_our_flag_exits_before_sglang_starts():
    result = run_launcher("--tokenweave-sm-budget", "999")
    assert result.returncode == 2
    assert "--tokenweave-sm-budget must be in [1, 256], got 999" in result.stderr


@pytest.mark.skipif(cuda_available(), reason="checks the refusal on a machine without CUDA (CI)")
def test_triton_sampling_kernel_needs_cuda():
    config, _ = split_overlay_argv(["--deterministic-sampling-kernel", "triton"])
    assert config.deterministic_sampling_kernel == "triton"
    # This machine has no GPU: SGLang's --device is cpu, and the launcher says so before starting.
    result = run_launcher("--model-path", "tiny", "--enable-deterministic-requests",
                          "--deterministic-sampling-kernel", "triton")
    assert result.returncode == 1
    assert "--deterministic-sampling-kernel triton needs CUDA GPUs (--device cpu)" in result.stderr


def test_full_verify_graph_is_refused_before_sglang_starts_where_it_cannot_serve():
    args = parse_launch_args(["--model-path", "dummy", "--attention-backend", "triton",
                              "--enable-deterministic-requests", "--deterministic-verify-graph", "full"])
    server_args = args.server_args  # SGLang's own ServerArgs: the refusal reads its real fields
    server_args.device = "cuda"
    assert deterministic_refusal(args.overlay, server_args) is None
    server_args.decode_attention_backend = "flashinfer"
    assert "decode backend 'flashinfer'): add --attention-backend triton" in deterministic_refusal(
        args.overlay, server_args)
    server_args.decode_attention_backend, server_args.device = None, "cpu"
    assert "--deterministic-verify-graph full needs CUDA GPUs (--device cpu)" in deterministic_refusal(
        args.overlay, server_args)
    assert deterministic_refusal(dataclasses.replace(args.overlay, deterministic_verify_graph="breakable"),
                                 server_args) is None
    assert deterministic_refusal(dataclasses.replace(args.overlay, enable_deterministic_requests=False),
                                 server_args) is None


def test_help_shows_sglang_flags_and_ours():
    result = run_launcher("--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--model-path", "--tp-size", "--enable-tokenweave", "--tokenweave-config",
                 "--enable-deterministic-requests", "--deterministic-window"):
        assert flag in result.stdout
    assert "sglang-tokenweave: TokenWeave" in result.stdout
    assert "--deterministic-test-perturb-logits" not in result.stdout  # test-only, hidden
