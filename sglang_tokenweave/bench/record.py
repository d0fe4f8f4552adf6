"""What a result file records of its run, computed, never typed: the date, the git commit and
whether the tree had uncommitted changes, the card, the versions of SGLang, torch and ours,
and the command line (enough to rerun it anywhere, nothing of the machine it ran on)."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]  # the repository, where the package is used from a checkout
RESULTS_EXCLUDED = ":(exclude)benchmarks/results"  # a run's own outputs do not make the tree dirty
DROPPED = ("--out-dir", "--output")  # where results went
FILE_ARGS = ("--model-path", "--tokenweave-config", "--model-config")
FORMAT = "sglang-tokenweave-bench/1"


def git_state(root: Path = ROOT) -> dict:
    """{sha, dirty}: the checked-out commit, and whether tracked or new files differ from it
    (outside benchmarks/results). sha None outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    sha = git("rev-parse", "HEAD")
    if sha.returncode != 0:
        return {"sha": None, "dirty": None}
    status = git("status", "--porcelain", "--", ".", RESULTS_EXCLUDED)
    return {"sha": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Installed versions, as the package metadata says (ours: with the git state beside it)."""
    out = {"python": platform.python_version(), "sglang": _version("sglang"), "torch": _version("torch"),
           "sglang_tokenweave": _version("sglang-tokenweave")}
    try:
        import torch

        if torch.cuda.is_available():
            out["cuda"] = torch.version.cuda
            out["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    except ImportError:
        pass
    return out


def card_name(device: str = "cuda") -> tuple[str, str]:
    """The card's full name ("cpu" off CUDA) and its short name for file names ("h100", ...)."""
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "cpu"
    short = "h200" if "H200" in name else "h100" if "H100" in name else name.split()[-1].lower()
    return name, short


def recorded_command(script: str, argv: Sequence[str], root: Path = ROOT) -> str:
    """The command line as run, rerunnable anywhere: output folders dropped, file arguments by
    name only."""
    out, skip = ["python", os.path.relpath(script, root)], False
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


def header(benchmark: str, script: str, argv: Sequence[str], device: str = "cuda", gpus: int | None = None) -> dict:
    """The fields every result of the harness starts with (``script``: a file of the repository's
    ``scripts/``, whose checkout the git state is taken of)."""
    root = Path(script).resolve().parents[1]
    card, _ = card_name(device)
    return {"format": FORMAT, "benchmark": benchmark,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git": git_state(root), "card": card, "gpus": gpus, "versions": versions(),
            "command": recorded_command(script, argv, root)}


def write_json(path: Path, data: dict) -> None:
    """Written whole, then renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
