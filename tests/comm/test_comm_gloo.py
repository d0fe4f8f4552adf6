"""The distributed reference and FusedARNorm's CPU path on gloo, W = 2 and 4, against
single-process math. One spawn per world size runs every case; failures come back as text."""

import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sglang_tokenweave.comm import FusedARNorm, ONESHOT, SHARDED, owned_rows
from sglang_tokenweave.comm.reference import add_rmsnorm, fused_allreduce_add_rmsnorm, reduce_partials

HIDDEN = 64
EPS = 1e-6


def inputs(seed, world, tokens, dtype):
    """Every rank's partial, the residual and the weight; the same on every rank."""
    g = torch.Generator().manual_seed(seed)
    partials = [torch.randn(tokens, HIDDEN, generator=g).to(dtype) for _ in range(world)]
    residual = torch.randn(tokens, HIDDEN, generator=g).to(dtype)
    weight = (1 + 0.1 * torch.randn(HIDDEN, generator=g)).to(dtype)
    return partials, residual, weight


def check_reference(rank, world, failures):
    for tokens in (1, 5, 16):
        partials, residual, weight = inputs(tokens, world, tokens, torch.bfloat16)
        out, new_res = fused_allreduce_add_rmsnorm(partials[rank], residual, weight, EPS)
        want_out, want_res = add_rmsnorm(reduce_partials(partials), residual, weight, EPS)
        if not (torch.equal(out, want_out) and torch.equal(new_res, want_res)):
            failures.append(f"reference T={tokens}: differs from single-process math")


def check_op(rank, world, failures):
    op = FusedARNorm(None, max_tokens=64, hidden=HIDDEN, dtype=torch.bfloat16, eps=EPS)
    cases = [(t, m, hr, fin) for t in (1, world - 1, 7, 33) for m in (SHARDED, ONESHOT)
             for hr, fin in ((True, False), (False, False), (True, True))]
    for i, (tokens, mode, has_residual, final) in enumerate(cases):
        partials, residual, weight = inputs(100 + i, world, tokens, torch.bfloat16)
        want_out, want_res = add_rmsnorm(reduce_partials(partials), residual if has_residual else None, weight, EPS)
        op.buffer(tokens).copy_(partials[rank])
        res = residual.clone() if has_residual else torch.full_like(residual, float("nan"))
        before = res.clone()
        out = op.run(tokens, res, weight, has_residual=has_residual, final=final, mode=mode)
        name = f"T={tokens} mode={mode} has_residual={has_residual} final={final}"
        if not torch.equal(out, want_out):
            failures.append(f"{name}: out differs")
        if out.data_ptr() != op.buffer(tokens).data_ptr():
            failures.append(f"{name}: out is not the op's buffer")
        start, end = (0, tokens) if mode == ONESHOT else owned_rows(tokens, world, rank)
        if final:
            if not torch.equal(res, before):
                failures.append(f"{name}: final norm wrote the residual")
            continue
        if not torch.equal(res[start:end], want_res[start:end]):
            failures.append(f"{name}: owned residual rows wrong")
        rest = torch.cat([res[:start], res[end:]])
        if not torch.equal(rest, torch.cat([before[:start], before[end:]]).to(rest.dtype)) and not (
                rest.isnan().all() and not has_residual):
            failures.append(f"{name}: rows not owned were touched")


def worker(rank, world, init_file, result_dir):
    failures = []
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        check_reference(rank, world, failures)
        check_op(rank, world, failures)
        dist.destroy_process_group()
    except Exception:
        failures.append(traceback.format_exc())
    with open(os.path.join(result_dir, f"rank{rank}.txt"), "w") as f:
        f.write("\n".join(failures))


@pytest.mark.parametrize("world", [2, 4])
def test_gloo_matches_single_process_math(world, tmp_path):
    mp.spawn(worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    reports = {r: (tmp_path / f"rank{r}.txt").read_text() for r in range(world)}
    bad = {r: text for r, text in reports.items() if text}
    assert not bad, bad
