"""The TokenWeave glue against the pinned SGLang, without a server: patch targets, the SGLang
internals the splits call, and the per-forward plan decision."""

from types import SimpleNamespace

import pytest

from sglang_tokenweave.config import OverlayConfig
from sglang_tokenweave.overlap import TuningKey, TuningTable
from sglang_tokenweave.patch_table import PATCH_TABLE
from sglang_tokenweave.patching import resolve


def test_tokenweave_hooks_cover_llama_qwen2_and_qwen3():
    from sglang.srt.models.qwen2 import Qwen2Model
    from sglang.srt.models.qwen3 import Qwen3Model

    ours = {t.target for t in PATCH_TABLE if t.feature == "tokenweave"}
    assert {"sglang.srt.models.llama.LlamaModel.forward", "sglang.srt.models.qwen2.Qwen2Model.forward"} <= ours
    # Qwen3 runs Qwen2's model forward, so the Qwen2 hook is the Qwen3 hook too.
    assert Qwen3Model.forward is Qwen2Model.forward


def test_internals_called_by_the_splits_resolve():
    from sglang_tokenweave.tokenweave.setup import CALLED_INTERNALS

    for name in CALLED_INTERNALS:
        assert callable(resolve(name)), name


def _state(threshold=None, world_size=2):
    from sglang_tokenweave.tokenweave.setup import WeaveState

    return WeaveState(config=OverlayConfig(enable_tokenweave=True, tokenweave_split_threshold=threshold),
                      table=TuningTable(), key=TuningKey.make("cpu", 128, world_size, {}), group=None,
                      world_size=world_size, hidden=128, dtype=None, eps=1e-6, on_cuda=False,
                      use_multimem=False, runner=None)


def test_defaults_keep_sglang_all_reduce_for_small_batches():
    from sglang_tokenweave.overlap import DEFAULT_FUSED_THRESHOLD
    from sglang_tokenweave.tokenweave.hooks import _setting

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

    from sglang_tokenweave.tokenweave.hooks import _plan, _setting

    state = _state(threshold=200)
    plan = _plan(state, _batch(ForwardMode[mode], extend, prefix), tokens, _setting(state, tokens), capturing)
    assert plan.cut == cut
    assert plan.num_tokens == tokens


def test_defaults_split_from_the_default_threshold():
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    from sglang_tokenweave.overlap import DEFAULT_ALIGN
    from sglang_tokenweave.overlap import DEFAULT_SPLIT_THRESHOLD as T
    from sglang_tokenweave.tokenweave.hooks import _plan, _setting

    state = _state(threshold=None)
    small, large = [T - 8], [T - 2000, 3000]
    assert not _plan(state, _batch(ForwardMode.EXTEND, small, [0]), T - 8, _setting(state, T - 8), False).is_split
    plan = _plan(state, _batch(ForwardMode.EXTEND, large, [0, 0]), T + 1000, _setting(state, T + 1000), False)
    # cut near the middle, on the alignment grid
    assert plan.is_split and plan.cut % DEFAULT_ALIGN == 0 and abs(plan.cut - (T + 1000) // 2) < DEFAULT_ALIGN
