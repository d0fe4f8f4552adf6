"""The test harness's server start survives a port taken between choosing it and binding it."""

import socket

import serving

from sglang_tokenweave.bench import server as harness_server


def test_a_taken_port_is_given_up_for_another(tmp_path, monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        choices = iter([taken])
        choose = harness_server.free_port
        monkeypatch.setattr(harness_server, "free_port", lambda: next(choices, None) or choose())
        server = serving.Server([], tmp_path / "server.log")
        try:
            assert server.port != taken
            assert server.post("/generate", {"text": "a", "sampling_params": {"max_new_tokens": 2}}).status_code == 200
        finally:
            server.kill()
