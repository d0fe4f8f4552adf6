"""The `deterministic` field on the HTTP API: validation and translation into custom_params,
and the ASGI middleware that applies them (no server, no SGLang)."""

import asyncio
import json

import pytest

from sglang_tokenweave.determinism_glue.http_api import DeterministicFieldMiddleware, rewrite_body
from sglang_tokenweave.determinism_glue.markers import DETERMINISTIC_KEY, is_marked


def test_generate_flag_moves_into_custom_params():
    body = {"text": "hi", "sampling_params": {"deterministic": True, "temperature": 0.8, "sampling_seed": 7}}
    assert rewrite_body("/generate", body, enabled=True) is None
    params = body["sampling_params"]
    assert "deterministic" not in params
    assert is_marked(params["custom_params"]) and params["sampling_seed"] == 7


def test_false_flag_is_removed_and_marks_nothing():
    body = {"text": "hi", "sampling_params": {"deterministic": False}}
    assert rewrite_body("/generate", body, enabled=False) is None
    assert body["sampling_params"] == {}


def test_clients_cannot_set_the_marker_themselves():
    body = {"text": "hi", "sampling_params": {"custom_params": {DETERMINISTIC_KEY: True, "mine": 1}}}
    assert rewrite_body("/generate", body, enabled=True) is None
    assert body["sampling_params"]["custom_params"] == {"mine": 1}


def test_batched_generate_marks_only_deterministic_entries():
    body = {"text": ["a", "b"], "sampling_params": [{"deterministic": True}, {"temperature": 0.5}]}
    assert rewrite_body("/generate", body, enabled=True) is None
    assert is_marked(body["sampling_params"][0]["custom_params"])
    assert "custom_params" not in body["sampling_params"][1]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_openai_body_field(path):
    body = {"model": "m", "deterministic": True, "seed": 3, "custom_params": {"x": 1}}
    assert rewrite_body(path, body, enabled=True) is None
    assert "deterministic" not in body and body["seed"] == 3
    assert body["custom_params"] == {"x": 1, DETERMINISTIC_KEY: True}


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
    error = rewrite_body(path, body, enabled=True)
    assert error is not None and error.field == field and error.reason


def test_disabled_server_refuses_deterministic_requests():
    error = rewrite_body("/v1/completions", {"deterministic": True}, enabled=False)
    assert error is not None and "--enable-deterministic-requests" in error.reason


def _call(path, payload: bytes):
    seen, sent = {}, []

    async def app(scope, receive, send):
        message = await receive()
        seen["body"] = message["body"]
        seen["length"] = dict(scope["headers"]).get(b"content-length")

    async def receive():
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", b"1")]}
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
