"""The `deterministic` field on the HTTP API: validation and translation into custom_params,
and the ASGI middleware that applies them (no server, no SGLang)."""

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_tokenweave.glue.determinism.http_api import DeterministicFieldMiddleware, rewrite_body, translate
from sglang_tokenweave.glue.determinism.markers import (
    DETERMINISTIC_KEY, OUR_KEYS, RESERVED_PREFIX, VALIDATED_KEY, is_marked,
)


def test_generate_flag_moves_into_custom_params():
    body = {"text": "hi", "sampling_params": {"deterministic": True, "temperature": 0.8, "sampling_seed": 7}}
    assert rewrite_body("/generate", body, enabled=True) == (None, True)
    params = body["sampling_params"]
    assert "deterministic" not in params
    assert is_marked(params["custom_params"]) and params["sampling_seed"] == 7


def test_false_flag_is_removed_and_marks_nothing():
    body = {"text": "hi", "sampling_params": {"deterministic": False}}
    assert rewrite_body("/generate", body, enabled=False) == (None, True)
    assert body["sampling_params"] == {}


def test_clients_cannot_set_the_marker_themselves():
    body = {"text": "hi", "sampling_params": {"custom_params": {DETERMINISTIC_KEY: True, "mine": 1}}}
    error, _ = rewrite_body("/generate", body, enabled=True)
    assert error.field == f"sampling_params.custom_params.{DETERMINISTIC_KEY}"


def test_marked_params_carry_the_validation_stamp():
    body = {"text": "hi", "sampling_params": {"deterministic": True, "custom_params": {"mine": 1}}}
    rewrite_body("/generate", body, enabled=True)
    assert body["sampling_params"]["custom_params"] == {"mine": 1, DETERMINISTIC_KEY: True, VALIDATED_KEY: True}
    assert all(key.startswith(RESERVED_PREFIX) for key in OUR_KEYS)


def test_batched_generate_marks_only_deterministic_entries():
    body = {"text": ["a", "b"], "sampling_params": [{"deterministic": True}, {"temperature": 0.5}]}
    assert rewrite_body("/generate", body, enabled=True) == (None, True)
    assert is_marked(body["sampling_params"][0]["custom_params"])
    assert "custom_params" not in body["sampling_params"][1]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_openai_body_field(path):
    body = {"model": "m", "deterministic": True, "seed": 3, "custom_params": {"x": 1}}
    assert rewrite_body(path, body, enabled=True) == (None, True)
    assert "deterministic" not in body and body["seed"] == 3
    assert body["custom_params"] == {"x": 1, DETERMINISTIC_KEY: True, VALIDATED_KEY: True}


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/generate", {"sampling_params": {"deterministic": "yes"}}, "sampling_params.deterministic"),
        ("/generate", {"sampling_params": {"deterministic": True, "regex": "a+"}}, "sampling_params.regex"),
        ("/v1/completions", {"deterministic": 1}, "deterministic"),
        ("/v1/chat/completions", {"deterministic": True, "frequency_penalty": 0.5}, "frequency_penalty"),
    ],
)
def test_invalid_requests_name_the_field(path, body, field):
    error, _ = rewrite_body(path, body, enabled=True)
    assert error is not None and error.field == field and error.reason


def test_disabled_server_refuses_deterministic_requests():
    error, _ = rewrite_body("/v1/completions", {"deterministic": True}, enabled=False)
    assert error is not None and "--enable-deterministic-requests" in error.reason


def _call(path, payload: bytes, method="POST"):
    seen, sent = {}, []

    async def app(scope, receive, send):
        message = await receive()
        seen["body"] = message["body"]
        seen["length"] = dict(scope["headers"]).get(b"content-length")

    async def receive():
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"content-length", b"1")]}
    asyncio.run(DeterministicFieldMiddleware(app, True)(scope, receive, send))
    return seen, sent


def test_middleware_answers_400_with_the_field():
    _, sent = _call("/v1/completions", json.dumps({"deterministic": "true"}).encode())
    assert sent[0]["status"] == 400
    error = json.loads(sent[1]["body"])["error"]
    assert error["param"] == "deterministic" and "boolean" in error["message"]


def test_middleware_rewrites_and_fixes_content_length():
    seen, sent = _call("/generate", json.dumps({"text": "x", "sampling_params": {"deterministic": True}}).encode())
    assert not sent
    body = json.loads(seen["body"])
    assert is_marked(body["sampling_params"]["custom_params"])
    assert seen["length"] == str(len(seen["body"])).encode()


def test_middleware_passes_other_bodies_untouched():
    raw = json.dumps({"text": "x", "sampling_params": {"temperature": 0}}).encode()
    seen, sent = _call("/generate", raw)
    assert seen["body"] == raw and not sent


# --- the field at the top level of /generate ---

def test_top_level_flag_marks_every_item():
    body = {"text": "hi", "deterministic": True, "sampling_params": {"max_new_tokens": 4}}
    assert rewrite_body("/generate", body, enabled=True) == (None, True)
    assert "deterministic" not in body and is_marked(body["sampling_params"]["custom_params"])
    body = {"text": ["a", "b"], "deterministic": True}  # no sampling_params: one dict for the whole batch
    rewrite_body("/generate", body, enabled=True)
    assert is_marked(body["sampling_params"]["custom_params"])
    body = {"input_ids": [[1], [2]], "deterministic": True, "sampling_params": [None, {"deterministic": True}]}
    assert rewrite_body("/generate", body, enabled=True) == (None, True)
    assert all(is_marked(p["custom_params"]) and "deterministic" not in p for p in body["sampling_params"])


