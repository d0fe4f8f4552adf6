"""The TokenWeave glue against the pinned SGLang, without a server: patch targets, the SGLang
internals the splits call, and the per-forward plan decision."""

from types import SimpleNamespace

import pytest

from sglang_tokenweave.config import OverlayConfig
from sglang_tokenweave.overlap import TuningKey, TuningTable
from sglang_tokenweave.glue.patch_table import PATCH_TABLE
from sglang_tokenweave.glue.patching import resolve


def test_tokenweave_hooks_cover_llama_qwen2_and_qwen3():
    from sglang.srt.models.qwen2 import Qwen2Model
    from sglang.srt.models.qwen3 import Qwen3Model

    ours = {t.target for t in PATCH_TABLE if t.feature == "tokenweave"}
    assert {"sglang.srt.models.llama.LlamaModel.forward", "sglang.srt.models.qwen2.Qwen2Model.forward"} <= ours
    # Qwen3 runs Qwen2's model forward, so the Qwen2 hook is the Qwen3 hook too.
    assert Qwen3Model.forward is Qwen2Model.forward


def test_internals_called_by_the_splits_resolve():
    from sglang_tokenweave.glue.patch_table import CALLED, PATCH_TABLE

    called = [t.target for t in PATCH_TABLE if t.kind == CALLED and t.feature == "tokenweave"]
    assert "sglang.srt.batch_overlap.two_batch_overlap.TboForwardBatchPreparer.filter_batch" in called
    for name in called:
        assert callable(resolve(name)), name


def _state(threshold=None, world_size=2):
    from sglang_tokenweave.glue.overlap.runner_setup import WeaveState

    return WeaveState(config=OverlayConfig(enable_tokenweave=True, tokenweave_split_threshold=threshold),
                      table=TuningTable(), key=TuningKey.make("cpu", 128, world_size, {}), group=None,
                      world_size=world_size, hidden=128, dtype=None, eps=1e-6, on_cuda=False,
                      use_multimem=False, runner=None)


def test_defaults_keep_sglang_all_reduce_for_small_batches():
    from sglang_tokenweave.overlap import DEFAULT_FUSED_THRESHOLD
    from sglang_tokenweave.glue.overlap.hooks import _setting

    for world_size in (2, 4):
        assert not _setting(_state(world_size=world_size), DEFAULT_FUSED_THRESHOLD - 1).use_fused
        assert _setting(_state(world_size=world_size), DEFAULT_FUSED_THRESHOLD).use_fused


def _batch(mode, extend, prefix):
    return SimpleNamespace(forward_mode=mode, extend_seq_lens_cpu=extend, extend_prefix_lens_cpu=prefix)


@pytest.mark.parametrize(
    "mode, extend, prefix, tokens, capturing, cut",
    [
        ("EXTEND", [100, 150, 90], [0, 0, 0], 340, False, 128),  # above the threshold: split
        ("MIXED", [300, 1, 1], [0, 40, 50], 302, False, 128),  # a mixed chunk splits too
        ("EXTEND", [100, 50], [0, 0], 150, False, None),  # below the threshold
        ("EXTEND", [100, 150, 90], [0, 0, 0], 340, True, None),  # never while capturing a graph
        ("EXTEND", [100, 150, 90], [0, 0, 0], 352, False, None),  # padded rows: run whole
        ("DECODE", None, None, 340, False, None),  # decode never splits
        ("TARGET_VERIFY", [100, 150, 90], [0, 0, 0], 340, False, None),
    ],
)
def test_plan_splits_only_eligible_extend_batches(mode, extend, prefix, tokens, capturing, cut):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    from sglang_tokenweave.glue.overlap.hooks import _plan, _setting

    state = _state(threshold=200)
    plan = _plan(state, _batch(ForwardMode[mode], extend, prefix), tokens, _setting(state, tokens), capturing)
    assert plan.cut == cut
    assert plan.num_tokens == tokens


