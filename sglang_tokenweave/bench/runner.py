"""A benchmark's runs, in the plan's order: per (repeat, side) a fresh server process on idle
GPUs, measured by the benchmark's callback and killed; each side's all-reduce path read from its
log (NVLink multicast refused), and at TP > 1 on GPUs the multicast pointer probed with the
servers' environment before the first server starts."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from . import gpu_memory
from .allreduce_log import allreduce_path, check_multicast_off
from .plan import interleaved
from .server import ServerProcess, kill_all
from .sides import MULTICAST_OFF, Launch, Side

Measure = Callable[[int, Side, ServerProcess], None]


class Runner:
    def __init__(self, launch: Launch, sides: Sequence[Side], tp: int, device: str, logs: Path,
                 start_timeout: float = 1200):
        names = [s.name for s in sides]
        if len(set(names)) != len(names):
            raise ValueError(f"side names repeat: {names}")
        self.launch, self.sides, self.tp, self.device = launch, list(sides), tp, device
        self.logs, self.start_timeout = Path(logs), start_timeout
        self.allreduce: dict[str, dict] = {}
        self.multicast_pointers: list[int] | str = "n/a"
        self.runs: list[dict] = []
        self.sitting = 0  # how many times the benchmark was resumed (checkpoint.py)

    def state(self) -> dict:
        """The complete runs so far, for a checkpoint."""
        return {"runs": [r for r in self.runs if "measure_s" in r], "allreduce": self.allreduce,
                "multicast_pointers": self.multicast_pointers, "sittings": self.sitting + 1}

    def restore(self, state: dict) -> None:
        """Continue after the runs of a checkpoint (``state()``): they are not run again."""
        self.runs, self.allreduce = list(state["runs"]), dict(state["allreduce"])
        self.multicast_pointers, self.sitting = state["multicast_pointers"], state["sittings"]

    def run(self, repeats: int, measure: Measure, after_run: Callable[[], None] | None = None) -> None:
        """Every (repeat, side) of the plan not run yet, each followed by ``after_run``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.tp > 1 and self.device == "cuda":
            from .multicast_probe import probe

            self.multicast_pointers = probe(self.tp, self.launch.child_env(self.sides[0]))
            if any(self.multicast_pointers):
                raise RuntimeError(f"NVLink multicast is on here (pointers {self.multicast_pointers}): refused")
        done = {(r["repeat"], r["side"]) for r in self.runs}
        with servers_killed_on_termination():
            for repeat, side in interleaved(self.sides, repeats):
                if (repeat, side.name) not in done:
                    self._run_one(repeat, side, measure)
                    if after_run is not None:
                        after_run()

    def _run_one(self, repeat: int, side: Side, measure: Measure) -> None:
        used = (gpu_memory.wait_until_idle(f"the {side.name} server of repeat {repeat}")
                if self.device == "cuda" else None)
        run = {"repeat": repeat, "side": side.name, "sitting": self.sitting, "gpu_memory_used_mib_before": used}
        self.runs.append(run)
        began = time.monotonic()
        server = ServerProcess(side.module, self.launch.args(side), self.logs / f"{side.name}_r{repeat}.log",
                               self.launch.env(side), base_env=self.launch.base_env,
                               start_timeout=self.start_timeout)
        run["start_s"] = round(time.monotonic() - began, 1)
        try:
            found = allreduce_path(server.log_text(), self.tp, self.device)
            check_multicast_off(found, f"{side.name} (repeat {repeat})")
            self.allreduce.setdefault(side.name, found)
            measure(repeat, side, server)
            run["measure_s"] = round(time.monotonic() - began - run["start_s"], 1)
        finally:
            stopping = time.monotonic()
            server.kill()
            run["stop_s"] = round(time.monotonic() - stopping, 1)

    def record(self) -> dict:
        """The sides as run (command, environment, all-reduce path), what both got alike, what was
        dropped from the inherited environment, and the run order."""
        sides = {s.name: {**self.launch.record(s), "allreduce": self.allreduce.get(s.name)} for s in self.sides}
        return {"sides": sides, "forced_on_both": self.launch.forced.record(), "machine_env": dict(MULTICAST_OFF),
                "dropped_inherited_env": self.launch.dropped_env, "multicast_pointers": self.multicast_pointers,
                "plan": self.runs}


@contextlib.contextmanager
def servers_killed_on_termination():
    """SIGTERM and SIGHUP (``timeout``, a closed terminal) kill the servers this process started,
    then end it as Ctrl-C would, by an exception. A server runs in a session of its own, so
    without this it outlives a benchmark cut short and holds the GPUs through the next one."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread
        yield
        return

    def terminate(signum, frame):
        kill_all()  # first: requests in flight to it then fail at once instead of finishing
        raise SystemExit(128 + signum)

    # A signal the caller ignores stays ignored (``nohup`` ignores SIGHUP).
    previous = {s: signal.signal(s, terminate) for s in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
