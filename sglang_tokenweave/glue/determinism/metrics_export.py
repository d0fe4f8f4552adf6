"""Counters of deterministic serving on SGLang's Prometheus endpoint and on /tokenweave/status.

SGLang serves /metrics from its HTTP process in prometheus_client's multiprocess mode; counters
created in a scheduler process (after SGLang set PROMETHEUS_MULTIPROC_DIR) appear there. Only
TP rank 0 exports, since every rank runs the same verifications.
"""

from __future__ import annotations

import time
from typing import Optional

from sglang_tokenweave.glue import report
from sglang_tokenweave.determinism.metrics import MISMATCH_OFFSET_BUCKETS, PASS_PHASES, DeterminismMetrics

PREFIX = "sglang_tokenweave:deterministic_"
# counter name -> (DeterminismMetrics field, help text)
COUNTERS = {
    "requests": ("requests", "Deterministic requests (choices) admitted."),
    "verification_passes": ("verification_passes", "Fixed-shape verification passes run."),
    "verification_seconds": ("verification_seconds", "Wall time of verification passes (the batch waits)."),
    **{f"verification_{phase}_seconds": (f"verification_{phase}_seconds", f"Wall time of verification passes: {what}.")
       for phase, what in zip(PASS_PHASES, ("building the batch", "launching the forward",
                                            "sampling and waiting for the result", "applying the commits"))},
    "verification_drains": ("verification_drains", "Times the overlap scheduler's steps in flight were processed "
                            "early, before a verification pass."),
    "verification_drain_seconds": ("verification_drain_seconds", "Wall time of those early processings (the "
                                   "host waits for the GPU's steps there)."),
    "tokens_verified": ("tokens_verified", "Fast-path tokens checked by a verification pass."),
    "tokens_rolled_back": ("tokens_rolled_back", "Fast-path tokens dropped by verification."),
    "rollback_events": ("rollback_events", "Verifications that dropped at least one token."),
    "restarts": ("restarts", "Retractions that restarted a deterministic request."),
    "isolated_prefills": ("isolated_prefills", "Prefill batches (chunks) run for one deterministic request alone."),
    "fast_path_steps": ("fast_path_steps", "Decode steps that sampled deterministic rows."),
    "sampler_seconds": ("sampler_seconds", "Host time of seeded sampling of deterministic rows."),
    "tokens_verified_greedy": ("tokens_verified_greedy", "Verified tokens of greedy requests."),
    "tokens_rolled_back_greedy": ("tokens_rolled_back_greedy", "Rolled-back tokens of greedy requests."),
    **{name: (name, f"First mismatches at offsets {name.removeprefix('mismatch_offset_').replace('_', '-')} "
                    "of their verified window.")
       for _, name in MISMATCH_OFFSET_BUCKETS},
}

# The status report is a file, rewritten at most this often while busy (and when idle):
# writing it on every verification pass would cost the waiting batch a millisecond or two.
REPORT_INTERVAL_S = 0.5

_exporting = False
_counters: dict = {}
_exported: dict[str, float] = {}
_last_report = 0.0
_unreported: Optional[dict] = None


def init(scheduler) -> None:
    global _exporting
    _exporting = scheduler.ps.tp_rank == 0
    if not _exporting or not scheduler.server_args.enable_metrics:
        return
    from prometheus_client import Counter

    for name, (_, help_text) in COUNTERS.items():
        _counters[name] = Counter(PREFIX + name, help_text)


def publish(metrics: DeterminismMetrics, snapshot: Optional[dict] = None) -> None:
    global _unreported
    if not _exporting:
        return
    snapshot = snapshot or metrics.snapshot()
    for name, (field, _) in COUNTERS.items():
        delta = snapshot[field] - _exported.get(name, 0)
        if delta > 0 and name in _counters:
            _counters[name].inc(delta)
        _exported[name] = snapshot[field]
    _unreported = snapshot
    _report_if_due(time.monotonic())


def _report_if_due(now: float) -> None:
    """The counters ride along in this package's process report."""
    global _last_report, _unreported
    if _unreported is not None and now - _last_report >= REPORT_INTERVAL_S:
        _last_report = now
        report.publish("deterministic_metrics", _unreported)
        _unreported = None


_last_pool_report = 0.0


def report_idle_pool(result, scheduler, *args, **kwargs):
    """After-hook on ``Scheduler.on_idle``: publish the KV pool's free size (free slots plus
    what the prefix cache could evict), so a client can check that rollbacks leak nothing;
    and the latest counters."""
    global _last_pool_report
    now = time.monotonic()
    if not _exporting:
        return None
    _report_if_due(now)
    if now - _last_pool_report < REPORT_INTERVAL_S:
        return None
    _last_pool_report = now
    free = scheduler.token_to_kv_pool_allocator.available_size() + scheduler.tree_cache.evictable_size()
    report.publish("kv_pool_idle", {"free_tokens": int(free), "total_tokens": int(scheduler.max_total_num_tokens)})
    return None
