"""The benchmark harness without servers: the plan's order, the statistics, what each side runs
with (stock: SGLang's entry point, no overlay or all-reduce overrides), the records of a run and
the results index."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_tokenweave.bench import allreduce_log, gpu_memory, multicast_probe, record, results, runner
from sglang_tokenweave.bench.plan import alternate, interleaved
from sglang_tokenweave.bench.sides import (
    CPU_SERVER_ARGS,
    GPU_BUNDLE_ARGS,
    MULTICAST_OFF,
    OURS_MODULE,
    STOCK_MODULE,
    Launch,
    forced_on_both,
    is_override,
    ours_side,
    stock_side,
)
from sglang_tokenweave.bench.stats import fmt, percentile, ratio_spread, spread

ROOT = Path(__file__).resolve().parents[2]
# A caller's environment with overrides (multicast on, custom all-reduce v2 off): a plain dict the
# harness is handed, never a process environment; it must drop every override.
INHERITED = {"PATH": "/usr/bin", "NCCL_DEBUG": "INFO", "CUDA_VISIBLE_DEVICES": "0,1",
             "SGLANG_TOKENWEAVE": "1", "SGLANG_TOKENWEAVE_ARGS": "--enable-tokenweave",
             "SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2": "0", "SGLANG_CUSTOM_ALL_REDUCE_V2_MAX_SIZE_KB": "1",
             "SGLANG_ENABLE_DETERMINISTIC_INFERENCE": "1", "SGLANG_USE_1STAGE_ALLREDUCE": "1", "NCCL_ALGO": "Ring",
             "NCCL_NVLS_ENABLE": "1", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "0"}


# --- plan ---

def test_two_variants_alternate_abba_and_every_repeat_runs_each_once():
    plan = interleaved(["A", "B"], 4)
    assert [v for _, v in plan] == ["A", "B", "B", "A", "A", "B", "B", "A"]
    assert [r for r, _ in plan] == [0, 0, 1, 1, 2, 2, 3, 3]
    three = interleaved(["s", "d", "o"], 3)
    assert [v for _, v in three] == ["s", "d", "o", "o", "d", "s", "s", "d", "o"]
    assert alternate([0.0, 0.1, 0.5], 1) == [0.5, 0.1, 0.0] and alternate([0.0, 0.1], 2) == [0.0, 0.1]


def test_a_plan_needs_a_repeat_and_a_variant():
    with pytest.raises(ValueError, match="at least 1"):
        interleaved(["A"], 0)
    with pytest.raises(ValueError, match="no variants"):
        interleaved([], 3)


# --- statistics ---

def test_spread_is_median_and_min_max_of_the_repeats_present():
    assert spread([3.0, 1.0, None, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0,
                                                   "samples": [3.0, 1.0, 2.0, 10.0]}
    assert spread([None, None]) is None and spread([]) is None
    assert fmt(spread([1.0, 1.1, 0.9])) == "1.00 (0.90-1.10)" and fmt(None) == "-"


def test_ratio_spread_pairs_repeats_instead_of_dividing_medians():
    ours, stock = [100.0, 50.0, 90.0], [100.0, 100.0, 45.0]
    s = ratio_spread(ours, stock)
    assert s["samples"] == [1.0, 0.5, 2.0] and s["median"] == 1.0 and (s["min"], s["max"]) == (0.5, 2.0)
    # the ratio of medians would be 90 / 100; a repeat missing on either side drops its pair
    assert ratio_spread([2.0, None, 3.0], [1.0, 1.0, None])["samples"] == [2.0]
    with pytest.raises(ValueError, match="pairs"):
        ratio_spread([1.0], [1.0, 2.0])


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


# --- sides ---

def test_stock_runs_sglangs_entry_point_with_no_overlay_or_allreduce_override():
    launch = Launch(["--model-path", "/models/llama-8b", "--tp", "2"], forced_on_both("cuda"), environ=INHERITED)
    stock, ours = stock_side("cuda"), ours_side(["--enable-tokenweave"])
    rec = launch.record(stock)
    assert rec["entry"] == f"python -m {STOCK_MODULE}" and rec["flags"] == [] and rec["stand_in"] is None
    assert rec["args"] == ["--model-path", "llama-8b", "--tp", "2", *GPU_BUNDLE_ARGS]  # no machine path
    for env in (rec["env"], launch.child_env(stock)):
        assert not [k for k in env if k.startswith("SGLANG_TOKENWEAVE") or "ALL_REDUCE" in k or "ALLREDUCE" in k
                    or "DETERMINISTIC" in k or k == "NCCL_ALGO"]
        assert {k: env[k] for k in MULTICAST_OFF} == MULTICAST_OFF  # the inherited "1" / "0" overridden
    assert rec["env"]["NCCL_DEBUG"] == "INFO" and "PATH" not in rec["env"]  # harmless ones kept, not all recorded
    assert set(launch.dropped_env) == {"SGLANG_TOKENWEAVE", "SGLANG_TOKENWEAVE_ARGS",
                                       "SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2", "SGLANG_CUSTOM_ALL_REDUCE_V2_MAX_SIZE_KB",
                                       "SGLANG_ENABLE_DETERMINISTIC_INFERENCE", "SGLANG_USE_1STAGE_ALLREDUCE",
                                       "NCCL_ALGO"}
    # ours: our launcher and the flag under test, on top of exactly what stock gets
    assert launch.record(ours)["entry"] == f"python -m {OURS_MODULE}"
    assert launch.args(ours) == [*launch.args(stock), "--enable-tokenweave"]
    assert launch.child_env(ours) == launch.child_env(stock)


def test_what_is_forced_on_both_depends_on_the_machine():
    gpu, cpu = forced_on_both("cuda"), forced_on_both("cpu")
    assert gpu.args == GPU_BUNDLE_ARGS and "FA3" in gpu.why and gpu.env == {}
    assert forced_on_both("cuda", []).args == () and forced_on_both("cuda", []).why == ""
    assert list(cpu.args) == CPU_SERVER_ARGS and cpu.why
    # SGLang cannot serve on a CPU alone: there stock is our launcher without features, and says so
    cpu_stock = stock_side("cpu", "sglang_deterministic", ["--enable-deterministic-inference"])
    assert cpu_stock.module == OURS_MODULE and "vllm" in cpu_stock.stand_in
    assert cpu_stock.flags == ("--enable-deterministic-inference",)


def test_overrides_are_recognised_by_name():
    assert is_override("SGLANG_TOKENWEAVE_ARGS") and is_override("SGLANG_K3_AR_FUSION")
    assert is_override("SGLANG_SYMM_MEM_PREALLOC_GB_SIZE") and is_override("NCCL_PROTO")
    assert not is_override("SGLANG_REQUEST_STATE_WAIT_TIMEOUT") and not is_override("NCCL_NVLS_ENABLE")


def test_multicast_switches_are_the_overlays_own():
    from sglang_tokenweave.comm.multicast import MULTICAST_OFF_SWITCHES

    assert MULTICAST_OFF == MULTICAST_OFF_SWITCHES


# --- records ---

def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_git_state_is_computed_and_ignores_the_results_folder(tmp_path):
    assert record.git_state(tmp_path) == {"sha": None, "dirty": None}
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    state = record.git_state(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", state["sha"]) and state["dirty"] is False
    (tmp_path / "benchmarks" / "results" / "b").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "b" / "r.json").write_text("{}")
    assert record.git_state(tmp_path)["dirty"] is False  # a run's own outputs
    (tmp_path / "new.py").write_text("")
    assert record.git_state(tmp_path)["dirty"] is True  # an uncommitted new file
    (tmp_path / "new.py").unlink()
    (tmp_path / "a.py").write_text("x = 2\n")
    assert record.git_state(tmp_path)["dirty"] is True


def test_header_records_date_git_card_versions_and_command_without_machine_paths():
    import importlib.metadata

    h = record.header("bench_x", str(ROOT / "scripts" / "bench_x.py"), ["--tp", "1", "--out-dir", "/data/out"], "cpu", 1)
    assert h["format"] == record.FORMAT and h["benchmark"] == "bench_x" and h["card"] == "cpu"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", h["date"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert h["git"]["sha"] == (head or None) and isinstance(h["git"]["dirty"], bool if head else type(None))
    assert h["versions"]["sglang"] == importlib.metadata.version("sglang")
    assert h["versions"]["sglang_tokenweave"] == importlib.metadata.version("sglang-tokenweave")
    assert h["command"] == "python scripts/bench_x.py --tp 1"


def test_write_json_leaves_no_partial_file(tmp_path):
    out = tmp_path / "d" / "r.json"
    record.write_json(out, {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1} and [p.name for p in out.parent.iterdir()] == ["r.json"]


# --- all-reduce path and multicast ---

V2_LINE = ("[2026-12-01 10:00:00 TP0] All Reduce config: symmetric_memory = 64.03 MB, local_buffer = 0.01 MB, "
           "multicast = False\n")


def test_the_allreduce_path_is_read_from_sglangs_log():
    found = allreduce_log.allreduce_path("start\n" + V2_LINE + V2_LINE + "ready\n", 2, "cuda")
    assert found["path"] == allreduce_log.V2 and found["v2_multicast"] is False and found["lines"] == [V2_LINE.strip()]
    allreduce_log.check_multicast_off(found, "stock")
    failed = allreduce_log.allreduce_path("Setup Custom allreduce failed with boom.\n", 4, "cuda")
    assert failed["path"].startswith("NCCL") and failed["v2_multicast"] is None
    assert allreduce_log.allreduce_path("", 2, "cuda")["path"].startswith("not logged")
    assert allreduce_log.allreduce_path(V2_LINE, 1, "cuda")["path"].startswith("n/a")
    assert allreduce_log.allreduce_path("", 2, "cpu")["path"] == "gloo (CPU)"


def test_multicast_in_sglangs_allreduce_is_refused():
    found = allreduce_log.allreduce_path(V2_LINE.replace("multicast = False", "multicast = True"), 4, "cuda")
    with pytest.raises(allreduce_log.MulticastOn, match="ours"):
        allreduce_log.check_multicast_off(found, "ours")


def test_multicast_probe_output_needs_every_rank():
    out = "noise\nmulticast_ptr rank 1 = 0\nmulticast_ptr rank 0 = 0\n"
    assert multicast_probe.parse(out, 2) == [0, 0]
    assert multicast_probe.parse("multicast_ptr rank 0 = 139872\n", 1) == [139872]
    with pytest.raises(ValueError, match="ranks 0-1"):
        multicast_probe.parse("multicast_ptr rank 0 = 0\n", 2)


# --- runner ---

class FakeServer:
    started = []

    def __init__(self, module, args, log_path, env=None, base_env=None, start_timeout=None):
        self.module, self.args, self.env, self.base_env = module, args, env, base_env
        self.killed = False
        FakeServer.started.append(self)

    def log_text(self):
        return FakeServer.log

    def kill(self):
        self.killed = True


@pytest.fixture
def fake_servers(monkeypatch):
    FakeServer.started, FakeServer.log = [], V2_LINE
    monkeypatch.setattr(runner, "ServerProcess", FakeServer)
    monkeypatch.setattr(gpu_memory, "used_mib", lambda: {0: 3, 1: 5})  # idle GPUs
    return FakeServer


def test_runner_starts_a_fresh_server_per_run_in_plan_order(fake_servers, monkeypatch, tmp_path):
    probed = []
    monkeypatch.setattr(multicast_probe, "probe", lambda tp, env: probed.append((tp, env)) or [0] * tp)
    launch = Launch(["--tp", "2"], forced_on_both("cuda"), environ=INHERITED)
    sides = [stock_side("cuda"), ours_side(["--enable-tokenweave"])]
    r = runner.Runner(launch, sides, 2, "cuda", tmp_path)
    measured = []
    r.run(3, lambda repeat, side, server: measured.append((repeat, side.name, server)))
    assert [(rep, name) for rep, name, _ in measured] == [(0, "stock"), (0, "ours"), (1, "ours"), (1, "stock"),
                                                        (2, "stock"), (2, "ours")]
    assert len({id(s) for _, _, s in measured}) == 6 and all(s.killed for _, _, s in measured)
    assert [s.module for s in fake_servers.started[:2]] == [STOCK_MODULE, OURS_MODULE]
    assert all(not set(launch.dropped_env) & set(s.base_env) for s in fake_servers.started)
    assert len(probed) == 1 and probed[0][1]["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
    rec = r.record()
    timings = ("start_s", "measure_s", "stop_s")
    assert [{k: v for k, v in run.items() if k not in timings} for run in rec["plan"]] == [
        {"repeat": rep, "side": name, "sitting": 0, "gpu_memory_used_mib_before": {0: 3, 1: 5}}
        for rep, name, _ in measured]
    assert all(run[k] >= 0 for run in rec["plan"] for k in timings)
    assert rec["multicast_pointers"] == [0, 0] and rec["machine_env"] == MULTICAST_OFF
    assert rec["sides"]["stock"]["allreduce"]["path"] == allreduce_log.V2
    assert rec["forced_on_both"]["args"] == list(GPU_BUNDLE_ARGS)
    assert "SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2" in rec["dropped_inherited_env"]


def test_runner_refuses_multicast_and_still_kills_the_server(fake_servers, monkeypatch, tmp_path):
    monkeypatch.setattr(multicast_probe, "probe", lambda tp, env: [0] * tp)
    fake_servers.log = V2_LINE.replace("False", "True")
    r = runner.Runner(Launch([], forced_on_both("cuda"), environ={}), [stock_side("cuda")], 2, "cuda", tmp_path)
    with pytest.raises(allreduce_log.MulticastOn):
        r.run(1, lambda *a: pytest.fail("measured with multicast on"))
    assert fake_servers.started[0].killed
    monkeypatch.setattr(multicast_probe, "probe", lambda tp, env: [0, 1 << 40])
    with pytest.raises(RuntimeError, match="multicast is on"):
        runner.Runner(Launch([], forced_on_both("cuda"), environ={}), [stock_side("cuda")], 2, "cuda",
                      tmp_path).run(1, lambda *a: None)


def test_runner_at_tp1_probes_nothing(fake_servers, monkeypatch, tmp_path):
    monkeypatch.setattr(multicast_probe, "probe", lambda tp, env: pytest.fail("probed at TP1"))
    r = runner.Runner(Launch([], forced_on_both("cuda"), environ={}), [stock_side("cuda")], 1, "cuda", tmp_path)
    r.run(1, lambda *a: None)
    rec = r.record()
    assert rec["multicast_pointers"] == "n/a" and rec["sides"]["stock"]["allreduce"]["path"].startswith("n/a")
    with pytest.raises(ValueError, match="repeat"):
        runner.Runner(Launch([], forced_on_both("cpu")), [stock_side("cpu"), stock_side("cpu")], 1, "cpu", tmp_path)


def test_runner_refuses_to_start_a_server_on_a_gpu_another_process_holds(fake_servers, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_memory, "used_mib", lambda: {0: 3, 1: 66_000})
    monkeypatch.setattr(gpu_memory, "IDLE_WAIT_S", 0.0)  # still held after the wait
    r = runner.Runner(Launch([], forced_on_both("cuda"), environ={}), [stock_side("cuda")], 1, "cuda", tmp_path)
    with pytest.raises(RuntimeError, match=r"stock server of repeat 0: GPU memory in use .*\{1: 66000\}"):
        r.run(1, lambda *a: pytest.fail("measured beside another process"))
    assert not fake_servers.started


def test_a_gpu_given_back_within_the_timeout_is_waited_for():
    readings = iter([{0: 70_000}, {0: 900}, {0: 3}])
    slept = []
    used = gpu_memory.wait_until_idle("a server", timeout=60, read=lambda: next(readings), sleep=slept.append)
    assert used == {0: 900} and slept == [1.0]  # a driver's reservation below IDLE_MIB counts as idle


def test_gpu_memory_is_read_from_nvidia_smi_and_absent_without_it(monkeypatch):
    assert gpu_memory.parse_used_mib("0, 3\n1, 70123\n") == {0: 3, 1: 70123}
    monkeypatch.setattr(gpu_memory.shutil, "which", lambda name: None)
    assert gpu_memory.used_mib() is None
    assert gpu_memory.wait_until_idle("a CPU server", timeout=0) is None  # nothing to check


SLEEPING_SERVER = """
import argparse, http.server, threading
p = argparse.ArgumentParser(); p.add_argument("--host"); p.add_argument("--port", type=int)
a = p.parse_args()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
http.server.HTTPServer((a.host, a.port), H).serve_forever()
"""

CUT_SHORT_BENCHMARK = """
import signal, sys, time
# As from a terminal: the test itself may run with SIGHUP ignored (nohup), which children inherit.
for s in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_DFL)
from sglang_tokenweave.bench.runner import servers_killed_on_termination
from sglang_tokenweave.bench.server import ServerProcess
with servers_killed_on_termination():
    server = ServerProcess("sleeping_server", [], sys.argv[1], start_timeout=60)
    print(server.proc.pid, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_benchmark_cut_short_by_a_signal_kills_its_server(tmp_path, signum):
    # A server has a session of its own: without the handler it outlived the benchmark (seen:
    # a `timeout` left one holding 85% of a GPU's memory through the next benchmark).
    (tmp_path / "sleeping_server.py").write_text(SLEEPING_SERVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    bench = subprocess.Popen([sys.executable, "-c", CUT_SHORT_BENCHMARK, str(tmp_path / "server.log")],
                             stdout=subprocess.PIPE, text=True, env=env)
    server_pid = None
    try:
        server_pid = int(bench.stdout.readline())
        os.kill(server_pid, 0)  # running
        bench.send_signal(signum)
        assert bench.wait(timeout=60) == 128 + signum
        with pytest.raises(ProcessLookupError):
            os.kill(server_pid, 0)
    finally:
        bench.kill()
        if server_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server_pid, signal.SIGKILL)


def test_a_signal_the_caller_ignores_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with runner.servers_killed_on_termination():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # as under nohup
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


# --- results layout and index ---

def test_result_path_is_per_benchmark():
    assert results.result_path(Path("out"), "bench_serving", "h100", 4, "x") == Path(
        "out/bench_serving/bench_serving_h100_tp4_x.json")
    assert results.result_path(Path("out"), "b", "cpu") == Path("out/b/b_cpu.json")


def test_index_lists_date_card_command_and_headline(tmp_path):
    folder = tmp_path / "benchmarks" / "results" / "bench_serving"
    folder.mkdir(parents=True)
    fair = {"format": record.FORMAT, "date": "2026-12-01T10:00:00+00:00", "card": "NVIDIA H100 80GB HBM3",
            "gpus": 4, "command": "python scripts/bench_serving.py --tp 4",
            "headline": results.headline("chat, max throughput", {"median": 1.02, "min": 0.99, "max": 1.05})}
    (folder / "bench_serving_h100_tp4.json").write_text(json.dumps(fair))
    (folder / "bench_serving_h100_tp4.png").write_bytes(b"")
    (folder / "bench_serving_h100_tp1.json").write_text(json.dumps({**fair, "complete": False}))
    legacy_dir = tmp_path / "benchmarks" / "results" / "bench_determinism"
    legacy_dir.mkdir()
    legacy = {"card": "cpu", "gpus": 1, "command": "python scripts/bench_determinism.py",
              "rows": [{"server": "ours", "det_fraction": 0.1, "throughput_relative_to_nondet": 0.9}]}
    (legacy_dir / "old.json").write_text(json.dumps(legacy))
    text = results.render_index(results.index_entries(tmp_path))
    fair_line = next(line for line in text.splitlines() if "bench_serving_h100_tp4.json" in line)
    assert fair_line.startswith("| 2026-12-01 |") and "NVIDIA H100 80GB HBM3 x4" in fair_line
    assert "| yes |" in fair_line and "chat, max throughput: 1.020 (0.990-1.050)" in fair_line
    assert "[plot](results/bench_serving/bench_serving_h100_tp4.png)" in fair_line
    assert "`python scripts/bench_serving.py --tp 4`" in fair_line
    cut_line = next(line for line in text.splitlines() if "bench_serving_h100_tp1.json" in line)
    assert "| yes, cut short |" in cut_line
    old_line = next(line for line in text.splitlines() if "old.json" in line)
    assert "| unknown |" in old_line and "| no |" in old_line and "0.900" in old_line and "plot" not in old_line


def test_the_committed_index_lists_every_result():
    index = (ROOT / results.INDEX).read_text()
    listed = set(re.findall(r"\]\((results/[^)]+\.json)\)", index))
    present = {p.relative_to(ROOT / "benchmarks").as_posix() for p in (ROOT / results.RESULTS).glob("*/*.json")}
    assert listed == present, "run python scripts/bench_index.py"
    assert not list((ROOT / results.RESULTS).glob("*.json")), "results go into benchmarks/results/<benchmark>/"
