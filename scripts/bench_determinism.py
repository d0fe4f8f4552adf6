"""Deterministic-request serving benchmark: throughput and latency vs the deterministic fraction,
against stock SGLang and SGLang's deterministic mode, on the fair harness
(sglang_tokenweave/bench/).

Sides (``--servers``), each a fresh server process per repeat, in interleaved order (A B C,
C B A, ...; ``--repeats``, default 3), every figure a median with the repeats' min-max:
- ``stock``: ``python -m sglang.launch_server`` with SGLang's defaults (all requests
  non-deterministic);
- ``sglang_deterministic``: the same with ``--enable-deterministic-inference``;
- ``ours``: ``python -m sglang_tokenweave.launch_server --enable-deterministic-requests`` at each
  deterministic fraction of ``--fractions`` (default 0, 2, 5, 10, 20, 50 and 100%; one process
  measures every fraction, in alternating order over the repeats); one side per
  ``--ours-variant`` (extra flags, e.g. another lookahead).
Both get only what every process needs (NVLink multicast off) and what the GPU bundle forces
on both alike (``--forced-on-both``; default the Triton attention and PyTorch sampling
backends on GPUs), plus ``--enable-metrics`` (this benchmark reads ours' counters from /metrics;
stock pays for metrics as well); the result records each side's exact command and environment,
and which all-reduce path SGLang took.

Every loaded run starts from an empty prefix cache. Every distinct deterministic request is
run alone once per ours side (after that side's first repeat) and compared with every loaded run
it was in, across fractions and repeats (``identical``); ``--solo-check N`` checks only the first N
(the JSON names the sample). Ratios are per repeat: against stock and SGLang's deterministic
mode of the same repeat, and against the same process's 0% run. Each row also has ours'
/metrics counters per run: rollback rate (tokens rolled back / verified), verification passes,
isolated prefills, fast-path steps, and the shares of wall time spent in verification passes
and in seeded sampling.

The model is a random-weight Llama written for the run (``--model-shape``: ``tiny``, the tests'
model; ``llama-1b`` and ``llama-8b``, the layer shapes of Llama-3.2-1B and Llama-3-8B with the
tiny vocabulary), its requests random words; or ``--model-path``, a checkpoint, whose requests
come from the committed prompt set (scripts/prompt_set.py) in the model's chat template.
Random-weight models give flat token distributions and many more rollbacks than trained models.
``--logit-scale K`` multiplies the output projection by K (peakier distributions, as many
near-ties); ``--successor-strength S`` writes a model whose tokens each favour a fixed successor
by a margin that does not scale with rounding noise, as a trained model's confident tokens do.

Output: benchmarks/results/bench_determinism/bench_determinism_<card>_tp<N>[_<tag>].json and
.png (rewritten after every run); server logs under logs/ beside it. A run cut short goes on with
``--resume`` (same command, code and machine; bench/checkpoint.py).

    python scripts/bench_determinism.py --tp 1 --model-shape llama-8b \\
        --ours-variant default: --ours-variant "lookahead4:--deterministic-lookahead-blocks 4"
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

import scheduler_profile
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
    Forced,
    Launch,
    Side,
    forced_on_both,
    ours_side,
    stock_side,
)
from sglang_tokenweave.bench.stats import percentile, ratio_spread, spread  # noqa: E402
from sglang_tokenweave.tiny_model import LLAMA_1B_SHAPE, LLAMA_8B_SHAPE, TINY_LLAMA, write_tiny_model  # noqa: E402

BENCHMARK = "bench_determinism"
MODEL_SHAPES = {"tiny": TINY_LLAMA, "llama-1b": LLAMA_1B_SHAPE, "llama-8b": LLAMA_8B_SHAPE}
DEFAULT_FRACTIONS = "0,0.02,0.05,0.1,0.2,0.5,1"
OURS_FLAGS = ["--enable-deterministic-requests"]
METRICS = ("--enable-metrics",)
METRICS_WHY = "--enable-metrics: this benchmark reads ours' counters from /metrics, so both sides pay for metrics"
PROMPT_SET = ROOT / "benchmarks" / "prompts" / "chat_prompts.jsonl"


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


def prompt_set_texts(model_path: str, n: int, prompt_file: Path = PROMPT_SET) -> tuple[list[tuple[str, int]], dict]:
    """``n`` prompts of the committed prompt set in the model's chat template: [(text, max_tokens)],
    and what the result records of the set."""
    try:
        import prompt_set
    except ImportError:
        prompt_set = None
    if prompt_set is None or not prompt_file.exists():
        raise SystemExit("--model-path sends prompts of the prompt set (scripts/prompt_set.py, "
                         "benchmarks/prompts/chat_prompts.jsonl), which this checkout lacks")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompts = prompt_set.sample_prompts(n, 0)
    digest = getattr(prompt_set, "set_digest", None)
    about = {"prompts": "benchmarks/prompts/chat_prompts.jsonl", "digest": digest() if digest else None,
             "ids": [p.id for p in prompts]}
    return [(prompt_set.prompt_text(p, tokenizer), p.max_tokens) for p in prompts], about


def make_workload(n: int, det_fraction: float, seed: int, max_new_tokens: int,
                  prompts: list[tuple[str, int]] | None = None) -> list[dict]:
    """Requests of the run; the deterministic ones are spread evenly through the list. Request
    i is the same in every fraction's workload (text, sampling parameters, seed i), so a request
    deterministic in several fractions is one distinct request. ``prompts``: [(text,
    max_tokens)] of a real model (replies end at EOS or max_tokens, at most ``max_new_tokens``);
    else random words and fixed-length replies."""
    rng = random.Random(seed)
    det_every = round(1 / det_fraction) if det_fraction > 0 else None
    work = []
    for i in range(n):
        words = " ".join(f"w{rng.randint(0, 5000)}" for _ in range(rng.randint(16, 512)))
        params = {"max_new_tokens": max_new_tokens, "temperature": rng.choice([0.0, 0.8]), "ignore_eos": True}
        if prompts:
            words, max_tokens = prompts[i % len(prompts)]
            params.update(max_new_tokens=min(max_tokens, max_new_tokens), ignore_eos=False)
        if det_fraction >= 1 or (det_every and i % det_every == 0):
            params.update(deterministic=True, sampling_seed=i)
        work.append({"text": words, "sampling_params": params})
    return work


def request_key(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


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


def run_sample(latencies: list[float], outputs: list[list[int]], wall: float, delta: dict[str, float],
               deterministic: list[bool] | None = None) -> dict:
    """One loaded run's figures; ``delta``: ours' counters' increase over the run;
    ``deterministic``: which requests were (their neighbours' latency is a figure of its own)."""
    verified = delta.get("tokens_verified", 0.0)
    nondet = [lat for lat, det in zip(latencies, deterministic or [False] * len(latencies)) if not det]

    def share(name):  # of the run's wall time
        return delta[name] / wall if name in delta else None

    return {
        "throughput_tok_s": sum(len(ids) for ids in outputs) / wall,
        "latency_p50_us": percentile(latencies, 50) * 1e6,
        "latency_p99_us": percentile(latencies, 99) * 1e6,
        # What deterministic traffic does to everyone else's tail.
        "latency_p99_nondet_us": percentile(nondet, 99) * 1e6 if nondet else None,
        "rollback_rate": delta.get("tokens_rolled_back", 0.0) / verified if verified else None,
        "verification_passes": delta.get("verification_passes"),
        # The whole batch waits during a verification pass.
        "verify_time_share": share("verification_seconds"),
        # Prefill batches run for one deterministic request alone, decode steps with
        # deterministic rows, and the host's time sampling those rows.
        "isolated_prefills": delta.get("isolated_prefills"),
        "fast_path_steps": delta.get("fast_path_steps"),
        "sampler_time_share": share("sampler_seconds"),
        # The overlap scheduler's steps in flight processed early before passes (the host waits).
        "drain_time_share": share("verification_drain_seconds"),
        "counters": delta,  # every counter's increase (rollbacks by cause among them)
    }


FIGURES = ("throughput_tok_s", "latency_p50_us", "latency_p99_us", "latency_p99_nondet_us", "rollback_rate",
           "verification_passes", "verify_time_share", "isolated_prefills", "fast_path_steps", "sampler_time_share",
           "drain_time_share")


@dataclass
class SideRuns:
    """What one side did: its row label, fractions, and per (fraction, repeat) run figures and
    deterministic outputs ({request key: output ids})."""

    server: str
    variant: str | None
    flags: list[str]
    fractions: list[float]
    samples: dict = field(default_factory=dict)  # (fraction, repeat) -> run_sample
    outputs: dict = field(default_factory=dict)  # (fraction, repeat) -> {key: ids}
    solo: dict = field(default_factory=dict)  # key -> ids run alone


class Bench:
    """The measurement of each (repeat, side) run and the rows made of them."""

    def __init__(self, args, configs: dict[str, SideRuns], workloads: dict[float, list[dict]], out: Path,
                 runner: Runner, result_header: dict):
        self.args, self.configs, self.workloads, self.out = args, configs, workloads, out
        self.runner, self.header = runner, result_header

    def distinct_keys(self, name: str) -> list[str]:
        """The distinct deterministic requests of a side's workloads, in request order."""
        keys = {}
        for fraction in self.configs[name].fractions:
            for i, w in enumerate(self.workloads[fraction]):
                if w["sampling_params"].get("deterministic"):
                    keys.setdefault(request_key(w), i)
        return sorted(keys, key=keys.get)

    def checked_keys(self, name: str) -> list[str]:
        """Those solo-checked: every one, or the first ``--solo-check``."""
        keys = self.distinct_keys(name)
        return keys if self.args.solo_check is None else keys[:self.args.solo_check]

    def state(self) -> dict:
        """Every side's runs so far, for a checkpoint (JSON)."""
        return {name: {"samples": keyed(r.samples), "outputs": keyed(r.outputs), "solo": r.solo}
                for name, r in self.configs.items()}

    def restore(self, state: dict) -> None:
        for name, saved in state.items():
            runs = self.configs[name]
            runs.samples, runs.outputs = unkeyed(saved["samples"]), unkeyed(saved["outputs"])
            runs.solo = saved["solo"]

    def measure(self, repeat: int, side: Side, server) -> None:
        args, runs = self.args, self.configs[side.name]
        # One whole unmeasured run first, of the side's largest fraction so that it meets every
        # path (verification passes, seeded sampling): a fresh process still compiles kernels for
        # the batch sizes it meets (Triton's on-disk cache is per machine, so without this the
        # first side to run on a new machine would pay for everyone; seen: 1.6x between identical
        # servers, and a 2% run at 0.4 of its repeat when the warm-up had no deterministic row).
        run_load(server.url, self.workloads[max(runs.fractions)], args.concurrency)
        for fraction in alternate(runs.fractions, repeat):
            work = self.workloads[fraction]
            before = counters(server.url)
            flush_prefix_cache(server.url)
            latencies, outputs, wall = run_load(server.url, work, args.concurrency)
            after = counters(server.url)
            delta = {k: after[k] - before.get(k, 0.0) for k in after}
            det = [bool(w["sampling_params"].get("deterministic")) for w in work]
            runs.samples[(fraction, repeat)] = run_sample(latencies, outputs, wall, delta, det)
            runs.outputs[(fraction, repeat)] = {request_key(w): ids for w, ids, d in zip(work, outputs, det) if d}
        if repeat == 0:
            # Each distinct deterministic request alone, once, right after the side's first
            # loaded runs (a benchmark cut short still has them); compared with every loaded run
            # it was in, later ones too, whenever the result is written.
            for key in self.checked_keys(side.name):
                runs.solo[key] = run_load(server.url, [json.loads(key)], 1)[1][0]
        if repeat == args.repeats - 1 and args.profile_scheduler:
            self.profile(side.name, server)
        self.write(complete=False)

    def profile(self, name: str, server) -> None:
        """One more run per fraction, outside the numbers (py-spy slows a host-bound server)."""
        for fraction in self.configs[name].fractions:
            label = f"{name}_{fraction:g}"
            flush_prefix_cache(server.url)
            with scheduler_profile.record(server.proc.pid, self.out.with_name(f"{self.out.stem}_profile_{label}.txt"),
                                          self.out.parent / "logs" / f"profile_{label}.raw.txt"):
                run_load(server.url, self.workloads[fraction], self.args.concurrency)

    def rows(self) -> list[dict]:
        reps = range(self.args.repeats)

        def series(name, fraction, figure="throughput_tok_s"):
            samples = self.configs[name].samples if name in self.configs else {}
            return [samples.get((fraction, r), {}).get(figure) for r in reps]

        rows = []
        for name, runs in self.configs.items():
            for fraction in runs.fractions:
                if not any((fraction, r) in runs.samples for r in reps):
                    continue
                work = self.workloads[fraction]
                row = {"server": runs.server, "variant": runs.variant, "flags": runs.flags, "det_fraction": fraction,
                       "requests": len(work),
                       "deterministic_requests": sum(bool(w["sampling_params"].get("deterministic")) for w in work),
                       "repeats": sum((fraction, r) in runs.samples for r in reps),
                       **{f: spread(series(name, fraction, f)) for f in FIGURES}}
                row["identical"] = self.identical(runs, [(fraction, r) for r in reps])
                counts = [runs.samples[(fraction, r)].get("counters") or {} for r in reps if (fraction, r) in runs.samples]
                # Summed over the repeats: where rollbacks came from (greedy rows, offsets of first mismatches).
                row["counters"] = {k: sum(c.get(k, 0.0) for c in counts) for k in sorted(set().union(*counts))}
                own = series(name, fraction)
                if runs.server == "ours":
                    row["relative_to_nondet"] = ratio_spread(own, series(name, 0.0)) if 0.0 in runs.fractions else None
                for base in ("stock", "sglang_deterministic"):
                    row[f"vs_{base}"] = ratio_spread(own, series(base, 0.0)) if base in self.configs else None
                rows.append(row)
        return rows

    @staticmethod
    def identical(runs: SideRuns, which: list) -> dict | None:
        """Of the (loaded run, solo-checked request in it) pairs: how many outputs equal the
        request's solo run."""
        pairs = [ids == runs.solo[key] for w in which for key, ids in runs.outputs.get(w, {}).items()
                 if key in runs.solo]
        return {"pairs": len(pairs), "matched": sum(pairs), "share": sum(pairs) / len(pairs)} if pairs else None

    def solo_check(self) -> dict:
        """Every ours side's solo check: the sample asked for, how many distinct deterministic
        requests there were and were checked, and the (loaded run, request) pairs compared."""
        ours = {n: r for n, r in self.configs.items() if r.server == "ours"}
        totals = [self.identical(r, list(r.outputs)) for r in ours.values()]
        pairs = sum(t["pairs"] for t in totals if t)
        matched = sum(t["matched"] for t in totals if t)
        return {"sample": "every deterministic request" if self.args.solo_check is None
                else f"the first {self.args.solo_check} distinct deterministic requests",
                "distinct_deterministic_requests": {n: len(self.distinct_keys(n)) for n in ours},
                "checked_requests": {n: len(r.solo) for n, r in ours.items()},
                "pairs": pairs, "mismatched": pairs - matched,
                "every_output_identical": pairs == matched if pairs else None}  # None: nothing compared

    def headlines(self, rows: list[dict]) -> list[dict]:
        ours = [r for r in rows if r["server"] == "ours" and r["variant"] == rows_variant(rows)]
        det = [r for r in ours if r["det_fraction"] > 0]
        ten = next((r for r in det if r["det_fraction"] == 0.1), det[0] if det else None)
        zero = next((r for r in ours if r["det_fraction"] == 0.0), None)
        half = next((r for r in ours if r["det_fraction"] == 0.5), None)
        out = []
        if ten:
            out += headline(f"ours at {ten['det_fraction']:.0%} deterministic / 0%", ten.get("relative_to_nondet"))
        if zero:
            out += headline("ours at 0% / stock", zero.get("vs_stock"))
        if half:
            out += headline("ours at 50% / SGLang deterministic", half.get("vs_sglang_deterministic"))
        return out

    def write(self, complete: bool) -> dict:
        rows = self.rows()
        result = {**self.header, "complete": complete, "headline": self.headlines(rows),
                  "solo_check": self.solo_check(), **self.runner.record(), "rows": rows}
        write_json(self.out, result)
        return result


def rows_variant(rows: list[dict]) -> str | None:
    """The first ours variant: the headline's."""
    return next((r["variant"] for r in rows if r["server"] == "ours"), None)


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None or not rows:
        return

    def yerr(rs):
        return [[r["throughput_tok_s"]["median"] - r["throughput_tok_s"]["min"] for r in rs],
                [r["throughput_tok_s"]["max"] - r["throughput_tok_s"]["median"] for r in rs]]

    ours = [r for r in rows if r["server"] == "ours"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in dict.fromkeys(r["variant"] for r in ours):
        mine = [r for r in ours if r["variant"] == variant]
        ax.errorbar([r["det_fraction"] for r in mine], [r["throughput_tok_s"]["median"] for r in mine], yerr=yerr(mine),
                    fmt="o-", capsize=3, label=f"ours ({variant})")
    for r in rows:
        if r["server"] != "ours":
            t = r["throughput_tok_s"]
            color = "gray" if r["server"] == "stock" else "red"
            ax.axhline(t["median"], linestyle="--", label=f"{r['server']} (median, min-max)", color=color)
            ax.axhspan(t["min"], t["max"], color=color, alpha=0.15)
    for r in ours:
        if r["rollback_rate"] is not None:
            ax.annotate(f"rb {r['rollback_rate']['median']:.1%}", (r["det_fraction"], r["throughput_tok_s"]["median"]))
    ax.set_xlabel("fraction of deterministic requests")
    ax.set_ylabel("output tokens / s")
    # From zero, so that a few percent look like a few percent.
    ax.set_ylim(0, 1.15 * max(r["throughput_tok_s"]["max"] for r in rows))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", help="a checkpoint (requests from the prompt set); default: a random-weight "
                        "model of --model-shape (random-word requests)")
    parser.add_argument("--model-shape", choices=sorted(MODEL_SHAPES), default="tiny",
                        help="tiny: the tests' model (2 layers, hidden 128); llama-1b, llama-8b: the same "
                        "architecture at Llama-3.2-1B's and Llama-3-8B's layer shapes (the tiny vocabulary)")
    parser.add_argument("--ours-variant", action="append", type=parse_variant, metavar="LABEL:FLAGS",
                        help="one 'ours' side per variant, with these extra flags (repeatable), e.g. "
                             "'lookahead2:--deterministic-lookahead-blocks 2'; default: one, 'default:'")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--fractions", default=DEFAULT_FRACTIONS)
    parser.add_argument("--solo-check", type=int, default=None, metavar="N",
                        help="solo-check only the first N distinct deterministic requests (default: every one)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh server processes per side (medians, min-max)")
    parser.add_argument("--extra-args", default="", help="more server flags, for every side")
    parser.add_argument("--forced-on-both", default=None, metavar="FLAGS",
                        help="flags the machine forces on both sides (default on GPUs: "
                        f"'{' '.join(GPU_BUNDLE_ARGS)}', for the GPU bundle; '' for SGLang's defaults)")
    parser.add_argument("--servers", default="stock,sglang_deterministic,ours",
                        help="which sides to run (comma-separated)")
    parser.add_argument("--logit-scale", type=float, default=1.0,
                        help="serve a copy of the model with lm_head multiplied by this (see above)")
    parser.add_argument("--successor-strength", type=float, default=0.0,
                        help="a written model (no --model-path) favours a fixed successor of each token by "
                        "this much (tiny_model.write_tiny_model): fewer near-ties, as in a trained model")
    parser.add_argument("--tag", default="", help="appended to the result file's name")
    parser.add_argument("--profile-scheduler", action="store_true",
                        help="after each side's last repeat, one more run per fraction, outside the numbers, with "
                        "py-spy on the TP-0 scheduler: a per-function summary beside the result")
    parser.add_argument("--resume", action="store_true",
                        help="go on after the runs a run of the same command, code and machine finished "
                        "(sglang_tokenweave/bench/checkpoint.py)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.model_path and args.successor_strength:
        parser.error("--successor-strength shapes a written model; it cannot change --model-path's")
    if args.solo_check is not None and args.solo_check < 0:
        parser.error("--solo-check: must be at least 0")
    return args


def make_configs(args, device: str) -> tuple[list[Side], dict[str, SideRuns]]:
    fractions = [float(f) for f in args.fractions.split(",")]
    sides = [(stock_side(device), SideRuns("stock", None, [], [0.0])),
             (stock_side(device, "sglang_deterministic", ["--enable-deterministic-inference"]),
              SideRuns("sglang_deterministic", None, ["--enable-deterministic-inference"], [0.0]))]
    for label, flags in args.ours_variant or [("default", [])]:
        name = "ours" if label == "default" else f"ours_{label}"
        sides.append((ours_side([*OURS_FLAGS, *flags], name), SideRuns("ours", label, flags, fractions)))
    wanted = set(args.servers.split(","))
    sides = [(s, r) for s, r in sides if r.server in wanted]
    return [s for s, _ in sides], {s.name: r for s, r in sides}


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_path, model_how, temporary = bench_model(args)
    try:
        prompts, prompt_about = (prompt_set_texts(args.model_path, args.requests) if args.model_path
                                 else (None, {"prompts": "random words (tiny_model vocabulary)"}))
        sides, configs = make_configs(args, device)
        fractions = sorted({f for r in configs.values() for f in r.fractions})
        workloads = {f: make_workload(args.requests, f, seed=0, max_new_tokens=args.max_new_tokens, prompts=prompts)
                     for f in fractions}
        base = forced_on_both(device, GPU_BUNDLE_ARGS if args.forced_on_both is None else args.forced_on_both.split())
        forced = Forced((*base.args, *METRICS), base.env, "; ".join(filter(None, [base.why, METRICS_WHY])))
        common = ["--model-path", model_path, "--tp", str(args.tp), *args.extra_args.split()]
        _, short = card_name(device)
        out = result_path(args.out_dir, BENCHMARK, short, args.tp, args.tag)
        runner = Runner(Launch(common, forced), sides, args.tp, device, out.parent / "logs" / out.stem)
        result_header = {**header(BENCHMARK, __file__, sys.argv[1:] if argv is None else argv, device, args.tp),
                         "model": model_how, "repeats": args.repeats,
                         "workload": {"requests": args.requests, "concurrency": args.concurrency,
                                      "max_new_tokens": args.max_new_tokens, **prompt_about}}
        bench = Bench(args, configs, workloads, out, runner, result_header)
        checkpoint = Checkpoint.of_result(out, list(sys.argv[1:] if argv is None else argv), card_name(device)[0])
        checkpoint.start(args.resume, runner, bench.restore)
        runner.run(args.repeats, bench.measure, after_run=checkpoint.saver(runner, bench.state))
    finally:
        if temporary:
            shutil.rmtree(model_path, ignore_errors=True)
    result = bench.write(complete=True)
    checkpoint.remove()
    plot(result["rows"], out.with_suffix(".png"))
    for row in result["rows"]:
        medians = {k: (row[k] or {}).get("median") for k in ("throughput_tok_s", "relative_to_nondet", "vs_stock")
                   if k in row}
        print(json.dumps({k: row[k] for k in ("server", "variant", "det_fraction")} | medians))
    print(f"solo check: {result['solo_check']}")
    print(f"wrote {out}")
    if result["solo_check"]["every_output_identical"] is False:
        sys.exit("a deterministic output differed from its solo run")


if __name__ == "__main__":
    main()
