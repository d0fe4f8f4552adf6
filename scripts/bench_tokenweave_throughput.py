"""Offline prefill-heavy throughput, stock SGLang vs TokenWeave, through SGLang's own
``sglang.bench_offline_throughput`` (TP 4 by default).

Workload: ``--num-prompts`` random-token prompts of ``--input-len`` tokens each with
``--output-len`` output tokens (prefill-heavy), on the Llama-3-70B layer shape with
``--layers`` layers and dummy weights (see bench_tokenweave_model.py). SGLang's Engine loads
the plugins itself, so the overlay only needs its two environment variables. Each variant runs
``--repeats`` times in fresh processes; medians. Writes
benchmarks/results/bench_tokenweave_throughput_<card>_tp<N>.json and a PNG beside it.

On the GPU machine (package installed next to the bundle's SGLang, as for the model bench):

    bash .devbundle/p1/sglang_on_device.sh env python3 scripts/bench_tokenweave_throughput.py --tp 4
"""

from __future__ import annotations

import argparse
import json
import shutil
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
               "--mem-fraction-static", "0.6", "--dataset-name", "random-ids", "--random-range-ratio", "1.0"]


def run_once(name, flags, model_dir, args, work) -> tuple[dict, str]:
    result_file = work / f"{name}-{time.time_ns()}.jsonl"
    cmd = [sys.executable, "-m", "sglang.bench_offline_throughput", "--model-path", str(model_dir),
           "--tp", str(args.tp), "--num-prompts", str(args.num_prompts), "--random-input-len", str(args.input_len),
           "--random-output-len", str(args.output_len), "--result-filename", str(result_file), *SGLANG_ARGS]
    if flags is not None and args.tokenweave_config:
        flags = [*flags, "--tokenweave-config", args.tokenweave_config]
    log = run_tool(name, cmd, flags, args.timeout, work / f"{name}.log", result_file)
    return json.loads(result_file.read_text().splitlines()[-1]), overlay_status(log)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tp", type=int, default=4)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--input-len", type=int, default=4096)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--tokenweave-config", default=None)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    import torch

    card = torch.cuda.get_device_name(0)
    model_dir = make_model_dir(args.layers, args.input_len + args.output_len)
    work = Path(tempfile.mkdtemp(prefix="bench-tokenweave-tput-"))
    measured, status = {}, {}
    for _ in range(args.repeats):  # alternate variants so drifts hit both alike
        for name, flags in VARIANTS.items():
            result, status[name] = run_once(name, flags, model_dir, args, work)
            measured.setdefault(name, []).append(result)
            print(f"{name}: input {result['input_throughput']:.0f} tok/s, total {result['total_throughput']:.0f} tok/s"
                  f" ({status[name]})", flush=True)

    medians = {name: {key: statistics.median(r[key] for r in runs)
                      for key in ("input_throughput", "output_throughput", "total_throughput")}
               for name, runs in measured.items()}
    rows = []
    for name, m in medians.items():
        row = {"variant": name, "tp": args.tp, "hidden": 8192, "layers": args.layers, "input_len": args.input_len,
               "output_len": args.output_len, "num_prompts": args.num_prompts, "runs": len(measured[name]),
               "input_tok_s": round(m["input_throughput"], 1), "output_tok_s": round(m["output_throughput"], 1),
               "total_tok_s": round(m["total_throughput"], 1)}
        if name != "stock":
            row["speedup_vs_stock"] = round(m["total_throughput"] / medians["stock"]["total_throughput"], 4)
        rows.append(row)
    method = f"sglang.bench_offline_throughput, random-ids dataset, median of {args.repeats} runs"
    stem, result = write_result(__file__, argv, args, card, method, status, rows)
    _plot(result, f"{stem}.png")
    print(json.dumps(rows, indent=1))
    shutil.rmtree(model_dir, ignore_errors=True)


def _plot(result, png_path):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    names = [r["variant"] for r in result["rows"]]
    ax.bar(names, [r["total_tok_s"] for r in result["rows"]])
    ax.set_ylabel("total tokens/s (median)")
    ax.set_title(f"TP{result['gpus']} offline, {result['card']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    main()
