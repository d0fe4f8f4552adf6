"""Deterministic requests on GPUs (run with ``pytest -m gpu``): the tiny model in bf16 at TP=1
(the breakable pass graph, and the defaults: the full one) and TP=2 (each also with 2 blocks of
lookahead and the default sampling kernel), fast-path
logits perturbed so that verification rolls back constantly, deterministic prompts sent alone
and at concurrency 16 among other traffic: identical token ids every time, every KV slot free again afterwards; a stop token that
the fast path proposes ends the output at the verified stop, with every slot freed."""

import concurrent.futures as cf
import itertools
import sys
from pathlib import Path

import pytest
import torch

from sglang_tokenweave.comm.multicast import MULTICAST_OFF_SWITCHES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deterministic_client import (  # noqa: E402
    PROMPTS, SAMPLING, case_ids, det_params, generate, metric, noise_ids, scheduler_reports,
    wait_for_idle_pool,
)

pytestmark = pytest.mark.gpu

SAFE_ENV = dict(MULTICAST_OFF_SWITCHES)  # SGLang at its defaults; NVLink multicast off
DET_ARGS = ["--dtype", "bfloat16", "--attention-backend", "triton", "--sampling-backend", "pytorch",
            "--enable-deterministic-requests", "--enable-metrics",
            "--deterministic-window", "8", "--deterministic-verify-rows", "4",
            "--deterministic-test-perturb-logits", "1.0"]
CASES = list(itertools.product(range(len(PROMPTS)), range(len(SAMPLING))))


# (TP, lookahead blocks, --deterministic-sampling-kernel or None for the default, the kernel that
# serves, --deterministic-verify-graph or None for the default, the graph that serves)
@pytest.fixture(scope="module", params=[(1, 1, "torch", "torch", "breakable", "breakable"),
                                        (1, 2, None, "triton (auto on --device cuda)", None, "full"),
                                        (2, 1, "torch", "torch", None, "breakable"),
                                        (2, 2, "torch", "torch", None, "breakable"),
                                        (2, 2, None, "triton (auto on --device cuda)", None, "breakable")],
                ids=["tp1-breakable", "tp1-lookahead2-defaults", "tp2", "tp2-lookahead2", "tp2-lookahead2-default-sampler"])
def server(request, start_server):
    tp, lookahead, kernel, serving_kernel, graph, serving_graph = request.param
    if torch.cuda.device_count() < tp:
        pytest.skip(f"needs {tp} CUDA GPUs")
    kernel_args = ["--deterministic-sampling-kernel", kernel] if kernel else []
    graph_args = ["--deterministic-verify-graph", graph] if graph else []
    server = start_server(["--tp", str(tp), *DET_ARGS, "--deterministic-lookahead-blocks", str(lookahead),
                           *kernel_args, *graph_args], env=SAFE_ENV)
    for process in scheduler_reports(server):
        reason = process["features"]["deterministic_requests"]["reason"]
        assert f"sampling kernel {serving_kernel}" in reason and f"verify graph {serving_graph} (" in reason, reason
    server.verify_graph = serving_graph
    return server


def _det(server, case):
    return case_ids(server, case, max_new_tokens=48)


def test_identical_alone_and_under_load(server):
    reference = {case: _det(server, case) for case in CASES}
    for _ in range(3):
        with cf.ThreadPoolExecutor(16) as pool:
            noise = [pool.submit(noise_ids, server, i) for i in range(48)]
            det = {case: pool.submit(_det, server, case) for case in CASES}
            assert {case: f.result() for case, f in det.items()} == reference
            [f.result() for f in noise]
    assert metric(server, "rollback_events") > 0
    # The passes replayed the graph the server chose: one full graph, or SGLang's prefill graph.
    replayed = "full CUDA graph" if server.verify_graph == "full" else "prefill CUDA graph"
    for process in scheduler_reports(server):
        path = process["features"]["deterministic_verify_graph"]
        assert path["active"] is True and replayed in path["reason"], path
    pool_state = wait_for_idle_pool(server)
    assert pool_state is not None and pool_state["free_tokens"] == pool_state["total_tokens"], pool_state


def test_stop_token_found_one_step_late_frees_its_slot(server):
    # The overlap scheduler sees the fast path's stop token after launching the next step with
    # the request in it: that step's token is dropped and its KV slot freed before the pass.
    reference = _det(server, (0, 1))
    stop = reference[5]
    params = det_params(*SAMPLING[1], max_new_tokens=48, stop_token_ids=[stop], ignore_eos=False)
    body = generate(server, PROMPTS[0], params)
    out = body["output_ids"]
    # ends at the stop token, or earlier at an end-of-sequence token of the tokenizer
    assert 1 <= len(out) <= reference.index(stop) + 1 and out == reference[: len(out)]
    assert body["meta_info"]["finish_reason"]["type"] == "stop"
    pool_state = wait_for_idle_pool(server)
    assert pool_state is not None and pool_state["free_tokens"] == pool_state["total_tokens"], pool_state
