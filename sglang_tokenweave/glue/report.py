"""Which overlay features each SGLang process runs with: in the log and over HTTP.

Each scheduler / TP worker process writes its report as a JSON file into the run folder that
the launcher created (``SGLANG_TOKENWEAVE_RUN_DIR``); the HTTP server process serves them all
at ``GET /tokenweave/status``, so a client can see that the hooks ran in every child process.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger("sglang_tokenweave")

RUN_DIR_ENV = "SGLANG_TOKENWEAVE_RUN_DIR"
STATUS_ROUTE = "/tokenweave/status"

# This process's report; features add their status (e.g. a fallback and its reason) to it.
_report: dict = {"pid": os.getpid(), "hooks": [], "features": {}}


def note_hooks(targets: list[str], configured_features: list[str]) -> None:
    _report["pid"] = os.getpid()
    _report["hooks"] = sorted(targets)
    for feature in configured_features:
        _report["features"].setdefault(feature, {"active": True, "reason": "enabled by flag"})


def set_feature_status(feature: str, active: bool, reason: str) -> None:
    """Record (and log once) whether a feature runs in this process, and why."""
    _report["features"][feature] = {"active": active, "reason": reason}
    logger.info("sglang-tokenweave: %s %s (%s)", feature, "active" if active else "off", reason)
    _write()


def publish(key: str, value) -> None:
    """Add or replace one entry of this process's report (counters, pool sizes...)."""
    _report[key] = value
    _write()


def record_scheduler_process(result, scheduler, *args, **kwargs):
    """After-hook on Scheduler.__init__: this process is a scheduler / TP worker."""
    _report.update(
        role="scheduler",
        tp_rank=scheduler.ps.tp_rank,
        tp_size=scheduler.ps.tp_size,
        device=str(getattr(getattr(scheduler, "server_args", None), "device", None)),
    )
    logger.info(
        "sglang-tokenweave active in scheduler tp_rank=%s pid=%d: features=%s hooks=%d",
        _report["tp_rank"], _report["pid"], _report["features"], len(_report["hooks"]),
    )
    _write()


def _write() -> None:
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir or "role" not in _report:
        return
    path = Path(run_dir) / f"process-{_report['pid']}.json"
    fd, tmp = tempfile.mkstemp(dir=run_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_report, f)
    os.replace(tmp, path)  # readers never see half a file


def read_all(run_dir: str | None = None) -> list[dict]:
    run_dir = run_dir or os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return []
    reports = [json.loads(p.read_text()) for p in Path(run_dir).glob("process-*.json")]
    return sorted(reports, key=lambda r: (r.get("role", ""), r.get("tp_rank") or 0, r["pid"]))


def add_status_route(*args, **kwargs):
    """Before-hook on SGLang's HTTP ``launch_server``: serve the reports next to SGLang's routes."""
    from sglang.srt.entrypoints.http_server import app

    from sglang_tokenweave.glue.process_state import overlay_config

    if any(getattr(r, "path", None) == STATUS_ROUTE for r in app.routes):
        return None

    async def tokenweave_status():
        config = overlay_config()
        return {"overlay": {"features": config.active_features(), "flags": config.to_argv()},
                "processes": read_all()}

    app.add_api_route(STATUS_ROUTE, tokenweave_status, methods=["GET"])
    return None
