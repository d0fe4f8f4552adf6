"""End-to-end serving benchmark, stock SGLang vs ours, driven by SGLang's own load generator
(``python -m sglang.benchmark.serving``, which ``sglang.bench_serving`` now forwards to), on the
fair harness (sglang_tokenweave/bench/).

Sides: ``stock`` (``python -m sglang.launch_server`` with SGLang's defaults) and ``ours``
(``python -m sglang_tokenweave.launch_server`` with our defaults plus ``--ours-flags``, default
the feature under test: ``--enable-tokenweave`` at TP > 1; at TP1, the smoke test,
``--enable-deterministic-requests`` with no deterministic request, where the overlay must cost
nothing). Each repeat starts a fresh server per side, in interleaved order (stock, ours; ours,
stock; ...; ``--repeats``, default 3); each server runs every workload at every request rate
(in alternating order over the repeats), each run from an empty prefix cache.

Workloads (``--workloads NAME:INPUT:OUTPUT:RATIO,...``): SGLang's random dataset, INPUT and
OUTPUT tokens per request drawn from [RATIO * len, len]; its text comes from a synthetic
ShareGPT-format file of random words written beside the run (the dataset would otherwise
download ShareGPT). Defaults: prefill-heavy (2K-4K-token prompts, 64-128-token replies) and
chat-like (256-1K-token prompts, 128-512-token replies). Rates (``--request-rates``): requests per
second with Poisson arrivals, and ``inf`` (all at once: the maximum throughput).

Reported per workload and rate, per side: TTFT, ITL and end-to-end latency (p50, p99), request
and token throughput, each the median with the repeats' min-max; and ours / stock of every
figure from the pairs of the same repeat.

Models (``--model-shape``, default by TP: the tiny model on a CPU; Llama-3-8B's shape at TP1 and
TP2; Llama-3-70B's, all 80 layers, at TP4 and more): random (dummy) weights at the real
vocabulary, with a word-level tokenizer that has a word for every id. Output:
benchmarks/results/bench_serving/bench_serving_<card>_tp<N>[_<tag>].json and .png. A run cut
short goes on with ``--resume`` (same command, code and machine; bench/checkpoint.py).

    python scripts/bench_serving.py --tp 4
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_plot import pyplot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sglang_tokenweave.bench.checkpoint import Checkpoint, keyed, unkeyed  # noqa: E402
from sglang_tokenweave.bench.plan import alternate  # noqa: E402
from sglang_tokenweave.bench.record import card_name, header, write_json  # noqa: E402
from sglang_tokenweave.bench.results import headline, result_path  # noqa: E402
from sglang_tokenweave.bench.runner import Runner  # noqa: E402
from sglang_tokenweave.bench.sides import (  # noqa: E402
    GPU_BUNDLE_ARGS,
    Launch,
    Side,
    forced_on_both,
    ours_side,
    stock_side,
)
from sglang_tokenweave.bench.stats import ratio_spread, spread  # noqa: E402
from sglang_tokenweave.tiny_model import SPECIAL_TOKENS, TINY_LLAMA, tiny_model_path  # noqa: E402

BENCHMARK = "bench_serving"
LOAD_GENERATOR = "sglang.benchmark.serving"
DEFAULT_WORKLOADS = "prefill-heavy:4096:128:0.5,chat:1024:512:0.25"
LLAMA3 = {"vocab_size": 128256, "rope_theta": 500000.0, "max_position_embeddings": 8192, "num_key_value_heads": 8,
          "head_dim": 128, "torch_dtype": "bfloat16"}
SHAPES = {
    "llama-8b": {**LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                 "num_attention_heads": 32},
    "llama-70b": {**LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                  "num_attention_heads": 64},
}
PROMPT_SEED = 1
# Figures of sglang.benchmark.serving's result line, and whether higher is better.
FIGURES = {"request_throughput": True, "input_throughput": True, "output_throughput": True,
           "total_throughput": True, "median_ttft_ms": False, "p99_ttft_ms": False, "median_itl_ms": False,
           "p99_itl_ms": False, "median_e2e_latency_ms": False, "p99_e2e_latency_ms": False}


# SGLang's load generator imports every dataset module at start; the MMMU one imports Hugging
# Face ``datasets`` (a download library that serving images need not have) for a function the
# random dataset never calls.
STAND_IN_DATASETS = '''"""Stands in for Hugging Face datasets in the load generator (never called there)."""


def load_dataset(*args, **kwargs):
    raise RuntimeError("the Hugging Face datasets package is not installed here")
'''


def load_generator_env(base_env: dict, work: Path) -> tuple[dict, list[str]]:
    """The load generator's environment, and the stand-ins on its path: where ``datasets`` is
    not installed, a package whose ``load_dataset`` refuses (the same for both sides)."""
    if importlib.util.find_spec("datasets") is not None:
        return dict(base_env), []
    package = work / "stand_ins" / "datasets"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(STAND_IN_DATASETS)
    path = os.pathsep.join(filter(None, [str(package.parent), base_env.get("PYTHONPATH")]))
    return {**base_env, "PYTHONPATH": path}, ["datasets: not installed; a stand-in whose load_dataset refuses"]


def parse_workloads(text: str) -> list[dict]:
    out = []
    for spec in text.split(","):
        name, input_len, output_len, ratio = spec.split(":")
        out.append({"name": name, "input_len": int(input_len), "output_len": int(output_len),
                    "range_ratio": float(ratio)})
    return out


def parse_rates(text: str) -> list[float]:
    return [float(r) for r in text.split(",")]


def default_shape(tp: int, device: str) -> str:
    if device == "cpu":
        return "tiny"
    return "llama-8b" if tp <= 2 else "llama-70b"


def make_model(shape: str, layers: int | None) -> tuple[Path, list[str], str, bool]:
    """(folder, SGLang flags it needs, how it was made, whether the folder is temporary)."""
    if shape == "tiny":
        return tiny_model_path(), [], "tiny: the tests' random-weight Llama (sglang_tokenweave/tiny_model.py)", False
    config = {**{k: TINY_LLAMA[k] for k in ("architectures", "model_type", "rms_norm_eps", "hidden_act",
                                              "tie_word_embeddings", "bos_token_id", "eos_token_id",
                                              "attention_bias", "mlp_bias")}, **SHAPES[shape]}
    if layers:
        config["num_hidden_layers"] = layers
    folder = Path(tempfile.mkdtemp(prefix="serving-bench-model-"))
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    for f in tiny_model_path().iterdir():
        if f.name in ("tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(f, folder / f.name)
    write_word_tokenizer(folder / "tokenizer.json", config["vocab_size"], prompt_words(random.Random(PROMPT_SEED)))
    how = (f"{shape}: Llama, {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, vocab "
           f"{config['vocab_size']}, dummy weights (--load-format dummy), bf16, a word-level tokenizer of the "
           "prompt source's words and filler words (every id decodes to text)")
    return folder, ["--load-format", "dummy"], how, True


def write_word_tokenizer(path: Path, vocab_size: int, words: list[str]) -> None:
    """A tokenizer with a word for every id of the model's vocabulary: the prompt source's words
    (each one token), then filler words. With a smaller tokenizer most of a random-weight model's
    tokens would decode to nothing, and SGLang's load generator times the first token and the
    gaps between tokens from the text it receives: TTFT and ITL would not be measured."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab: dict[str, int] = {}
    for word in [*SPECIAL_TOKENS, *words]:
        vocab.setdefault(word, len(vocab))
    filler = 0
    while len(vocab) < vocab_size:
        vocab.setdefault(f"w{filler}", len(vocab))  # a digit: never one of the prompt words
        filler += 1
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer.save(str(path))


