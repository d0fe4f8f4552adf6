"""The tests' server: our launcher with a small KV pool, started through the benchmark harness's
server process (sglang_tokenweave/bench/server.py), so tests and benchmarks start servers alike."""

from __future__ import annotations

from pathlib import Path

from sglang_tokenweave.bench.server import (  # noqa: F401
    PORT_TAKEN,
    START_ATTEMPTS,
    START_TIMEOUT_S,
    PortTaken,
    ServerProcess,
    free_port,
)
from sglang_tokenweave.bench.sides import CPU_SERVER_ARGS, OURS_MODULE
from sglang_tokenweave.bench.sides import CPU_SERVER_ENV as SERVER_ENV

LOG_ARGS = ["--log-level", "info"]


class Server(ServerProcess):
    def __init__(self, args: list[str], log_path: Path, env: dict | None = None, small_pool: bool = True,
                 launcher: str = OURS_MODULE):
        """``small_pool=False``: SGLang's default memory settings (a pool sized from free memory);
        ``launcher``: the module started (stock: ``sglang.launch_server``). Serves the built-in tiny
        model unless ``args`` name one."""
        if not any(a.split("=", 1)[0] in ("--model-path", "--model") for a in args):
            args = ["--model-path", "tiny", *args]
        pool = CPU_SERVER_ARGS if small_pool else LOG_ARGS
        super().__init__(launcher, [*pool, *args], log_path, {**SERVER_ENV, **(env or {})})
