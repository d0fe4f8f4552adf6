"""Deterministic-request serving benchmark: throughput and latency vs the deterministic fraction.

For each configuration a server is started, warmed up, loaded with the same request mix
(closed loop, fixed concurrency; ``--repeats`` runs per row, medians reported and every run's
throughput kept), and killed:
- ``stock``: plain ``sglang.launch_server`` (all requests non-deterministic);
- ``sglang_deterministic``: ``sglang.launch_server --enable-deterministic-inference``;
- ``ours``: ``sglang_tokenweave.launch_server --enable-deterministic-requests`` at deterministic
  fractions 0, 0.1, 0.5 and 1.0 of the requests; one server per ``--ours-variant`` (extra flags,
  e.g. another lookahead), each compared with its own all-non-deterministic run.
The model is a random-weight Llama written for the run (``--model-shape``: ``tiny``, the tests'
model, all host overhead on a GPU; ``llama-1b`` and ``llama-8b``, the same architecture with the
layer shapes of Llama-3.2-1B and Llama-3-8B) unless
``--model-path`` names a checkpoint. The first ``--solo-check`` deterministic requests of every
loaded run are compared with their solo runs (``identical``: the share that matched), and the
rollback rate (tokens rolled back / tokens verified, from /metrics) is reported with every row: random-weight models give flat token distributions
and many more mismatches than trained models. ``--logit-scale K`` multiplies the output
projection by K (a written model is written so; a checkpoint is served as a scaled copy): peakier
token distributions, but as many near-ties for the fast path and the verifier to break
differently, since the rounding differences scale with the logits. ``--successor-strength S``
writes a model that favours a fixed successor of each token by a margin that does not scale so,
as a trained model favours its confident tokens: fewer near-ties (the JSON says how the model
was made).
Each row also gives the share of wall time spent in verification passes. Output:
benchmarks/results/bench_determinism_<card>_tp<N>[_<tag>].json and .png, rewritten after every row.

    python scripts/bench_determinism.py --tp 2 --model-shape llama-1b --logit-scale 2 \
        --ours-variant default: --ours-variant "lookahead4:--deterministic-lookahead-blocks 4"
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

import scheduler_profile
from bench_command import card_name, recorded_command
from bench_plot import pyplot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sglang_tokenweave.tiny_model import LLAMA_1B_SHAPE, LLAMA_8B_SHAPE, TINY_LLAMA, write_tiny_model  # noqa: E402

MODEL_SHAPES = {"tiny": TINY_LLAMA, "llama-1b": LLAMA_1B_SHAPE, "llama-8b": LLAMA_8B_SHAPE}
# Multicast stays off on the shared GPU machines, in every process we start.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, module: str, args: list[str], log: Path):
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")
        cmd = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **SAFE_ENV})
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {log}")
            try:
                if requests.get(self.url + "/health_generate", timeout=30).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        self.kill()
        raise TimeoutError(f"server not ready; see {log}")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def scaled_copy(model_path: str, scale: float) -> Path:
    """A copy of a safetensors checkpoint with ``lm_head.weight`` multiplied by ``scale``."""
    from safetensors.torch import load_file, save_file

    source = Path(model_path)
    target = Path(tempfile.mkdtemp(prefix="det-bench-model-"))
    found = False
    for f in source.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, target / f.name)
            continue
        tensors = load_file(str(f))
        if "lm_head.weight" in tensors:
            tensors["lm_head.weight"] = tensors["lm_head.weight"] * scale
            found = True
        save_file(tensors, str(target / f.name), metadata={"format": "pt"})
    if not found:
        raise SystemExit(f"--logit-scale: no lm_head.weight in {model_path} (tied embeddings?)")
    return target


def bench_model(args) -> tuple[str, str, bool]:
    """(path, how the model was made, whether the path is a temporary copy to remove)."""
    scaled = f", lm_head scaled by {args.logit_scale:g}" if args.logit_scale != 1.0 else ""
    if args.model_path:
        name = Path(args.model_path).name
        if scaled:
            return str(scaled_copy(args.model_path, args.logit_scale)), name + scaled, True
        return args.model_path, name, False
    config = MODEL_SHAPES[args.model_shape]
    target = Path(tempfile.mkdtemp(prefix="det-bench-model-"))
    write_tiny_model(target, config, lm_head_scale=4.0 * args.logit_scale, successor_strength=args.successor_strength)
    successors = f", successor strength {args.successor_strength:g}" if args.successor_strength else ""
    how = (f"{args.model_shape}: Llama, {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
           f"vocab {config['vocab_size']}, random weights written by sglang_tokenweave/tiny_model.py, "
           f"{config['torch_dtype']}{scaled}{successors}")
    return str(target), how, True


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, _, flags = text.partition(":")
    return label, flags.split()


def make_workload(n: int, det_fraction: float, seed: int, max_new_tokens: int) -> list[dict]:
    """Requests of the run; the deterministic ones are spread evenly through the list."""
    rng = random.Random(seed)
    det_every = round(1 / det_fraction) if det_fraction > 0 else None
    work = []
    for i in range(n):
        words = " ".join(f"w{rng.randint(0, 5000)}" for _ in range(rng.randint(16, 512)))
        params = {"max_new_tokens": max_new_tokens, "temperature": rng.choice([0.0, 0.8]), "ignore_eos": True}
        if det_fraction >= 1 or (det_every and i % det_every == 0):
            params.update(deterministic=True, sampling_seed=i)
        work.append({"text": words, "sampling_params": params})
    return work


def flush_prefix_cache(url: str) -> None:
    """Every loaded run starts from an empty prefix cache. Otherwise the runs after the first
    find the non-deterministic prompts cached (the workloads share their prompts): their
    prefills shrink to a token each, which SGLang runs eagerly, one request at a time, as they
    arrive, and the runs are no longer comparable."""
    r = requests.post(url + "/flush_cache", params={"timeout": 30}, timeout=60)
    r.raise_for_status()


def run_load(url: str, work: list[dict], concurrency: int) -> tuple[list[float], list[list[int]], float]:
    def one(body):
        start = time.perf_counter()
        r = requests.post(url + "/generate", json=body, timeout=3600)
        r.raise_for_status()
        return time.perf_counter() - start, r.json()["output_ids"]

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, work))
    return [lat for lat, _ in results], [ids for _, ids in results], time.perf_counter() - start


def counters(url: str) -> dict[str, float]:
    out = {}
    for line in requests.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("sglang_tokenweave:deterministic_"):
            name, value = line.split()
            out[name.split("deterministic_", 1)[1].removesuffix("_total")] = float(value)
    return out


def measure(server: Server, work: list[dict], concurrency: int, solo_check: int, repeats: int,
            profile: tuple[Path, Path] | None = None) -> dict:
    """``profile``: (summary, raw stacks) paths: one more run, profiled, outside the numbers
    (the profiler's sampling slows a host-bound server down)."""
    warm = [dict(w, sampling_params={**w["sampling_params"], "max_new_tokens": 4}) for w in work[:concurrency]]
    run_load(server.url, warm, concurrency)
    det_indices = [i for i, w in enumerate(work) if w["sampling_params"].get("deterministic")]
    before = counters(server.url)
    runs = []
    for _ in range(repeats):
        flush_prefix_cache(server.url)
        runs.append(run_load(server.url, work, concurrency))
    after = counters(server.url)
    if profile:
        flush_prefix_cache(server.url)
        with scheduler_profile.record(server.proc.pid, *profile):
            run_load(server.url, work, concurrency)
    checked = det_indices[:solo_check]
    solo = {i: run_load(server.url, [work[i]], 1)[1][0] for i in checked}
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return {"requests": len(work), "deterministic_requests": len(det_indices), **summarize(runs, solo, delta)}


def summarize(runs: list[tuple[list[float], list[list[int]], float]], solo: dict[int, list[int]],
              delta: dict[str, float]) -> dict:
    """Medians over the repeated loaded runs (latencies, outputs, wall time each), the share of
    (run, checked request) pairs whose output equals the request's solo run, and the counters'
    increase over all runs (``delta``: rates per verified token, passes per run)."""
    walls = [wall for _, _, wall in runs]
    throughputs = [sum(len(ids) for ids in outputs) / wall for _, outputs, wall in runs]
    p50 = [statistics.median(lat) * 1e6 for lat, _, _ in runs]
    p99 = [sorted(lat)[max(0, int(0.99 * len(lat)) - 1)] * 1e6 for lat, _, _ in runs]
    matches = [outputs[i] == ids for _, outputs, _ in runs for i, ids in solo.items()]
    verified = delta.get("tokens_verified", 0.0)
    return {
        "repeats": len(runs),
        "throughput_tok_s": statistics.median(throughputs),
        "throughput_samples": throughputs,
        "latency_p50_us": statistics.median(p50),
        "latency_p99_us": statistics.median(p99),
        "identical": (sum(matches) / len(matches)) if matches else None,
        "rollback_rate": (delta.get("tokens_rolled_back", 0.0) / verified) if verified else None,
        "verification_passes": _per_run(delta, "verification_passes", len(runs)),
        # Share of the runs' wall time spent in verification passes (the whole batch waits).
        "verify_time_share": (delta["verification_seconds"] / sum(walls)) if "verification_seconds" in delta else None,
        # Per run: prefill batches run for one deterministic request alone, decode steps with
        # deterministic rows, and the share of wall time the host spent sampling those rows.
        "isolated_prefills": _per_run(delta, "isolated_prefills", len(runs)),
        "fast_path_steps": _per_run(delta, "fast_path_steps", len(runs)),
        "sampler_time_share": (delta["sampler_seconds"] / sum(walls)) if "sampler_seconds" in delta else None,
        "counters": delta,  # every counter's increase over the runs (rollbacks by cause among them)
    }


def _per_run(delta: dict[str, float], name: str, runs: int) -> float | None:
    return delta[name] / runs if name in delta else None


def versions() -> dict:
    import sglang
    import torch

    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, capture_output=True).returncode != 0
    version = (sha.stdout.strip() or "unknown") + ("+uncommitted changes" if dirty else "")
    return {"torch": torch.__version__, "sglang": sglang.__version__, "sglang_tokenweave": version}


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None or not rows:
        return
    ours = [r for r in rows if r["server"] == "ours"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in dict.fromkeys(r["variant"] for r in ours):
        mine = [r for r in ours if r["variant"] == variant]
        ax.plot([r["det_fraction"] for r in mine], [r["throughput_tok_s"] for r in mine], "o-",
                label=f"ours ({variant})")
    for r in rows:
        if r["server"] != "ours":
            ax.axhline(r["throughput_tok_s"], linestyle="--", label=r["server"], color="gray" if
                       r["server"] == "stock" else "red")
    for r in ours:
        if r["rollback_rate"] is not None:
            ax.annotate(f"rb {r['rollback_rate']:.1%}", (r["det_fraction"], r["throughput_tok_s"]))
    ax.set_xlabel("fraction of deterministic requests")
    ax.set_ylabel("output tokens / s")
    # From zero, so that a few percent look like a few percent.
    ax.set_ylim(0, 1.15 * max(r["throughput_tok_s"] for r in rows))
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", help="a checkpoint; default: a random-weight model of --model-shape")
    parser.add_argument("--model-shape", choices=sorted(MODEL_SHAPES), default="tiny",
                        help="tiny: the tests' model (2 layers, hidden 128); llama-1b, llama-8b: the same "
                        "architecture at Llama-3.2-1B's and Llama-3-8B's layer shapes (the tiny vocabulary)")
    parser.add_argument("--ours-variant", action="append", type=parse_variant, metavar="LABEL:FLAGS",
                        help="one 'ours' server per variant, with these extra flags (repeatable), e.g. "
                             "'lookahead2:--deterministic-lookahead-blocks 2'; default: one, 'default:'")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--fractions", default="0,0.1,0.5,1")
    parser.add_argument("--solo-check", type=int, default=16, help="deterministic requests re-run alone")
    parser.add_argument("--repeats", type=int, default=3, help="loaded runs per row (medians reported)")
    parser.add_argument("--extra-args", default="", help="more server flags, for every server")
    parser.add_argument("--servers", default="stock,sglang_deterministic,ours",
                        help="which configurations to run (comma-separated)")
    parser.add_argument("--logit-scale", type=float, default=1.0,
                        help="serve a copy of the model with lm_head multiplied by this (see above)")
    parser.add_argument("--successor-strength", type=float, default=0.0,
                        help="a written model (no --model-path) favours a fixed successor of each token by "
                        "this much (tiny_model.write_tiny_model): fewer near-ties, as in a trained model")
    parser.add_argument("--tag", default="", help="appended to the result file's name")
    parser.add_argument("--profile-scheduler", action="store_true",
                        help="one more run per row, outside the numbers, with py-spy on the TP-0 scheduler: a "
                        "per-function summary per row beside the result (raw stacks under logs/)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.model_path and args.successor_strength:
        parser.error("--successor-strength shapes a written model; it cannot change --model-path's")

    model_path, model_how, temporary = bench_model(args)
    variants = args.ours_variant or [("default", [])]
    common = ["--model-path", model_path, "--tp", str(args.tp), *args.extra_args.split()]
    fractions = [float(f) for f in args.fractions.split(",")]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    logs = args.out_dir / "logs"
    logs.mkdir(exist_ok=True)
    ours = ["--enable-deterministic-requests", "--enable-metrics"]
    configs = [("stock", None, "sglang.launch_server", [], [0.0]),
               ("sglang_deterministic", None, "sglang.launch_server", ["--enable-deterministic-inference"], [0.0])]
    configs += [("ours", label, "sglang_tokenweave.launch_server", ours + flags, fractions) for label, flags in variants]
    wanted = set(args.servers.split(","))
    configs = [c for c in configs if c[0] in wanted]
    card, short = card_name()
    out = args.out_dir / f"bench_determinism_{short}_tp{args.tp}{'_' + args.tag if args.tag else ''}.json"
    header = {"card": card, "gpus": args.tp, "versions": versions(), "model": model_how,
              "command": recorded_command(__file__, sys.argv[1:])}
    rows = []
    try:
        for name, variant, module, flags, fracs in configs:
            log_name = name if variant is None else f"{name}_{variant}"
            server = Server(module, common + flags, logs / f"{log_name}.log")
            try:
                for fraction in fracs:
                    work = make_workload(args.requests, fraction, seed=0, max_new_tokens=args.max_new_tokens)
                    profile = None
                    if args.profile_scheduler:
                        label = f"{log_name}_{fraction:g}"
                        profile = (out.with_name(f"{out.stem}_profile_{label}.txt"), logs / f"profile_{label}.raw.txt")
                    row = {"server": name, "variant": variant, "flags": flags[len(ours):] if variant else [],
                           "tp": args.tp, "det_fraction": fraction, "concurrency": args.concurrency,
                           "max_new_tokens": args.max_new_tokens,
                           **measure(server, work, args.concurrency, args.solo_check, args.repeats, profile)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    # After every row: a run cut short still leaves its finished rows.
                    write_result(out, header, rows, complete=False)
            finally:
                server.kill()
    finally:
        if temporary:
            shutil.rmtree(model_path, ignore_errors=True)
    write_result(out, header, rows, complete=True)
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}")


def write_result(out: Path, header: dict, rows: list[dict], complete: bool) -> None:
    """The result file: ``header``, then ``rows`` with their ratios to the baselines present."""
    base = {(r["server"], r["variant"]): r for r in rows if r["det_fraction"] == 0.0}
    ours_base = next((r for (server, _), r in base.items() if server == "ours"), None)
    for r in rows:
        # Each variant against its own all-non-deterministic run (else the first variant's).
        nondet = base.get(("ours", r["variant"]), ours_base)
        if nondet is not None:
            r["throughput_relative_to_nondet"] = r["throughput_tok_s"] / nondet["throughput_tok_s"]
        for baseline in ("stock", "sglang_deterministic"):
            if (baseline, None) in base:
                r[f"speedup_vs_{baseline}"] = r["throughput_tok_s"] / base[(baseline, None)]["throughput_tok_s"]
    out.write_text(json.dumps({**header, "complete": complete, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
