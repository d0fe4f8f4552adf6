"""The patch table against the installed (pinned) SGLang, and the version gate."""

import subprocess
import sys

import pytest

from sglang_tokenweave import versions
from sglang_tokenweave.glue.patch_table import CALLED, CHECKED_AGAINST, PATCH_TABLE, PatchTarget
from sglang_tokenweave.glue.patching import PatchTargetMissing, check_targets, register_hooks, resolve, resolve_hook

HOOK_KINDS = {"before", "after", "around", "replace", "called"}


def test_installed_sglang_is_the_pinned_one():
    assert versions.check_sglang_version() == versions.pinned_versions()["sglang"] == "0.5.17"


def test_pins_hold_the_upstream_versions_the_design_names():
    pins = versions.pinned_versions()
    assert pins == {"sglang": "0.5.17", "torch": "2.11.0", "sglang-kernel": "0.4.5",
                    "flashinfer-python": "0.6.15.post1"}


def test_version_mismatch_names_both_versions():
    with pytest.raises(versions.VersionMismatch) as error:
        versions.check_sglang_version(installed="0.5.16")
    assert "sglang==0.5.17" in str(error.value) and "sglang==0.5.16" in str(error.value)


@pytest.mark.parametrize("entry", PATCH_TABLE, ids=lambda t: t.target)
def test_every_target_resolves_on_the_pinned_sglang(entry):
    assert entry.kind in HOOK_KINDS
    assert entry.why
    target = resolve(entry.target)
    assert callable(target)
    assert callable(resolve_hook(entry.hook))


def test_table_was_checked_against_the_pinned_sglang():
    assert CHECKED_AGAINST == versions.pinned_versions()["sglang"]


def test_called_internals_are_resolved_never_registered(monkeypatch):
    from sglang.srt.plugins.hook_registry import HookRegistry

    registered = []
    monkeypatch.setattr(HookRegistry, "register", lambda target, hook, kind: registered.append(target))
    called = PatchTarget("sglang.srt.mem_cache.common.release_kv_cache",
                         "sglang_tokenweave.glue.determinism.verifier:_apply", CALLED, "f", "test")
    hook = PatchTarget("sglang.srt.managers.scheduler.Scheduler.__init__",
                       "sglang_tokenweave.glue.report:record_scheduler_process", "after", "f", "test")
    assert register_hooks({"f"}, [called, hook]) == [hook]
    assert registered == [hook.target]
    missing = PatchTarget("sglang.srt.mem_cache.common.no_such_function", called.hook, CALLED, "f", "test")
    with pytest.raises(PatchTargetMissing, match="no_such_function"):
        register_hooks({"f"}, [missing, hook])
    assert registered == [hook.target]  # nothing registered when a called internal is missing


def test_the_glue_calls_are_declared():
    called = {t.target for t in PATCH_TABLE if t.kind == CALLED}
    for name in ("sglang.srt.managers.schedule_batch.ScheduleBatch.init_new",
                 "sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new",
                 "sglang.srt.mem_cache.common.release_kv_cache",
                 "sglang.srt.layers.logits_processor.should_apply_lm_head_quant_method"):
        assert name in called


def test_targets_are_declared_once():
    keys = [(t.target, t.hook) for t in PATCH_TABLE]
    assert len(keys) == len(set(keys))


def test_a_missing_target_is_named():
    missing = PatchTarget("sglang.srt.managers.scheduler.Scheduler.no_such_method",
                          "sglang_tokenweave.glue.report:record_scheduler_process", "after", "core", "test")
    with pytest.raises(PatchTargetMissing, match="Scheduler.no_such_method"):
        check_targets([missing])
    with pytest.raises(PatchTargetMissing, match="sglang.srt.no_such_module"):
        resolve("sglang.srt.no_such_module.thing")


def test_a_missing_hook_is_named():
    broken = PatchTarget("sglang.srt.managers.scheduler.Scheduler.__init__",
                         "sglang_tokenweave.glue.report:no_such_hook", "after", "core", "test")
    with pytest.raises(PatchTargetMissing, match="no_such_hook"):
        check_targets([broken])


PLUGIN_PROBE = """
import os, sys
from sglang.srt.plugins import load_plugins
from sglang.srt.plugins.hook_registry import HookRegistry
load_plugins()
ours = sorted(t for t, hooks in HookRegistry._hooks.items()
              if any(src and src.dist_name == "sglang-tokenweave" for _, _, src in hooks))
print("HOOKS", len(ours), *ours)
"""


def _plugin_hooks(env):
    result = subprocess.run([sys.executable, "-c", PLUGIN_PROBE], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("HOOKS"))
    return line.split()[2:]


def test_plugin_is_a_no_op_without_the_switch():
    import os

    env = {k: v for k, v in os.environ.items() if k != "SGLANG_TOKENWEAVE"}
    assert _plugin_hooks(env) == []


def test_plugin_registers_its_hooks_with_the_switch():
    import os

    hooks = _plugin_hooks({**os.environ, "SGLANG_TOKENWEAVE": "1"})
    assert "sglang.srt.managers.scheduler.Scheduler.__init__" in hooks
