"""The kernel and model benchmarks against stock SGLang as its users run it, without a GPU:
the plan of runs, each side's flags and environment, the result JSON, the record of which
all-reduce SGLang dispatched, and that no GPU script or test overrides SGLang's defaults."""

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_fused_allreduce_rmsnorm as kernel_bench  # noqa: E402
import bench_tokenweave_model as model_bench  # noqa: E402

from sglang_tokenweave.comm.multicast import MULTICAST_OFF_SWITCHES  # noqa: E402
from sglang_tokenweave.glue.overlap import allreduce_dispatch as dispatch  # noqa: E402
from sglang_tokenweave.glue.overlap.bench_paths import PATHS_ENV  # noqa: E402

# SGLang switches that make "stock" something other than SGLang's defaults.
OVERRIDES = ("SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2", "--enforce-disable-flashinfer-allreduce-fusion",
             "--disable-custom-all-reduce", "--cuda-graph-backend-prefill", "--disable-prefill-cuda-graph",
             "--cuda-graph-max-bs", "--disable-cuda-graph")


# ---- the model benchmark: plan, sides, JSON -------------------------------------------------

def test_runs_alternate_which_side_goes_first():
    assert model_bench.interleaved_plan(["stock", "ours"], 3) == [
        (0, "stock"), (0, "ours"), (1, "ours"), (1, "stock"), (2, "stock"), (2, "ours")]
    plan = model_bench.interleaved_plan(["stock", "ours", "fuse_only"], 4)
    assert [v for _, v in plan][:6] == ["stock", "ours", "fuse_only", "fuse_only", "ours", "stock"]
    assert all(sum(v == name for _, v in plan) == 4 for name in ("stock", "ours", "fuse_only"))


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "2"], "at least 3"),
    (["--variants", "ours,fuse_only"], "must include stock"),
    (["--variants", "stock,nope"], "unknown variant nope"),
])
def test_runs_too_few_or_without_stock_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        model_bench.parse_args(["--tp", "2", *argv])
    assert message in capsys.readouterr().err


def test_stock_runs_sglang_defaults_with_multicast_off_and_ours_adds_only_its_flag():
    # A caller's environment with overrides (multicast on, custom all-reduce v2 off): a plain dict
    # handed to the function under test, never a process environment; every one must be dropped.
    inherited = {"PATH": "/bin", "SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2": "0", "SGLANG_TOKENWEAVE": "1",
                 "SGLANG_TOKENWEAVE_ARGS": "--enable-tokenweave", "NCCL_NVLS_ENABLE": "1", "NCCL_ALGO": "Tree",
                 "SGLANG_ENABLE_DETERMINISTIC_INFERENCE": "1", "SGLANG_CUSTOM_ALL_REDUCE_V2_MAX_SIZE_KB": "64",
                 "SGLANG_TOKENWEAVE_CACHE_DIR": "/cache", "SGLANG_LOG_LEVEL": "info"}
    stock = model_bench.side_env(model_bench.side_flags("stock", None), "/w/p", base=inherited)
    ours = model_bench.side_env(model_bench.side_flags("ours", None), "/w/p", base=inherited)
    assert model_bench.recorded_env(stock) == {**MULTICAST_OFF_SWITCHES, PATHS_ENV: "(path)",
                                               "SGLANG_TOKENWEAVE_CACHE_DIR": "(path)", "SGLANG_LOG_LEVEL": "info"}
    assert model_bench.env_overrides(inherited) == [
        "NCCL_ALGO", "SGLANG_CUSTOM_ALL_REDUCE_V2_MAX_SIZE_KB", "SGLANG_ENABLE_DETERMINISTIC_INFERENCE",
        "SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2", "SGLANG_TOKENWEAVE", "SGLANG_TOKENWEAVE_ARGS"]
    assert stock["PATH"] == "/bin" and stock[PATHS_ENV] == "/w/p"
    assert {k: v for k, v in ours.items() if k not in stock} == {"SGLANG_TOKENWEAVE": "1",
                                                                 "SGLANG_TOKENWEAVE_ARGS": "--enable-tokenweave"}
    tuned = model_bench.side_env(model_bench.side_flags("ours", "t.json"), "/w/p", base=inherited)
    assert tuned["SGLANG_TOKENWEAVE_ARGS"] == "--enable-tokenweave --tokenweave-config t.json"