def prompt_words(rng: random.Random, count: int = 2000) -> list[str]:
    """The prompt source's words (random lower-case words, drawn first from ``rng``)."""
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(count)]


def write_prompt_source(path: Path, seed: int = PROMPT_SEED, conversations: int = 64) -> Path:
    """A ShareGPT-format file of random-word conversations: the text SGLang's random dataset
    tokenises and repeats or cuts to each prompt's length."""
    rng = random.Random(seed)
    words = prompt_words(rng)
    data = [{"conversations": [{"from": "human", "value": " ".join(rng.choices(words, k=400))},
                               {"from": "gpt", "value": " ".join(rng.choices(words, k=50))}]}
            for _ in range(conversations)]
    path.write_text(json.dumps(data))
    return path


def load_command(url_port: int, workload: dict, rate: float, args, dataset: Path, out_file: Path) -> list[str]:
    return [sys.executable, "-m", LOAD_GENERATOR, "--backend", "sglang", "--host", "127.0.0.1",
            "--port", str(url_port), "--dataset-name", "random", "--dataset-path", str(dataset),
            "--random-input-len", str(workload["input_len"]), "--random-output-len", str(workload["output_len"]),
            "--random-range-ratio", str(workload["range_ratio"]), "--num-prompts", str(args.num_prompts),
            "--request-rate", str(rate), "--seed", str(args.seed), "--flush-cache", "--disable-tqdm",
            "--output-file", str(out_file)]


