"""Fuzzing the HTTP API of a real CPU server (tiny model) with random and mutated bodies.

Valid bodies for every route and method that generates (``/generate`` by POST and PUT, single
and batched; ``/v1/completions``; ``/v1/chat/completions``), deterministic by either placement of
the field, are mutated: wrong types, nulls, huge numbers, unknown keys, JSON-escaped keys, lists
for scalars and scalars for lists, the field moved or doubled. Each example sends a few bodies at
once. Asserts: no 5xx; the server stays healthy (``/health`` and a normal ``/generate``); every
200 that asked for determinism is bit-identical to the same body sent alone.

The server runs with ``--preferred-sampling-params`` holding a presence penalty, which SGLang
adds to every request that does not set its own: the HTTP layer cannot see it, so a
deterministic request without ``presence_penalty: 0`` must be refused by the scheduler.

CI runs a small fixed set of examples; SGLANG_TOKENWEAVE_FUZZ_EXAMPLES=N runs N random ones
(about 4 s each on two cores).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

EXAMPLES_ENV = "SGLANG_TOKENWEAVE_FUZZ_EXAMPLES"
EXAMPLES = int(os.environ.get(EXAMPLES_ENV, "10"))
BODIES_PER_EXAMPLE = 6
MAX_NEW_TOKENS = 8  # SGLang caps every request to this (a huge max_new_tokens stays cheap)
PREFERRED = {"presence_penalty": 0.25}  # added by SGLang, unseen by the HTTP layer
NEUTRAL = {"presence_penalty": 0.0}
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def server(start_server):
    return start_server(
        ["--enable-deterministic-requests", "--deterministic-window", "4", "--deterministic-verify-rows", "4",
         "--preferred-sampling-params", json.dumps(PREFERRED)],
        env={"SGLANG_MAX_NEW_TOKENS_LIMIT": str(MAX_NEW_TOKENS)},
    )


# --- valid bodies ---

_prompts = st.sampled_from(["Hi", "The quick brown fox", "In a distant land, " * 4])
_seeds = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
_ids = st.lists(st.integers(3, 500), min_size=1, max_size=6)


@st.composite
def _sampling(draw, deterministic):
    params = {"max_new_tokens": draw(st.integers(1, 6)), "temperature": draw(st.sampled_from([0.0, 0.8])),
              **NEUTRAL}
    if (seed := draw(_seeds)) is not None:
        params["sampling_seed"] = seed
    if deterministic is not None:
        params["deterministic"] = deterministic
    for key, values in (("ignore_eos", st.booleans()), ("stop", st.sampled_from(["e", ["a", "o"]])),
                        ("stop_regex", st.sampled_from(["[0-9]", "qu+"])), ("n", st.integers(1, 2)),
                        ("top_k", st.integers(1, 20)), ("top_p", st.floats(0.1, 1.0))):
        if draw(st.booleans()) and draw(st.booleans()):
            params[key] = draw(values)
    return params


@st.composite
def generate_bodies(draw):
    batch = draw(st.sampled_from([None, 1, 2]))
    if draw(st.booleans()):
        body = {"text": draw(_prompts) if batch is None else draw(st.lists(_prompts, min_size=batch, max_size=batch))}
    else:
        body = {"input_ids": draw(_ids) if batch is None else draw(st.lists(_ids, min_size=batch, max_size=batch))}
    placement = draw(st.sampled_from(["top", "params", "both", "none"]))
    own = True if placement in ("params", "both") else None
    if batch is not None and draw(st.booleans()):
        body["sampling_params"] = [draw(_sampling(own)) for _ in range(batch)]
    else:
        body["sampling_params"] = draw(_sampling(own))
    if placement in ("top", "both"):
        body["deterministic"] = True
    for key, values in (("stream", st.booleans()), ("return_logprob", st.booleans()),
                        ("top_logprobs_num", st.integers(0, 3))):
        if draw(st.booleans()):
            body[key] = draw(values)
    return body


@st.composite
def openai_bodies(draw, chat):
    body = {"model": "tiny", "max_tokens": draw(st.integers(1, 6)), "temperature": draw(st.sampled_from([0.0, 0.8])),
            **NEUTRAL}
    if chat:
        body["messages"] = [{"role": "user", "content": draw(_prompts)}]
    else:
        body["prompt"] = draw(st.one_of(_prompts, _ids))
    if (seed := draw(_seeds)) is not None:
        body["seed"] = seed
    if draw(st.integers(0, 3)):
        body["deterministic"] = True
    for key, values in (("n", st.integers(1, 2)), ("stream", st.booleans()), ("ignore_eos", st.booleans()),
                        ("stop", st.sampled_from(["e", ["a"]]))):
        if draw(st.booleans()):
            body[key] = draw(values)
    return body


# --- mutations ---

_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4)
    | st.sampled_from([10**20, -(10**20), 2**63, 2**64, 1e308, -1, 0, "", "true", "deterministic"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=6,
)
_small_n = st.one_of(st.integers(-2, 3), _junk.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)))
_new_keys = st.sampled_from(["deterministic", "custom_params", "tokenweave_deterministic", "tokenweave_validated",
                             "regex", "json_schema", "lora_path", "image_data", "input_embeds", "return_hidden_states",
                             "frequency_penalty", "logit_bias", "min_new_tokens", "min_tokens", "session_params",
                             "token_ids_logprob", "no_such_key", "sampling_seed", "seed", "n"])


def _containers(body):
    """Every dict of the body (top level, sampling_params entries, messages), as (dict, keys)."""
    found = [body]
    params = body.get("sampling_params")
    found += [p for p in (params if isinstance(params, list) else [params]) if isinstance(p, dict)]
    messages = body.get("messages")
    found += [m for m in (messages if isinstance(messages, list) else []) if isinstance(m, dict)]
    return found


@st.composite
def mutated(draw, body):
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(_containers(body)))
        kind = draw(st.sampled_from(["replace", "add", "delete", "wrap", "unwrap", "custom"]))
        if kind in ("replace", "delete", "wrap", "unwrap") and target:
            key = draw(st.sampled_from(sorted(target)))
        else:
            kind, key = "add", draw(_new_keys)
        if kind in ("replace", "add"):
            # n is not bounded by SGLang: n = 10**5 keeps a CPU server busy for many minutes
            target[key] = draw(_small_n if key in ("n", "best_of") else _junk)
        elif kind == "delete":
            target.pop(key, None)
        elif kind == "wrap":
            target[key] = [target[key]]
        elif kind == "unwrap" and isinstance(target[key], list) and target[key]:
            target[key] = target[key][0]
        elif kind == "custom":
            target["custom_params"] = draw(st.one_of(_junk, st.dictionaries(_new_keys, _junk, max_size=2)))
    raw = json.dumps(body)
    if draw(st.booleans()):  # the same keys, JSON-escaped
        raw = raw.replace('"deterministic"', '"\\u0064eterministic"').replace('"tokenweave_', '"tokenweave\\u005f')
    return raw


@st.composite
def requests_(draw):
    route = draw(st.sampled_from(["generate", "generate-put", "completions", "chat", "completions-put"]))
    if route.startswith("generate"):
        body, path = draw(generate_bodies()), "/generate"
    else:
        chat = route == "chat"
        body, path = draw(openai_bodies(chat)), "/v1/chat/completions" if chat else "/v1/completions"
    method = "PUT" if route.endswith("-put") else "POST"
    return method, path, draw(mutated(body))


# --- what a response says ---

def _all_deterministic(raw: str) -> bool:
    """Whether every item the body asks for is deterministic (then all its outputs must repeat)."""
    body = json.loads(raw)
    if not isinstance(body, dict):
        return False
    top = body.get("deterministic")
    params = body.get("sampling_params")
    entries = params if isinstance(params, list) and params else [params]
    return all((entry.get("deterministic", top) if isinstance(entry, dict) else top) is True for entry in entries)


def _outputs(path, response):
    """What must repeat: output ids (/generate) or texts (OpenAI), in order."""
    if "text/event-stream" in response.headers.get("content-type", ""):
        return None  # streamed: checked for its status only
    data = response.json()
    if path == "/generate":
        items = data if isinstance(data, list) else [data]
        return [item.get("output_ids") for item in items]
    return [choice.get("text", choice.get("message", {}).get("content")) for choice in data.get("choices", [])]


def _send(server, method, path, raw):
    return requests.request(method, server.url + path, data=raw.encode(), timeout=TIMEOUT_S,
                            headers={"content-type": "application/json"})


def _assert_healthy(server):
    assert server.get("/health").status_code == 200, server.log_tail()
    ok = server.post("/generate", {"text": "still there?", "sampling_params": {"max_new_tokens": 2}})
    assert ok.status_code == 200, ok.text


@pytest.mark.timeout(1800)
def test_fuzzed_bodies_never_fail_the_server(server):
    seen = {"det_200": 0, "4xx": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=EXAMPLES_ENV not in os.environ)
    @given(st.lists(requests_(), min_size=BODIES_PER_EXAMPLE, max_size=BODIES_PER_EXAMPLE))
    def check(batch):
        with cf.ThreadPoolExecutor(len(batch)) as pool:
            responses = list(pool.map(lambda r: _send(server, *r), batch))
        for (method, path, raw), response in zip(batch, responses):
            assert response.status_code < 500, (method, path, raw, response.status_code, response.text[:500])
            seen["4xx"] += response.status_code >= 400
            if response.status_code == 200 and _all_deterministic(raw):
                loaded = _outputs(path, response)
                if loaded is not None:
                    alone = _outputs(path, _send(server, method, path, raw))
                    assert loaded == alone, (method, path, raw)
                    seen["det_200"] += 1
        _assert_healthy(server)

    check()
    # the examples reached both ends: served deterministic requests and refused ones
    assert seen["det_200"] > 0 and seen["4xx"] > 0, seen


def test_scheduler_refuses_what_the_http_layer_cannot_see(server):
    """The server's preferred presence penalty joins every request in SGLang's tokenizer
    manager, after the HTTP validation: the scheduler refuses the deterministic request."""
    body = {"text": "Hi", "sampling_params": {"max_new_tokens": 4, "deterministic": True}}
    refused = server.post("/generate", body)
    assert refused.status_code == 400, refused.text
    assert "sampling_params.presence_penalty" in refused.json()["error"]["message"]
    body["sampling_params"].update(NEUTRAL)
    assert server.post("/generate", body).status_code == 200
    _assert_healthy(server)


@pytest.mark.parametrize("body, words", [
    ({"input_ids": [[5, 6], []], "sampling_params": {"max_new_tokens": 2}}, "no tokens"),
    ({"input_ids": [7, 512]}, "token id 512 is outside the vocabulary"),
    ({"input_ids": [-3]}, "token id -3"),
])
def test_prompts_that_would_end_the_scheduler_are_refused(server, body, words):
    """Stock SGLang sends these to the model, whose first forward pass raises and ends the server."""
    r = server.post("/generate", body)
    assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    _assert_healthy(server)
