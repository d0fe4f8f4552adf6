"""Tune TokenWeave for this GPU, model shape and TP size; write the tuning file.

For each token bucket, times a stack of synthetic decoder layers with the model's per-shard
GEMM shapes (attention stood in for by PyTorch SDPA over one request's causal prefix) on every
rank of a TP group, running the overlay's own woven schedule (``overlap.weave``):

- SGLang-style unfused: GEMM, NCCL all-reduce, residual add + RMSNorm;
- the same without the all-reduces (the no-communication bound, recorded for reference);
- fuse-only, for each SM budget;
- two token splits, for each split offset and SM budget, with the GEMMs using every SM or
  leaving the budget's SMs to the communication kernel (``gemm_carveout``).

The synthetic stack launches far fewer host-side operations per layer than SGLang's, so it
measures the GPU schedule only: where SGLang's eager prefill is host-bound (small batches), check
a bucket's split decision with ``bench_tokenweave_model.py --tokenweave-config``.

It keeps, per bucket, the fastest offset, SM budget and carve-out, whether splitting wins
(``use_split``) and whether the fused kernel beats the unfused path (``use_fused``). The entry
is keyed by GPU name, hidden size, per-shard layer shapes and TP (never a model name) and
merged into ``--output`` (other entries kept). ``--tokenweave-config <file>`` loads it.

Run on the GPU machine (multicast stays off; every process keeps these variables):

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \\
    python scripts/tune_tokenweave.py --tp 4 --hidden 8192 --heads 64 --kv-heads 8 \\
        --head-dim 128 --intermediate 28672 --output benchmarks/tuning/h100_tp4_llama70b_shape.json

(the shape of Llama-3-70B; add ``--model-config path/config.json`` to read the shape from a
Hugging Face config instead). ``--profile-tokens 4096`` also profiles one forward of that bucket
(fuse-only, and each carve-out of the best split) and writes the kernel summary beside the
output file (``<output>.profile.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_command import recorded_command  # noqa: E402
from trace_kernels import format_summary, load_kernels, summarize  # noqa: E402

from sglang_tokenweave.overlap.synthetic import Stack, run_unfused, run_woven  # noqa: E402
from sglang_tokenweave.overlap import (  # noqa: E402
    Bucket,
    TuningEntry,
    TuningKey,
    TuningTable,
    layer_shapes_for,
    plan_forward,
)

MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def _time(fn, iters, group):
    """Median microseconds of ``fn`` (CUDA events, ranks aligned by a barrier each time)."""
    times = []
    for i in range(iters + 2):
        dist.barrier(group=group)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        if i >= 2:  # warm-up
            times.append(start.elapsed_time(end) * 1000.0)
    t = torch.tensor([statistics.median(times)], device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)  # the slowest rank decides
    return float(t.item())


def _worker(rank, args, shapes, result_path):
    os.environ.update(MULTICAST_OFF)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=args.tp, device_id=torch.device("cuda", rank))
    group = dist.group.WORLD
    from sglang_tokenweave.comm import FusedARNorm

    dtype, device = torch.bfloat16, torch.device("cuda", rank)
    max_tokens = max(args.buckets)
    torch.manual_seed(rank)
    stack = Stack(args.layers, shapes, args.hidden, args.head_dim, max_tokens, 1e-5, device, dtype)
    ops = [FusedARNorm(group, max_tokens, args.hidden, dtype, 1e-5) for _ in range(2)]
    comm_stream = torch.cuda.Stream(priority=-1)
    x_all = torch.randn(max_tokens, args.hidden, device=device, dtype=dtype)
    dist.broadcast(x_all, src=0, group=group)
    rows, profiles = [], ""
    for tokens in args.buckets:
        x = x_all[:tokens]
        whole = plan_forward([tokens], [0], world_size=args.tp, threshold=None)
        row = {"tokens": tokens,
               "unfused_us": _time(lambda: run_unfused(stack, x, x.clone(), group), args.iters, group),
               "no_comm_us": _time(lambda: run_unfused(stack, x, x.clone(), group, communicate=False),
                                   args.iters, group),
               "fused": {}, "split": {}}
        for sm in args.sm_budgets:
            row["fused"][sm] = _time(lambda: run_woven(stack, ops, whole, x, x.clone(), sm, None), args.iters, group)
            for offset in args.offsets:
                plan = plan_forward([tokens], [0], world_size=args.tp, threshold=1, split_offset=offset)
                if not plan.is_split:
                    continue
                for carve in args.carveouts:
                    row["split"][f"{offset}:{sm}:{carve}"] = _time(
                        lambda: run_woven(stack, ops, plan, x, x.clone(), sm, comm_stream, sm if carve else 0),
                        args.iters, group)
        rows.append(row)
        if rank == 0:
            best = min(row["split"], key=row["split"].get, default=None)
            print(f"{tokens} tokens: unfused {row['unfused_us']:.0f} us, no-comm {row['no_comm_us']:.0f} us, "
                  f"best fused {min(row['fused'].values()):.0f} us, best split "
                  f"{row['split'][best] if best else float('nan'):.0f} us ({best} offset:sm:carveout)", flush=True)
        if tokens == args.profile_tokens:
            profiles = _profile_bucket(stack, ops, x, row, args, comm_stream, group, rank)
    if rank == 0:
        Path(result_path).write_text(json.dumps(rows))
        if args.profile_tokens:
            Path(args.output).with_suffix(".profile.txt").write_text(profiles)
    dist.destroy_process_group()


def _profile_bucket(stack, ops, x, row, args, comm_stream, group, rank) -> str:
    """Kernel summaries of one forward: fuse-only at its best budget, the best split with and
    without the GEMM carve-out. Every rank runs; rank 0 records."""
    tokens = row["tokens"]
    sm_fused = min(row["fused"], key=row["fused"].get)
    runs = [("unfused", lambda: run_unfused(stack, x, x.clone(), group)),
            (f"fuse-only sm={sm_fused}", lambda: run_woven(stack, ops, plan_forward(
                [tokens], [0], world_size=args.tp, threshold=None), x, x.clone(), sm_fused, None))]
    if row["split"]:
        offset, sm, _ = (int(v) for v in min(row["split"], key=row["split"].get).split(":"))
        plan = plan_forward([tokens], [0], world_size=args.tp, threshold=1, split_offset=offset)
        for carve in args.carveouts:
            runs.append((f"split offset={offset} sm={sm} carveout={carve}",
                         lambda carve=carve: run_woven(stack, ops, plan, x, x.clone(), sm, comm_stream,
                                                       sm if carve else 0)))
    texts = []
    for title, fn in runs:
        fn()
        dist.barrier(group=group)
        torch.cuda.synchronize()
        if rank != 0:
            fn()
            torch.cuda.synchronize()
            continue
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        trace = Path(args.output).with_suffix(".trace.json")
        prof.export_chrome_trace(str(trace))
        texts.append(format_summary(summarize(load_kernels(str(trace))), f"{tokens} tokens, {title}:"))
        trace.unlink()
    text = "\n".join(texts)
    if rank == 0:
        print(text, flush=True)
    return text


def _choose(row) -> Bucket:
    sm_fused = min(row["fused"], key=row["fused"].get)
    best_fused = row["fused"][sm_fused]
    use_fused = best_fused < row["unfused_us"]
    if row["split"]:
        key = min(row["split"], key=row["split"].get)
        if use_fused and row["split"][key] < best_fused:
            offset, sm, carve = (int(v) for v in key.split(":"))
            return Bucket(tokens=row["tokens"], split_offset=offset, sm_budget=sm, use_split=True,
                          gemm_carveout=bool(carve))
    return Bucket(tokens=row["tokens"], split_offset=0, sm_budget=int(sm_fused), use_split=False,
                  use_fused=use_fused)


def _int_list(text):
    return [int(v) for v in text.split(",") if v]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tp", type=int, required=True)
    p.add_argument("--model-config", help="a Hugging Face config.json to read the shape from")
    p.add_argument("--hidden", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--kv-heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--intermediate", type=int)
    p.add_argument("--layers", type=int, default=4, help="synthetic layers per timed forward")
    p.add_argument("--buckets", type=_int_list, default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--offsets", type=_int_list, default=[-256, -128, 0, 128, 256])
    p.add_argument("--sm-budgets", type=_int_list, default=[8, 16, 24, 32])
    p.add_argument("--carveouts", type=_int_list, default=[0, 1],
                   help="GEMM carve-out settings to try for splits (0: every SM, 1: leave the SM budget)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--profile-tokens", type=int, default=0, help="profile one forward of this bucket")
    p.add_argument("--output", required=True, help="tuning file to create or merge into")
    args = p.parse_args(argv)
    if args.model_config:
        cfg = json.loads(Path(args.model_config).read_text())
        args.hidden = args.hidden or cfg["hidden_size"]
        args.heads = args.heads or cfg["num_attention_heads"]
        args.kv_heads = args.kv_heads or cfg.get("num_key_value_heads", args.heads)
        args.head_dim = args.head_dim or cfg.get("head_dim") or args.hidden // args.heads
        args.intermediate = args.intermediate or cfg["intermediate_size"]
    missing = [n for n in ("hidden", "heads", "kv_heads", "head_dim", "intermediate") if getattr(args, n) is None]
    if missing:
        p.error(f"model shape incomplete: give --{missing[0].replace('_', '-')} or --model-config")
    if torch.cuda.device_count() < args.tp:
        p.error(f"--tp {args.tp} needs {args.tp} GPUs, found {torch.cuda.device_count()}")
    os.environ.update(MULTICAST_OFF)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")

    shapes = layer_shapes_for(hidden_size=args.hidden, num_heads=args.heads, num_kv_heads=args.kv_heads,
                              head_dim=args.head_dim, intermediate_size=args.intermediate, tp=args.tp)
    result_path = Path(args.output).with_suffix(".raw.json")
    started = time.time()
    mp.spawn(_worker, args=(args, shapes, str(result_path)), nprocs=args.tp, join=True)
    rows = json.loads(result_path.read_text())
    result_path.unlink()

    key = TuningKey.make(torch.cuda.get_device_name(0), args.hidden, args.tp, shapes)
    entry = TuningEntry(key=key, buckets=tuple(_choose(row) for row in rows))
    table = TuningTable.load(args.output) if Path(args.output).exists() else TuningTable()
    meta = dict(table.meta)
    meta[f"tp{args.tp}_h{args.hidden}"] = {
        "command": recorded_command(__file__, argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__, "layers": args.layers, "seconds": round(time.time() - started),
        "timings_us": rows,
    }
    TuningTable(entries=table.with_entry(entry).entries, meta=meta).save(args.output)
    for b in entry.buckets:
        print(f"bucket {b.tokens}: {b.to_json()}")
    print(f"wrote {args.output} ({key.describe()})")


if __name__ == "__main__":
    main()
