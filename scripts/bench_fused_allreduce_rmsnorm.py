"""Benchmark the fused all-reduce + residual-add + RMSNorm against what SGLang does today.

    python scripts/bench_fused_allreduce_rmsnorm.py --tp 4 --hidden 8192 5120

One process per GPU (spawned here), with torch.distributed and SGLang's TP group set up as
SGLang's own start-up does with its default server arguments. For every (hidden, tokens) all of
these run in the same processes, one after another:
  ours           the P2P token-sharded kernel at several SM budgets (blocks), and one-shot
  floor          the same loads/stores with no math and no barriers (NVLink floor)
  stock_default  what SGLang runs by default: its TP group's all_reduce (SGLang's own dispatch:
                 custom all-reduce v2 up to its size limit, NCCL above) + sgl_kernel
                 fused_add_rmsnorm; the path each size took is recorded (graph and eager)
  nccl           NCCL all-reduce + the same norm
  symm_two_shot  torch symmetric-memory two-shot all-reduce + the same norm
  flashinfer     FlashInfer trtllm all-reduce + residual + RMSNorm fusion (IPC backend) called
                 as SGLang calls it (fp32_acc off), and with fp32 accumulation (flashinfer_fp32acc)
Speedups against stock_default are the headline. Times are medians of CUDA-graph replays (each
replay runs the op --iters times back to back; stock_default is captured inside SGLang's
graph_capture(), as SGLang's runners capture), event-timed, the slowest rank's median. A
baseline whose package is missing is skipped with the reason logged. NVLink multicast stays
off: the run stops if SGLang's custom all-reduce mapped a multicast address. Writes
benchmarks/results/bench_fused_allreduce_rmsnorm_<card>_tp<N>.json and a PNG beside it.
"""

import argparse
import json
import os
import statistics
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_command import env_overrides, git_state, package_versions, recorded_command  # noqa: E402
from bench_plot import pyplot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sglang_tokenweave.comm.multicast import MULTICAST_OFF_SWITCHES as MULTICAST_OFF  # noqa: E402
from sglang_tokenweave.glue.overlap.allreduce_dispatch import (  # noqa: E402
    dispatch_summary, group_setup, multicast_refusal, path_kind, record_dispatch,
)

EPS = 1e-5
TARGET_MAX_BLOCKS = 16  # the SM budget the targets are stated for
BASELINES = ("stock_default", "nccl", "nccl_ar", "symm_two_shot", "flashinfer", "flashinfer_fp32acc")
# SGLang's server arguments that decide its TP group's all-reduce; read from ServerArgs' defaults.
SGLANG_COMM_DEFAULTS = ("disable_custom_all_reduce", "enable_mscclpp", "enable_torch_symm_mem", "enable_symm_mem",
                        "enable_p2p_check")
# How SGLang calls FlashInfer's fusion (flashinfer_allreduce_residual_rmsnorm, as RMSNorm's
# all-reduce fusion path calls it: every optional argument at its default).
FLASHINFER_AS_SGLANG = {"launch_with_pdl": True, "use_oneshot": None, "trigger_completion_at_end": False,
                        "fp32_acc": False}
# SGLang internals this script calls (checked against the pinned SGLang in tests).
CALLED_INTERNALS = (
    "sglang.srt.server_args.ServerArgs",
    "sglang.srt.distributed.parallel_state.set_custom_all_reduce",
    "sglang.srt.distributed.parallel_state.set_mscclpp_all_reduce",
    "sglang.srt.distributed.parallel_state.set_torch_symm_mem_all_reduce",
    "sglang.srt.distributed.parallel_state.init_distributed_environment",
    "sglang.srt.distributed.parallel_state.initialize_model_parallel",
    "sglang.srt.distributed.parallel_state.get_tp_group",
    "sglang.srt.distributed.parallel_state.graph_capture",
    "sglang.srt.utils.monkey_patch_p2p_access_check",
    "sglang.srt.layers.flashinfer_comm_fusion.flashinfer_allreduce_residual_rmsnorm",
)


def log(rank, *msg):
    if rank == 0:
        print(*msg, flush=True)


# ---- timing -------------------------------------------------------------------------------

