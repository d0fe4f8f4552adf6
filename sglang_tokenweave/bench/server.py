"""A server process (SGLang's entry point or our launcher) on a free local port: started, ready
when ``/health_generate`` answers, and always killed with its whole process tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import requests

START_TIMEOUT_S = float(os.environ.get("SGLANG_TOKENWEAVE_TEST_START_TIMEOUT", "600"))
# Uvicorn's message when the HTTP port was taken between ``free_port`` and the bind (SGLang's
# own processes pick ports during the minute a CPU start takes); the server then never answers.
PORT_TAKEN = "error while attempting to bind on address"
START_ATTEMPTS = 3
# SIGTERM first (SGLang shuts its children down), SIGKILL for whatever is left after this long.
KILL_GRACE_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    pass


# Servers started by this process and not killed yet (``kill_all``).
_RUNNING: set["ServerProcess"] = set()


def kill_all() -> None:
    """Kill every server this process started and has not killed yet."""
    for server in list(_RUNNING):
        server.kill()


class ServerProcess:
    """``python -m <module> --host 127.0.0.1 --port <free port> <args>``, its output in ``log_path``.

    The child's environment is ``base_env`` (default: this process's) updated with ``env``.
    """

    def __init__(self, module: str, args: list[str], log_path: Path, env: Mapping[str, str] | None = None,
                 base_env: Mapping[str, str] | None = None, start_timeout: float | None = None):
        self.log_path = Path(log_path)
        self.env = {**(os.environ if base_env is None else base_env), **(env or {})}
        timeout = START_TIMEOUT_S if start_timeout is None else start_timeout
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.cmd = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(self.port), *args]
            self._log = open(self.log_path, "w")
            # A session of its own, so teardown can kill the whole tree (SGLang spawns children).
            self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
            _RUNNING.add(self)
            try:
                self._wait_ready(timeout)
                return
            except PortTaken:
                self.kill()
                if attempt + 1 == START_ATTEMPTS:
                    raise
            except BaseException:
                self.kill()
                raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if PORT_TAKEN in self.log_text():
                raise PortTaken(f"port {self.port} taken before the server bound it:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/health_generate", timeout=30).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        raise TimeoutError(f"server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self) -> None:
        _RUNNING.discard(self)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=KILL_GRACE_S)
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
