"""What a result file records of its run: the command line, enough to rerun it anywhere and
nothing of the machine it ran on (output folders are dropped, file arguments keep their names
only), the card, with the short name that result files are named by, the commit with a flag for
uncommitted changes, and the installed versions (from package metadata, never typed in); and
which inherited variables no benchmark process may get (they would change one side only)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DROPPED = ("--out-dir", "--output")  # where results went
# Inherited variables that would switch the overlay on, or change SGLang's all-reduce or its
# deterministic mode, for one side of a comparison only: no benchmark process gets them.
ENV_OVERRIDES = re.compile(r"^SGLANG_TOKENWEAVE(_ARGS)?$|^SGLANG_.*(ALL_?REDUCE|_AR_|SYMM_MEM|DETERMINISTIC)"
                           r"|^NCCL_(ALGO|PROTO)$")
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


def card_name(device: str = "cuda") -> tuple[str, str]:
    """The card's full name ("cpu" off CUDA) and its short name for file names ("h100", ...)."""
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "cpu"
    short = "h200" if "H200" in name else "h100" if "H100" in name else name.split()[-1].lower()
    return name, short


def git_state(root: Path = ROOT) -> dict:
    """The commit a run measured and whether tracked files differed from it (None: no git)."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        return {"sha": git("rev-parse", "HEAD").strip() or None,
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"sha": None, "dirty": None}


VERSIONED = ("torch", "sglang", "sglang-kernel", "flashinfer-python", "sglang-tokenweave")


def package_versions(names=VERSIONED) -> dict:
    """Installed versions as the package metadata states them (None: not installed)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def env_overrides(environ) -> list[str]:
    """The names in ``environ`` that ``ENV_OVERRIDES`` keeps from every benchmark process."""
    return sorted(k for k in environ if ENV_OVERRIDES.search(k))
