"""Cost of the seeded sampler of deterministic requests, per batch, PyTorch path vs Triton kernel.

In a serving step the sampler's host time adds to the step (a small model's decode step is
host-bound), its device time to the GPU's. For each kernel, number of rows and vocabulary size
this measures, with rows half greedy and half at temperature 0.8 (no top-k / top-p, so every row
takes the chosen kernel):
- ``plan_host_us``: ``plan_sampling`` (per-row parameters to device tensors), host time;
- ``sample_host_us``: launching ``sample`` (no wait for the device), host time;
- ``sample_device_us``: ``sample``'s device time, from back-to-back calls between two syncs.
- ``step_host_us``: a fast-path step's host time: the plan of its rows, placed among
  ``STEP_OTHER_ROWS`` other rows of the batch, and ``sample_at_batch_rows`` (what the sampler
  hook adds to a decode step besides noting the rows and writing the tokens back);
- ``table_step_host_us``: the same step planned on the device from the row table
  (``row_table``), every row of the batch sampled (what the hook adds besides writing back).
- ``verify_pass_plan``: a verification pass's plan of B x W rows (``--pass-shape``), made on the
  host (its per-row parameters built, then ``plan_sampling``) against from the row table
  (``RowTable.plan_windows``), host time, per kernel.
Kernel ``triton-one-program`` is the Triton kernel's one-program-per-row strategy at every
vocabulary size (``triton`` switches to the split strategy above ``SPLIT_ABOVE`` tokens).
Medians over ``--repeats`` timings of ``--iterations`` calls each. Writes JSON with the card and
versions.

    python scripts/bench_seeded_sampler.py --out-dir benchmarks/results/bench_seeded_sampler
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_command import card_name, recorded_command  # noqa: E402

from sglang_tokenweave.determinism.config import SAMPLING_KERNELS  # noqa: E402
from sglang_tokenweave.determinism.row_table import RowTable  # noqa: E402
from sglang_tokenweave.determinism.sampling import (  # noqa: E402
    RowParams,
    plan_sampling,
    sample,
    sample_at_batch_rows,
)


# A fast-path step samples its deterministic rows among this many other rows of the batch.
STEP_OTHER_ROWS = 48


def rows_of(n: int, step: int) -> list[RowParams]:
    return [RowParams(seed=1000 + i, position=100 + step, temperature=0.0 if i % 2 else 0.8) for i in range(n)]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def sampler(kernel: str):
    if kernel == "triton-one-program":
        from sglang_tokenweave.determinism.sampling_kernel import sample_unfiltered

        return lambda logits, plan: sample_unfiltered(logits, plan, split=False)
    return lambda logits, plan: sample(logits, plan, kernel=kernel)


def measure(kernel: str, num_rows: int, vocab: int, device: str, iterations: int, repeats: int) -> dict:
    logits = torch.randn(num_rows, vocab, device=device).to(torch.bfloat16)
    plans = [plan_sampling(rows_of(num_rows, i), vocab, device) for i in range(iterations)]
    run = sampler(kernel)
    for plan in plans[:3]:  # compile / warm up
        run(logits, plan)
    plan_host, sample_host, sample_total = [], [], []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        for i in range(iterations):
            plan_sampling(rows_of(num_rows, i), vocab, device)
        plan_host.append((time.perf_counter() - started) / iterations)
        _sync(device)
        started = time.perf_counter()
        for plan in plans:
            run(logits, plan)
        sample_host.append((time.perf_counter() - started) / iterations)
        _sync(device)
        sample_total.append((time.perf_counter() - started) / iterations)
    step_host = []
    batch = torch.randn(num_rows + STEP_OTHER_ROWS, vocab, device=device).to(torch.bfloat16)
    where = list(range(STEP_OTHER_ROWS // 2, STEP_OTHER_ROWS // 2 + num_rows))
    step_kernel = "triton" if kernel == "triton-one-program" else kernel
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        for i in range(iterations):
            sample_at_batch_rows(batch, plan_sampling(rows_of(num_rows, i), vocab, device, batch_rows=where),
                                 kernel=step_kernel)
        step_host.append((time.perf_counter() - started) / iterations)
    # The same step planned from the row table (the batch's request rows and positions on the device).
    table = RowTable(num_rows + STEP_OTHER_ROWS + 1, device)
    table.mark([1 + w for w in where], rows_of(num_rows, 0))
    request_rows = torch.arange(1, num_rows + STEP_OTHER_ROWS + 1, device=device)
    positions = torch.full((num_rows + STEP_OTHER_ROWS,), 100, device=device)
    table_step_host = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        for _ in range(iterations):
            sample(batch, table.plan(request_rows, positions, vocab, kernel=step_kernel), kernel=step_kernel)
        table_step_host.append((time.perf_counter() - started) / iterations)
    return {"kernel": kernel, "rows": num_rows, "vocab": vocab,
            "plan_host_us": statistics.median(plan_host) * 1e6,
            "step_host_us": statistics.median(step_host) * 1e6,
            "table_step_host_us": statistics.median(table_step_host) * 1e6,
            "sample_host_us": statistics.median(sample_host) * 1e6,
            # back-to-back calls: the device time, or the host time where launching is slower
            "sample_device_us": statistics.median(sample_total) * 1e6}


def measure_pass_plan(kernel: str, rows: int, window: int, vocab: int, device: str, iterations: int,
                      repeats: int) -> dict:
    """Host time of a pass's plan: per-row parameters and ``plan_sampling``, or the row table."""
    params = rows_of(rows, 0)
    table = RowTable(rows + 1, device)
    table.mark(list(range(1, rows + 1)), params)
    request_rows = torch.arange(1, rows + 1, device=device)
    row_starts = torch.arange(rows, device=device) * 97 + 1000
    starts = row_starts.tolist()

    def host_plan():
        sampled = [RowParams(seed=p.seed, position=start + 1 + j, temperature=p.temperature)
                   for p, start in zip(params, starts) for j in range(window)]
        return plan_sampling(sampled, vocab, device)

    def table_plan():
        return table.plan_windows(request_rows, row_starts, window, vocab, kernel=kernel)

    timings = {}
    for name, make in (("host_plan_us", host_plan), ("table_plan_us", table_plan)):
        make()  # compile / warm up
        samples = []
        for _ in range(repeats):
            _sync(device)
            started = time.perf_counter()
            for _ in range(iterations):
                make()
            samples.append((time.perf_counter() - started) / iterations)
        timings[name] = statistics.median(samples) * 1e6
    return {"kernel": kernel, "rows": rows, "window": window, "vocab": vocab, **timings}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--kernels", default=None, help="comma-separated; default: all that run on --device")
    parser.add_argument("--rows", default="1,4,16,64")
    parser.add_argument("--vocabs", default="512,151936")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pass-shape", default="8x32", help="verification pass rows x window (B x W)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "bench_seeded_sampler")
    args = parser.parse_args(argv)
    kernels = args.kernels.split(",") if args.kernels else (
        [*SAMPLING_KERNELS, "triton-one-program"] if args.device == "cuda" else ["torch"])
    results = [measure(k, int(n), int(v), args.device, args.iterations, args.repeats)
               for v in args.vocabs.split(",") for n in args.rows.split(",") for k in kernels]
    pass_rows, window = (int(x) for x in args.pass_shape.split("x"))
    pass_plans = [measure_pass_plan(k, pass_rows, window, int(args.vocabs.split(",")[0]), args.device,
                                    args.iterations, args.repeats)
                  for k in kernels if k in SAMPLING_KERNELS]
    card, short = card_name(args.device)
    versions = {"torch": torch.__version__}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        versions["triton"] = None
    out = args.out_dir / f"bench_seeded_sampler_{short}.json"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"card": card, "versions": versions,
                               "command": recorded_command(__file__, sys.argv[1:] if argv is None else argv),
                               "iterations": args.iterations, "repeats": args.repeats, "results": results,
                               "verify_pass_plan": pass_plans},
                              indent=2))
    for r in results:
        print(f"{r['kernel']:>6} rows {r['rows']:>3} vocab {r['vocab']:>6}: plan {r['plan_host_us']:7.1f} us host, "
              f"sample {r['sample_host_us']:7.1f} us host, {r['sample_device_us']:7.1f} us back-to-back, "
              f"step {r['step_host_us']:7.1f} us host ({r['table_step_host_us']:7.1f} from the row table)")
    for r in pass_plans:
        print(f"{r['kernel']:>6} pass plan {r['rows']} x {r['window']}: {r['host_plan_us']:7.1f} us on the host, "
              f"{r['table_plan_us']:7.1f} us from the row table")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