def test_defaults_split_from_the_default_threshold():
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    from sglang_tokenweave.overlap import DEFAULT_ALIGN
    from sglang_tokenweave.overlap import DEFAULT_SPLIT_THRESHOLD as T
    from sglang_tokenweave.glue.overlap.hooks import _plan, _setting

    state = _state(threshold=None)
    small, large = [T - 8], [T - 2000, 3000]
    assert not _plan(state, _batch(ForwardMode.EXTEND, small, [0]), T - 8, _setting(state, T - 8), False).is_split
    plan = _plan(state, _batch(ForwardMode.EXTEND, large, [0, 0]), T + 1000, _setting(state, T + 1000), False)
    # cut near the middle, on the alignment grid
    assert plan.is_split and plan.cut % DEFAULT_ALIGN == 0 and abs(plan.cut - (T + 1000) // 2) < DEFAULT_ALIGN


# --- prefill CUDA graphs: fuse-only batches replay them, split batches run eagerly --------------


def _admission(monkeypatch, state, mode, extend, prefix, tokens):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    from sglang_tokenweave.glue.overlap import hooks

    monkeypatch.setattr(hooks, "decoder_stack", lambda runner: SimpleNamespace(_tokenweave_state=state))
    batch = SimpleNamespace(input_ids=[0] * tokens, forward_mode=ForwardMode[mode], extend_seq_lens_cpu=extend,
                            extend_prefix_lens_cpu=prefix)
    runner = SimpleNamespace(model_runner=None)
    return hooks.prefill_graph_admits(lambda graph_runner, forward_batch: "sglang's verdict", runner, batch)


def _fused_state(threshold):
    from sglang_tokenweave.glue.overlap.runner_setup import WeaveState

    config = OverlayConfig(enable_tokenweave=True, tokenweave_split_threshold=threshold, tokenweave_fused_threshold=1)
    return WeaveState(config=config, table=TuningTable(), key=TuningKey.make("cpu", 128, 2, {}), group=None,
                      world_size=2, hidden=128, dtype=None, eps=1e-6, on_cuda=False, use_multimem=False, runner=None)


def test_prefill_graphs_keep_fuse_only_batches_and_send_split_batches_eager(monkeypatch):
    extend = ([100, 150, 90], [0, 0, 0], 340)
    # fuse-only (no split at this size): SGLang decides, as for stock
    assert _admission(monkeypatch, _fused_state(1 << 20), "EXTEND", *extend) == "sglang's verdict"
    assert _admission(monkeypatch, _fused_state(None), "EXTEND", [2048], [0], 2048) == "sglang's verdict"
    # a batch whose plan splits runs eagerly
    assert _admission(monkeypatch, _fused_state(200), "EXTEND", *extend) is False
    # nothing to split: decode, padded rows, no overlay
    assert _admission(monkeypatch, _fused_state(200), "DECODE", None, None, 340) == "sglang's verdict"
    assert _admission(monkeypatch, _fused_state(200), "EXTEND", [100, 150, 90], [0, 0, 0], 352) == "sglang's verdict"
    assert _admission(monkeypatch, None, "EXTEND", *extend) == "sglang's verdict"


def test_forwards_note_their_path_and_captured_graphs_keep_theirs():
    from sglang_tokenweave.glue.overlap.bench_paths import captured_path, forward_path

    state = _fused_state(None)
    assert forward_path(None, 512, graph=True) == "stock"
    state.note_path(1024, "fuse-only", capturing=True)
    state.note_path(512, "sglang", capturing=True)
    state.note_path(16384, "split", capturing=False)
    assert state.captured_paths == {1024: "fuse-only", 512: "sglang"}
    # a replay runs the graph of the smallest captured size that holds it (SGLang pads up)
    assert forward_path(state, 1000, graph=True) == "fuse-only"
    assert forward_path(state, 512, graph=True) == "sglang"
    assert captured_path(state.captured_paths, 2048) == "unknown"
    assert forward_path(state, 16384, graph=False) == "split"
    skip = SimpleNamespace(config=OverlayConfig(enable_tokenweave=True, tokenweave_bench_skip_allreduce=True))
    assert forward_path(skip, 1024, graph=False) == "no-comm"


def test_an_unfused_size_notes_sglangs_path():
    import torch

    from sglang_tokenweave.glue.overlap.hooks import _woven_forward
    from sglang_tokenweave.glue.overlap.runner_setup import WeaveState

    state = WeaveState(config=OverlayConfig(enable_tokenweave=True), table=TuningTable(),
                       key=TuningKey.make("cpu", 128, 2, {}), group=None, world_size=2, hidden=128, dtype=None,
                       eps=1e-6, on_cuda=False, use_multimem=False, runner=None)
    state.last_path = "fuse-only"
    assert _woven_forward(None, state, torch.zeros(8, dtype=torch.long), None, None, None) is None
    assert state.last_path == "sglang" and state.captured_paths == {}


def test_ops_a_captured_graph_used_stay_alive_when_the_ops_grow(monkeypatch):
    from sglang_tokenweave.glue.overlap import runner_setup

    monkeypatch.setattr(runner_setup, "FusedARNorm", lambda group, max_tokens, *a, **k: SimpleNamespace(max_tokens=max_tokens))
    state = _fused_state(None)
    state.make_ops(256)
    state.note_path(256, "sglang", capturing=True)
    state.make_ops(512)  # only SGLang's path was captured: the old ops go
    assert state.retired_ops == [] and state.capacity == 512
    captured_with = state.ops
    state.note_path(512, "fuse-only", capturing=True)
    state.make_ops(16384)
    assert state.retired_ops == captured_with and state.capacity == 16384


def test_the_path_recorder_writes_the_setup_then_one_line_per_prefill(monkeypatch, tmp_path):
    from sglang_tokenweave.glue.overlap import bench_paths, runner_setup

    path_file = tmp_path / "paths.jsonl"
    monkeypatch.setenv(bench_paths.PATHS_ENV, str(path_file))
    monkeypatch.setattr(bench_paths, "_tp_setup", lambda: {"custom_all_reduce": "custom_ar_v2", "multicast_ptrs": {}})
    state = _fused_state(None)
    state.note_path(2048, "fuse-only", capturing=True)
    monkeypatch.setattr(runner_setup, "decoder_stack", lambda runner: SimpleNamespace(_tokenweave_state=state))

    def forward(tokens, graph, extend=True, rank=0):
        runner = SimpleNamespace(ps=SimpleNamespace(tp_rank=rank))
        batch = SimpleNamespace(input_ids=[0] * tokens, forward_mode=SimpleNamespace(is_extend=lambda: extend))
        assert bench_paths.record_forward(SimpleNamespace(can_run_graph=graph), runner, batch) is None

    forward(2000, graph=True)
    state.note_path(16384, "split", capturing=False)
    forward(16384, graph=False)
    forward(1, graph=True, extend=False)  # decode: not a prefill
    forward(2000, graph=False, rank=1)  # only TP rank 0 writes
    forward(2000, graph=False)  # the same size another way: "mixed"
    setup_seen, paths = bench_paths.read_paths(path_file.read_text())
    assert setup_seen == {"custom_all_reduce": "custom_ar_v2", "multicast_ptrs": {}}
    assert paths == {2000: {"graph": "mixed", "path": "fuse-only+split"},
                     16384: {"graph": False, "path": "split"}}
    assert len(path_file.read_text().splitlines()) == 4
