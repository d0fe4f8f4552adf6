"""Where the GPU time of a profiled forward goes: kernels by class and stream, from a PyTorch
profiler chrome trace (``.json`` or ``.json.gz``, e.g. from ``sglang.bench_one_batch --profile``).

    python scripts/trace_kernels.py TRACE [--top 15]

Prints the span from the first kernel's start to the last one's end, the busy time of each
stream, the total per kernel class (GEMM, attention, our fused communication kernel, NCCL,
other) and the largest kernels by total time. A GEMM class that grows between a whole-batch
and a split run, at equal work, is the GEMMs losing SMs to the communication kernel.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections import defaultdict

CLASSES = (  # first match wins
    ("comm_fused", re.compile(r"ar_norm|tokenweave|copy_floor", re.I)),
    ("nccl", re.compile(r"nccl", re.I)),
    ("attention", re.compile(r"attn|attention|flash|fmha|sdpa|extend_|decode_", re.I)),
    ("gemm", re.compile(r"gemm|xmma|cutlass|cublas|sm90_|matmul|nvjet", re.I)),
)


def kernel_class(name: str) -> str:
    for label, pattern in CLASSES:
        if pattern.search(name):
            return label
    return "other"


def load_kernels(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("cat") in ("kernel", "cuda_runtime") and "dur" in e]


def _union(intervals) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def summarize(kernels: list[dict], top: int = 15) -> dict:
    """Microsecond totals: span, per-stream busy time, per class, largest kernels, and the
    host's waits (CUDA runtime synchronisations and copies)."""
    waits = defaultdict(lambda: [0, 0.0])
    for e in kernels:
        if e.get("cat") == "cuda_runtime" and re.search(r"Synchronize|Memcpy", e["name"]):
            waits[e["name"]][0] += 1
            waits[e["name"]][1] += e["dur"]
    kernels = [k for k in kernels if k.get("cat", "kernel") == "kernel"]
    if not kernels:
        return {"span_us": 0.0, "streams": {}, "classes": {}, "top": []}
    span = max(k["ts"] + k["dur"] for k in kernels) - min(k["ts"] for k in kernels)
    by_stream, by_class, by_name = defaultdict(list), defaultdict(float), defaultdict(lambda: [0, 0.0])
    for k in kernels:
        stream = str(k.get("args", {}).get("stream", "?"))
        by_stream[stream].append((k["ts"], k["ts"] + k["dur"]))
        by_class[kernel_class(k["name"])] += k["dur"]
        entry = by_name[k["name"][:90]]
        entry[0] += 1
        entry[1] += k["dur"]
    largest = sorted(by_name.items(), key=lambda item: -item[1][1])[:top]
    return {
        "span_us": span,
        "busy_us": _union(iv for ivs in by_stream.values() for iv in ivs),
        "streams": {s: _union(ivs) for s, ivs in by_stream.items()},
        "classes": dict(sorted(by_class.items(), key=lambda item: -item[1])),
        "top": [{"name": n, "count": c, "total_us": t} for n, (c, t) in largest],
        "host_waits": {n: {"count": c, "total_us": t} for n, (c, t) in waits.items()},
    }


def format_summary(summary: dict, title: str = "") -> str:
    lines = [f"== {title} span {summary['span_us']:.0f} us, any stream busy {summary.get('busy_us', 0):.0f} us"]
    lines += [f"  stream {s}: busy {t:.0f} us" for s, t in summary["streams"].items()]
    lines += [f"  {c:<11} {t:9.0f} us" for c, t in summary["classes"].items()]
    lines += [f"  {k['total_us']:9.0f} us x{k['count']:<4} {k['name']}" for k in summary["top"]]
    lines += [f"  host {n}: x{w['count']} {w['total_us']:.0f} us" for n, w in summary.get("host_waits", {}).items()]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("traces", nargs="+")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    for path in args.traces:
        print(format_summary(summarize(load_kernels(path), args.top), path))


if __name__ == "__main__":
    main()