def test_top_level_false_marks_nothing():
    body = {"text": "hi", "deterministic": False, "sampling_params": {"regex": "a"}}
    assert rewrite_body("/generate", body, enabled=False) == (None, True)
    assert body == {"text": "hi", "sampling_params": {"regex": "a"}}


# --- decoded JSON: escapes, key order, encodings ---

def _decoded(raw: bytes):
    out, error = translate("/generate", raw, enabled=True)
    return (json.loads(out) if error is None else None), error


@pytest.mark.parametrize("raw", [
    rb'{"text": "x", "\u0064eterministic": true, "sampling_params": {"max_new_tokens": 2}}',
    rb'{"sampling_params": {"max_new_tokens": 2, "determin\u0069stic": true}, "text": "x"}',
    '{"text": "x", "deterministic": true}'.encode("utf-16"),
    '{"text": "x", "deterministic": true}'.encode("utf-32-le"),
])
def test_escaped_and_reencoded_flags_are_seen(raw):
    body, error = _decoded(raw)
    assert error is None and is_marked(body["sampling_params"]["custom_params"])
    assert "deterministic" not in json.dumps(body).replace("tokenweave_deterministic", "")


@pytest.mark.parametrize("raw, field", [
    (rb'{"text": "x", "sampling_params": {"custom_params": {"tokenweave\u005fdeterministic": true}, '
     rb'"regex": "a", "max_new_tokens": 0}}', "sampling_params.custom_params.tokenweave_deterministic"),
    (rb'{"text": "x", "\u0064eterministic": true, "sampling_params": {"regex": "a"}}', "sampling_params.regex"),
    (rb'{"text": "x", "sampling_params": {"deterministic": true, "custom_params": 5}}',
     "sampling_params.custom_params"),
    (b'{"text": ' + b"[" * 100000 + b"]" * 100000 + b', "deterministic": true}', "body"),
])
def test_escaped_bypasses_get_400(raw, field):
    _, error = _decoded(raw)
    assert error is not None and error.field == field


def test_bodies_without_our_fields_are_passed_on_unchanged():
    raw = b'{"text": "x", "sampling_params": {"temperature": 0}}'
    assert translate("/generate", raw, enabled=True) == (raw, None)
    assert translate("/generate", b"not json \\u", enabled=True) == (b"not json \\u", None)  # the route answers


def test_put_generate_is_checked_too():
    _, sent = _call("/generate", json.dumps({"text": "x", "sampling_params": {"deterministic": 2}}).encode(), "PUT")
    assert sent[0]["status"] == 400
    seen, sent = _call("/generate", json.dumps({"text": "x", "deterministic": True}).encode(), "PUT")
    assert not sent and is_marked(json.loads(seen["body"])["sampling_params"]["custom_params"])


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages", "/api/chat", "/api/generate"])
def test_other_generation_routes_refuse_the_flag(path):
    _, sent = _call(path, b'{"model": "m", "\\u0064eterministic": true}')
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["param"] == "deterministic"
    raw = b'{"model": "m", "deterministic": false}'
    seen, sent = _call(path, raw)
    assert not sent and seen["body"] == raw


# --- any decoded body: never an exception, never a marker the server did not set ---

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=12,
)
_keys = st.sampled_from(["text", "input_ids", "deterministic", "sampling_params", "custom_params", "regex",
                         "stop_regex", "lora_path", "image_data", "max_new_tokens", "max_tokens", "seed",
                         "messages", "tokenweave_deterministic", "tokenweave_validated", "return_hidden_states"])
_custom = st.dictionaries(st.sampled_from(["tokenweave_deterministic", "tokenweave_validated", "tokenweave_seed", "x"]),
                          st.one_of(st.booleans(), _json), max_size=3)
_field_values = st.one_of(_json, st.booleans(), _custom)
_params = st.dictionaries(_keys, _field_values, max_size=4)
_bodies = st.dictionaries(
    _keys, st.one_of(_field_values, _params, st.lists(st.one_of(st.none(), _params), max_size=3)), max_size=6,
)


def _forwarded_custom_params(path, body):
    """The custom_params objects SGLang forwards to the scheduler from a body of ``path``."""
    if path == "/generate":
        params = body.get("sampling_params")
        entries = params if isinstance(params, list) else [params]
    else:
        entries = [body] if path.startswith("/v1/c") else []
    return [e["custom_params"] for e in entries if isinstance(e, dict) and isinstance(e.get("custom_params"), dict)]


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(["/generate", "/v1/completions", "/v1/chat/completions", "/v1/responses"]),
       body=_bodies, enabled=st.booleans())
def test_any_body_is_answered_and_never_smuggles_a_marker(path, body, enabled):
    raw = json.dumps(body).encode()
    out, error = translate(path, raw, enabled=enabled)
    if error is not None:
        assert error.field and error.reason
        return
    sent = json.loads(out)
    for custom in _forwarded_custom_params(path, sent):
        if any(key.startswith(RESERVED_PREFIX) for key in custom):
            # only what the server set: the marker with its stamp, on a server with the feature
            assert enabled and custom.get(DETERMINISTIC_KEY) is True and custom.get(VALIDATED_KEY) is True
    if path == "/generate" and out != raw:
        params = sent.get("sampling_params")
        for entry in params if isinstance(params, list) else [params]:
            assert not (isinstance(entry, dict) and "deterministic" in entry)
        assert "deterministic" not in sent
