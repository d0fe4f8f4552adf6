"""TP = 3 on CPU, a TP size that divides neither 128 nor the CPU's memory by NUMA node.

One TP3 server with ``--enable-tokenweave`` and SGLang's default memory settings (no
--max-total-tokens / --mem-fraction-static):

- every rank sizes its KV pool from its share of the machine's free memory. Before, each rank
  took the whole machine's and the OOM killer ended one during start-up;
- the split planner aligns the cut to lcm(128, 3) = 384 rows. Before, it refused 128 at the first
  prefill on every rank and the server died. Its logprobs and greedy tokens match the same model
  served at TP1 without TokenWeave (started after the TP3 server is stopped: its pool takes most
  of the free memory, and TP1 starts faster than a second TP3 server);
- a rank killed with SIGKILL (what the OOM killer sends) is named in the launcher's log.
"""

import random
import re
from dataclasses import dataclass

import psutil
import pytest

from sglang_tokenweave.tiny_model import TINY_LLAMA_TP3, tiny_model_path

pytestmark = pytest.mark.e2e

TP = 3
THRESHOLD = 700
TOLERANCE = 1e-4  # fp32 logprobs, as in test_tokenweave_cpu_correctness.py
COMMON = ["--dtype", "float32", "--model-path", str(tiny_model_path(TINY_LLAMA_TP3))]
ENV = {"SGLANG_REQUEST_STATE_WAIT_TIMEOUT": "900"}
# (name, prompt lengths): fuse-only below the threshold; above it (T = 1000) the cut lands at
# row 384 (T // 2 rounded to 384), inside request 1 (rows 300..800).
BATCHES = [("below_threshold", [23, 57]), ("split_with_straddling_request", [300, 500, 200])]
KV_LINE = re.compile(r"TP(\d+)\] KV Cache is allocated\..*#tokens: (\d+), K size: ([\d.]+) GB, V size: ([\d.]+) GB")


def _prompts(lengths, seed):
    rng = random.Random(seed)  # distinct random tokens: no prefix is shared across requests
    return [[1] + [rng.randrange(10, 500) for _ in range(n - 1)] for n in lengths]


def _generate(server, prompts):
    body = {"input_ids": prompts, "return_logprob": True, "logprob_start_len": 0,
            "sampling_params": {"max_new_tokens": 4, "temperature": 0, "ignore_eos": True}}
    r = server.post("/generate", body, timeout=900)
    assert r.status_code == 200, r.text
    return r.json()


def _outputs(server):
    return {name: _generate(server, _prompts(lengths, seed=len(name))) for name, lengths in BATCHES}


@dataclass
class Tp3Run:
    text: object  # the response to a text request
    outputs: dict
    status: dict
    log: str  # up to the requests above
    killed_rank_pid: int
    end_log: str  # after SIGKILL to rank 1 ended the server


@pytest.fixture(scope="module")
def tp3(start_server):
    server = start_server(["--tp", str(TP), *COMMON, "--enable-tokenweave", "--tokenweave-split-threshold",
                           str(THRESHOLD), "--tokenweave-fused-threshold", "1"], env=ENV, small_pool=False)
    text = server.post("/generate", {"text": "The capital of France is",
                                     "sampling_params": {"max_new_tokens": 8, "temperature": 0}}, timeout=900)
    outputs = _outputs(server)
    status, log = server.get("/tokenweave/status").json(), server.log_path.read_text(errors="replace")
    rank1 = next(p for p in psutil.Process(server.proc.pid).children(recursive=True)
                 if p.name() == "sglang::scheduler_TP1")
    rank1.kill()
    server.proc.wait(timeout=120)  # the launcher takes the whole server down
    run = Tp3Run(text, outputs, status, log, rank1.pid, server.log_path.read_text(errors="replace"))
    server.kill()
    return run


@pytest.fixture(scope="module")
def tp1_outputs(tp3, start_server):
    return _outputs(start_server(COMMON, env=ENV))


def test_default_memory_settings_serve_with_a_share_of_memory_per_rank(tp3):
    assert tp3.text.status_code == 200, tp3.text.text
    assert tp3.text.json()["meta_info"]["completion_tokens"] >= 1
    kv_lines = KV_LINE.findall(tp3.log)
    assert sorted(int(rank) for rank, *_ in kv_lines) == list(range(TP))
    share_gb = psutil.virtual_memory().total / TP / (1 << 30)
    for rank, tokens, k_gb, v_gb in kv_lines:
        # Sized from free memory (not a small cap), and within the rank's share of the machine.
        assert int(tokens) > 100_000, kv_lines
        assert float(k_gb) + float(v_gb) < share_gb, kv_lines


def test_tokenweave_ran_fused_and_split_at_tp3(tp3):
    schedulers = [p for p in tp3.status["processes"] if p.get("role") == "scheduler"]
    assert sorted(p["tp_rank"] for p in schedulers) == list(range(TP))
    for process in schedulers:
        assert process["features"]["tokenweave"]["active"], process
    # Each rank logs each first occurrence once.
    assert tp3.log.count("token splitting active (first split: 1000 rows cut at 384)") == TP
    assert tp3.log.count("a request straddled a split point (1000 rows cut at 384)") == TP


@pytest.mark.parametrize("name", [b[0] for b in BATCHES])
def test_tokenweave_tp3_matches_tp1_without_it(tp3, tp1_outputs, name):
    for expected, actual in zip(tp1_outputs[name], tp3.outputs[name]):
        exp_in, act_in = ([e[0] for e in o["meta_info"]["input_token_logprobs"] if e[0] is not None]
                          for o in (expected, actual))
        assert len(exp_in) == len(act_in) > 0
        assert max(abs(a - b) for a, b in zip(exp_in, act_in)) <= TOLERANCE
        assert actual["output_ids"] == expected["output_ids"]


def test_a_killed_rank_is_named_in_the_log(tp3):
    assert f"scheduler_1 (pid {tp3.killed_rank_pid}) was killed by SIGKILL" in tp3.end_log
