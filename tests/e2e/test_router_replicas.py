"""Replicas behind SGLang's router: two CPU servers of one configuration (SmolLM2, deterministic
requests on) behind sglang-router, round robin. A deterministic request gives the same output
whichever replica answers, while both replicas also serve other, non-deterministic traffic (so
their batches differ), and the same as each replica gives directly. Which replica answered, and
that it ran the request as a deterministic one, is read from the replicas' own counters.

Through the router, deterministic requests go to /v1/completions: the router drops the field
from /generate and /v1/chat/completions bodies (test_router_forwarding.py). Those two APIs are
checked on the two replicas directly.
"""

import concurrent.futures as cf

import pytest
import requests
from deterministic_client import metric
from real_model import COMMON_ARGS, PROMPTS
from router_process import Router

pytestmark = pytest.mark.e2e

SERVER_ARGS = ["--model-path", "smollm2", *COMMON_ARGS, "--enable-deterministic-requests", "--enable-metrics",
               "--deterministic-window", "8", "--deterministic-verify-rows", "4"]
MAX_NEW_TOKENS = 16
ROUNDS = 4  # round robin: two to each replica
SAMPLING = [(0.0, None), (0.8, 31337)]


@pytest.fixture(scope="module")
def replicas(start_server):
    return [start_server(SERVER_ARGS) for _ in range(2)]


@pytest.fixture(scope="module")
def router(replicas, tmp_path_factory):
    router = Router([r.url for r in replicas], tmp_path_factory.mktemp("router") / "router.log")
    yield router
    router.kill()


def _post(url, path, body):
    r = requests.post(url + path, json=body, timeout=1800)
    assert r.status_code == 200, r.text
    return r.json()


def _completion(url, sampling):
    temperature, seed = sampling
    body = {"model": "smollm2", "prompt": "Write a limerick about a cat.\n", "max_tokens": MAX_NEW_TOKENS,
            "temperature": temperature, "deterministic": True, **({"seed": seed} if seed is not None else {})}
    return _post(url, "/v1/completions", body)["choices"][0]["text"]


def _generate(url, sampling):
    temperature, seed = sampling
    params = {"max_new_tokens": MAX_NEW_TOKENS, "temperature": temperature, "deterministic": True,
              **({"sampling_seed": seed} if seed is not None else {})}
    return _post(url, "/generate", {"text": "Write a limerick about a cat.", "sampling_params": params})["output_ids"]


def _chat(url, sampling):
    temperature, seed = sampling
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Describe autumn in one sentence."}],
            "max_tokens": MAX_NEW_TOKENS, "temperature": temperature, "deterministic": True,
            **({"seed": seed} if seed is not None else {})}
    return _post(url, "/v1/chat/completions", body)["choices"][0]["message"]["content"]


def _noise(url, i):
    body = {"text": PROMPTS[i % len(PROMPTS)], "sampling_params": {"max_new_tokens": 4 + i % 20, "temperature": 1.0}}
    _post(url, "/generate", body)


@pytest.mark.parametrize("sampling", SAMPLING, ids=["greedy", "seeded"])
def test_same_output_whichever_replica_answers(replicas, router, sampling):
    direct = [_completion(r.url, sampling) for r in replicas]
    assert direct[0] == direct[1]
    answered_by = []
    with cf.ThreadPoolExecutor(8) as pool:
        for i in range(ROUNDS):
            before = [metric(r, "requests") for r in replicas]
            noise = [pool.submit(_noise, r.url, 10 * i + k) for r in replicas for k in range(3)]
            assert _completion(router.url, sampling) == direct[0], f"round {i}"
            after = [metric(r, "requests") for r in replicas]
            answered_by += [k for k in range(2) if after[k] > before[k]]
            for f in noise:
                f.result()
    print(f"{sampling}: {direct[0]!r}, answered by replicas {answered_by}")
    # every routed request ran as a deterministic one, on both replicas in turn
    assert len(answered_by) == ROUNDS and sorted(set(answered_by)) == [0, 1]


@pytest.mark.parametrize("ask", [_generate, _chat], ids=["generate", "chat"])
@pytest.mark.parametrize("sampling", SAMPLING, ids=["greedy", "seeded"])
def test_same_output_from_either_replica_directly(replicas, ask, sampling):
    with cf.ThreadPoolExecutor(8) as pool:
        noise = [pool.submit(_noise, replicas[1].url, 100 + k) for k in range(4)]  # only one replica is busy
        outputs = [pool.submit(ask, r.url, sampling) for r in replicas]
        for f in noise:
            f.result()
        outputs = [f.result() for f in outputs]
    assert outputs[0] == outputs[1]
    assert outputs == [ask(r.url, sampling) for r in replicas]  # and alone
