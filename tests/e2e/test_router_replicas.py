"""Replicas behind SGLang's router (sglang-router, as docker/compose.yaml runs it): two CPU
servers of one configuration (SmolLM2, deterministic requests on), round robin. A deterministic
request gives the same output whichever replica answers, while each replica also serves other,
non-deterministic traffic (so their batches differ), and equals what each replica gives directly.
Which replica answered is read from the replicas' own request counters.
"""

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from deterministic_client import metric
from real_model import COMMON_ARGS, PROMPTS
from serving import free_port

pytestmark = pytest.mark.e2e

SERVER_ARGS = ["--model-path", "smollm2", *COMMON_ARGS, "--enable-deterministic-requests", "--enable-metrics",
               "--deterministic-window", "8", "--deterministic-verify-rows", "4"]
MAX_NEW_TOKENS = 16
ROUNDS = 4  # per request kind; round robin sends half of them to each replica


class Router:
    def __init__(self, worker_urls, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "w")
        self.log_path = log_path
        cmd = [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *worker_urls,
               "--policy", "round_robin", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info"]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/v1/models", timeout=10).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        self.kill()
        raise TimeoutError(f"router not ready:\n{log_path.read_text()[-3000:]}")

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def replicas(start_server):
    return [start_server(SERVER_ARGS) for _ in range(2)]


@pytest.fixture(scope="module")
def router(replicas, tmp_path_factory):
    router = Router([r.url for r in replicas], tmp_path_factory.mktemp("router") / "router.log")
    yield router
    router.kill()


def _generate(url, sampling):
    temperature, seed = sampling
    params = {"max_new_tokens": MAX_NEW_TOKENS, "temperature": temperature, "deterministic": True}
    if seed is not None:
        params["sampling_seed"] = seed
    r = requests.post(url + "/generate", json={"text": "Write a limerick about a cat.", "sampling_params": params},
                      timeout=1800)
    assert r.status_code == 200, r.text
    return r.json()["output_ids"]


def _chat(url, sampling):
    temperature, seed = sampling
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Describe autumn in one sentence."}],
            "max_tokens": MAX_NEW_TOKENS, "temperature": temperature, "deterministic": True}
    if seed is not None:
        body["seed"] = seed
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=1800)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def _noise(url, i):
    body = {"text": PROMPTS[i % len(PROMPTS)], "sampling_params": {"max_new_tokens": 4 + i % 20, "temperature": 1.0}}
    assert requests.post(url + "/generate", json=body, timeout=1800).status_code == 200


@pytest.mark.parametrize("ask", [_generate, _chat], ids=["generate", "chat"])
@pytest.mark.parametrize("sampling", [(0.0, None), (0.8, 31337)], ids=["greedy", "seeded"])
def test_same_output_whichever_replica_answers(replicas, router, ask, sampling):
    direct = [ask(r.url, sampling) for r in replicas]
    assert direct[0] == direct[1]
    answered_by = []
    with cf.ThreadPoolExecutor(8) as pool:
        for i in range(ROUNDS):
            before = [metric(r, "requests") for r in replicas]
            noise = [pool.submit(_noise, r.url, 10 * i + k) for r in replicas for k in range(3)]
            assert ask(router.url, sampling) == direct[0], f"round {i}"
            after = [metric(r, "requests") for r in replicas]
            answered_by += [k for k in range(2) if after[k] > before[k]]
            for f in noise:
                f.result()
    print(f"{ask.__name__} {sampling}: answered by replicas {answered_by}")
    assert sorted(set(answered_by)) == [0, 1]  # both replicas answered, as deterministic requests
    assert len(answered_by) == ROUNDS
