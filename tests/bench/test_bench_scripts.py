"""Pure helpers of the benchmark scripts, without servers: the recorded command line, the models they
write, bench_determinism's measurement order, solo checks, rows and result."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_determinism  # noqa: E402
import bench_seeded_sampler  # noqa: E402
import sampler_flip_rates  # noqa: E402
import scheduler_profile  # noqa: E402
from bench_command import recorded_command  # noqa: E402

from sglang_tokenweave.tiny_model import tiny_model_path  # noqa: E402


def test_recorded_command_keeps_the_run_and_drops_the_machine():
    script = str(Path(__file__).resolve().parents[2] / "scripts" / "bench_x.py")
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


class FakeLoad:
    """Stands in for the server: records what the benchmark sends, answers with outputs that
    depend on the request only (``wrong``: the keys of requests to answer differently when loaded)."""

    def __init__(self, monkeypatch, wrong=()):
        self.events, self.solo, self.loaded, self.wrong = [], [], [], set(wrong)
        monkeypatch.setattr(bench_determinism, "flush_prefix_cache", lambda url: self.events.append("flush"))
        monkeypatch.setattr(bench_determinism, "counters", self.counters)
        monkeypatch.setattr(bench_determinism, "run_load", self.run_load)
        self.verified = 0.0

    def counters(self, url):
        self.events.append("counters")
        self.verified += 10.0
        return {"tokens_verified": self.verified, "tokens_rolled_back": self.verified / 10, "verification_seconds": 0.5}

    def run_load(self, url, work, concurrency):
        if len(work) == 1:
            self.events.append("solo")
            self.solo.append(bench_determinism.request_key(work[0]))
        else:
            self.events.append("run")
            self.loaded.append(work)
        outputs = []
        for w in work:
            key = bench_determinism.request_key(w)
            outputs.append([len(w["text"]) % 97, w["sampling_params"].get("sampling_seed", -1)])
            if key in self.wrong and len(work) > 1:
                outputs[-1] = [0, 0]
        return [0.1] * len(work), outputs, 2.0


class FakeRunner:
    def record(self):
        return {"sides": {}}


def make_bench(tmp_path, argv):
    args = bench_determinism.parse_args(argv)
    sides, configs = bench_determinism.make_configs(args, "cpu")
    fractions = sorted({f for r in configs.values() for f in r.fractions})
    workloads = {f: bench_determinism.make_workload(args.requests, f, 0, args.max_new_tokens) for f in fractions}
    return bench_determinism.Bench(args, configs, workloads, tmp_path / "r.json", FakeRunner(), {"card": "cpu"}), sides


def test_each_request_is_the_same_in_every_fraction_so_deterministic_ones_are_distinct_once():
    half = bench_determinism.make_workload(8, 0.5, seed=0, max_new_tokens=16)
    every = bench_determinism.make_workload(8, 1.0, seed=0, max_new_tokens=16)
    assert [i for i, w in enumerate(half) if w["sampling_params"].get("deterministic")] == [0, 2, 4, 6]
    assert all(half[i] == every[i] for i in (0, 2, 4, 6)) and half[1] != every[1]
    assert all(w["sampling_params"]["ignore_eos"] for w in every)
    real = bench_determinism.make_workload(3, 1.0, seed=0, max_new_tokens=16, prompts=[("hi", 8), ("long", 64)])
    assert [w["text"] for w in real] == ["hi", "long", "hi"]
    assert [w["sampling_params"]["max_new_tokens"] for w in real] == [8, 16, 8]
    assert not any(w["sampling_params"]["ignore_eos"] for w in real)


def test_every_distinct_deterministic_request_is_run_alone_once_by_default(monkeypatch, tmp_path):
    load = FakeLoad(monkeypatch)
    bench, sides = make_bench(tmp_path, ["--servers", "ours", "--fractions", "0,0.5,1", "--requests", "8",
                                         "--repeats", "2"])
    [ours] = sides
    bench.measure(0, ours, type("S", (), {"url": "http://x"})())
    run = ["counters", "flush", "run", "counters"]
    # first a whole unmeasured run (no counters around it) of the largest fraction, then the
    # measured ones; solo runs after the side's first repeat only
    assert load.events == ["run", *run * 3, *["solo"] * 8]
    assert load.loaded[0] == bench.workloads[1.0]
    assert sorted(load.solo) == sorted(bench.distinct_keys("ours")) and len(set(load.solo)) == 8
    load.events.clear()
    bench.measure(1, ours, type("S", (), {"url": "http://x"})())
    assert load.events == ["run", *run * 3]
    result = json.loads((tmp_path / "r.json").read_text())
    check = result["solo_check"]
    assert check["sample"] == "every deterministic request" and check["checked_requests"] == {"ours": 8}
    assert check["distinct_deterministic_requests"] == {"ours": 8}
    # 4 deterministic at 50%, 8 at 100%, in each of the 2 repeats
    assert check["pairs"] == 2 * (4 + 8) and check["every_output_identical"] is True
    # the repeats measured the fractions in opposite orders
    assert [r["det_fraction"] for r in result["rows"]] == [0.0, 0.5, 1.0]


def test_a_smaller_solo_sample_is_named_and_a_mismatch_is_counted(monkeypatch, tmp_path):
    bench, sides = make_bench(tmp_path, ["--servers", "ours", "--fractions", "0,0.5", "--requests", "8",
                                         "--repeats", "1", "--solo-check", "2"])
    first = bench.distinct_keys("ours")[0]
    load = FakeLoad(monkeypatch, wrong=[first])
    bench.measure(0, sides[0], type("S", (), {"url": "http://x"})())
    assert load.solo == bench.distinct_keys("ours")[:2]
    check = bench.solo_check()
    assert check["sample"] == "the first 2 distinct deterministic requests"
    assert check["distinct_deterministic_requests"] == {"ours": 4} and check["checked_requests"] == {"ours": 2}
    assert check["pairs"] == 2 and check["mismatched"] == 1 and check["every_output_identical"] is False
    half = next(r for r in bench.rows() if r["det_fraction"] == 0.5)
    assert half["identical"] == {"pairs": 2, "matched": 1, "share": 0.5}


def test_rows_take_ratios_from_the_runs_of_one_repeat(tmp_path):
    bench, _ = make_bench(tmp_path, ["--servers", "stock,ours", "--fractions", "0,0.1", "--repeats", "3"])

    def sample(tok_s):
        return {"throughput_tok_s": tok_s, "latency_p50_us": 1.0, "latency_p99_us": 2.0, "rollback_rate": None}

    for r, (stock, zero, ten) in enumerate([(100.0, 100.0, 90.0), (50.0, 100.0, 50.0), (100.0, 50.0, 45.0)]):
        bench.configs["stock"].samples[(0.0, r)] = sample(stock)
        bench.configs["ours"].samples[(0.0, r)] = sample(zero)
        bench.configs["ours"].samples[(0.1, r)] = sample(ten)
    rows = {(row["server"], row["det_fraction"]): row for row in bench.rows()}
    ten = rows[("ours", 0.1)]
    assert ten["throughput_tok_s"]["median"] == 50.0 and ten["repeats"] == 3
    assert ten["relative_to_nondet"]["samples"] == [0.9, 0.5, 0.9] and ten["relative_to_nondet"]["median"] == 0.9
    assert ten["vs_stock"]["samples"] == [0.9, 1.0, 0.45]
    assert rows[("ours", 0.0)]["vs_stock"]["samples"] == [1.0, 2.0, 0.5]
    assert ten["vs_sglang_deterministic"] is None and ten["rollback_rate"] is None
    [first, second] = bench.headlines(bench.rows())
    assert first["label"] == "ours at 10% deterministic / 0%" and first["median"] == 0.9
    assert (second["label"], second["min"], second["max"]) == ("ours at 0% / stock", 0.5, 2.0)


def test_a_runs_counters_become_rates_of_that_run():
    s = bench_determinism.run_sample([1.0, 2.0, 3.0, 4.0], [[1, 2], [3], [4], [5, 6, 7]], 2.0,
                                     {"tokens_verified": 40.0, "tokens_rolled_back": 10.0, "verification_passes": 6.0,
                                      "verification_seconds": 0.5, "isolated_prefills": 3.0, "sampler_seconds": 0.1,
                                      "verification_drain_seconds": 0.2})
    assert s["throughput_tok_s"] == 3.5 and s["latency_p50_us"] == 2.0e6 and s["latency_p99_us"] == 4.0e6
    assert s["rollback_rate"] == 0.25 and s["verification_passes"] == 6.0 and s["verify_time_share"] == 0.25
    assert s["isolated_prefills"] == 3.0 and s["fast_path_steps"] is None and s["sampler_time_share"] == 0.05
    assert s["drain_time_share"] == 0.1
    plain = bench_determinism.run_sample([1.0], [[1]], 1.0, {})
    assert plain["rollback_rate"] is None and plain["verify_time_share"] is None
    assert plain["latency_p99_nondet_us"] == 1.0e6


def test_the_tail_latency_of_non_deterministic_requests_leaves_the_deterministic_ones_out():
    s = bench_determinism.run_sample([1.0, 9.0, 2.0, 8.0], [[1], [2], [3], [4]], 1.0, {},
                                     [False, True, False, True])
    assert s["latency_p99_us"] == 9.0e6 and s["latency_p99_nondet_us"] == 2.0e6
    only_det = bench_determinism.run_sample([1.0], [[1]], 1.0, {}, [True])
    assert only_det["latency_p99_nondet_us"] is None


def test_the_profiled_run_comes_after_the_counted_runs_and_the_solo_runs(monkeypatch, tmp_path):
    load = FakeLoad(monkeypatch)

    class Recording:
        def __init__(self, pid, summary, raw):
            load.events.append(("profile", pid, summary.name, raw.name))

        def __enter__(self):
            load.events.append("start")

        def __exit__(self, *exc):
            load.events.append("stop")

    monkeypatch.setattr(scheduler_profile, "record", Recording)
    bench, sides = make_bench(tmp_path, ["--servers", "ours", "--fractions", "0.5", "--requests", "4",
                                         "--repeats", "1", "--profile-scheduler"])
    server = type("S", (), {"url": "http://x", "proc": type("P", (), {"pid": 42})()})()
    bench.measure(0, sides[0], server)
    assert load.events == ["run", "counters", "flush", "run", "counters", "solo", "solo",
                           "flush", ("profile", 42, "r_profile_ours_0.5.txt", "profile_ours_0.5.raw.txt"),
                           "start", "run", "stop"]


def test_the_result_json_has_the_harness_schema(monkeypatch, tmp_path):
    from sglang_tokenweave.bench import record
    from sglang_tokenweave.bench.runner import Runner
    from sglang_tokenweave.bench.sides import Launch, forced_on_both

    FakeLoad(monkeypatch)
    args = bench_determinism.parse_args(["--fractions", "0,0.5", "--requests", "4", "--repeats", "1"])
    sides, configs = bench_determinism.make_configs(args, "cpu")
    assert [s.name for s in sides] == ["stock", "sglang_deterministic", "ours"]
    runner = Runner(Launch(["--tp", "1"], forced_on_both("cpu"), environ={}), sides, 1, "cpu", tmp_path)
    head = record.header("bench_determinism", bench_determinism.__file__, [], "cpu", 1)
    workloads = {f: bench_determinism.make_workload(4, f, 0, 8) for f in (0.0, 0.5)}
    bench = bench_determinism.Bench(args, configs, workloads, tmp_path / "r.json", runner, head)
    for repeat, side in [(0, s) for s in sides]:
        bench.measure(repeat, side, type("S", (), {"url": "http://x"})())
    result = bench.write(complete=True)
    assert json.loads((tmp_path / "r.json").read_text()) == result
    assert {"format", "benchmark", "date", "git", "card", "versions", "command", "complete", "headline",
            "solo_check", "sides", "forced_on_both", "machine_env", "dropped_inherited_env", "multicast_pointers",
            "plan", "rows"} <= set(result)
    assert result["sides"]["stock"]["flags"] == []
    assert result["sides"]["ours"]["flags"] == ["--enable-deterministic-requests"]
    assert result["sides"]["sglang_deterministic"]["flags"] == ["--enable-deterministic-inference"]
    row = next(r for r in result["rows"] if r["server"] == "ours" and r["det_fraction"] == 0.5)
    assert set(row["throughput_tok_s"]) == {"median", "min", "max", "samples"}
    assert row["relative_to_nondet"]["median"] == 1.0 and row["vs_stock"]["median"] == 1.0
    assert row["vs_sglang_deterministic"]["median"] == 1.0


def test_a_real_model_needs_the_prompt_set(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "prompt_set", None)  # import fails
    with pytest.raises(SystemExit, match="prompt set"):
        bench_determinism.prompt_set_texts(str(tiny_model_path()), 4)

    class Prompt:
        def __init__(self, i):
            self.id, self.category, self.max_tokens = f"p{i}", "qa", 32 + i
            self.messages = [{"role": "user", "content": f"question {i}"}]

    fake = type(sys)("prompt_set")
    fake.sample_prompts = lambda n, seed: [Prompt(i) for i in range(n)]
    fake.prompt_text = lambda p, tok: tok.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
    monkeypatch.setitem(sys.modules, "prompt_set", fake)
    with pytest.raises(SystemExit, match="prompt set"):
        bench_determinism.prompt_set_texts(str(tiny_model_path()), 4, tmp_path / "missing.jsonl")
    (tmp_path / "set.jsonl").write_text("{}\n")
    texts, about = bench_determinism.prompt_set_texts(str(tiny_model_path()), 3, tmp_path / "set.jsonl")
    assert [m for _, m in texts] == [32, 33, 34] and about["ids"] == ["p0", "p1", "p2"]
    assert texts[1][0].endswith("<|user|>\nquestion 1\n<|assistant|>\n")


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


def test_the_load_generator_imports_with_a_stand_in_where_datasets_is_missing(monkeypatch, tmp_path):
    import bench_serving

    base = {"PATH": "/usr/bin", "PYTHONPATH": "/elsewhere"}
    env, stand_ins = bench_serving.load_generator_env(base, tmp_path)  # installed here: nothing stands in
    assert env == base and stand_ins == []
    monkeypatch.setattr(bench_serving.importlib.util, "find_spec", lambda name: None)
    env, stand_ins = bench_serving.load_generator_env(base, tmp_path)
    assert stand_ins and env["PYTHONPATH"].endswith(":/elsewhere") and base["PYTHONPATH"] == "/elsewhere"
    # SGLang's load generator starts with it (the stand-in comes first on the path, as it would
    # on a machine without the package), and the stand-in refuses if ever called.
    probe = ("import datasets, sglang.benchmark.serving; print(datasets.__file__)\n"
             "try:\n    datasets.load_dataset('x')\nexcept RuntimeError as e:\n    print('refused:', e)")
    env = {**os.environ, "PYTHONPATH": env["PYTHONPATH"].split(os.pathsep)[0]}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0].startswith(str(tmp_path / "stand_ins" / "datasets"))
    assert "refused: the Hugging Face datasets package is not installed here" in done.stdout


def test_a_resumed_benchmark_keeps_every_figure_and_solo_output_of_the_runs_before(monkeypatch, tmp_path):
    FakeLoad(monkeypatch)
    argv = ["--servers", "ours", "--fractions", "0,0.5", "--requests", "8", "--repeats", "2"]
    bench, [ours] = make_bench(tmp_path, argv)
    bench.measure(0, ours, type("S", (), {"url": "http://x"})())
    bench.measure(1, ours, type("S", (), {"url": "http://x"})())
    again, _ = make_bench(tmp_path, argv)
    again.restore(json.loads(json.dumps(bench.state())))  # as the checkpoint file holds it
    assert again.rows() == bench.rows() and again.solo_check() == bench.solo_check()
    assert again.solo_check()["pairs"] == 2 * 4


def test_the_dummy_models_tokenizer_decodes_every_id_and_encodes_the_prompts_without_unknowns(tmp_path):
    import bench_serving
    from transformers import PreTrainedTokenizerFast

    words = bench_serving.prompt_words(bench_serving.random.Random(bench_serving.PROMPT_SEED))
    bench_serving.write_word_tokenizer(tmp_path / "tokenizer.json", 4096, words)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert len(tok) == 4096
    # SGLang's load generator times TTFT and ITL from received text: no id may decode to nothing
    assert all(tok.decode([i]) for i in range(3, 4096))
    source = bench_serving.write_prompt_source(tmp_path / "prompts.json")
    text = json.loads(source.read_text())[0]["conversations"][0]["value"]
    ids = tok(text)["input_ids"]
    assert ids[0] == 1 and len(ids) == len(text.split()) + 1 and 0 not in ids  # BOS, a token a word