def test_both_sides_run_the_same_sglang_command_at_its_defaults():
    args = model_bench.parse_args(["--tp", "2", "--tokens", "1024,2048", "--samples", "2"])
    argv = model_bench.tool_argv("MODEL", "RESULT", args)
    assert argv[:2] == ["-m", "sglang_tokenweave.glue.overlap.one_batch"]
    assert argv[argv.index("--input-len") + 1:argv.index("--output-len")] == ["1024", "2048"] * 3
    assert " ".join(model_bench.forced_args()) in " ".join(argv)
    assert not any(flag in " ".join(argv) for flag in OVERRIDES)
    runs = {v: [{"allreduce": None, "status": "overlay off"}] for v in ("stock", "ours")}
    sides = model_bench.side_records(["stock", "ours"], args, runs)
    assert sides["stock"]["command"] == sides["ours"]["command"]
    assert sides["stock"]["overlay_flags"] is None and sides["ours"]["overlay_flags"] == ["--enable-tokenweave"]


PREFILL_S = {"stock": [0.010, 0.012, 0.011], "ours": [0.008, 0.010, 0.009]}  # per repeat, at 1024 tokens


def _fake_run_tool(setup, runs_seen):
    """bench_one_batch's outputs for one run: result lines, the path file and the log."""

    def run(cmd, env, timeout, log_path, result_file):
        variant = "ours" if env.get("SGLANG_TOKENWEAVE") == "1" else "stock"
        repeat = sum(v == variant for v in runs_seen)
        runs_seen.append(variant)
        lengths = cmd[cmd.index("--input-len") + 1:cmd.index("--output-len")]
        lines = []
        for i, tokens in enumerate(int(t) for t in lengths):
            warmup = i < len(set(lengths))
            prefill = 1.0 if warmup else PREFILL_S[variant][repeat] * tokens / 1024
            lines.append(json.dumps({"input_len": tokens, "prefill_latency": prefill,
                                     "median_decode_latency": 0.002}))
        result_file.write_text("\n".join(lines) + "\n")
        paths = [{"allreduce": setup}]
        for tokens in sorted({int(t) for t in lengths}):
            path = "stock" if variant == "stock" else ("split" if tokens >= 2048 else "fuse-only")
            paths.append({"tokens": tokens, "graph": tokens <= 1024, "path": path})
        Path(env[PATHS_ENV]).write_text("".join(json.dumps(p) + "\n" for p in paths))
        log_path.write_text("x")
        return ("[TP0] sglang-tokenweave: tokenweave active (fused all-reduce)" if variant == "ours" else "")

    return run


