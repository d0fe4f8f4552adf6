"""The full-graph verification pass's inputs, the flag, and the servers it refuses."""

from types import SimpleNamespace

import pytest

from sglang_tokenweave.config import split_overlay_argv
from sglang_tokenweave.determinism.config import VERIFY_GRAPH_CHOICES, VERIFY_GRAPHS, DeterminismConfig
from sglang_tokenweave.determinism.verify_graph import choose_verify_graph, full_graph_error, pass_layout


def test_full_graph_rows_count_their_prefix_and_name_every_position():
    layout = pass_layout([5, 0, 17], window=4, full_graph=True)
    assert layout.seq_lens == [5, 0, 17]
    assert layout.positions == [5, 6, 7, 8, 0, 1, 2, 3, 17, 18, 19, 20]


def test_breakable_rows_count_their_window_and_leave_positions_to_sglang():
    layout = pass_layout([5, 0, 17], window=4, full_graph=False)
    assert layout.seq_lens == [9, 4, 21] and layout.positions is None


@pytest.mark.parametrize("prefixes, window", [([0], 1), ([3, 3, 0, 0], 32), ([100, 7], 8)])
def test_both_layouts_put_a_row_at_the_same_positions(prefixes, window):
    full, breakable = pass_layout(prefixes, window, True), pass_layout(prefixes, window, False)
    assert len(full.positions) == len(prefixes) * window
    for r, prefix in enumerate(prefixes):
        row = full.positions[r * window : (r + 1) * window]
        # the extend forward's row r covers positions seq_len - window .. seq_len - 1
        assert row == list(range(breakable.seq_lens[r] - window, breakable.seq_lens[r]))
        assert full.seq_lens[r] == row[0] == prefix


@pytest.mark.parametrize("prefixes, window", [([1], 0), ([-1, 2], 4)])
def test_bad_layouts_are_refused(prefixes, window):
    with pytest.raises(ValueError):
        pass_layout(prefixes, window, True)


def test_flag_defaults_to_auto_and_reaches_the_config():
    flags, _ = split_overlay_argv([])
    assert DeterminismConfig.from_flags(flags).verify_graph == "auto" == VERIFY_GRAPH_CHOICES[0]
    for graph in VERIFY_GRAPHS:
        flags, _ = split_overlay_argv(["--deterministic-verify-graph", graph])
        assert DeterminismConfig.from_flags(flags).verify_graph == graph


def test_flag_refuses_other_values_and_eager_with_full(capsys):
    with pytest.raises(SystemExit) as exit_info:
        split_overlay_argv(["--deterministic-verify-graph", "piecewise"])
    assert exit_info.value.code == 2 and "invalid choice: 'piecewise'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        split_overlay_argv(["--deterministic-verify-eager", "--deterministic-verify-graph", "full"])
    assert exit_info.value.code == 2
    assert "--deterministic-verify-eager and --deterministic-verify-graph full exclude each other" in (
        capsys.readouterr().err)
    flags, _ = split_overlay_argv(["--deterministic-verify-eager", "--deterministic-verify-graph", "breakable"])
    assert DeterminismConfig.from_flags(flags).verify_eager


@pytest.mark.parametrize("kwargs", [dict(verify_graph="piecewise"), dict(verify_graph="full", verify_eager=True)])
def test_config_refuses_what_the_flags_refuse(kwargs):
    with pytest.raises(ValueError):
        DeterminismConfig(**kwargs)


def _server(**overrides):
    args = dict(device="cuda", attention_backend="triton", prefill_attention_backend=None,
                decode_attention_backend=None, speculative_algorithm=None, enable_dp_attention=False,
                enable_two_batch_overlap=False, enable_lora=False, enable_pdmux=False,
                enable_deterministic_inference=False, pp_size=1, tp_size=1)
    return SimpleNamespace(**{**args, **overrides})


def test_a_triton_server_on_one_gpu_takes_the_full_graph():
    assert full_graph_error(_server()) is None
    assert full_graph_error(_server(attention_backend=None, prefill_attention_backend="triton",
                                    decode_attention_backend="triton")) is None


def test_auto_takes_the_full_graph_on_one_gpu_with_triton_attention():
    assert choose_verify_graph("auto", _server(), verify_eager=False) == (
        "full", "auto: one GPU, SGLang's Triton attention on CUDA")


@pytest.mark.parametrize("overrides, eager, why", [
    (dict(device="cpu"), False, "auto: --deterministic-verify-graph full needs CUDA GPUs (--device cpu)"),
    (dict(attention_backend="fa3"), False, "add --attention-backend triton"),
    (dict(speculative_algorithm="EAGLE"), False, "--speculative-algorithm EAGLE"),
    (dict(tp_size=2), False, "auto: --tp 2; the full graph is taken on one GPU"),
    ({}, True, "auto: --deterministic-verify-eager runs the passes eagerly"),
])
def test_auto_takes_the_breakable_graph_elsewhere_and_says_why(overrides, eager, why):
    graph, reason = choose_verify_graph("auto", _server(**overrides), verify_eager=eager)
    assert graph == "breakable" and why in reason


@pytest.mark.parametrize("graph", VERIFY_GRAPHS)
def test_an_explicit_graph_is_kept(graph):
    # A server the full graph cannot serve was refused before this (launcher, scheduler start).
    assert choose_verify_graph(graph, _server(tp_size=4), verify_eager=False) == (
        graph, f"--deterministic-verify-graph {graph}")


@pytest.mark.parametrize("overrides, message", [
    (dict(device="cpu"), "needs CUDA GPUs (--device cpu)"),
    (dict(attention_backend="fa3"), "prefill backend 'fa3', decode backend 'fa3'): add --attention-backend triton"),
    (dict(decode_attention_backend="flashinfer"), "decode backend 'flashinfer'"),
    (dict(attention_backend=None), "prefill backend None"),
    (dict(speculative_algorithm="EAGLE"), "--speculative-algorithm EAGLE: the server's own speculative decoding"),
    (dict(enable_dp_attention=True), "--enable-dp-attention:"),
    (dict(enable_two_batch_overlap=True), "--enable-two-batch-overlap:"),
    (dict(enable_lora=True), "--enable-lora:"),
    (dict(enable_pdmux=True), "--enable-pdmux:"),
    (dict(enable_deterministic_inference=True), "--enable-deterministic-inference:"),
    (dict(pp_size=2), "--pp-size 2"),
])
def test_servers_the_full_graph_cannot_serve_are_named(overrides, message):
    error = full_graph_error(_server(**overrides))
    assert error is not None and error.startswith("--deterministic-verify-graph full")
    assert message in error
