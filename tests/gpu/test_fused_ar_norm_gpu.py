"""The P2P fused all-reduce + residual + RMSNorm kernel against the reference, on 2 and 4 GPUs.

Each spawn runs every case on every rank; a rank lists what failed. Inputs are fresh random
data per case; every element of every output is checked; rows a rank must not write are
poisoned and must stay poisoned.
"""

import gc
import os

import pytest
import torch
import torch.distributed as dist

from dist_harness import run_on_gpus
from sglang_tokenweave.comm import ONESHOT, SHARDED, FusedARNorm, owned_rows
from sglang_tokenweave.comm.reference import add_rmsnorm, reduce_partials

pytestmark = pytest.mark.gpu

TOKENS = (1, 7, 128, 1000, 1024, 4096, 8192)
HIDDENS = (2048, 4096, 5120, 8192)
DTYPES = (torch.bfloat16, torch.float16)
EPS = 1e-5
# One bf16/fp16 rounding step of the output, relative, with room for the sum of squares
# being added in another order than the reference's.
TOLERANCE = {torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
VARIANTS = ((True, False), (False, False), (True, True))  # (has_residual, final)


def case_inputs(seed, world, tokens, hidden, dtype):
    g = torch.Generator(device="cuda").manual_seed(seed)
    partials = [torch.randn(tokens, hidden, device="cuda", generator=g).to(dtype) for _ in range(world)]
    residual = torch.randn(tokens, hidden, device="cuda", generator=g).to(dtype)
    weight = (1 + 0.1 * torch.randn(hidden, device="cuda", generator=g)).to(dtype)
    return partials, residual, weight


def compare(name, got, want, dtype, failures):
    if got.isnan().any():
        failures.append(f"{name}: NaN in output (unwritten element?)")
        return
    err = (got.float() - want.float()).abs()
    bound = TOLERANCE[dtype] * want.float().abs().clamp_min(1.0)
    if (err > bound).any():
        idx = (err > bound).nonzero()[0].tolist()
        failures.append(f"{name}: {int((err > bound).sum())} elements off, first at {idx}: "
                        f"{got[tuple(idx)].item()} vs {want[tuple(idx)].item()}")


def run_case(op, rank, world, seed, tokens, mode, has_residual, final, failures, check_repeat):
    hidden, dtype = op.hidden, op.dtype
    name = f"W={world} {dtype} H={hidden} T={tokens} {mode} has_residual={has_residual} final={final}"
    partials, residual, weight = case_inputs(seed, world, tokens, hidden, dtype)
    want_out, want_res = add_rmsnorm(reduce_partials(partials), residual if has_residual else None, weight, EPS)
    start, end = (0, tokens) if mode == ONESHOT else owned_rows(tokens, world, rank)

    poison = torch.tensor(float("nan"), dtype=dtype, device="cuda")
    res_in = residual.clone() if has_residual else torch.full_like(residual, poison)
    res = res_in.clone()
    if has_residual:  # rows this rank does not own must come back untouched: poison them
        res[:start] = poison
        res[end:] = poison
    res_before = res.clone()
    op.buffer(op.max_tokens)[tokens:] = poison  # rows past the batch must stay untouched
    op.buffer(tokens).copy_(partials[rank])
    dist.barrier()  # every rank's inputs are in place before any kernel reads them

    out = op.run(tokens, res, weight, has_residual=has_residual, final=final, mode=mode).clone()
    torch.cuda.synchronize()
    compare(name + " out", out, want_out, dtype, failures)
    if not op.buffer(op.max_tokens)[tokens:].isnan().all():
        failures.append(f"{name}: wrote past the batch")
    owned = slice(start, end)
    if final:
        if not torch.equal(res.view(torch.int16), res_before.view(torch.int16)):
            failures.append(f"{name}: final norm wrote the residual")
    else:
        if not torch.equal(res[owned], want_res[owned]):
            failures.append(f"{name}: residual of owned rows not bit-exact")
        outside = torch.cat([res[:start], res[end:]])
        if not outside.isnan().all():
            failures.append(f"{name}: wrote residual rows it does not own")

    if check_repeat:  # same inputs, second call: bit-identical
        res2 = res_in.clone()
        op.buffer(tokens).copy_(partials[rank])
        dist.barrier()
        out2 = op.run(tokens, res2, weight, has_residual=has_residual, final=final, mode=mode).clone()
        torch.cuda.synchronize()
        if not torch.equal(out.view(torch.int16), out2.view(torch.int16)):
            failures.append(f"{name}: second call not bit-identical")
        # every rank holds the same bits
        digest = torch.tensor([out.view(torch.int16).long().sum().item()], device="cuda")
        all_digests = [torch.zeros_like(digest) for _ in range(world)]
        dist.all_gather(all_digests, digest)
        if len({d.item() for d in all_digests}) != 1:
            failures.append(f"{name}: ranks disagree on out")


def check_sweep(rank, world, failures):
    seed = 0
    for dtype in DTYPES:
        for hidden in HIDDENS:
            op = FusedARNorm(None, max(TOKENS), hidden, dtype, EPS)
            for tokens in TOKENS:
                modes = (SHARDED, ONESHOT) if tokens <= 128 else (SHARDED,)
                for mode in modes:
                    variants = VARIANTS if (hidden == 8192 or tokens <= 7) else VARIANTS[:1]
                    for has_residual, final in variants:
                        seed += 1
                        run_case(op, rank, world, seed, tokens, mode, has_residual, final, failures,
                                 check_repeat=has_residual and not final)
            del op
            torch.cuda.empty_cache()


def check_graph_replay(rank, world, failures):
    """Capture once, replay with new data each time."""
    for tokens, mode in ((1000, SHARDED), (7, ONESHOT), (3, SHARDED)):
        # Symmetric memory must not be freed while a stream captures: drop the last round's
        # op (and views of its buffer) before this round's capture.
        gc.collect()
        torch.cuda.synchronize()
        op = FusedARNorm(None, 1024, 8192, torch.bfloat16, EPS)
        residual = torch.empty(tokens, 8192, dtype=torch.bfloat16, device="cuda")
        weight = torch.empty(8192, dtype=torch.bfloat16, device="cuda")
        partials, r0, w0 = case_inputs(999, world, tokens, 8192, torch.bfloat16)
        op.buffer(tokens).copy_(partials[rank]); residual.copy_(r0); weight.copy_(w0)
        dist.barrier()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside capture
            op.run(tokens, residual, weight, mode=mode)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        dist.barrier()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = op.run(tokens, residual, weight, mode=mode)
        start, end = (0, tokens) if mode == ONESHOT else owned_rows(tokens, world, rank)
        for replay in range(3):
            partials, r, w = case_inputs(1000 + replay, world, tokens, 8192, torch.bfloat16)
            want_out, want_res = add_rmsnorm(reduce_partials(partials), r, w, EPS)
            op.buffer(tokens).copy_(partials[rank]); residual.copy_(r); weight.copy_(w)
            torch.cuda.synchronize()
            dist.barrier()
            graph.replay()
            torch.cuda.synchronize()
            name = f"graph W={world} T={tokens} {mode} replay {replay}"
            compare(name, out, want_out, torch.bfloat16, failures)
            if not torch.equal(residual[start:end], want_res[start:end]):
                failures.append(f"{name}: residual wrong")
        del graph, op, out


def check_back_to_back(rank, world, failures):
    """Thousands of launches with no host sync between them, mixing sizes, modes and
    ranks that own nothing: the self-resetting barriers must pair up every time."""
    op = FusedARNorm(None, 2048, 4096, torch.bfloat16, EPS)
    g = torch.Generator(device="cuda").manual_seed(rank)
    residual = torch.randn(2048, 4096, device="cuda", generator=g).bfloat16()
    weight = torch.ones(4096, dtype=torch.bfloat16, device="cuda")
    op.buffer(2048).copy_(torch.randn(2048, 4096, device="cuda", generator=g))
    dist.barrier()
    schedule = [(2048, SHARDED), (7, ONESHOT), (3, SHARDED), (1, ONESHOT), (513, SHARDED)]
    for i in range(3000):
        tokens, mode = schedule[i % len(schedule)]
        op.run(tokens, residual[:tokens], weight, mode=mode)
    torch.cuda.synchronize()
    if not torch.isfinite(op.buffer(2048)).all():
        failures.append("back-to-back: non-finite values after 3000 calls")
    # and the op still computes the right thing afterwards
    run_case(op, rank, world, 4242, 1000, SHARDED, True, False, failures, check_repeat=True)


def check_all(rank, world, failures):
    os.environ.setdefault("SGLANG_TOKENWEAVE_BARRIER_TIMEOUT_MS", "60000")
    for check in (check_sweep, check_graph_replay, check_back_to_back):
        before = len(failures)
        check(rank, world, failures)
        if rank == 0:
            print(f"W={world} {check.__name__}: {len(failures) - before} failures", flush=True)


@pytest.mark.parametrize("world", [2, 4])
def test_p2p_kernel_matches_reference(world, tmp_path):
    if not torch.cuda.is_available() or torch.cuda.device_count() < world:
        pytest.skip(f"needs {world} CUDA GPUs")
    bad = run_on_gpus(check_all, world, tmp_path)
    assert not bad, "\n".join(f"rank {r}:\n{text[:4000]}" for r, text in bad.items())