def test_result_holds_medians_spreads_paired_speedups_paths_and_each_side(monkeypatch, tmp_path):
    setup = {"custom_all_reduce": "custom_ar_v2", "multicast_ptrs": {"mc_base_ptr": 0, "pull_sem_mc_ptr": 0}}
    runs_seen = []
    monkeypatch.setenv("SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2", "0")  # a stray override: not passed on
    monkeypatch.setattr(model_bench, "run_tool", _fake_run_tool(setup, runs_seen))
    monkeypatch.setattr(model_bench, "card_name", lambda: ("NVIDIA H100 80GB HBM3", "h100"))
    argv = ["--tp", "2", "--tokens", "1024,2048", "--samples", "2", "--out-dir", str(tmp_path)]
    model_bench.main(argv)
    result = json.loads((tmp_path / "bench_tokenweave_model_h100_tp2.json").read_text())

    assert runs_seen == result["order"] == ["stock", "ours", "ours", "stock", "stock", "ours"]
    assert set(result["git"]) == {"sha", "dirty"} and result["versions"]["sglang"] == "0.5.17"
    assert str(tmp_path) not in json.dumps(result)
    rows = {(r["tokens"], r["variant"]): r for r in result["rows"]}
    stock, ours = rows[(1024, "stock")], rows[(1024, "ours")]
    assert stock["prefill_us_runs"] == [10000.0, 12000.0, 11000.0]  # the warm-up round dropped
    assert (stock["prefill_us"], stock["prefill_us_min"], stock["prefill_us_max"]) == (11000.0, 10000.0, 12000.0)
    ratios = sorted(s / o for s, o in zip(PREFILL_S["stock"], PREFILL_S["ours"]))
    assert ours["speedup_vs_stock"] == round(ratios[1], 4)  # the median of per-repeat ratios
    assert (ours["speedup_vs_stock_min"], ours["speedup_vs_stock_max"]) == (round(ratios[0], 4), round(ratios[2], 4))
    assert "speedup_vs_stock" not in stock and stock["decode_step_us"] == 2000.0
    assert (stock["cuda_graph"], stock["path"]) == (True, "stock")
    assert (rows[(1024, "ours")]["path"], rows[(2048, "ours")]["path"]) == ("fuse-only", "split")
    assert rows[(2048, "ours")]["cuda_graph"] is False
    sides = result["sides"]
    stock_env = sides["stock"]["env"]
    assert {k: stock_env[k] for k in MULTICAST_OFF_SWITCHES} == MULTICAST_OFF_SWITCHES
    assert "SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2" in sides["stock"]["dropped_env"]
    assert not {"SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2", "SGLANG_TOKENWEAVE", "SGLANG_TOKENWEAVE_ARGS"} & set(stock_env)
    assert sides["ours"]["env"]["SGLANG_TOKENWEAVE_ARGS"] == "--enable-tokenweave"
    assert sides["stock"]["allreduce"] == setup and sides["ours"]["overlay_status"].startswith("tokenweave active")
    assert result["multicast_pointers"] == {"stock": "all 0", "ours": "all 0"}
    assert result["forced_on_both_sides"] == model_bench.FORCED_ARGS


def test_a_multicast_mapping_stops_the_run_after_writing_the_result(monkeypatch, tmp_path):
    setup = {"custom_all_reduce": "custom_ar_v2", "multicast_ptrs": {"mc_base_ptr": 4096, "pull_sem_mc_ptr": 0}}
    monkeypatch.setattr(model_bench, "run_tool", _fake_run_tool(setup, []))
    monkeypatch.setattr(model_bench, "card_name", lambda: ("NVIDIA H100 80GB HBM3", "h100"))
    with pytest.raises(SystemExit, match="multicast was mapped"):
        model_bench.main(["--tp", "2", "--tokens", "1024", "--samples", "1", "--out-dir", str(tmp_path)])
    result = json.loads((tmp_path / "bench_tokenweave_model_h100_tp2.json").read_text())
    assert "4096" in result["multicast_pointers"]["stock"]


def test_runs_that_report_different_paths_are_marked_mixed():
    assert model_bench.agreed(["fuse-only", "fuse-only"]) == "fuse-only"
    assert model_bench.agreed(["fuse-only", "split"]) == "mixed"
    assert model_bench.agreed([{"a": 1}, {"a": 1}]) == {"a": 1}


# ---- the kernel benchmark ---------------------------------------------------------------------

def test_kernel_speedups_are_against_the_stock_default():
    row = {"tokens": 512, "hidden": 8192, "ours_us": 10.0, "ours_config": "sharded/16", "ours_default_us": 12.0,
           "floor_us": 5.0, "stock_default_us": 15.0, "stock_default_kind": "v2", "nccl_us": 30.0,
           "flashinfer_us": 20.0, "flashinfer_fp32acc_us": 25.0}
    kernel_bench.add_speedups(row)
    assert row["speedup_vs_stock_default"] == 1.5 and row["default_speedup_vs_stock_default"] == 1.25
    assert (row["speedup_vs_nccl"], row["speedup_vs_flashinfer"], row["speedup_vs_flashinfer_fp32acc"]) == (3.0, 2.0, 2.5)
    assert row["ours_over_floor"] == 2.0 and "speedup_vs_symm_two_shot" not in row
    line = kernel_bench.summary_line(row)
    assert "stock_default v2    15.0 (1.50x)" in line and line.index("stock_default") < line.index("nccl")


