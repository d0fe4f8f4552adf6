"""The ``deterministic`` request field on SGLang's HTTP API, as an ASGI middleware.

SGLang's routes parse bodies into models (``GenerateReqInput`` drops unknown top-level keys;
``/generate``'s sampling_params are not checked at all: see ``sampling_params_types``), and a
streaming route reports errors inside a 200 event stream. So every body of the routes that
generate is decoded here, whatever the method, and checked before a route sees it (escapes and
key order do not matter): an invalid request gets HTTP 400 naming the field and the reason; a
valid one continues with ``deterministic`` moved into ``custom_params`` (see ``markers``). The
generation routes that do not serve deterministic requests refuse the field instead of
ignoring it.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Mapping, NamedTuple, Optional

from sglang_tokenweave.determinism.request_validation import (
    FIELD,
    RequestError,
    generate_flags,
    validate_generate_request,
    validate_openai_request,
)

from .markers import mark

GENERATE_PATH = "/generate"
OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")
# SGLang's other routes that generate (the Ollama ones are configurable, as in SGLang).
OTHER_GENERATION_PATHS = (
    "/v1/responses",
    "/v1/messages",
    os.environ.get("SGLANG_OLLAMA_CHAT_ROUTE", "/api/chat"),
    os.environ.get("SGLANG_OLLAMA_GENERATE_ROUTE", "/api/generate"),
)
_UNSUPPORTED_ROUTE = f"deterministic requests are served on {GENERATE_PATH}, {OPENAI_PATHS[0]} and {OPENAI_PATHS[1]} only"
# Checks one sampling_params object of /generate (``sampling_params_types``; none in unit tests).
ParamsCheck = Callable[[Mapping, str], Optional[RequestError]]


class Rewrite(NamedTuple):
    error: Optional[RequestError]  # HTTP 400 when set
    changed: bool  # the body was translated (it must be sent on re-encoded)


def _mark_entry(params: dict, deterministic: bool) -> None:
    params.pop(FIELD, None)
    if deterministic:
        params["custom_params"] = mark(params.get("custom_params"))


def _rewrite_generate(body: dict, enabled: bool, check_params: Optional[ParamsCheck]) -> Rewrite:
    error = validate_generate_request(body, enabled=enabled)
    if error:
        return Rewrite(error, False)
    params = body.get("sampling_params")
    if check_params is not None:
        for i, entry in enumerate(params if isinstance(params, list) else [params]):
            prefix = f"sampling_params[{i}]." if isinstance(params, list) else "sampling_params."
            if isinstance(entry, Mapping) and (error := check_params(entry, prefix)):
                return Rewrite(error, False)
    mentioned = FIELD in body or any(isinstance(entry, dict) and FIELD in entry
                                     for entry in (params if isinstance(params, list) else [params]))
    if not mentioned:
        return Rewrite(None, False)
    _, flags = generate_flags(body)
    body.pop(FIELD, None)
    if isinstance(params, list):
        for i, deterministic in enumerate(flags):
            if params[i] is None and deterministic:
                params[i] = {}
            if isinstance(params[i], dict):
                _mark_entry(params[i], deterministic)
    else:
        if params is None and flags[0]:
            params = body["sampling_params"] = {}
        if isinstance(params, dict):
            _mark_entry(params, flags[0])
    return Rewrite(None, True)


def rewrite_body(path: str, body: dict, *, enabled: bool, check_params: Optional[ParamsCheck] = None) -> Rewrite:
    """Validate the decoded ``body`` for ``path`` and translate the field in place."""
    if path == GENERATE_PATH:
        return _rewrite_generate(body, enabled, check_params)
    if path in OPENAI_PATHS:
        error = validate_openai_request(body, enabled=enabled)
        if error or FIELD not in body:
            return Rewrite(error, False)
        _mark_entry(body, body[FIELD])
        return Rewrite(None, True)
    if body.get(FIELD, False) is not False:
        return Rewrite(RequestError(FIELD, _UNSUPPORTED_ROUTE), False)
    return Rewrite(None, False)


def translate(path: str, raw: bytes, *, enabled: bool,
              check_params: Optional[ParamsCheck] = None) -> tuple[bytes, Optional[RequestError]]:
    """The body the route gets (or the 400 error) for the raw body of a request on ``path``."""
    if not raw:
        return raw, None
    try:
        body = json.loads(raw)
    except ValueError:
        return raw, None  # the route reports malformed JSON itself
    except RecursionError:
        return raw, RequestError("body", "JSON nested too deeply")
    if not isinstance(body, dict):
        return raw, None
    error, changed = rewrite_body(path, body, enabled=enabled, check_params=check_params)
    if error or not changed:
        return raw, error
    return json.dumps(body).encode(), None


class DeterministicFieldMiddleware:
    """Pure ASGI middleware (the body is read once and replayed to the route)."""

    def __init__(self, app, enabled: bool, check_params: Optional[ParamsCheck] = None):
        self.app = app
        self.enabled = enabled
        self.check_params = check_params
        self.paths = {GENERATE_PATH, *OPENAI_PATHS, *OTHER_GENERATION_PATHS}

    async def __call__(self, scope, receive, send):
        # Every method: SGLang serves /generate on POST and PUT, and may add others.
        if scope["type"] != "http" or scope.get("path", "") not in self.paths:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw, error = translate(scope["path"], b"".join(chunks), enabled=self.enabled, check_params=self.check_params)
        if error is not None:
            return await _send_json(send, 400, error.openai_body())
        return await self.app(_with_length(scope, len(raw)), _replay(raw, receive), send)


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

    from sglang_tokenweave.glue.process_state import overlay_config
    from sglang_tokenweave.glue.sampling_params_types import check_sampling_params

    if not any(getattr(m, "cls", None) is DeterministicFieldMiddleware for m in app.user_middleware):
        app.add_middleware(DeterministicFieldMiddleware, enabled=overlay_config().enable_deterministic_requests,
                           check_params=check_sampling_params)
    return None
