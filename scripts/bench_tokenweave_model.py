"""Prefill latency of a Llama-3-70B-shaped model under SGLang's own bench_one_batch:
stock SGLang vs fuse-only vs full TokenWeave vs stock without the TP all-reduces.

Variants (all in one run, one after another on the same machine):
  stock      SGLang 0.5.17 unchanged (overlay switched off)
  fuse_only  --enable-tokenweave with splitting off (every all-reduce + add + norm fused)
  tokenweave --enable-tokenweave (fused + two token splits with overlapped communication)
  no_comm    stock with every decoder all-reduce skipped: the no-communication bound
             (wrong outputs; --tokenweave-bench-skip-allreduce, benchmark only)

The model: Llama-3-70B's layer shape (hidden 8192, 64 heads, 8 KV heads, head dim 128,
intermediate 28672, vocab 128256) with ``--layers`` decoder layers (default 8, not 80; stated
in the JSON) and dummy weights. One request of 1K..16K tokens per prefill; each size runs
``--repeats`` times after one warm-up round; medians. Prefill CUDA graphs are off for every
variant (eager prefill; decode graphs stay on). Writes
benchmarks/results/bench_tokenweave_model_<card>_tp<N>.json and a PNG beside it.

On the GPU machine, with SGLang from the device bundle (see the device notes) and this
package installed next to it (its plugin entry point is what activates the overlay):

    bash .devbundle/p1/sglang_on_device.sh env \\
      pip install --no-deps --no-build-isolation --target /tmp/site .
    bash .devbundle/p1/sglang_on_device.sh env python3 scripts/bench_tokenweave_model.py --tp 2
    bash .devbundle/p1/sglang_on_device.sh env python3 scripts/bench_tokenweave_model.py --tp 4

(add ``--variants stock,tokenweave`` to split a run that would pass the 10-minute limit, and
``--tokenweave-config FILE`` for tuned data from scripts/tune_tokenweave.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from bench_command import recorded_command  # noqa: E402
from bench_plot import pyplot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
                 "SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2": "0"}
LLAMA3_70B_SHAPE = {
    "hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
    "intermediate_size": 28672, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
}
VARIANTS = {
    "stock": None,
    "fuse_only": ["--enable-tokenweave", "--tokenweave-split-threshold", str(1 << 20)],
    "tokenweave": ["--enable-tokenweave"],
    "no_comm": ["--enable-tokenweave", "--tokenweave-bench-skip-allreduce"],
}
SGLANG_ARGS = ["--load-format", "dummy", "--dtype", "bfloat16", "--attention-backend", "triton",
               "--sampling-backend", "pytorch", "--enforce-disable-flashinfer-allreduce-fusion",
               "--cuda-graph-backend-prefill", "disabled", "--mem-fraction-static", "0.6",
               "--chunked-prefill-size", "16384", "--max-prefill-tokens", "16384"]


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


def overlay_env(flags) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SGLANG_TOKENWEAVE", "SGLANG_TOKENWEAVE_ARGS")}
    env.update(MULTICAST_OFF)
    if flags is not None:
        env.update(SGLANG_TOKENWEAVE="1", SGLANG_TOKENWEAVE_ARGS=shlex.join(flags))
    return env


def overlay_status(log: str) -> str:
    """What the overlay said about itself on TP rank 0 (active, or the fallback reason)."""
    lines = [l for l in log.splitlines() if "sglang-tokenweave: tokenweave " in l and "TP0" in l]
    return lines[0].split("sglang-tokenweave: ", 1)[1] if lines else "overlay off"


def write_result(script: str, argv, args, card: str, method: str, status: dict, rows: list) -> tuple[Path, dict]:
    """Write <out-dir>/<script>_<card>_tp<N>.json (the format in docs/DESIGN.md); returns its stem and content."""
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{Path(script).stem}_{card_slug(card)}_tp{args.tp}"
    result = {"card": card, "gpus": args.tp, "versions": versions(),
              "command": recorded_command(script, argv or sys.argv[1:]),
              "model": f"Llama-3-70B layer shape, {args.layers} of 80 layers, dummy weights, bf16",
              "method": method, "overlay_status": status, "rows": rows}
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1))
    return stem, result


def run_tool(name, cmd, flags, timeout, log_path: Path, result_file: Path) -> str:
    """Run one of SGLang's benchmark tools with the overlay's flags (None: stock); returns its log."""
    proc = subprocess.run(cmd, env=overlay_env(flags), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    log_path.write_text(log)
    if proc.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"{name}: {cmd[2]} failed ({proc.returncode}):\n{log[-4000:]}")
    return log


def run_variant(name, flags, model_dir, args, out_dir) -> tuple[dict, str]:
    """{tokens: [(prefill s, median decode step s)...]} over the repeats (warm-up round dropped),
    and the overlay status."""
    result_file = out_dir / f"{name}.jsonl"
    lengths = [str(t) for t in args.tokens] * (args.repeats + 1)
    cmd = [sys.executable, "-m", "sglang_tokenweave.tokenweave.one_batch", "--model-path", str(model_dir),
           "--tp", str(args.tp), "--batch-size", "1", "--input-len", *lengths, "--output-len", str(args.output_len),
           "--result-filename", str(result_file), *SGLANG_ARGS]
    if flags is not None and args.tokenweave_config and name == "tokenweave":
        flags = [*flags, "--tokenweave-config", args.tokenweave_config]
    started = time.time()
    log = run_tool(name, cmd, flags, args.timeout, out_dir / f"{name}.log", result_file)
    by_tokens: dict[int, list[float]] = {}
    for line in result_file.read_text().splitlines():
        rec = json.loads(line)
        decode = rec.get("median_decode_latency")
        by_tokens.setdefault(int(rec["input_len"]), []).append(
            (float(rec["prefill_latency"]), float(decode) if decode is not None else None))
    print(f"{name}: {time.time() - started:.0f} s, {overlay_status(log)}", flush=True)
    return {t: v[1:] for t, v in by_tokens.items()}, overlay_status(log)


def versions() -> dict:
    import torch

    out = {"torch": torch.__version__, "sglang_tokenweave": git_sha()}
    try:
        import sglang

        out["sglang"] = sglang.__version__
    except ImportError:
        out["sglang"] = None
    return out


def git_sha():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def card_slug(name: str) -> str:
    for key in ("H100", "H200", "B200", "A100"):
        if key in name:
            return key.lower()
    return name.split()[-1].lower()


def plot(result, png_path, y_key, y_label):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in dict.fromkeys(r["variant"] for r in result["rows"]):
        pts = [(r["tokens"], r[y_key]) for r in result["rows"] if r["variant"] == variant]
        ax.plot(*zip(*pts), marker="o", label=variant, linestyle="--" if variant == "no_comm" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prefill tokens")
    ax.set_ylabel(y_label)
    ax.set_title(f"TP{result['gpus']}, {result['model']}, {result['card']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tp", type=int, required=True)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--tokens", type=lambda s: [int(v) for v in s.split(",")], default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output-len", type=int, default=8,
                   help="tokens generated after each prefill (decode steps in CUDA graphs, batch 1)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--tokenweave-config", default=None)
    p.add_argument("--timeout", type=int, default=900, help="seconds per variant")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    import torch

    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]}; choose from {list(VARIANTS)}")
    card = torch.cuda.get_device_name(0)
    model_dir = make_model_dir(args.layers, max(args.tokens))
    work = Path(tempfile.mkdtemp(prefix="bench-tokenweave-"))
    times, status = {}, {}
    for name in variants:
        times[name], status[name] = run_variant(name, VARIANTS[name], model_dir, args, work)

    rows = []
    for tokens in args.tokens:
        medians = {v: statistics.median(p for p, _ in times[v][tokens]) * 1e6 for v in variants if times[v].get(tokens)}
        decodes = {v: statistics.median(d for _, d in times[v][tokens]) * 1e6 for v in medians
                   if all(d is not None for _, d in times[v][tokens])}
        for v, us in medians.items():
            row = {"tokens": tokens, "tp": args.tp, "hidden": 8192, "layers": args.layers, "variant": v,
                   "prefill_us": round(us, 1), "samples": len(times[v][tokens])}
            for base in ("stock", "fuse_only"):
                if base in medians and base != v:
                    row[f"speedup_vs_{base}"] = round(medians[base] / us, 4)
            if v in decodes:
                row["decode_step_us"] = round(decodes[v], 1)
                if "stock" in decodes and v != "stock":
                    row["decode_speedup_vs_stock"] = round(decodes["stock"] / decodes[v], 4)
            rows.append(row)
            print(f"T={tokens:>6} {v:>10}: {us / 1000:9.2f} ms" +
                  (f"  x{row['speedup_vs_stock']:.3f} vs stock" if "speedup_vs_stock" in row else ""))
    method = (f"sglang.bench_one_batch, batch 1, median of {args.repeats} prefills after one warm-up round, "
              "eager prefill (prefill CUDA graphs off), triton attention; decode_step_us: median step of the "
              f"{args.output_len - 1} decode steps that follow (batch 1, decode CUDA graphs on)")
    stem, result = write_result(__file__, argv, args, card, method, status, rows)
    plot(result, f"{stem}.png", "prefill_us", "prefill latency, us (median)")
    print(f"wrote {stem}.json")
    shutil.rmtree(model_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
