"""Fail the image build when an installed upstream package differs from its pin.

The base image is chosen by a build argument, so this is the check that the image really holds
the versions of sglang_tokenweave/pins.txt. Exit status 1 and one line per mismatch otherwise.
"""

from __future__ import annotations

import importlib.metadata
import sys
from typing import Callable, Mapping

from packaging.version import Version


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def pin_mismatches(pins: Mapping[str, str], installed: Callable[[str], str | None]) -> list[str]:
    """One message per pin that the installed packages do not satisfy.

    A local build label is ignored (torch 2.11.0+cu130 satisfies torch==2.11.0), as pip does.
    """
    problems = []
    for name, pinned in sorted(pins.items()):
        found = installed(name)
        if found is None:
            problems.append(f"{name}=={pinned} is pinned but not installed")
        elif Version(found).public != Version(pinned).public:
            problems.append(f"{name}=={pinned} is pinned but {name}=={found} is installed")
    return problems


def main() -> int:
    from sglang_tokenweave.versions import pinned_versions

    problems = pin_mismatches(pinned_versions(), installed_version)
    for line in problems:
        print(f"verify_pins: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
