"""What SGLang's router (sglang-router 0.3.2) forwards of a deterministic request, seen by a
stand-in worker that records the bodies it receives (no SGLang server needed).

The router parses /generate and /v1/chat/completions bodies into its own request types and
serialises those: fields it does not know, ``deterministic`` among them, are dropped, so behind
the router such a request runs as an ordinary one. /v1/completions keeps unknown fields, so a
deterministic request reaches the replica there (docker/README.md says so to users).
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from router_process import Router

COMPLETION = {"id": "x", "object": "text_completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
CHAT = {**COMPLETION, "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


class _Worker(BaseHTTPRequestHandler):
    received: dict = {}

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # health, model and server info: enough for the router to accept the worker
        if self.path.startswith("/v1/models"):
            return self._reply({"object": "list", "data": [{"id": "m", "object": "model"}]})
        return self._reply({"model_path": "m", "is_generation": True, "tp_size": 1, "dp_size": 1})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.received[self.path] = body
        if self.path == "/v1/chat/completions":
            return self._reply(CHAT)
        if self.path == "/v1/completions":
            return self._reply(COMPLETION)
        return self._reply({"text": "ok", "output_ids": [1], "meta_info": {}})

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    worker = ThreadingHTTPServer(("127.0.0.1", 0), _Worker)
    threading.Thread(target=worker.serve_forever, daemon=True).start()
    router = Router([f"http://127.0.0.1:{worker.server_port}"], tmp_path_factory.mktemp("router") / "router.log")
    yield router
    router.kill()
    worker.shutdown()


def _forwarded(router, path, body):
    assert requests.post(router.url + path, json=body, timeout=60).status_code == 200
    return _Worker.received[path]


def test_completions_keep_the_deterministic_field(router):
    body = _forwarded(router, "/v1/completions", {"model": "m", "prompt": "hi", "max_tokens": 3, "seed": 5,
                                                  "deterministic": True})
    assert body["deterministic"] is True and body["seed"] == 5


def test_generate_and_chat_lose_it(router):
    body = _forwarded(router, "/generate", {"text": "hi", "sampling_params": {
        "max_new_tokens": 3, "temperature": 0.8, "sampling_seed": 5, "deterministic": True}})
    assert body["sampling_params"]["sampling_seed"] == 5
    assert "deterministic" not in body["sampling_params"]
    body = _forwarded(router, "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                       "max_tokens": 3, "seed": 5, "deterministic": True})
    assert body["seed"] == 5 and "deterministic" not in body
