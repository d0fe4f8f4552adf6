"""Pinned upstream versions, read from ``pins.txt`` (the single source), and the start-up check."""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

PINS_FILE = Path(__file__).with_name("pins.txt")


class VersionMismatch(RuntimeError):
    pass


@functools.cache
def pinned_versions() -> dict[str, str]:
    """{distribution name: version} for every ``name==version`` line of pins.txt."""
    pins = {}
    for line in PINS_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def check_sglang_version(installed: str | None = None) -> str:
    """Refuse to run on any SGLang but the pinned one: every patch target was checked there."""
    pinned = pinned_versions()["sglang"]
    if installed is None:
        try:
            installed = importlib.metadata.version("sglang")
        except importlib.metadata.PackageNotFoundError:
            raise VersionMismatch(f"sglang-tokenweave needs sglang=={pinned}, but sglang is not installed")
    if installed != pinned:
        raise VersionMismatch(
            f"sglang-tokenweave is built for sglang=={pinned}, but sglang=={installed} is installed; "
            f"install the pinned version (pip install sglang=={pinned})"
        )
    return installed