def time_graph(fn, iters, replays, capture_ctx=nullcontext):
    """Median microseconds per call of fn over CUDA-graph replays; max over ranks."""
    for _ in range(2):
        fn()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    dist.barrier()
    graph = torch.cuda.CUDAGraph()
    with capture_ctx() as context:  # SGLang's graph_capture() names the stream to capture on
        with torch.cuda.graph(graph, stream=getattr(context, "stream", None)):
            for _ in range(iters):
                fn()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    dist.barrier()
    marks = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
    for start, end in marks:
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    median = statistics.median(s.elapsed_time(e) * 1000.0 / iters for s, e in marks)
    t = torch.tensor([median], device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    del graph
    return round(t.item(), 2)


# ---- baselines ----------------------------------------------------------------------------

def load_norm(rank):
    try:
        from sgl_kernel import fused_add_rmsnorm
        return fused_add_rmsnorm, "sgl_kernel.fused_add_rmsnorm"
    except Exception as e:  # noqa: BLE001 - any import failure means: skip
        log(rank, f"SKIP norm-based baselines: sgl_kernel unavailable ({type(e).__name__}: {e})")
        return None, None


def sglang_comm_defaults() -> dict:
    """The defaults of SGLang's server arguments that decide its all-reduce."""
    import dataclasses

    from sglang.srt.server_args import ServerArgs

    fields = {f.name: f.default for f in dataclasses.fields(ServerArgs)}
    return {name: fields[name] for name in SGLANG_COMM_DEFAULTS}


def init_sglang_groups(rank, world, init_file, defaults):
    """torch.distributed and SGLang's world and TP groups, made as SGLang's start-up makes them
    (sglang.srt.distributed.bootstrap) from its default server arguments; the TP group."""
    from sglang.srt.distributed import parallel_state as ps

    ps.set_custom_all_reduce(not defaults["disable_custom_all_reduce"])
    ps.set_mscclpp_all_reduce(defaults["enable_mscclpp"])
    ps.set_torch_symm_mem_all_reduce(defaults["enable_torch_symm_mem"])
    if not defaults["enable_p2p_check"]:
        from sglang.srt.utils import monkey_patch_p2p_access_check

        monkey_patch_p2p_access_check()
    ps.init_distributed_environment(world_size=world, rank=rank, distributed_init_method=f"file://{init_file}",
                                    local_rank=rank, backend="nccl")
    ps.initialize_model_parallel(tensor_model_parallel_size=world, enable_symm_mem=defaults["enable_symm_mem"])
    return ps.get_tp_group()


def sglang_graph_capture():
    from sglang.srt.distributed.parallel_state import graph_capture

    return graph_capture()


def make_flashinfer(rank, world, max_tokens, hidden):
    try:
        from flashinfer.jit.comm import gen_trtllm_comm_module
        spec = gen_trtllm_comm_module()
        if not (spec.is_aot or spec.is_compiled):
            # A JIT build of this module takes minutes; the suite script installs a prebuilt one.
            log(rank, f"SKIP flashinfer: trtllm_comm not prebuilt ({spec.aot_path} missing)")
            return None
        from flashinfer.comm import trtllm_ar
        _, workspace = trtllm_ar.trtllm_create_ipc_workspace_for_all_reduce_fusion(
            rank, world, max_tokens, hidden, group=dist.group.WORLD)
        return trtllm_ar, workspace
    except Exception as e:  # noqa: BLE001
        log(rank, f"SKIP flashinfer (hidden={hidden}): {type(e).__name__}: {e}")
        return None


def make_symm_two_shot(rank, max_tokens, hidden, dtype):
    try:
        from torch.distributed import _symmetric_memory as symm_mem
        buf = symm_mem.empty((max_tokens, hidden), dtype=dtype, device="cuda")
        symm_mem.rendezvous(buf, dist.group.WORLD)
        return buf
    except Exception as e:  # noqa: BLE001
        log(rank, f"SKIP symm_two_shot: {type(e).__name__}: {e}")
        return None


# ---- one size -----------------------------------------------------------------------------

def bench_size(ctx, hidden, tokens, budgets):
    rank, world, args = ctx["rank"], ctx["world"], ctx["args"]
    op, norm = ctx["op"][hidden], ctx["norm"]
    dtype = torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(1000 * rank + tokens)
    weight = (1 + 0.1 * torch.randn(hidden, device="cuda", generator=g)).to(dtype)
    residual = torch.randn(tokens, hidden, device="cuda", generator=g).to(dtype)
    x = torch.randn(tokens, hidden, device="cuda", generator=g).to(dtype)
    op.buffer(tokens).copy_(x)
    timed = lambda fn, cm=nullcontext: time_graph(fn, args.iters, args.replays, cm)  # noqa: E731
    row = {"tokens": tokens, "tp": world, "hidden": hidden, "dtype": "bfloat16"}

    # ours, token-sharded, per SM budget
    by_budget = {}
    for blocks in budgets:
        by_budget[blocks] = timed(lambda b=blocks: op.run(tokens, residual, weight, mode="sharded", num_blocks=b))
    row["ours_sharded_us_by_blocks"] = by_budget
    if tokens <= args.oneshot_max:
        row["ours_oneshot_us"] = timed(lambda: op.run(tokens, residual, weight, mode="oneshot"))
    if hidden % 8192 == 0 and tokens >= 1024:  # tuning probe: 2 vectors per thread, 512-thread blocks
        row["ours_sharded_vpt2_16_us"] = timed(
            lambda: op.run(tokens, residual, weight, mode="sharded", num_blocks=16, vecs_per_thread=2))
    candidates = {f"sharded/{b}": t for b, t in by_budget.items() if b <= TARGET_MAX_BLOCKS}
    if "ours_oneshot_us" in row:
        candidates["oneshot/16"] = row["ours_oneshot_us"]
    best = min(candidates, key=candidates.get)
    row["ours_us"], row["ours_config"] = candidates[best], best
    row["sm_budget"] = int(best.split("/")[1])
    row["ours_default_us"] = timed(lambda: op.run(tokens, residual, weight))
    row["ours_default_plan"] = f"{op.plan(tokens).mode}/{op.plan(tokens).shape.num_blocks}"

    # NVLink floor: same row split and access pattern, no math, no barriers
    plan = op.plan(tokens, mode="sharded")
    floors = {}
    for pattern, name in ((0, "floor_us"), (1, "floor_read_us"), (2, "floor_write_us")):
        best_t = None
        for blocks in (16, 132):
            s = plan.shape
            t = timed(lambda b=blocks, p=pattern: op._ops.p2p_copy_floor(
                op.buffer(op.max_tokens), op._buffer_ptrs, rank, plan.row_begin, plan.row_end, p, b,
                s.vecs_per_thread, s.threads_per_row, s.rows_per_block))
            floors[f"{name[:-3]}_{blocks}_us"] = t
            best_t = t if best_t is None else min(best_t, t)
        row[name] = best_t
    row["floor_by_blocks"] = floors
    op.buffer(tokens).copy_(x)

    # baselines: what stock SGLang runs, and the alternatives it could run
    tp = ctx["tp"]
    if tp is not None and norm is not None:
        calls, xs = [], x.clone()

        def stock_step():  # SGLang's dispatch, then its RMSNorm kernel (RMSNorm.forward_cuda)
            with record_dispatch(tp, calls):
                out = tp.all_reduce(xs)
            norm(out, residual, weight, EPS)

        try:
            row["stock_default_us"] = timed(stock_step, sglang_graph_capture)
            paths = dispatch_summary(calls)
            row["stock_default_path"], row["stock_default_eager_path"] = paths["graph"], paths["eager"]
            row["stock_default_kind"] = path_kind(paths["graph"])
        except Exception as e:  # noqa: BLE001
            log(rank, f"SKIP stock_default at T={tokens}: {type(e).__name__}: {e}")
    xn = x.clone()  # all-reduce alone grows the values each call (to inf): timing only
    row["nccl_ar_us"] = timed(lambda: dist.all_reduce(xn))
    if norm is not None:
        xn.copy_(x)  # with the norm after it the values stay normalised
        row["nccl_us"] = timed(lambda: (dist.all_reduce(xn), norm(xn, residual, weight, EPS)))
        row["norm_us"] = timed(lambda: norm(xn, residual, weight, EPS))
        symm = ctx["symm"].get(hidden)
        if symm is not None:
            group_name = dist.group.WORLD.group_name
            view = symm[:tokens]
            view.copy_(x)
            row["symm_two_shot_us"] = timed(lambda: (torch.ops.symm_mem.two_shot_all_reduce_(view, "sum", group_name),
                                                     norm(view, residual, weight, EPS)))
    fi = ctx["flashinfer"].get(hidden)
    if fi is not None and tokens > world:
        trtllm_ar, workspace = fi
        res_out, norm_out = torch.empty_like(residual), torch.empty_like(x)

        def fi_step(fp32_acc):
            trtllm_ar.trtllm_allreduce_fusion(
                allreduce_in=x, world_size=world, world_rank=rank, token_num=tokens, hidden_dim=hidden,
                workspace_ptrs=workspace, pattern_code=trtllm_ar.AllReduceFusionPattern.kARResidualRMSNorm,
                allreduce_out=None, residual_in=residual, residual_out=res_out, norm_out=norm_out,
                quant_out=None, scale_out=None, rms_gamma=weight, rms_eps=EPS, scale_factor=None,
                layout_code=None, **{**FLASHINFER_AS_SGLANG, "fp32_acc": fp32_acc})
        for key, fp32_acc in (("flashinfer_us", FLASHINFER_AS_SGLANG["fp32_acc"]), ("flashinfer_fp32acc_us", True)):
            try:
                row[key] = timed(lambda a=fp32_acc: fi_step(a))
            except Exception as e:  # noqa: BLE001
                log(rank, f"SKIP {key[:-3]} at T={tokens}: {type(e).__name__}: {e}")
    add_speedups(row)
    return row


def add_speedups(row):
    """Speedups of ours (best config <= 16 SMs) over every baseline measured; against the stock
    default also of ours with its default plan; ours over the NVLink floor."""
    ours = row["ours_us"]
    for base in BASELINES:
        if f"{base}_us" in row:
            row[f"speedup_vs_{base}"] = round(row[f"{base}_us"] / ours, 3)
    if "stock_default_us" in row and "ours_default_us" in row:
        row["default_speedup_vs_stock_default"] = round(row["stock_default_us"] / row["ours_default_us"], 3)
    row["ours_over_floor"] = round(ours / row["floor_us"], 3)


# ---- driver -------------------------------------------------------------------------------

def worker(rank, world, args, result_path):
    os.environ.update(MULTICAST_OFF)
    os.environ.setdefault("SGLANG_TOKENWEAVE_BARRIER_TIMEOUT_MS", "60000")
    torch.cuda.set_device(rank)
    tp, stock = None, {"skipped": "--skip-stock-default"}
    if not args.skip_stock_default:
        try:
            defaults = sglang_comm_defaults()
            tp = init_sglang_groups(rank, world, f"{result_path}.init", defaults)
            stock = {"sglang_server_arg_defaults": defaults, "tp_group": group_setup(tp)}
        except Exception as e:  # noqa: BLE001
            stock = {"skipped": f"SGLang's groups could not be set up: {type(e).__name__}: {e}"}
            log(rank, f"SKIP stock_default: {stock['skipped']}")
    if not dist.is_initialized():
        dist.init_process_group("nccl", init_method=f"file://{result_path}.init", rank=rank, world_size=world,
                                device_id=torch.device("cuda", rank))
    refusal = multicast_refusal(stock.get("tp_group", {}))
    if refusal:  # every rank sees its own mapping: all stop
        raise SystemExit(f"rank {rank}: {refusal}")
    from sglang_tokenweave.comm import FusedARNorm

    max_tokens = max(args.tokens)
    norm, norm_name = load_norm(rank)
    ctx = {"rank": rank, "world": world, "args": args, "norm": norm, "op": {}, "symm": {}, "flashinfer": {},
           "tp": tp}
    for hidden in args.hidden:
        ctx["op"][hidden] = FusedARNorm(None, max_tokens, hidden, torch.bfloat16, EPS)
        ctx["symm"][hidden] = make_symm_two_shot(rank, max_tokens, hidden, torch.bfloat16) if norm else None
        if not args.skip_flashinfer:
            fi = make_flashinfer(rank, world, max_tokens, hidden)
            if fi is not None:
                ctx["flashinfer"][hidden] = fi
    rows = []
    for hidden in args.hidden:
        for tokens in args.tokens:
            try:
                row = bench_size(ctx, hidden, tokens, args.blocks)
            except Exception:
                log(rank, traceback.format_exc())
                raise
            rows.append(row)
            log(rank, summary_line(row))
    if rank == 0:
        result = result_header(args, world, norm_name, stock)
        result["ours_multicast_ptr"] = {h: int(op._handle.multicast_ptr or 0) for h, op in ctx["op"].items()}
        result["rows"] = rows
        Path(result_path).write_text(json.dumps(result, indent=1))
    dist.barrier()
    dist.destroy_process_group()


def result_header(args, world, norm_name, stock) -> dict:
    """Everything a result states besides its rows: card, versions, commit, command, method and
    how the stock default was set up."""
    versions = {**package_versions(), "cuda": torch.version.cuda,
                "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None}
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"card": card, "gpus": world, "git": git_state(), "versions": versions,
            "command": recorded_command(__file__, args.argv),
            "method": f"median of {args.replays} CUDA-graph replays x {args.iters} calls, event-timed, slowest "
                      "rank; ours_us = best config with <= 16 blocks, ours_default_us = the op's own plan; "
                      "stock_default = SGLang's TP-group all_reduce (its own dispatch, captured inside its "
                      "graph_capture()) + the norm, its path per size in stock_default_path (graph) and "
                      "stock_default_eager_path (outside graphs); flashinfer called as SGLang calls it "
                      f"({FLASHINFER_AS_SGLANG}), flashinfer_fp32acc with fp32_acc=True",
            "norm": norm_name, "stock_default": stock, "multicast_env": dict(MULTICAST_OFF),
            "dropped_env": getattr(args, "dropped_env", [])}


def summary_line(row):
    parts = [f"T={row['tokens']:>5} H={row['hidden']}", f"ours {row['ours_us']:8.1f} ({row['ours_config']})",
             f"floor {row['floor_us']:7.1f}", f"x{row['ours_over_floor']:.2f}"]
    for base in BASELINES:
        if f"{base}_us" in row:
            kind = f" {row['stock_default_kind']}" if base == "stock_default" else ""
            parts.append(f"{base}{kind} {row[f'{base}_us']:7.1f} ({row[f'speedup_vs_{base}']:.2f}x)")
    return " | ".join(parts)


def plot(result, png_path):
    plt = pyplot()
    if plt is None:
        return
    hiddens = sorted({r["hidden"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(hiddens), figsize=(6.5 * len(hiddens), 4.5), squeeze=False)
    for ax, hidden in zip(axes[0], hiddens):
        rows = [r for r in result["rows"] if r["hidden"] == hidden]
        tokens = [r["tokens"] for r in rows]
        for key, label in (("ours_us", "ours (<=16 SMs)"), ("floor_us", "NVLink floor (copy)"),
                           ("stock_default_us", "stock default: SGLang's all_reduce + norm"),
                           ("nccl_us", "NCCL AR + norm"), ("symm_two_shot_us", "torch symm two-shot + norm"),
                           ("flashinfer_us", "FlashInfer AR+norm fusion (SGLang's call)"),
                           ("flashinfer_fp32acc_us", "FlashInfer AR+norm fusion, fp32 acc")):
            pts = [(t, r[key]) for t, r in zip(tokens, rows) if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label, linestyle="--" if key == "floor_us" else "-",
                        linewidth=2.5 if key == "stock_default_us" else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens")
        ax.set_ylabel("us per call (median)")
        ax.set_title(f"TP{result['gpus']} H={hidden} bf16, {result['card']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


def card_slug(name):
    for key in ("H100", "H200", "B200", "A100"):
        if key in name:
            return key.lower()
    return name.split()[-1].lower()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tp", type=int, default=4)
    p.add_argument("--hidden", type=int, nargs="+", default=[8192, 5120])
    p.add_argument("--tokens", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 24, 32])
    p.add_argument("--oneshot-max", type=int, default=512)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--replays", type=int, default=30)
    p.add_argument("--skip-flashinfer", action="store_true")
    p.add_argument("--skip-stock-default", action="store_true", help="plain torch.distributed, no SGLang groups")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="", help="suffix for the output file names")
    args = p.parse_args()
    args.argv = sys.argv[1:]  # the workers are spawned: they see the spawn's argv, not this one
    args.dropped_env = env_overrides(os.environ)
    for name in args.dropped_env:  # SGLang's dispatch at its defaults: no inherited override
        del os.environ[name]
    os.environ.update(MULTICAST_OFF)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".bench_tp{args.tp}.json"
    mp.spawn(worker, args=(args.tp, args, str(tmp)), nprocs=args.tp, join=True)
    result = json.loads(tmp.read_text())
    tmp.unlink()
    for leftover in out_dir.glob(".bench_tp*.init"):
        leftover.unlink()
    stem = f"bench_fused_allreduce_rmsnorm_{card_slug(result['card'])}_tp{args.tp}{args.tag}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out_dir / f"{stem}.png")
    print(f"wrote {out_dir / stem}.json/.png")
    for row in result["rows"]:
        print(summary_line(row))


if __name__ == "__main__":
    main()