def test_kernel_bench_sets_up_sglang_from_its_own_defaults():
    from sglang_tokenweave.glue.patching import resolve

    from sglang_tokenweave.glue.patch_table import CALLED, PATCH_TABLE

    dispatch_calls = tuple(t.target for t in PATCH_TABLE if t.kind == CALLED and "allreduce_dispatch" in t.hook)
    assert len(dispatch_calls) == 7
    for name in kernel_bench.CALLED_INTERNALS + dispatch_calls:
        assert resolve(name) is not None, name
    # SGLang 0.5.17's defaults: custom all-reduce on, no mscclpp / symm-mem all-reduce, no P2P check
    assert kernel_bench.sglang_comm_defaults() == {
        "disable_custom_all_reduce": False, "enable_mscclpp": False, "enable_torch_symm_mem": False,
        "enable_symm_mem": False, "enable_p2p_check": False}


def test_flashinfer_baseline_is_called_as_sglang_calls_it():
    import inspect

    from sglang.srt.layers import flashinfer_comm_fusion, layernorm

    op = flashinfer_comm_fusion.flashinfer_allreduce_residual_rmsnorm
    defaults = {a.name: a.default_value for a in op.default._schema.arguments}
    for name in ("use_oneshot", "trigger_completion_at_end", "fp32_acc"):
        assert kernel_bench.FLASHINFER_AS_SGLANG[name] == defaults[name], name
    assert "launch_with_pdl=True" in inspect.getsource(flashinfer_comm_fusion)
    assert "fp32_acc" not in inspect.getsource(layernorm)  # RMSNorm's fusion path keeps the default


def test_kernel_result_header_records_commit_versions_and_the_stock_setup():
    args = SimpleNamespace(replays=30, iters=10, argv=["--tp", "2", "--out-dir", "/tmp/somewhere"],
                           dropped_env=["SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2"])
    stock = {"sglang_server_arg_defaults": {"disable_custom_all_reduce": False},
             "tp_group": {"custom_all_reduce": "custom_ar_v2", "multicast_ptrs": {"mc_base_ptr": 0}}}
    header = kernel_bench.result_header(args, 2, "sgl_kernel.fused_add_rmsnorm", stock)
    assert set(header["git"]) == {"sha", "dirty"} and header["git"]["sha"]
    assert header["versions"]["sglang"] == "0.5.17" and header["versions"]["torch"] == torch.__version__.split("+")[0]
    assert header["command"] == "python scripts/bench_fused_allreduce_rmsnorm.py --tp 2"
    assert header["stock_default"] == stock and header["multicast_env"] == MULTICAST_OFF_SWITCHES
    assert header["dropped_env"] == ["SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2"]


# ---- which all-reduce SGLang dispatched --------------------------------------------------------

class CustomAllReduceV2:  # named as SGLang's class: the label comes from the class name
    def __init__(self, multicast=0):
        self.disabled, self.mc_base_ptr, self.pull_sem_mc_ptr = False, multicast, 0

    def custom_all_reduce(self, x):
        return x * 2


class FakeNccl:
    def all_reduce(self, x):
        x.mul_(2)

    def outplace_all_reduce(self, x):
        out = x.clone()
        self.all_reduce(out)  # nested: recorded once
        return out


class FakeGroup:
    """GroupCoordinator's shape: small inputs to the custom all-reduce, large ones to NCCL."""

    def __init__(self, ca=None):
        self.ca_comm, self.pynccl_comm, self.torch_symm_mem_comm = ca, FakeNccl(), None

    def all_reduce(self, x):
        if self.ca_comm is not None and x.numel() <= 4:
            return self.ca_comm.custom_all_reduce(x)
        if x.numel() <= 8:
            return self.pynccl_comm.outplace_all_reduce(x)
        torch.distributed.all_reduce(x)
        return x


