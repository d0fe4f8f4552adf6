"""Constrained decoding (regex, json_schema, ebnf) on a CPU server, and that no grammar request,
valid or malformed, takes the server down.

Before the overlay's CPU hooks, SGLang's xgrammar backend pinned its token bitmask (a CUDA call)
and the scheduler died at the first constrained request, with every request in flight.
"""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.e2e

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "pet": {"enum": ["cat", "dog"]},
    },
    "required": ["name", "age", "pet"],
    "additionalProperties": False,
}
REGEXES = [r"[0-9]{3}-[a-z]{2}", r"(red|green|blue) (cat|dog)", r"[A-Z][a-z]{1,6}\."]
MALFORMED = [
    ("regex", "[0-9"),
    ("json_schema", "{not json"),
    ("json_schema", json.dumps({"type": "no-such-type"})),
    ("ebnf", "root ::= "),
]


@pytest.fixture(scope="module")
def server(start_server):
    # A random-weights model that may put whitespace between JSON tokens pads with it until
    # max_new_tokens under greedy decoding; compact JSON lets the grammar end the output.
    return start_server(["--constrained-json-disable-any-whitespace"])


def _generate(server, text, constraint, temperature=0.0, max_new_tokens=48):
    params = {"max_new_tokens": max_new_tokens, "temperature": temperature, "sampling_seed": 7, **constraint}
    return server.post("/generate", {"text": text, "sampling_params": params}, timeout=300)


def _assert_still_serves(server):
    assert server.get("/health").status_code == 200
    r = server.post("/generate", {"text": "Hello", "sampling_params": {
        "max_new_tokens": 4, "temperature": 0, "ignore_eos": True}})
    assert r.status_code == 200, r.text
    assert r.json()["meta_info"]["completion_tokens"] == 4


def _follows_schema(value) -> bool:
    return (isinstance(value, dict) and set(value) == {"name", "age", "pet"}
            and isinstance(value["name"], str) and len(value["name"]) <= 8
            and type(value["age"]) is int and 0 <= value["age"] <= 150
            and value["pet"] in ("cat", "dog"))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_output_is_json_that_follows_the_schema(server, temperature):
    r = _generate(server, "Describe a user:", {"json_schema": json.dumps(SCHEMA)}, temperature, max_new_tokens=64)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["meta_info"]["finish_reason"]["type"] == "stop", out  # the grammar ended it
    # xgrammar's JSON string rule admits raw control characters (a random model samples them at
    # T = 1, e.g. "z\x06"), which strict parsing refuses: the schema is what the grammar enforces.
    value = json.loads(out["text"], strict=False)
    assert _follows_schema(value), value
    _assert_still_serves(server)


@pytest.mark.parametrize("pattern", REGEXES)
def test_regex_output_matches(server, pattern):
    r = _generate(server, "Write something:", {"regex": pattern}, temperature=1.0)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["meta_info"]["finish_reason"]["type"] == "stop", out
    assert re.fullmatch(pattern, out["text"]), out["text"]
    _assert_still_serves(server)


def test_ebnf_output_is_in_the_language(server):
    r = _generate(server, "Answer:", {"ebnf": 'root ::= ("yes" | "no") " " [0-9]'})
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"(yes|no) [0-9]", r.json()["text"])
    _assert_still_serves(server)


@pytest.mark.parametrize("kind, grammar", MALFORMED, ids=[f"{k}:{g}" for k, g in MALFORMED])
def test_malformed_grammar_is_a_400_naming_it(server, kind, grammar):
    r = _generate(server, "Bad:", {kind: grammar})
    assert r.status_code == 400, r.text
    assert "grammar" in r.text
    _assert_still_serves(server)


def test_constrained_and_plain_requests_in_one_batch(server):
    bodies = [("regex", {"regex": REGEXES[0]}), ("plain", {"ignore_eos": True}),
              ("json", {"json_schema": json.dumps(SCHEMA)}), ("plain", {"ignore_eos": True})]
    with ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(lambda b: (b[0], _generate(server, "Tell me:", b[1], max_new_tokens=64)), bodies))
    for kind, r in results:
        assert r.status_code == 200, r.text
        text = r.json()["text"]
        if kind == "regex":
            assert re.fullmatch(REGEXES[0], text), text
        elif kind == "json":
            assert _follows_schema(json.loads(text)), text
        else:
            assert r.json()["meta_info"]["completion_tokens"] == 64
    _assert_still_serves(server)
