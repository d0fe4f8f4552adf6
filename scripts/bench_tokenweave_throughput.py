"""Offline prefill-heavy throughput, stock SGLang vs TokenWeave, through SGLang's own
``sglang.bench_offline_throughput`` (TP 4 by default).

Workloads (``--workloads NAME:INPUT:OUTPUT:RANGE,...``): ``--num-prompts`` random-token prompts
of INPUT tokens with OUTPUT output tokens each, lengths drawn from [RANGE * len, len] (SGLang's
``--random-range-ratio``; 1.0 is fixed length). The default is prefill-heavy: 2K-token inputs
with 128-token outputs, and a mixed set of 1K-8K inputs (and 16-128 outputs: SGLang applies the
range to both). The prompts' tokens come from a synthetic ShareGPT-format file of random words
written beside the run (SGLang's "random" dataset would otherwise download ShareGPT), so nothing is
fetched over the network. On the Llama-3-70B layer shape with
``--layers`` layers and dummy weights (see bench_tokenweave_model.py). SGLang's Engine loads
the plugins itself, so the overlay only needs its two environment variables. Each variant runs
``--repeats`` times per workload in fresh processes; medians. Writes
benchmarks/results/bench_tokenweave_throughput/bench_tokenweave_throughput_<card>_tp<N>.json and a PNG beside it.

On the GPU machine (package installed next to the bundle's SGLang, as for the model bench):

    bash .devbundle/p1/sglang_on_device.sh env python3 scripts/bench_tokenweave_throughput.py --tp 4
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import string
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_plot import pyplot  # noqa: E402
from bench_tokenweave_model import (  # noqa: E402
    ROOT,
    make_model_dir,
    overlay_status,
    run_tool,
    write_result,
)

VARIANTS = {"stock": None, "tokenweave": ["--enable-tokenweave"]}
SGLANG_ARGS = ["--load-format", "dummy", "--dtype", "bfloat16", "--attention-backend", "triton",
               "--sampling-backend", "pytorch", "--enforce-disable-flashinfer-allreduce-fusion",
               "--mem-fraction-static", "0.6", "--dataset-name", "random"]


def parse_workloads(text: str) -> list[dict]:
    out = []
    for spec in text.split(","):
        name, input_len, output_len, ratio = spec.split(":")
        out.append({"name": name, "input_len": int(input_len), "output_len": int(output_len),
                    "range_ratio": float(ratio)})
    return out


def write_prompt_source(path: Path, seed: int = 1, conversations: int = 64) -> Path:
    """A ShareGPT-format file of random-word conversations: the text SGLang's random dataset
    tokenises and repeats or cuts to each prompt's length."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    data = [{"conversations": [{"from": "human", "value": " ".join(rng.choices(words, k=400))},
                               {"from": "gpt", "value": " ".join(rng.choices(words, k=50))}]}
            for _ in range(conversations)]
    path.write_text(json.dumps(data))
    return path


def run_once(name, flags, model_dir, args, workload, work) -> tuple[dict, str]:
    result_file = work / f"{name}-{time.time_ns()}.jsonl"
    cmd = [sys.executable, "-m", "sglang.bench_offline_throughput", "--model-path", str(model_dir),
           "--tp", str(args.tp), "--num-prompts", str(args.num_prompts),
           "--random-input-len", str(workload["input_len"]), "--random-output-len", str(workload["output_len"]),
           "--random-range-ratio", str(workload["range_ratio"]), "--seed", "1",
           "--dataset-path", str(work / "prompts.json"),
           "--result-filename", str(result_file), *SGLANG_ARGS]
    if flags is not None and args.tokenweave_config:
        flags = [*flags, "--tokenweave-config", args.tokenweave_config]
    log = run_tool(name, cmd, flags, args.timeout, work / f"{name}-{workload['name']}.log", result_file)
    return json.loads(result_file.read_text().splitlines()[-1]), overlay_status(log)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tp", type=int, default=4)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--workloads", type=parse_workloads, default=parse_workloads("fixed_2k:2048:128:1.0,mixed_1k_8k:8192:128:0.125"),
                   help="NAME:INPUT:OUTPUT:RANGE_RATIO,...")
    p.add_argument("--num-prompts", type=int, default=128)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--tokenweave-config", default=None)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results" / "bench_tokenweave_throughput"))
    args = p.parse_args(argv)
    import torch

    card = torch.cuda.get_device_name(0)
    model_dir = make_model_dir(args.layers, max(w["input_len"] + w["output_len"] for w in args.workloads))
    work = Path(tempfile.mkdtemp(prefix="bench-tokenweave-tput-"))
    write_prompt_source(work / "prompts.json")
    rows, status = [], {}
    for workload in args.workloads:
        measured = {}
        for _ in range(args.repeats):  # alternate variants so drifts hit both alike
            for name, flags in VARIANTS.items():
                result, status[name] = run_once(name, flags, model_dir, args, workload, work)
                measured.setdefault(name, []).append(result)
                print(f"{workload['name']} {name}: input {result['input_throughput']:.0f} tok/s, total "
                      f"{result['total_throughput']:.0f} tok/s ({status[name]})", flush=True)
        rows += _rows(workload, measured, args)
    method = (f"sglang.bench_offline_throughput, random dataset (seed 1), {args.num_prompts} prompts, "
              f"median of {args.repeats} runs per variant and workload")
    stem, result = write_result(__file__, argv, args, card, method, status, rows)
    _plot(result, f"{stem}.png")
    print(json.dumps(rows, indent=1))
    shutil.rmtree(model_dir, ignore_errors=True)


def _rows(workload, measured, args) -> list[dict]:
    medians = {name: {key: statistics.median(r[key] for r in runs)
                      for key in ("input_throughput", "output_throughput", "total_throughput")}
               for name, runs in measured.items()}
    rows = []
    for name, m in medians.items():
        row = {"workload": workload["name"], "variant": name, "tp": args.tp, "hidden": 8192, "layers": args.layers,
               "input_len": workload["input_len"], "output_len": workload["output_len"],
               "range_ratio": workload["range_ratio"], "num_prompts": args.num_prompts, "runs": len(measured[name]),
               "input_tok_s": round(m["input_throughput"], 1), "output_tok_s": round(m["output_throughput"], 1),
               "total_tok_s": round(m["total_throughput"], 1)}
        if name != "stock":
            row["speedup_vs_stock"] = round(m["total_throughput"] / medians["stock"]["total_throughput"], 4)
        rows.append(row)
    return rows


def _plot(result, png_path):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    names = [f"{r['workload']}\n{r['variant']}" for r in result["rows"]]
    ax.bar(names, [r["total_tok_s"] for r in result["rows"]])
    ax.set_ylabel("total tokens/s (median)")
    ax.set_title(f"TP{result['gpus']} offline, {result['card']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    main()
