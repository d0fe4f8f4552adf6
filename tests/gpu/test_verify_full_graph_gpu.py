"""``--deterministic-verify-graph full`` on one GPU (run with ``pytest -m gpu``): the tiny model in
bf16, fast-path logits perturbed so that verification rolls back constantly; deterministic
prompts sent alone, then at concurrency 16 among other traffic, give identical token ids; the
passes ran in the one TARGET_VERIFY graph captured at the first pass (a pass the graph cannot
take fails the server instead of running elsewhere); every KV slot is free again afterwards."""

import concurrent.futures as cf
import itertools
import sys
from pathlib import Path

import pytest
import torch

from sglang_tokenweave.comm.multicast import MULTICAST_OFF_SWITCHES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deterministic_client import (  # noqa: E402
    PROMPTS, SAMPLING, case_ids, metric, noise_ids, scheduler_reports, wait_for_idle_pool,
)

pytestmark = pytest.mark.gpu

ROWS, WINDOW = 4, 8
ARGS = ["--tp", "1", "--dtype", "bfloat16", "--attention-backend", "triton", "--sampling-backend", "pytorch",
        "--enable-deterministic-requests", "--enable-metrics", "--deterministic-verify-graph", "full",
        "--deterministic-window", str(WINDOW), "--deterministic-verify-rows", str(ROWS),
        "--deterministic-lookahead-blocks", "2", "--deterministic-test-perturb-logits", "1.0"]
CASES = list(itertools.product(range(len(PROMPTS)), range(len(SAMPLING))))


@pytest.fixture(scope="module")
def server(start_server):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return start_server(ARGS, env=dict(MULTICAST_OFF_SWITCHES))


def _det(server, case):
    return case_ids(server, case, max_new_tokens=40)


def test_full_graph_passes_are_identical_alone_and_under_load(server):
    reference = {case: _det(server, case) for case in CASES}  # the first pass captures the graph
    with cf.ThreadPoolExecutor(16) as pool:
        noise = [pool.submit(noise_ids, server, i) for i in range(32)]
        det = {case: pool.submit(_det, server, case) for case in CASES}
        assert {case: f.result() for case, f in det.items()} == reference
        [f.result() for f in noise]
    assert metric(server, "verification_passes") > 0 and metric(server, "rollback_events") > 0
    for process in scheduler_reports(server):
        path = process["features"]["deterministic_verify_graph"]
        assert path["active"] is True and "full CUDA graph" in path["reason"], path
        captured = process["deterministic_verify_full_graph"]
        assert (captured["rows"], captured["window"], captured["mode"]) == (ROWS, WINDOW, "TARGET_VERIFY"), captured
    pool_state = wait_for_idle_pool(server)
    assert pool_state is not None and pool_state["free_tokens"] == pool_state["total_tokens"], pool_state
