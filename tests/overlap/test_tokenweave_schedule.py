"""The woven layer schedule on CPU, TP = 2 over gloo: a synthetic decoder stack run fuse-only
and in two token splits (cut inside a request) gives the unfused layer's outputs.

The unfused reference is the layer as SGLang runs it: GEMM, all-reduce, residual add, RMSNorm.
The woven run uses ``comm.FusedARNorm`` (its reference path on gloo), the residual sharded
across layers and the final norm fused into the last layer. fp32; tolerance 1e-5 (same sums
in a different order, and attention split at the cut).
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sglang_tokenweave.comm import FusedARNorm
from sglang_tokenweave.overlap import layer_shapes_for, plan_forward
from sglang_tokenweave.overlap.synthetic import Stack, run_unfused, run_woven

WORLD = 2
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER = 64, 8, 4, 8, 96
TOLERANCE = 1e-5


CASES = [
    (37, None, 0, None),  # fuse-only, rows not divisible by the world size
    (100, 64, 0, 48),  # two splits: cut at row 48 (50 rounded to 8)
    (100, 64, -20, 32),  # a tuned offset moves the cut
]


def _run_cases(rank, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        for case in CASES:
            results[(rank, case)] = _case(rank, *case[:3])
    finally:
        dist.destroy_process_group()


def _case(rank, tokens, threshold, offset):
    shapes = layer_shapes_for(hidden_size=HIDDEN, num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                              intermediate_size=INTER, tp=WORLD)
    torch.manual_seed(100 + rank)  # each rank holds different shards
    stack = Stack(3, shapes, HIDDEN, HEAD_DIM, tokens, 1e-6, torch.device("cpu"), torch.float32)
    torch.manual_seed(7)  # the embedding output is replicated on every rank
    x = torch.randn(tokens, HIDDEN)
    for layer in stack.layers:  # non-trivial, replicated norm weights
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight = torch.rand(HIDDEN) + 0.5
    stack.norm.weight = torch.rand(HIDDEN) + 0.5

    expected = run_unfused(stack, x, x.clone(), dist.group.WORLD)
    plan = plan_forward([tokens], [0], world_size=WORLD, threshold=threshold, split_offset=offset, align=8)
    ops = [FusedARNorm(dist.group.WORLD, tokens, HIDDEN, torch.float32, 1e-6) for _ in plan.splits]
    parts = run_woven(stack, ops, plan, x, x.clone(), None, None)
    actual = torch.cat([p.hidden for p in parts])
    return plan.cut, float((actual - expected).abs().max()), float(expected.abs().max())


@pytest.fixture(scope="module")
def results():
    from serving import free_port

    shared = mp.Manager().dict()
    mp.spawn(_run_cases, args=(free_port(), shared), nprocs=WORLD, join=True)
    return dict(shared)


@pytest.mark.parametrize("case", CASES, ids=["fuse_only", "split", "split_with_offset"])
def test_woven_schedule_matches_unfused_layers(results, case):
    for rank in range(WORLD):
        cut, diff, scale = results[(rank, case)]
        assert cut == case[3]
        assert scale > 0.1  # the outputs are not trivially zero
        assert diff <= TOLERANCE, f"rank {rank}: max |woven - unfused| = {diff:.3g}"
