"""The command line a result file records: enough to rerun it anywhere, nothing of the machine
it ran on (output folders are dropped, file arguments keep their names only)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DROPPED = ("--out-dir", "--output")  # where results went
FILE_ARGS = ("--model-path", "--tokenweave-config", "--model-config")


def recorded_command(script: str, argv: list[str]) -> str:
    out, skip = ["python", os.path.relpath(script, ROOT)], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        name, eq, value = arg.partition("=")
        if name in DROPPED:
            skip = not eq
            continue
        if i > 0 and argv[i - 1] in FILE_ARGS:
            arg = Path(arg).name
        elif eq and name in FILE_ARGS:
            arg = f"{name}={Path(value).name}"
        out.append(arg)
    return shlex.join(out)