def run_load(server, workload: dict, rate: float, args, dataset: Path, work: Path, env: dict) -> dict:
    """One run of SGLang's load generator against ``server``: its result line's figures."""
    out_file = work / f"{workload['name']}-{rate:g}-{server.port}.jsonl"
    cmd = load_command(server.port, workload, rate, args, dataset, out_file)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.run_timeout)
    if done.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"{LOAD_GENERATOR} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    result = json.loads(out_file.read_text().splitlines()[-1])
    out_file.unlink()
    if result["completed"] != args.num_prompts:
        raise RuntimeError(f"{result['completed']} of {args.num_prompts} requests completed")
    return {k: result[k] for k in (*FIGURES, "completed", "duration", "total_input_tokens", "total_output_tokens")}


def make_rows(samples: dict, workloads: list[dict], rates: list[float], sides: list[str], repeats: int) -> list[dict]:
    """A row per (workload, rate): each side's figures (median, min-max over the repeats) and
    ours / stock of each figure from the pairs of one repeat."""
    rows = []
    for w in workloads:
        for rate in rates:
            def series(side, figure):
                return [samples.get((side, w["name"], rate, r), {}).get(figure) for r in range(repeats)]

            if not any(series(s, "completed") != [None] * repeats for s in sides):
                continue
            row = {"workload": w["name"], "request_rate": rate if rate != float("inf") else "inf",
                   **{s: {f: spread(series(s, f)) for f in FIGURES} for s in sides}}
            if "stock" in sides and "ours" in sides:
                row["ours_vs_stock"] = {f: ratio_spread(series("ours", f), series("stock", f)) for f in FIGURES}
            rows.append(row)
    return rows


