"""Write benchmarks/README.md, the index of benchmarks/results/<benchmark>/*.json (date, card,
command and headline ratio of every result), from the JSON files themselves. Run it after
adding a result:

    python scripts/bench_index.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sglang_tokenweave.bench.results import write_index  # noqa: E402


def main() -> None:
    print(f"wrote {write_index(ROOT)}")


if __name__ == "__main__":
    main()
