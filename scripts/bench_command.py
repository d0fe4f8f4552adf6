"""What a result file records of its run (the command line, the card): kept for the scripts
that import it from here; the code lives in the harness (sglang_tokenweave/bench/record.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sglang_tokenweave.bench.record import DROPPED, FILE_ARGS, ROOT, card_name, recorded_command  # noqa: E402,F401
