"""Client helpers of the deterministic-request end-to-end tests (plain HTTP, no SGLang)."""

from __future__ import annotations

import json
import random
import time

import requests

PROMPTS = [
    "Hi",
    "The quick brown fox jumps over the lazy dog and keeps running",
    "In a distant land, " * 12 + "there lived",
]
# (temperature, seed): greedy, and sampled with two seeds
SAMPLING = [(0.0, None), (0.8, 1), (0.8, 987654321)]


def det_params(temperature, seed, max_new_tokens=20, **extra):
    params = {"max_new_tokens": max_new_tokens, "temperature": temperature, "ignore_eos": True,
              "deterministic": True, **extra}
    if seed is not None:
        params["sampling_seed"] = seed
    return params


def generate(server, prompt, params, **body):
    r = requests.post(server.url + "/generate", json={"text": prompt, "sampling_params": params, **body},
                      timeout=600)
    assert r.status_code == 200, r.text
    return r.json()


def case_ids(server, case, max_new_tokens):
    """The output ids of deterministic case (prompt index, sampling index)."""
    prompt_index, sampling_index = case
    params = det_params(*SAMPLING[sampling_index], max_new_tokens=max_new_tokens)
    return generate(server, PROMPTS[prompt_index], params)["output_ids"]


def noise_ids(server, i):
    """Other traffic, seeded by ``i``: up to 200 repeated words in, up to 64 tokens out at T = 1."""
    rng = random.Random(i)
    params = {"max_new_tokens": rng.randint(1, 64), "temperature": 1.0, "ignore_eos": True}
    return generate(server, f"noise {i} " * rng.randint(1, 200), params)["output_ids"]


def generate_stream(server, prompt, params):
    """All streamed chunks' output ids (cumulative per chunk) and the last chunk."""
    chunks = []
    with requests.post(server.url + "/generate", json={"text": prompt, "sampling_params": params, "stream": True},
                       stream=True, timeout=600) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                chunks.append(json.loads(line[6:]))
    assert chunks and "error" not in chunks[-1], chunks[-1:]
    return chunks


def metric(server, name):
    """A sample of our Prometheus counters (0 when absent)."""
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(f"sglang_tokenweave:deterministic_{name}_total "):
            return float(line.split()[-1])
    return 0.0


def scheduler_reports(server):
    return [p for p in server.get("/tokenweave/status").json()["processes"] if p.get("role") == "scheduler"]


def wait_for_idle_pool(server, timeout_s=60.0):
    """The idle KV pool report of TP rank 0 once every slot is free again (or the last one seen)."""
    deadline = time.monotonic() + timeout_s
    pool = None
    while time.monotonic() < deadline:
        rank0 = [p for p in scheduler_reports(server) if p.get("tp_rank") == 0]
        pool = rank0[0].get("kv_pool_idle") if rank0 else None
        if pool and pool["free_tokens"] == pool["total_tokens"]:
            return pool
        time.sleep(0.5)
    return pool
