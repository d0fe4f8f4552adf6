"""The serving benchmarks end to end on a CPU with the tiny model: real servers started by the
harness, a handful of requests, one repeat."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_determinism  # noqa: E402
import bench_serving  # noqa: E402

from sglang_tokenweave.bench.sides import MULTICAST_OFF, OURS_MODULE, is_override  # noqa: E402

pytestmark = pytest.mark.e2e


def test_bench_determinism_solo_checks_every_deterministic_request(tmp_path):
    bench_determinism.main(["--servers", "ours", "--requests", "6", "--concurrency", "3", "--max-new-tokens", "8",
                            "--fractions", "0,0.5,1", "--repeats", "1", "--out-dir", str(tmp_path)])
    result = json.loads((tmp_path / "bench_determinism" / "bench_determinism_cpu_tp1.json").read_text())
    assert result["complete"] is True
    [run] = result["plan"]
    assert {k: run[k] for k in ("repeat", "side", "sitting", "gpu_memory_used_mib_before")} == {
        "repeat": 0, "side": "ours", "sitting": 0, "gpu_memory_used_mib_before": None}  # a CPU run
    assert run["start_s"] > 0 and run["measure_s"] > 0 and run["stop_s"] >= 0
    # a complete run leaves no checkpoint behind
    assert not list(tmp_path.glob("bench_determinism/logs/*/checkpoint.json"))
    check = result["solo_check"]
    # every request is deterministic at 100%: all 6 are distinct and each was run alone
    assert check["distinct_deterministic_requests"] == {"ours": 6} and check["checked_requests"] == {"ours": 6}
    assert check["pairs"] == 3 + 6 and check["every_output_identical"] is True
    rows = {r["det_fraction"]: r for r in result["rows"]}
    assert rows[0.5]["identical"] == {"pairs": 3, "matched": 3, "share": 1.0}
    assert rows[1.0]["relative_to_nondet"]["median"] > 0 and rows[1.0]["verification_passes"]["median"] > 0
    assert rows[1.0]["counters"]["verification_wait_seconds"] > 0  # where a pass's time goes, by phase
    assert rows[0.0]["verification_passes"] is None or rows[0.0]["verification_passes"]["median"] == 0
    ours = result["sides"]["ours"]
    assert ours["entry"] == f"python -m {OURS_MODULE}" and "--enable-deterministic-requests" in ours["args"]
    assert ours["allreduce"]["path"].startswith("n/a") and result["git"]["sha"]


def test_bench_serving_runs_stock_and_ours_through_sglangs_load_generator(tmp_path):
    bench_serving.main(["--workloads", "tiny:48:6:1.0", "--request-rates", "inf", "--num-prompts", "3",
                        "--repeats", "1", "--out-dir", str(tmp_path)])
    result = json.loads((tmp_path / "bench_serving" / "bench_serving_cpu_tp1.json").read_text())
    assert result["complete"] is True and [p["side"] for p in result["plan"]] == ["stock", "ours"]
    [row] = result["rows"]
    for side in ("stock", "ours"):
        assert row[side]["output_throughput"]["median"] > 0 and row[side]["p99_ttft_ms"]["median"] > 0
    assert row["ours_vs_stock"]["output_throughput"]["samples"] == [
        row["ours"]["output_throughput"]["median"] / row["stock"]["output_throughput"]["median"]]
    [head] = result["headline"]
    assert head["label"].startswith("tiny, max throughput")
    assert head["median"] == row["ours_vs_stock"]["output_throughput"]["median"]
    stock, ours = result["sides"]["stock"], result["sides"]["ours"]
    assert stock["flags"] == [] and ours["flags"] == ["--enable-deterministic-requests"]
    assert stock["stand_in"]  # no SGLang-only server on a CPU: said so
    assert not [k for k in stock["env"] if is_override(k)]
    assert {k: stock["env"][k] for k in MULTICAST_OFF} == MULTICAST_OFF
