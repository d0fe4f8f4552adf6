"""Whether the GPUs are free before a server starts: a fair run has the machine to itself.

A process left over from an earlier run (or anyone else's) holding GPU memory makes SGLang size
a smaller KV cache, can make it skip its prefill CUDA graphs, and competes for the GPU: the run
would measure that process as much as the server. Read with ``nvidia-smi``, so that the
benchmark itself never opens a CUDA context (which would hold memory of its own)."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Callable

# What an idle GPU reports used (driver reservations): a few MiB; a leftover SGLang server
# holds most of the card.
IDLE_MIB = 1024
QUERY = ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"]
# How long to wait for a GPU to be given back (a server just killed gives its memory back within
# a few seconds of exiting).
IDLE_WAIT_S = 60.0


def parse_used_mib(text: str) -> dict[int, int]:
    """{GPU index: MiB used} from ``nvidia-smi --query-gpu=index,memory.used`` output."""
    used = {}
    for line in text.strip().splitlines():
        index, mib = (field.strip() for field in line.split(","))
        used[int(index)] = int(mib)
    return used


def used_mib() -> dict[int, int] | None:
    """MiB used per GPU now, or None where ``nvidia-smi`` is not installed (a CPU machine)."""
    if shutil.which(QUERY[0]) is None:
        return None
    done = subprocess.run(QUERY, capture_output=True, text=True, timeout=60, check=True)
    return parse_used_mib(done.stdout)


def busy(used: dict[int, int] | None) -> dict[int, int]:
    """The GPUs of ``used`` that another process holds memory of."""
    return {gpu: mib for gpu, mib in (used or {}).items() if mib > IDLE_MIB}


def wait_until_idle(what: str, timeout: float | None = None, read: Callable[[], dict[int, int] | None] | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> dict[int, int] | None:
    """MiB used per GPU once every GPU is idle (None without ``nvidia-smi``); refuses to start
    ``what`` if some GPU is still held after ``timeout`` seconds (default ``IDLE_WAIT_S``)."""
    read = read or used_mib
    deadline = time.monotonic() + (IDLE_WAIT_S if timeout is None else timeout)
    while True:
        used = read()
        held = busy(used)
        if not held:
            return used
        if time.monotonic() >= deadline:
            raise RuntimeError(f"before {what}: GPU memory in use by another process (MiB per GPU: {held}); "
                               "a fair run needs the GPUs to itself: stop that process first")
        sleep(1.0)
