"""Prefill latency of a Llama-3-70B-shaped model under SGLang's own bench_one_batch: stock
SGLang as its users run it against the overlay.

Variants (``--variants``; default stock,ours):
  stock      SGLang 0.5.17 with its defaults (the overlay off)
  ours       our defaults plus --enable-tokenweave (fused kernel; token splits from 8K tokens)
  fuse_only  --enable-tokenweave with splitting off (every all-reduce + add + norm fused)
  no_comm    every decoder all-reduce skipped: the no-communication bound (wrong outputs;
             --tokenweave-bench-skip-allreduce, benchmark only)

Both sides run SGLang's defaults, prefill CUDA graphs included (SGLang captures them up to its
chunked-prefill size, 8K tokens on an H100 or H200; larger prefills run eagerly, and so do our
split batches), plus what our machines require of every process (NVLink multicast off) and what
the GPU bundle forces on both sides alike (``FORCED_ARGS``; both recorded in the JSON with why).

Runs are interleaved (stock, ours, ours, stock, stock, ours for ``--repeats 3``), each in a
fresh process; within a run every size is measured after one warm-up round (median of
``--samples`` prefills). Figures are medians over the runs with their min-max; a speedup is taken
per repeat (stock's run over the variant's run of the same repeat), median with min-max. Each
size records the path it took in the process (``graph``: SGLang replayed a prefill CUDA graph;
``path``: stock / fuse-only / split / sglang, see sglang_tokenweave/glue/overlap/bench_paths.py),
and each side which all-reduce SGLang's TP group set up (custom all-reduce v2 or NCCL) with its
multicast pointers, which must all be 0.

The model: Llama-3-70B's layer shape (hidden 8192, 64 heads, 8 KV heads, head dim 128,
intermediate 28672, vocab 128256) with ``--layers`` decoder layers (default 8, not 80; stated
in the JSON) and dummy weights; one request of 1K..16K tokens per prefill, 7 decode steps after
it (decode CUDA graphs, batch 1). Writes benchmarks/results/bench_tokenweave_model_<card>_tp<N>.json
and a PNG beside it.

On the GPU machine, with SGLang from the device bundle (see the device notes) and this
package installed next to it (its plugin entry point is what activates the overlay):

    bash .devbundle/p1/sglang_on_device.sh env \\
      pip install --no-deps --no-build-isolation --target /tmp/site .
    bash .devbundle/p1/sglang_on_device.sh env python3 scripts/bench_tokenweave_model.py --tp 2

(``--tokens`` and ``--variants`` split a run that would pass the 10-minute limit;
``--tokenweave-config FILE`` gives ours tuned data from scripts/tune_tokenweave.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_command import card_name, env_overrides, git_state, package_versions, recorded_command
from bench_plot import pyplot

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sglang_tokenweave.comm.multicast import MULTICAST_OFF_SWITCHES  # noqa: E402
from sglang_tokenweave.glue.overlap.bench_paths import PATHS_ENV, read_paths  # noqa: E402

LLAMA3_70B_SHAPE = {
    "hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
    "intermediate_size": 28672, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
}
VARIANTS = {
    "stock": None,
    "ours": ["--enable-tokenweave"],
    "fuse_only": ["--enable-tokenweave", "--tokenweave-split-threshold", str(1 << 20)],
    "no_comm": ["--enable-tokenweave", "--tokenweave-bench-skip-allreduce"],
}
BASELINE = "stock"
MODEL_ARGS = ["--load-format", "dummy"]  # random weights of the shape in config.json
# Flags the GPU bundle forces on both sides alike, and why: recorded in every result.
FORCED_ARGS = {
    "--attention-backend triton": "FlashAttention 3 (SGLang's default on Hopper) is not in the GPU bundle",
    "--sampling-backend pytorch": "needs no JIT-compiled FlashInfer kernel (none is prebuilt in the GPU bundle)",
}
RECORDED_PREFIXES = ("SGLANG_", "NCCL_", "TORCH_", "NVSHMEM_", "PYTORCH_", "CUDA_VISIBLE_DEVICES")
PATH_VALUED = (PATHS_ENV, "SGLANG_TOKENWEAVE_CACHE_DIR")  # recorded by name only


def make_model_dir(layers: int, max_tokens: int) -> Path:
    """A Llama config of the 70B shape with ``layers`` layers, plus a small tokenizer (the
    benchmark feeds random token ids; the tokenizer is only loaded)."""
    from sglang_tokenweave.tiny_model import tiny_model_path

    path = Path(tempfile.mkdtemp(prefix="llama70b-shape-"))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": layers,
              "hidden_act": "silu", "max_position_embeddings": max(32768, 2 * max_tokens),
              "torch_dtype": "bfloat16", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              **LLAMA3_70B_SHAPE}
    (path / "config.json").write_text(json.dumps(config, indent=1))
    for f in Path(tiny_model_path()).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, path / f.name)
    return path


# ---- the plan and each side's process -----------------------------------------------------

def interleaved_plan(variants: list[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, variant) in run order: the variants forwards, then backwards, and so on
    (A B, B A, A B ...), so that neither side always runs first or last."""
    plan = []
    for repeat in range(repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        plan += [(repeat, v) for v in order]
    return plan


def forced_args() -> list[str]:
    return [part for flags in FORCED_ARGS for part in flags.split()]


def side_flags(variant: str, tokenweave_config: str | None):
    """The overlay's flags for ``variant`` (None: the overlay off)."""
    flags = VARIANTS[variant]
    if flags is not None and tokenweave_config and variant == "ours":
        flags = [*flags, "--tokenweave-config", tokenweave_config]
    return flags


def side_env(flags, paths_file: str, base=None) -> dict:
    """The environment of one run: the inherited one without the overrides (bench_command's
    ``ENV_OVERRIDES``: stock runs SGLang's defaults), plus multicast off, the path recorder and,
    for ours, the overlay switched on with ``flags``."""
    base = os.environ if base is None else base
    dropped = env_overrides(base)
    env = {k: v for k, v in base.items() if k not in dropped}
    env.update(MULTICAST_OFF_SWITCHES)
    env[PATHS_ENV] = paths_file
    if flags is not None:
        env.update(SGLANG_TOKENWEAVE="1", SGLANG_TOKENWEAVE_ARGS=shlex.join(flags))
    return env


def recorded_env(env: dict) -> dict:
    """What a result records of a run's environment: the switches SGLang, NCCL, torch symmetric
    memory, NVSHMEM and the overlay read (paths by name only)."""
    return {k: ("(path)" if k in PATH_VALUED else v) for k, v in sorted(env.items()) if k.startswith(RECORDED_PREFIXES)}


def tool_argv(model: str, result_file: str, args) -> list[str]:
    """bench_one_batch's arguments for one run: every size once per round, one warm-up round."""
    lengths = [str(t) for t in args.tokens] * (args.samples + 1)
    return ["-m", "sglang_tokenweave.glue.overlap.one_batch", "--model-path", model, "--tp", str(args.tp),
            "--batch-size", "1", "--input-len", *lengths, "--output-len", str(args.output_len),
            "--result-filename", result_file, *MODEL_ARGS, *forced_args(), *shlex.split(args.extra_sglang_args)]


def run_tool(cmd: list[str], env: dict, timeout: float, log_path: Path, result_file: Path) -> str:
    """Run one bench_one_batch process; returns its log (raises with its tail if it failed).
    It runs in a session of its own, so its TP workers go with it, also on a timeout."""
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = f"timed out after {timeout} s"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    log = log_path.read_text(errors="replace")
    if returncode != 0 or not result_file.exists():
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({returncode}):\n{log[-4000:]}")
    return log


def overlay_status(log: str) -> str:
    """What the overlay said about itself on TP rank 0 (active, or the fallback reason)."""
    lines = [l for l in log.splitlines() if "sglang-tokenweave: tokenweave " in l and "TP0" in l]
    return lines[0].split("sglang-tokenweave: ", 1)[1] if lines else "overlay off"


def run_once(name: str, flags, model_dir: Path, args, work: Path, index: int) -> dict:
    """One fresh process of one variant: per size its prefill and decode-step seconds (the
    median of the run's samples; the warm-up round dropped), the path each size took, the TP
    group's all-reduce setup and the overlay's status."""
    result_file, paths_file = work / f"run{index}_{name}.jsonl", work / f"run{index}_{name}.paths"
    env = side_env(flags, str(paths_file))
    started = time.time()
    log = run_tool([sys.executable, *tool_argv(str(model_dir), str(result_file), args)], env, args.timeout,
                   work / f"run{index}_{name}.log", result_file)
    samples: dict[int, list] = {}
    for line in result_file.read_text().splitlines():
        rec = json.loads(line)
        decode = rec.get("median_decode_latency")
        samples.setdefault(int(rec["input_len"]), []).append(
            (float(rec["prefill_latency"]), float(decode) if decode is not None else None))
    setup, paths = read_paths(paths_file.read_text()) if paths_file.exists() else (None, {})
    status = overlay_status(log)
    print(f"run {index} {name}: {time.time() - started:.0f} s, {status}, all-reduce {setup}", flush=True)
    per_size = {}
    for tokens, values in samples.items():
        kept = values[1:]  # the first round warms up
        decodes = [d for _, d in kept if d is not None]
        per_size[tokens] = {"prefill_s": statistics.median(p for p, _ in kept),
                            "decode_s": statistics.median(decodes) if len(decodes) == len(kept) else None}
    return {"sizes": per_size, "paths": paths, "allreduce": setup, "status": status}


# ---- summary ------------------------------------------------------------------------------

def add_spread(row: dict, key: str, values: list, digits: int) -> None:
    """row[key] = the median of ``values``, with key_min, key_max and every value (key_runs)."""
    if not values:
        return
    row[key] = round(statistics.median(values), digits)
    row[f"{key}_min"], row[f"{key}_max"] = round(min(values), digits), round(max(values), digits)
    row[f"{key}_runs"] = [round(v, digits) for v in values]


def agreed(values: list):
    """The one value every run reported, or "mixed"."""
    distinct = [v for i, v in enumerate(values) if v not in values[:i]]
    return distinct[0] if len(distinct) == 1 else "mixed"


def summarize(runs: dict[str, list[dict]], tokens: list[int], meta: dict) -> list[dict]:
    """Rows per (size, variant) from every variant's runs (listed by repeat)."""
    rows = []
    for t in tokens:
        for variant, variant_runs in runs.items():
            measured = [r for r in variant_runs if t in r["sizes"]]
            if not measured:
                continue
            row = {"tokens": t, "variant": variant, **meta, "runs": len(measured)}
            add_spread(row, "prefill_us", [r["sizes"][t]["prefill_s"] * 1e6 for r in measured], 1)
            decodes = [r["sizes"][t]["decode_s"] for r in measured]
            if all(d is not None for d in decodes):
                add_spread(row, "decode_step_us", [d * 1e6 for d in decodes], 1)
            for base in (BASELINE, "fuse_only"):
                if base == variant or base not in runs:
                    continue
                pairs = [(b["sizes"][t]["prefill_s"], r["sizes"][t]["prefill_s"])
                         for b, r in zip(runs[base], variant_runs) if t in b["sizes"] and t in r["sizes"]]
                add_spread(row, f"speedup_vs_{base}", [b / r for b, r in pairs], 4)
            paths = [r["paths"].get(t, {}) for r in measured]
            row["cuda_graph"] = agreed([p.get("graph") for p in paths])
            row["path"] = agreed([p.get("path") for p in paths])
            rows.append(row)
    return rows


def side_records(variants: list[str], args, runs: dict[str, list[dict]]) -> dict:
    """What each side ran with: overlay flags, the recorded command and environment, the
    all-reduce setup SGLang's TP group reported, and the overlay's status."""
    sides = {}
    for variant in variants:
        flags = side_flags(variant, args.tokenweave_config)
        setups = [r["allreduce"] for r in runs[variant]]
        sides[variant] = {
            "overlay_flags": flags,
            "command": shlex.join(["python", *tool_argv("<model dir>", "<result file>", args)]),
            "env": recorded_env(side_env(flags, "")),
            "dropped_env": env_overrides(os.environ),
            "allreduce": agreed(setups),
            "overlay_status": agreed([r["status"] for r in runs[variant]]),
        }
    return sides


def multicast_check(sides: dict) -> dict:
    """Per side: "all 0", why SGLang's all-reduce broke the multicast-off rule, or why it could
    not be checked."""
    from sglang_tokenweave.glue.overlap.allreduce_dispatch import multicast_refusal

    out = {}
    for variant, side in sides.items():
        setup = side["allreduce"]
        if isinstance(setup, dict):
            out[variant] = multicast_refusal(setup) or "all 0"
        else:
            out[variant] = f"unchecked: the runs reported {setup!r}"
    return out


def plot(result, png_path):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in dict.fromkeys(r["variant"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["variant"] == variant]
        x = [r["tokens"] for r in rows]
        y = [r["prefill_us"] / 1000 for r in rows]
        err = [[(r["prefill_us"] - r["prefill_us_min"]) / 1000 for r in rows],
               [(r["prefill_us_max"] - r["prefill_us"]) / 1000 for r in rows]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=variant,
                    linestyle="--" if variant == "no_comm" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prefill tokens")
    ax.set_ylabel("prefill latency, ms (median, min-max)")
    ax.set_title(f"TP{result['gpus']}, {result['model']}, {result['card']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tp", type=int, required=True)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--tokens", type=lambda s: [int(v) for v in s.split(",")], default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--repeats", type=int, default=3, help="fresh-process runs per variant, interleaved (>= 3)")
    p.add_argument("--samples", type=int, default=3, help="prefills per size in each run, after one warm-up round")
    p.add_argument("--output-len", type=int, default=8,
                   help="tokens generated after each prefill (decode steps in CUDA graphs, batch 1)")
    p.add_argument("--variants", default="stock,ours")
    p.add_argument("--tokenweave-config", default=None)
    p.add_argument("--extra-sglang-args", default="", help="SGLang flags for both sides (recorded)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per run")
    p.add_argument("--tag", default="", help="suffix for the output file names")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]}; choose from {list(VARIANTS)}")
    if BASELINE not in args.variants:
        p.error(f"--variants must include {BASELINE}: every speedup is against it")
    if args.repeats < 3:
        p.error("--repeats must be at least 3 (medians with min-max need runs to spread)")
    if args.samples < 1:
        p.error("--samples must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    card, short = card_name()
    model_dir = make_model_dir(args.layers, max(args.tokens))
    work = Path(tempfile.mkdtemp(prefix="bench-tokenweave-"))
    plan = interleaved_plan(args.variants, args.repeats)
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    for index, (_, variant) in enumerate(plan):
        runs[variant].append(run_once(variant, side_flags(variant, args.tokenweave_config), model_dir, args, work,
                                      index))
    shutil.rmtree(model_dir, ignore_errors=True)

    meta = {"tp": args.tp, "hidden": LLAMA3_70B_SHAPE["hidden_size"], "layers": args.layers}
    rows = summarize(runs, args.tokens, meta)
    sides = side_records(args.variants, args, runs)
    result = {
        "card": card, "gpus": args.tp, "git": git_state(), "versions": package_versions(),
        "command": recorded_command(__file__, sys.argv[1:] if argv is None else argv),
        "model": f"Llama-3-70B layer shape, {args.layers} of 80 layers, dummy weights, bf16",
        "method": (f"sglang.bench_one_batch, batch 1, {args.repeats} fresh-process runs per variant, interleaved; "
                   f"per run the median of {args.samples} prefills per size after one warm-up round; "
                   "medians over runs with min-max; speedups per repeat (stock run / variant run), median "
                   f"with min-max; SGLang's defaults (prefill CUDA graphs on); decode_step_us: median of the "
                   f"{args.output_len - 1} decode steps after a prefill (batch 1, decode CUDA graphs)"),
        "order": [v for _, v in plan],
        "forced_on_both_sides": {**FORCED_ARGS, **({args.extra_sglang_args: "--extra-sglang-args"}
                                                  if args.extra_sglang_args else {})},
        "sides": sides, "rows": rows,
    }
    result["multicast_pointers"] = check = multicast_check(sides)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bench_tokenweave_model_{short}_tp{args.tp}{args.tag}"
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, f"{stem}.png")
    for row in rows:
        line = f"T={row['tokens']:>6} {row['variant']:>10}: {row['prefill_us'] / 1000:9.2f} ms " \
               f"[{row['prefill_us_min'] / 1000:.2f}-{row['prefill_us_max'] / 1000:.2f}] " \
               f"{'graph' if row['cuda_graph'] is True else 'eager' if row['cuda_graph'] is False else row['cuda_graph']}" \
               f"/{row['path']}"
        if "speedup_vs_stock" in row:
            line += f"  x{row['speedup_vs_stock']:.3f} [{row['speedup_vs_stock_min']:.3f}-" \
                    f"{row['speedup_vs_stock_max']:.3f}] vs stock"
        print(line)
    print(f"wrote {stem}.json")
    mapped = [f"{v}: {why}" for v, why in check.items() if why != "all 0" and not why.startswith("unchecked")]
    if mapped:
        raise SystemExit("NVLink multicast was mapped: " + "; ".join(mapped))


if __name__ == "__main__":
    main()
