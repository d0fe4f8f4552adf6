"""Name the SGLang child process whose end took the server down, and how it ended.

When a serving rank dies (the OOM killer's SIGKILL, a crash), the surviving ranks fail at their
next collective and ask the launcher to stop the whole process tree. SGLang's subprocess
watchdog, polling once a second, usually loses that race, and the log then shows only the
survivors' connection errors. Just before the launcher kills the tree, this logs every child the
watchdog watches (schedulers by rank, detokenizer) that has already ended with a failure.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger("sglang_tokenweave")

_watched: list[tuple[str, object]] = []  # (name, multiprocessing.Process), in the launcher only


def describe_exit(name: str, pid: int, exitcode: int) -> str:
    """A failed child's end in words (``exitcode`` as multiprocessing reports it: -N = signal N)."""
    if exitcode >= 0:
        return f"{name} (pid {pid}) exited with code {exitcode}"
    try:
        how = signal.Signals(-exitcode).name
    except ValueError:
        how = f"signal {-exitcode}"
    text = f"{name} (pid {pid}) was killed by {how}"
    if -exitcode == signal.SIGKILL:
        text += " (the kernel's OOM killer sends SIGKILL when memory runs out: see `dmesg`)"
    return text


def watch_children(result, watchdog, processes, process_names=None, *args, **kwargs):
    """After SGLang's SubprocessWatchdog is made: remember what it watches."""
    names = process_names or [f"process_{i}" for i in range(len(processes))]
    _watched.extend(zip(names, processes))


def report_failed_children(parent_pid=None, include_parent=True, *args, **kwargs):
    """Before SGLang kills this process's tree: log each watched child that ended with a failure."""
    if parent_pid != os.getpid() or not include_parent:
        return None
    try:
        for name, proc in _watched:
            code = proc.exitcode  # None while alive
            if code:
                logger.error("sglang-tokenweave: %s; the server stops", describe_exit(name, proc.pid, code))
    except Exception as error:  # never stand in the way of the shutdown
        logger.warning("sglang-tokenweave: could not check the child processes: %s", error)
    return None
