"""Pure helpers of the benchmark scripts: the recorded command line and the scaled model copy."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_determinism  # noqa: E402
import bench_seeded_sampler  # noqa: E402
import sampler_flip_rates  # noqa: E402
import scheduler_profile  # noqa: E402
from bench_command import recorded_command  # noqa: E402

from sglang_tokenweave.tiny_model import tiny_model_path  # noqa: E402


def test_recorded_command_keeps_the_run_and_drops_the_machine():
    script = str(Path(__file__).resolve().parent.parent / "scripts" / "bench_x.py")
    argv = ["--tp", "4", "--out-dir", "/somewhere/out", "--model-path", "/cache/models/tiny",
            "--tokenweave-config=/data/tuning/h100.json", "--extra-args", "--dtype bfloat16"]
    assert recorded_command(script, argv) == (
        "python scripts/bench_x.py --tp 4 --model-path tiny --tokenweave-config=h100.json "
        "--extra-args '--dtype bfloat16'")


def test_scaled_copy_scales_only_the_output_projection():
    source = tiny_model_path()
    copy = bench_determinism.scaled_copy(str(source), 8.0)
    before, after = load_file(str(source / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    config_same = (copy / "config.json").read_text() == (source / "config.json").read_text()
    shutil.rmtree(copy)
    assert set(before) == set(after)
    assert torch.equal(after["lm_head.weight"], before["lm_head.weight"] * 8.0)
    assert all(torch.equal(after[k], before[k]) for k in before if k != "lm_head.weight")
    assert config_same


def test_scaled_copy_refuses_a_model_without_lm_head(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(4, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(SystemExit, match="no lm_head.weight"):
        bench_determinism.scaled_copy(str(tmp_path), 2.0)


def test_written_model_scales_its_output_projection_and_keeps_the_rest(tmp_path):
    from sglang_tokenweave.tiny_model import TINY_LLAMA, write_tiny_model

    write_tiny_model(tmp_path, TINY_LLAMA, lm_head_scale=8.0)
    cached = load_file(str(tiny_model_path() / "model.safetensors"))
    written = load_file(str(tmp_path / "model.safetensors"))
    assert torch.equal(written["lm_head.weight"], cached["lm_head.weight"] * 2.0)  # 8 = 4 (default) x 2
    assert all(torch.equal(written[k], cached[k]) for k in cached if k != "lm_head.weight")


def test_written_model_takes_a_larger_shape_in_its_dtype(tmp_path):
    from sglang_tokenweave.tiny_model import LLAMA_1B_SHAPE, TINY_LLAMA, write_tiny_model

    shape = {**LLAMA_1B_SHAPE, "num_hidden_layers": 1, "intermediate_size": 256}  # small enough for a test
    write_tiny_model(tmp_path, shape)
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (16 * 128, 2048)
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (8 * 128, 2048)
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert "model.layers.1.mlp.up_proj.weight" not in weights
    for vocab in (500, 600):  # below the tokenizer's; padded, but not to a multiple of 64
        with pytest.raises(ValueError, match="vocabulary"):
            write_tiny_model(tmp_path / "other", {**TINY_LLAMA, "vocab_size": vocab})


def test_server_variants_parse_into_label_and_flags():
    assert bench_determinism.parse_variant("lookahead2:--deterministic-lookahead-blocks 2") == (
        "lookahead2", ["--deterministic-lookahead-blocks", "2"])
    assert bench_determinism.parse_variant("default:") == ("default", [])


def test_result_rows_compare_each_variant_with_its_own_non_deterministic_run(tmp_path):
    def row(server, variant, fraction, tok_s):
        return {"server": server, "variant": variant, "det_fraction": fraction, "throughput_tok_s": tok_s}

    rows = [row("stock", None, 0.0, 100.0), row("ours", "a", 0.0, 80.0), row("ours", "a", 0.1, 40.0),
            row("ours", "b", 0.0, 50.0), row("ours", "b", 0.1, 40.0), row("ours", "c", 0.1, 20.0)]
    out = tmp_path / "r.json"
    bench_determinism.write_result(out, {"card": "x"}, rows, complete=False)
    saved = json.loads(out.read_text())
    assert saved["card"] == "x" and saved["complete"] is False
    relative = [r["throughput_relative_to_nondet"] for r in saved["rows"]]
    assert relative == [1.25, 1.0, 0.5, 1.0, 0.8, 0.25]  # "c" has no 0% row: the first variant's
    assert [r["speedup_vs_stock"] for r in saved["rows"]] == [1.0, 0.8, 0.4, 0.5, 0.4, 0.2]


def test_repeated_runs_are_summarized_by_medians_and_every_output_is_checked():
    # (latencies s, outputs, wall s) of three loaded runs; request 0 is checked against its solo run
    runs = [([1.0, 2.0, 3.0], [[1, 2], [3]], 1.0), ([2.0, 4.0, 6.0], [[1, 2], [3]], 3.0),
            ([1.5, 1.5, 1.5], [[1, 9], [3]], 2.0)]
    delta = {"tokens_verified": 40.0, "tokens_rolled_back": 10.0, "verification_passes": 6.0,
             "verification_seconds": 1.2, "isolated_prefills": 9.0, "fast_path_steps": 30.0,
             "sampler_seconds": 0.3}
    summary = bench_determinism.summarize(runs, {0: [1, 2]}, delta)
    assert summary["repeats"] == 3 and summary["throughput_samples"] == [3.0, 1.0, 1.5]
    assert summary["throughput_tok_s"] == 1.5 and summary["latency_p50_us"] == 2.0e6
    assert summary["identical"] == 2 / 3  # the third run's output differs from the solo run
    assert summary["rollback_rate"] == 0.25 and summary["verification_passes"] == 2.0
    assert summary["verify_time_share"] == pytest.approx(0.2)  # of the runs' 6 s
    assert summary["isolated_prefills"] == 3.0 and summary["fast_path_steps"] == 10.0
    assert summary["sampler_time_share"] == pytest.approx(0.05)
    plain = bench_determinism.summarize(runs[:1], {}, {})
    assert plain["identical"] is None and plain["rollback_rate"] is None and plain["verify_time_share"] is None
    assert plain["isolated_prefills"] is None and plain["sampler_time_share"] is None


def test_every_loaded_run_starts_from_an_empty_prefix_cache(monkeypatch):
    events = []
    monkeypatch.setattr(bench_determinism, "flush_prefix_cache", lambda url: events.append("flush"))
    monkeypatch.setattr(bench_determinism, "counters", lambda url: {})

    def run_load(url, work, concurrency):
        events.append("solo" if len(work) == 1 else "warm" if work[0]["sampling_params"]["max_new_tokens"] == 4
                      else "run")
        return [0.1] * len(work), [[1, 2]] * len(work), 1.0

    monkeypatch.setattr(bench_determinism, "run_load", run_load)
    work = bench_determinism.make_workload(8, 0.5, seed=0, max_new_tokens=16)
    server = type("S", (), {"url": "http://x"})()
    bench_determinism.measure(server, work, concurrency=4, solo_check=1, repeats=3)
    assert events == ["warm", "flush", "run", "flush", "run", "flush", "run", "solo"]


def test_the_profiled_run_comes_after_the_counted_runs_and_counters(monkeypatch, tmp_path):
    events = []
    monkeypatch.setattr(bench_determinism, "flush_prefix_cache", lambda url: events.append("flush"))
    monkeypatch.setattr(bench_determinism, "counters", lambda url: events.append("counters") or {})

    class Recording:
        def __init__(self, pid, summary, raw):
            events.append(("profile", pid, summary.name, raw.name))

        def __enter__(self):
            events.append("start")

        def __exit__(self, *exc):
            events.append("stop")

    def run_load(url, work, concurrency):
        events.append("solo" if len(work) == 1 else "warm" if work[0]["sampling_params"]["max_new_tokens"] == 4
                      else "run")
        return [0.1] * len(work), [[1, 2]] * len(work), 2.0

    monkeypatch.setattr(bench_determinism, "run_load", run_load)
    monkeypatch.setattr(scheduler_profile, "record", Recording)
    work = bench_determinism.make_workload(8, 0.5, seed=0, max_new_tokens=16)
    server = type("S", (), {"url": "http://x", "proc": type("P", (), {"pid": 42})()})()
    row = bench_determinism.measure(server, work, concurrency=4, solo_check=1, repeats=2,
                                    profile=(tmp_path / "summary.txt", tmp_path / "stacks.raw.txt"))
    assert events == ["warm", "counters", "flush", "run", "flush", "run", "counters",
                      "flush", ("profile", 42, "summary.txt", "stacks.raw.txt"), "start", "run", "stop", "solo"]
    assert row["repeats"] == 2


def test_scheduler_profile_summary_counts_each_function_once_per_stack():
    raw = ("loop (scheduler.py:10);run (scheduler.py:20);sample (sglang_tokenweave/hooks.py:5) 6\n"
           "loop (scheduler.py:10);run (scheduler.py:21);run (scheduler.py:20) 3\n"
           "loop (scheduler.py:11) 1\n")
    text = scheduler_profile.summary(raw)
    self_part, inclusive_part, ours_part = text.split("\n\n")[1:]
    assert text.startswith("10 samples")
    # Self: the innermost frame, lines of one function merged.
    assert self_part.splitlines()[1:] == [" 60.00%  sample (sglang_tokenweave/hooks.py)",
                                          " 30.00%  run (scheduler.py)", " 10.00%  loop (scheduler.py)"]
    # Inclusive: a recursive function counts once per stack.
    assert " 90.00%  run (scheduler.py)" in inclusive_part.splitlines()
    assert ours_part.splitlines()[1:] == [" 60.00%  sample (sglang_tokenweave/hooks.py)"]
    assert scheduler_profile.summary("") == "no samples\n"


def test_seeded_sampler_bench_writes_a_timing_per_kernel_rows_and_vocabulary(tmp_path):
    bench_seeded_sampler.main(["--device", "cpu", "--rows", "1,3", "--vocabs", "512", "--iterations", "2",
                               "--repeats", "1", "--out-dir", str(tmp_path)])
    result = json.loads((tmp_path / "bench_seeded_sampler_cpu.json").read_text())
    assert result["card"] == "cpu" and result["versions"]["torch"] == torch.__version__
    assert [(r["kernel"], r["rows"], r["vocab"]) for r in result["results"]] == [("torch", 1, 512), ("torch", 3, 512)]
    assert all(r[k] > 0 for r in result["results"] for k in ("plan_host_us", "sample_host_us", "sample_device_us",
                                                                "step_host_us"))
    [pass_plan] = result["verify_pass_plan"]
    assert (pass_plan["kernel"], pass_plan["rows"], pass_plan["window"]) == ("torch", 8, 32)
    assert pass_plan["host_plan_us"] > 0 and pass_plan["table_plan_us"] > 0
    assert str(tmp_path) not in result["command"]


def test_flip_rates_count_no_flips_without_error_and_fewer_for_gumbel_max_on_flat_rows(tmp_path):
    threads = torch.get_num_threads()
    try:
        sampler_flip_rates.main(["--rows", "3000", "--scales", "1", "--errors", "0,0.01", "--out-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "sampler_flip_rates.json").read_text())
    exact, noisy = result["results"]
    assert (exact["relative_error"], noisy["relative_error"]) == (0.0, 0.01)
    assert exact["greedy"] == exact["inverse_cdf"] == exact["gumbel_max"] == 0.0
    assert noisy["effective_tokens"] > 50  # near-flat rows
    assert 0 < noisy["gumbel_max"] < noisy["inverse_cdf"] / 5
    assert str(tmp_path) not in result["command"]
