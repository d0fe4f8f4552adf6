"""Benchmark the fused all-reduce + residual-add + RMSNorm against what SGLang does today.

    python scripts/bench_fused_allreduce_rmsnorm.py --tp 4 --hidden 8192 5120

One process per GPU (spawned here). For every (hidden, tokens) all of these run in the same
processes, one after another:
  ours          the P2P token-sharded kernel at several SM budgets (blocks), and one-shot
  floor         the same loads/stores with no math and no barriers (NVLink floor)
  nccl          NCCL all-reduce + sgl_kernel fused_add_rmsnorm (stock SGLang, large batches)
  custom_ar     SGLang's custom all-reduce v1 (CUDA IPC) + the same norm, where SGLang uses it
  symm_two_shot torch symmetric-memory two-shot all-reduce + the same norm
  flashinfer    FlashInfer trtllm all-reduce + residual + RMSNorm fusion (IPC backend)
Times are medians of CUDA-graph replays (each replay runs the op --iters times back to back),
event-timed, the slowest rank's median. A baseline whose package is missing is skipped with
the reason logged. Writes benchmarks/results/bench_fused_allreduce_rmsnorm_<card>_tp<N>.json
and a PNG beside it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_command import recorded_command  # noqa: E402
from bench_plot import pyplot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
EPS = 1e-5
TARGET_MAX_BLOCKS = 16  # the SM budget the targets are stated for


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
    with capture_ctx():
        with torch.cuda.graph(graph):
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


def make_custom_ar(rank, world, max_tokens_bytes):
    try:
        os.environ.setdefault("SGLANG_OPT_USE_CUSTOM_ALL_REDUCE_V2", "0")
        from sglang.srt.distributed import parallel_state
        from sglang.srt.distributed.device_communicators.custom_all_reduce import CustomAllreduce
        if parallel_state._WORLD is None:  # SGLang's own world group; torch.distributed is already up
            parallel_state.init_distributed_environment(world_size=world, rank=rank, local_rank=rank, backend="nccl")
        cpu_group = dist.new_group(backend="gloo")
        ca = CustomAllreduce(cpu_group, torch.device("cuda", rank))  # SGLang's default max size
        if ca.disabled:
            log(rank, "SKIP custom_ar: CustomAllreduce disabled itself on this machine")
            return None
        return ca
    except Exception as e:  # noqa: BLE001
        log(rank, f"SKIP custom_ar: {type(e).__name__}: {e}")
        return None


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

    # baselines: what stock SGLang runs
    xn = x.clone()  # all-reduce alone grows the values each call (to inf): timing only
    row["nccl_ar_us"] = timed(lambda: dist.all_reduce(xn))
    if norm is not None:
        xn.copy_(x)  # with the norm after it the values stay normalised
        row["nccl_us"] = timed(lambda: (dist.all_reduce(xn), norm(xn, residual, weight, EPS)))
        row["norm_us"] = timed(lambda: norm(xn, residual, weight, EPS))
        ca = ctx["custom_ar"]
        if ca is not None and ca.should_custom_ar(x):
            def ca_step():
                if torch.cuda.is_current_stream_capturing():
                    out = ca.custom_all_reduce(x)
                else:
                    out = ca._all_reduce_impl(x, registered=False)
                norm(out, residual, weight, EPS)
            row["custom_ar_us"] = timed(ca_step, ca.capture)
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

        def fi_step():
            trtllm_ar.trtllm_allreduce_fusion(
                allreduce_in=x, world_size=world, world_rank=rank, token_num=tokens, hidden_dim=hidden,
                workspace_ptrs=workspace, launch_with_pdl=True, trigger_completion_at_end=True, fp32_acc=True,
                pattern_code=trtllm_ar.AllReduceFusionPattern.kARResidualRMSNorm, use_oneshot=None,
                allreduce_out=None, residual_in=residual, residual_out=res_out, norm_out=norm_out,
                quant_out=None, scale_out=None, rms_gamma=weight, rms_eps=EPS, scale_factor=None,
                layout_code=None)
        try:
            row["flashinfer_us"] = timed(fi_step)
        except Exception as e:  # noqa: BLE001
            log(rank, f"SKIP flashinfer at T={tokens}: {type(e).__name__}: {e}")

    ours = row["ours_us"]
    for base in ("nccl", "nccl_ar", "custom_ar", "symm_two_shot", "flashinfer"):
        if f"{base}_us" in row:
            row[f"speedup_vs_{base}"] = round(row[f"{base}_us"] / ours, 3)
    row["ours_over_floor"] = round(ours / row["floor_us"], 3)
    return row


# ---- driver -------------------------------------------------------------------------------

def worker(rank, world, args, result_path):
    os.environ.update(MULTICAST_OFF)
    os.environ.setdefault("SGLANG_TOKENWEAVE_BARRIER_TIMEOUT_MS", "60000")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{result_path}.init", rank=rank, world_size=world,
                            device_id=torch.device("cuda", rank))
    from sglang_tokenweave.comm import FusedARNorm

    max_tokens = max(args.tokens)
    norm, norm_name = load_norm(rank)
    ctx = {"rank": rank, "world": world, "args": args, "norm": norm, "op": {}, "symm": {}, "flashinfer": {},
           "custom_ar": make_custom_ar(rank, world, None) if (norm and not args.skip_custom_ar) else None}
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
        import sglang_tokenweave
        versions = {"torch": torch.__version__, "cuda": torch.version.cuda,
                    "nccl": ".".join(map(str, torch.cuda.nccl.version())),
                    "sglang_tokenweave": git_sha(), "sglang_tokenweave_version": sglang_tokenweave.__version__}
        for pkg in ("sglang", "sgl_kernel", "flashinfer"):
            try:
                versions[pkg] = __import__(pkg).__version__
            except Exception:  # noqa: BLE001
                versions[pkg] = None
        result = {"card": torch.cuda.get_device_name(0), "gpus": world, "versions": versions,
                  "command": recorded_command(__file__, sys.argv[1:]),
                  "method": f"median of {args.replays} CUDA-graph replays x {args.iters} calls, "
                            "event-timed, slowest rank; ours_us = best config with <= 16 blocks",
                  "norm": norm_name, "rows": rows}
        Path(result_path).write_text(json.dumps(result, indent=1))
    dist.barrier()
    dist.destroy_process_group()


def git_sha():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def summary_line(row):
    parts = [f"T={row['tokens']:>5} H={row['hidden']}", f"ours {row['ours_us']:8.1f} ({row['ours_config']})",
             f"floor {row['floor_us']:7.1f}", f"x{row['ours_over_floor']:.2f}"]
    for base in ("nccl", "nccl_ar", "custom_ar", "symm_two_shot", "flashinfer"):
        if f"{base}_us" in row:
            parts.append(f"{base} {row[f'{base}_us']:7.1f} ({row[f'speedup_vs_{base}']:.2f}x)")
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
                           ("nccl_us", "NCCL AR + norm"), ("custom_ar_us", "SGLang custom AR + norm"),
                           ("symm_two_shot_us", "torch symm two-shot + norm"),
                           ("flashinfer_us", "FlashInfer AR+norm fusion")):
            pts = [(t, r[key]) for t, r in zip(tokens, rows) if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label, linestyle="--" if key == "floor_us" else "-")
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
    p.add_argument("--skip-custom-ar", action="store_true")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="", help="suffix for the output file names")
    args = p.parse_args()
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
