"""End to end on CPU: a server with float32 logits (--deterministic-logits float32; the default
on CUDA GPUs) keeps deterministic outputs identical to their solo runs under load, through
forced rollbacks, and counts where the mismatches fell."""

import concurrent.futures as cf
import itertools

import pytest
from deterministic_client import PROMPTS, SAMPLING, det_params, generate, metric, scheduler_reports
from serving import Server

pytestmark = pytest.mark.e2e

ARGS = ["--enable-deterministic-requests", "--enable-metrics", "--deterministic-window", "4",
        "--deterministic-verify-rows", "4", "--deterministic-test-perturb-logits", "3.0",
        "--deterministic-logits", "float32"]
CASES = list(itertools.product(range(len(PROMPTS)), range(len(SAMPLING))))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(ARGS, tmp_path_factory.mktemp("server") / "server.log")
    yield server
    server.kill()


def _output(server, case):
    prompt, (temperature, seed) = PROMPTS[case[0]], SAMPLING[case[1]]
    return generate(server, prompt, det_params(temperature, seed))["output_ids"]


def _noise(server, i):
    params = {"max_new_tokens": 8 + i % 9, "temperature": 0.7, "ignore_eos": True}
    return generate(server, f"other traffic {i} " * (1 + i % 7), params)["output_ids"]


def test_float32_logits_are_reported_and_outputs_survive_load_and_rollbacks(server):
    status = [r["features"] for r in scheduler_reports(server)]
    assert status and all("logits float32" in f["deterministic_requests"]["reason"] for f in status), status
    solo = {case: _output(server, case) for case in CASES}
    with cf.ThreadPoolExecutor(12) as pool:
        noise = [pool.submit(_noise, server, i) for i in range(16)]
        loaded = {case: pool.submit(_output, server, case) for case in CASES}
        [f.result() for f in noise]
        assert {case: f.result() for case, f in loaded.items()} == solo
    rolled_back = metric(server, "tokens_rolled_back")
    assert rolled_back > 0  # the perturbation forced rollbacks
    buckets = sum(metric(server, f"mismatch_offset_{b}") for b in ("0_3", "4_15", "16_31", "32_up"))
    assert buckets == metric(server, "rollback_events") > 0
    assert 0 < metric(server, "tokens_verified_greedy") < metric(server, "tokens_verified")