def test_dispatch_records_each_path_under_capture_and_outside_and_restores_everything(monkeypatch):
    group, capturing, calls = FakeGroup(CustomAllReduceV2()), [False], []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda x: None)
    plain_all_reduce = torch.distributed.all_reduce
    with dispatch.record_dispatch(group, calls, capturing=lambda: capturing[0]):
        group.all_reduce(torch.ones(4))
        capturing[0] = True
        assert torch.equal(group.all_reduce(torch.ones(4)), torch.full((4,), 2.0))
        group.all_reduce(torch.ones(8))
        group.all_reduce(torch.ones(16))
    assert calls == [("custom_ar_v2", False), ("custom_ar_v2", True), ("pynccl", True), ("torch_distributed", True)]
    assert dispatch.dispatch_summary(calls) == {"graph": "custom_ar_v2+pynccl+torch_distributed",
                                                "eager": "custom_ar_v2"}
    assert dispatch.path_kind("custom_ar_v2+pynccl") == "v2+NCCL" and dispatch.path_kind(None) is None
    assert "custom_all_reduce" not in vars(group.ca_comm) and "all_reduce" not in vars(group.pynccl_comm)
    assert torch.distributed.all_reduce is plain_all_reduce
    group.all_reduce(torch.ones(4))
    assert len(calls) == 4  # nothing recorded after the block


def test_group_setup_names_the_custom_all_reduce_and_checks_multicast():
    setup = dispatch.group_setup(FakeGroup(CustomAllReduceV2()))
    assert setup == {"custom_all_reduce": "custom_ar_v2", "multicast_ptrs": {"mc_base_ptr": 0, "pull_sem_mc_ptr": 0}}
    assert dispatch.multicast_refusal(setup) == ""
    assert dispatch.group_setup(FakeGroup()) == {"custom_all_reduce": None, "multicast_ptrs": {}}
    mapped = dispatch.group_setup(FakeGroup(CustomAllReduceV2(multicast=1 << 40)))
    assert "mc_base_ptr" in dispatch.multicast_refusal(mapped)


# ---- no GPU script or test overrides SGLang's defaults -------------------------------------------

GPU_FILES = sorted((ROOT / "tests" / "gpu").glob("*.py")) + [
    ROOT / "scripts" / name for name in ("gpu_smoke.sh", "bench_fused_allreduce_rmsnorm.py", "bench_tokenweave_model.py")]


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.name)
def test_gpu_scripts_and_tests_leave_sglang_at_its_defaults(path):
    text = path.read_text()
    assert not [flag for flag in OVERRIDES if flag in text]


def test_gpu_servers_get_only_the_multicast_switches():
    for path in sorted((ROOT / "tests" / "gpu").glob("test_*.py")):
        if "SAFE_ENV" not in path.read_text():
            continue
        spec = importlib.util.spec_from_file_location(f"gpu_env_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "SAFE_ENV"):
            assert module.SAFE_ENV == MULTICAST_OFF_SWITCHES, path.name
    exported = re.findall(r"^export (.*)$", (ROOT / "scripts" / "gpu_smoke.sh").read_text(), re.M)
    settings = dict(item.split("=", 1) for line in exported for item in shlex.split(line))
    assert settings == {**MULTICAST_OFF_SWITCHES, "PYTHONUNBUFFERED": "1"}


PROBE = """
from sglang.srt.plugins.hook_registry import HookRegistry
import sglang_tokenweave.glue.overlap.one_batch
ours = sorted(t for t, hooks in HookRegistry._hooks.items()
              if any(getattr(h, "__module__", "").startswith("sglang_tokenweave") for _, h, _ in hooks))
print("HOOKS", *ours)
"""


def test_stock_one_batch_carries_only_the_path_recorder():
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SGLANG_TOKENWEAVE")}
    env[PATHS_ENV] = "unused"
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("HOOKS"))
    assert line.split()[1:] == ["sglang.srt.model_executor.model_runner.ModelRunner.forward"]
