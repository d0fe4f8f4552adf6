"""Where a server's scheduler spends its host time during a loaded run: py-spy, summarised.

A small model on a fast GPU makes serving host-bound (the overlap scheduler's CPU work per step
takes longer than the step's kernels), so every microsecond the overlay adds to a step shows in
throughput. ``record(server_pid, summary_path, raw_path)`` samples the TP-0 scheduler process of
the server while the ``with`` block runs (``py-spy record --nonblocking``: the process is never
paused), keeps py-spy's raw stacks (flame-graph tools read them) and writes a summary per
function: self and inclusive shares of the samples, and the inclusive share of every frame of
this package.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

PACKAGE = "sglang_tokenweave"


def scheduler_pid(server_pid: int) -> int:
    """The TP-0 scheduler process of a server started in its own process group."""
    found = subprocess.run(["pgrep", "-g", str(server_pid), "-f", "sglang::scheduler"],
                           capture_output=True, text=True).stdout.split()
    if not found:
        raise RuntimeError(f"no sglang::scheduler process in process group {server_pid}")
    return min(int(pid) for pid in found)  # started first: TP rank 0


@contextlib.contextmanager
def record(server_pid: int, summary_path: Path, raw: Path, rate_hz: int = 200):
    if shutil.which("py-spy") is None:
        raise SystemExit("--profile-scheduler needs py-spy (pip install py-spy)")
    spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", str(rate_hz), "-f", "raw",
                            "-o", str(raw), "-p", str(scheduler_pid(server_pid))],
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(1.0)  # py-spy attaches before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        spy.wait(timeout=120)
    summary_path.write_text(summary(raw.read_text()))


def _function(frame: str) -> str:
    """``name (file.py:123)`` -> ``name (file.py)``: one entry per function, not per line."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if name else frame


def summary(raw: str, top: int = 40) -> str:
    """py-spy's raw format: one ``frame;frame;...;frame count`` line per distinct stack."""
    self_samples, inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";")]
        total += n
        self_samples[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples\n"

    def rows(counter, keep=lambda _: True, limit=None):
        picked = [(f, n) for f, n in counter.most_common() if keep(f)][:limit]
        return "".join(f"{100 * n / total:6.2f}%  {f}\n" for f, n in picked)

    return (f"{total} samples\n\n== self (top {top})\n" + rows(self_samples, limit=top)
            + f"\n== inclusive (top {top})\n" + rows(inclusive, limit=top)
            + f"\n== inclusive, frames of {PACKAGE}\n" + rows(inclusive, lambda f: PACKAGE in f))
