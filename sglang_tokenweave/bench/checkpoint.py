"""A benchmark cut short goes on where it stopped (``--resume``), on the same machine and code.

A server start takes one to two minutes on a GPU machine (SGLang captures its prefill and decode
CUDA graphs in every fresh process), so three sides x three repeats may not fit one sitting.
After each complete (repeat, side) run the benchmark saves what it measured so far beside its
logs; ``--resume`` reruns nothing that finished and continues the same interleaved plan. A run
cut off mid-way is not saved and runs again whole.

Resuming is refused where the comparison would no longer be fair: other arguments, another
commit or other uncommitted changes, another card or other GPUs (compared by a digest of their
UUIDs, which the result never shows)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable

from .record import ROOT, git_state, write_json

FORMAT = "sglang-tokenweave-bench-checkpoint/1"
NOT_ARGUMENTS = ("--resume",)  # what may differ between the sittings of one run


class CheckpointMismatch(RuntimeError):
    pass


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def machine_digest() -> str:
    """The GPUs by UUID where ``nvidia-smi`` is installed, else the host name: a digest."""
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=60, check=True)
        return _digest(done.stdout.strip())
    return _digest(socket.gethostname())


def code_state(root: Path = ROOT) -> dict:
    """The commit, and a digest of the uncommitted changes to tracked files where there are any."""
    state = git_state(root)
    if state.get("dirty"):
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=root, capture_output=True, text=True)
        state["diff"] = _digest(diff.stdout)
    return state


def identity(argv: list[str], card: str) -> dict:
    """What must be equal for two sittings to make one result."""
    return {"arguments": [a for a in argv if a not in NOT_ARGUMENTS], "code": code_state(), "card": card,
            "machine": machine_digest()}


class Checkpoint:
    """``path``: where it is kept; ``ident``: ``identity(...)`` of this sitting."""

    def __init__(self, path: Path, ident: dict):
        self.path, self.ident = Path(path), ident

    @classmethod
    def of_result(cls, result: Path, argv: list[str], card: str) -> "Checkpoint":
        """The checkpoint of the result file ``result``, kept with its server logs (not committed)."""
        return cls(result.parent / "logs" / result.stem / "checkpoint.json", identity(argv, card))

    def start(self, resume: bool, runner, restore_bench: Callable[[object], None]) -> None:
        """Afresh (an old checkpoint removed), or with ``resume`` where one was saved: ``runner``
        takes back its ``state()``, the benchmark its own by ``restore_bench``."""
        saved = self.load() if resume else None
        if saved is None:
            self.remove()
            if resume:
                print(f"--resume: no checkpoint at {self.path}; starting afresh", flush=True)
            return
        runner.restore(saved["runner"])
        restore_bench(saved["bench"])
        done = ", ".join(f"{r['side']} r{r['repeat']}" for r in saved["runner"]["runs"])
        print(f"--resume: {len(saved['runner']['runs'])} runs done ({done}); going on", flush=True)

    def saver(self, runner, bench_state: Callable[[], object]) -> Callable[[], None]:
        """What the runner calls after each complete run."""
        return lambda: self.save(runner.state(), bench_state())

    def load(self) -> dict | None:
        """The saved runs and state ({"runner": ..., "bench": ...}), or None if there is none;
        raises ``CheckpointMismatch`` where it was made by another command, code or machine."""
        if not self.path.exists():
            return None
        saved = json.loads(self.path.read_text())
        if saved.get("format") != FORMAT:
            raise CheckpointMismatch(f"{self.path}: not a checkpoint of this harness ({saved.get('format')!r})")
        differ = [k for k in self.ident if saved["identity"].get(k) != self.ident[k]]
        if differ:
            raise CheckpointMismatch(
                f"cannot resume: the checkpoint's {', '.join(differ)} differ from this run's (a fair comparison "
                f"runs every repeat with the same arguments, code and machine); run again without --resume")
        return {"runner": saved["runner"], "bench": saved["bench"]}

    def save(self, runner: dict, bench) -> None:
        write_json(self.path, {"format": FORMAT, "identity": self.ident, "runner": runner, "bench": bench})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def keyed(items: dict) -> list:
    """A dict with tuple keys as JSON: [[*key, value], ...]."""
    return [[*key, value] for key, value in items.items()]


def unkeyed(rows: list) -> dict:
    """The inverse of ``keyed``."""
    return {tuple(row[:-1]): row[-1] for row in rows}
