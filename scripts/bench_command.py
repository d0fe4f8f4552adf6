"""What a result file records of its run (the command line, the card, the commit, versions, the
inherited variables no benchmark process may get): kept for the scripts that import it from
here; the code lives in the harness (sglang_tokenweave/bench/record.py and sides.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sglang_tokenweave.bench.record import (  # noqa: E402,F401
    DROPPED, FILE_ARGS, ROOT, card_name, git_state, recorded_command, versions as package_versions,
)
from sglang_tokenweave.bench.sides import is_override  # noqa: E402


def env_overrides(environ: Mapping[str, str]) -> list[str]:
    """Inherited variables that would change one side of a comparison only: dropped from both."""
    return sorted(k for k in environ if is_override(k))
