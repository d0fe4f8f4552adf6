"""The ``deterministic`` request field on SGLang's HTTP API, as an ASGI middleware.

SGLang's routes parse bodies into closed models (``SamplingParams`` rejects unknown keys), and
a streaming route reports errors inside a 200 event stream. So the field is checked and
translated before a route sees the body: an invalid request gets HTTP 400 naming the field and
the reason; a valid one continues with ``deterministic`` moved into ``custom_params`` (see
``markers``). Bodies that do not mention the field are not parsed at all.
"""

from __future__ import annotations

import json
from typing import Optional

from sglang_tokenweave.determinism.request_validation import (
    FIELD,
    RequestError,
    validate_generate_request,
    validate_openai_request,
)

from .markers import DETERMINISTIC_KEY, OUR_KEYS

GENERATE_PATH = "/generate"
OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")
_NEEDLES = (FIELD.encode(), b"tokenweave_")


def _clean_custom_params(params: dict, deterministic: bool) -> None:
    custom = params.get("custom_params")
    if isinstance(custom, dict):
        custom = {k: v for k, v in custom.items() if k not in OUR_KEYS}
    if deterministic:
        custom = {**(custom or {}), DETERMINISTIC_KEY: True}
    if custom is not None or "custom_params" in params:
        params["custom_params"] = custom or None


def rewrite_body(path: str, body: dict, *, enabled: bool) -> Optional[RequestError]:
    """Validate ``body`` for ``path`` and translate the field in place; an error means HTTP 400."""
    if path == GENERATE_PATH:
        error = validate_generate_request(body, enabled=enabled)
        if error:
            return error
        params = body.get("sampling_params")
        for entry in params if isinstance(params, list) else [params]:
            if isinstance(entry, dict):
                _clean_custom_params(entry, entry.pop(FIELD, False) is True)
        return None
    error = validate_openai_request(body, enabled=enabled)
    if error:
        return error
    _clean_custom_params(body, body.pop(FIELD, False) is True)
    return None


class DeterministicFieldMiddleware:
    """Pure ASGI middleware (the body is read once and replayed to the route)."""

    def __init__(self, app, enabled: bool):
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "POST" or (
            path != GENERATE_PATH and path not in OPENAI_PATHS
        ):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        if any(needle in raw for needle in _NEEDLES):
            raw, error = self._translate(path, raw)
            if error is not None:
                return await _send_json(send, 400, error.openai_body())
        return await self.app(_with_length(scope, len(raw)), _replay(raw, receive), send)

    def _translate(self, path: str, raw: bytes):
        try:
            body = json.loads(raw)
        except ValueError:
            return raw, None  # the route reports malformed JSON itself
        if not isinstance(body, dict):
            return raw, None
        error = rewrite_body(path, body, enabled=self.enabled)
        return (raw, error) if error else (json.dumps(body).encode(), None)


def _replay(raw: bytes, receive_more):
    """The body once, then the connection's own messages (so a real disconnect is still seen)."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive_more()

    return receive


def _with_length(scope, length: int):
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def install_middleware(*args, **kwargs):
    """Before-hook on SGLang's HTTP ``launch_server``: check the field on every request.

    Installed whenever the overlay runs, so that without --enable-deterministic-requests a
    deterministic request is refused with a reason instead of silently served as a normal one.
    """
    from sglang.srt.entrypoints.http_server import app

    from sglang_tokenweave.config import config_from_env

    if not any(getattr(m, "cls", None) is DeterministicFieldMiddleware for m in app.user_middleware):
        app.add_middleware(DeterministicFieldMiddleware,
                           enabled=config_from_env().enable_deterministic_requests)
    return None
