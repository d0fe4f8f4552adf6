"""Start a real SGLang server through our launcher for a test, and always kill its process tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

# Small KV pool: allocating SGLang's default pool on CPU takes most of a minute.
CPU_SERVER_ARGS = ["--max-total-tokens", "8192", "--mem-fraction-static", "0.5", "--log-level", "info"]
START_TIMEOUT_S = float(os.environ.get("SGLANG_TOKENWEAVE_TEST_START_TIMEOUT", "600"))
# When a request has had no output for this long, SGLang asks Starlette whether the client is
# still connected, and on a busy 2-core CPU that probe can answer "disconnected" for a live client
# (seen during start-up warm-up). Forwards of seconds are normal here, so probe later.
SERVER_ENV = {"SGLANG_REQUEST_STATE_WAIT_TIMEOUT": "300"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Uvicorn's message when the HTTP port was taken between ``free_port`` and the bind (SGLang's
# own processes pick ports during the minute a CPU start takes); the server then never answers.
PORT_TAKEN = "error while attempting to bind on address"
START_ATTEMPTS = 3


class PortTaken(RuntimeError):
    pass


class Server:
    def __init__(self, args: list[str], log_path: Path, env: dict | None = None,
                 launcher: str = "sglang_tokenweave.launch_server"):
        self.log_path = log_path
        if not any(a.split("=", 1)[0] in ("--model-path", "--model") for a in args):
            args = ["--model-path", "tiny", *args]  # the tests' model unless one is named
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            cmd = [sys.executable, "-m", launcher, "--host", "127.0.0.1",
                   "--port", str(self.port), *CPU_SERVER_ARGS, *args]
            self._log = open(log_path, "w")
            # A session of its own, so teardown can kill the whole tree (SGLang spawns children).
            self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **SERVER_ENV, **(env or {})}, start_new_session=True)
            try:
                self._wait_ready()
                return
            except PortTaken:
                self.kill()
                if attempt + 1 == START_ATTEMPTS:
                    raise
            except BaseException:
                self.kill()
                raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if PORT_TAKEN in self.log_path.read_text(errors="replace"):
                raise PortTaken(f"port {self.port} taken before the server bound it:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/health_generate", timeout=30).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        raise TimeoutError(f"server not ready after {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()

    def post(self, path: str, body: dict, timeout: float = 120) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=timeout)

    def get(self, path: str, timeout: float = 30) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout)