def headlines(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        if row["request_rate"] == "inf" and "ours_vs_stock" in row:
            out += headline(f"{row['workload']}, max throughput: ours / stock output tok/s",
                            row["ours_vs_stock"]["output_throughput"])
    return out


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    rows = [r for r in rows if r.get("ours_vs_stock")]
    if plt is None or not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['workload']}\n@{r['request_rate']}" for r in rows]
    for offset, (figure, name) in enumerate([("output_throughput", "output tok/s"), ("p99_ttft_ms", "p99 TTFT"),
                                             ("p99_itl_ms", "p99 ITL")]):
        s = [r["ours_vs_stock"][figure] for r in rows]
        xs = [i + (offset - 1) * 0.25 for i in range(len(rows))]
        med = [x["median"] if x else 0 for x in s]
        err = [[m - x["min"] if x else 0 for m, x in zip(med, s)], [x["max"] - m if x else 0 for m, x in zip(med, s)]]
        ax.bar(xs, med, width=0.25, yerr=err, capsize=3, label=name)
    ax.axhline(1.0, color="gray", linestyle="--")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("ours / stock (median, min-max of repeats)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--model-shape", choices=["tiny", *SHAPES], default=None,
                        help="default: tiny on a CPU, llama-8b at TP1-2, llama-70b from TP4")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the shape's (a quick run)")
    parser.add_argument("--ours-flags", default=None,
                        help="ours' flags (default: --enable-tokenweave at TP > 1, --enable-deterministic-requests "
                        "at TP1)")
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS, metavar="NAME:INPUT:OUTPUT:RATIO,...")
    parser.add_argument("--request-rates", default="4,16,inf", help="requests per second, comma-separated; inf: all "
                        "at once")
    parser.add_argument("--num-prompts", type=int, default=256, help="requests per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="fresh server processes per side")
    parser.add_argument("--extra-args", default="", help="more server flags, for both sides")
    parser.add_argument("--forced-on-both", default=None, metavar="FLAGS",
                        help="flags the machine forces on both sides (default on GPUs: "
                        f"'{' '.join(GPU_BUNDLE_ARGS)}', for the GPU bundle; '' for SGLang's defaults)")
    parser.add_argument("--run-timeout", type=float, default=1800, help="seconds one load-generator run may take")
    parser.add_argument("--tag", default="")
    parser.add_argument("--resume", action="store_true",
                        help="go on after the runs a run of the same command, code and machine finished "
                        "(sglang_tokenweave/bench/checkpoint.py)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    workloads, rates = parse_workloads(args.workloads), parse_rates(args.request_rates)
    shape = args.model_shape or default_shape(args.tp, device)
    ours_flags = (args.ours_flags if args.ours_flags is not None else
                  "--enable-tokenweave" if args.tp > 1 else "--enable-deterministic-requests").split()
    sides: list[Side] = [stock_side(device), ours_side(ours_flags)]
    forced = forced_on_both(device, GPU_BUNDLE_ARGS if args.forced_on_both is None else args.forced_on_both.split())
    _, short = card_name(device)
    out = result_path(args.out_dir, BENCHMARK, short, args.tp, args.tag)
    model, model_flags, model_how, temporary = make_model(shape, args.layers)
    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    try:
        dataset = write_prompt_source(work / "prompts.json")
        launch = Launch(["--model-path", str(model), "--tp", str(args.tp), *model_flags, *args.extra_args.split()],
                        forced)
        runner = Runner(launch, sides, args.tp, device, out.parent / "logs" / out.stem)
        load_env, stand_ins = load_generator_env(launch.base_env, work)
        result_header = {**header(BENCHMARK, __file__, sys.argv[1:] if argv is None else argv, device, args.tp),
                         "model": model_how, "repeats": args.repeats, "load_generator": f"python -m {LOAD_GENERATOR}",
                         "load_generator_stand_ins": stand_ins,
                         "workloads": workloads, "request_rates": [r if r != float("inf") else "inf" for r in rates],
                         "num_prompts": args.num_prompts,
                         "dataset": "SGLang's random dataset over a synthetic ShareGPT-format file of random words"}
        samples = {}
        runs = [(w, rate) for w in workloads for rate in rates]

        def write(complete: bool) -> dict:
            rows = make_rows(samples, workloads, rates, [s.name for s in sides], args.repeats)
            result = {**result_header, "complete": complete, "headline": headlines(rows), **runner.record(),
                      "rows": rows}
            write_json(out, result)
            return result

        def measure(repeat: int, side: Side, server) -> None:
            for w, rate in alternate(runs, repeat):
                samples[(side.name, w["name"], rate, repeat)] = run_load(server, w, rate, args, dataset, work,
                                                                         load_env)
                print(json.dumps({"side": side.name, "repeat": repeat, "workload": w["name"], "rate": rate,
                                  **samples[(side.name, w["name"], rate, repeat)]}), flush=True)
            write(complete=False)

        checkpoint = Checkpoint.of_result(out, list(sys.argv[1:] if argv is None else argv), card_name(device)[0])
        checkpoint.start(args.resume, runner, lambda saved: samples.update(unkeyed(saved)))
        runner.run(args.repeats, measure, after_run=checkpoint.saver(runner, lambda: keyed(samples)))
        result = write(complete=True)
        checkpoint.remove()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if temporary:
            shutil.rmtree(model, ignore_errors=True)
    plot(result["rows"], out.with_suffix(".png"))
    for h in result["headline"]:
        print(f"{h['label']}: {h['median']:.3f} ({h['min']:.3f}-{h['max']:.3f})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
