"""Scheduler hooks of deterministic requests: what runs when, and what the client sees.

- The overlap scheduler stays on, deterministic requests in the batch or not. Its one-step lag
  (a step's result is processed after the next step is launched) matters only where a request
  must be verified: a pass must see every token, and a request must not go into a step past
  its last allowed proposal. So when some deterministic request is blocked, or will be once
  the step in flight arrives (full lookahead blocks or the length limit, both known in
  advance), the steps in flight are processed first, then the pass runs, then the next batch
  is chosen: one synchronization per pass, not per step. A fast-path finish (EOS, stop string)
  is found only when its step is processed, after the next step was launched with the request
  in it; that step's token was never a proposal and is dropped (its KV slot is freed before
  the pass). (PD disaggregation or pipeline parallelism: the overlap scheduler is turned off,
  logged.)
- Prefill: a deterministic request is prefilled alone, without prefix-cache reuse and without
  inserting its KV into the shared cache (its prompt's KV must be its own isolated prefill's).
  Chunks are cut at fixed multiples of the chunk size, since the batch holds nothing else.
- Finish checks run on committed tokens (``state``); a fast-path finish only makes the request
  due for verification.
- Only committed tokens are streamed; verification runs before each next batch is chosen.
- Retraction restarts the request from its prompt; tokens the client has are not resent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from array import array
from collections import Counter

from sglang_tokenweave.glue import report
from sglang_tokenweave.determinism.state import Phase
from sglang_tokenweave.determinism.verify_graph import choose_verify_graph, full_graph_error

from . import metrics_export
from .markers import is_deterministic_req
from .runtime import det_for, det_of, runtime
from .verifier import sglang_finish_reason, verify_due
from .verify_graph import FEATURE as VERIFY_GRAPH_FEATURE

logger = logging.getLogger("sglang_tokenweave")
FEATURE = "deterministic_requests"
SOURCE = "sglang-tokenweave --enable-deterministic-requests"
# Attention backends whose extend kernels compute each row from that row alone.
PINNED_ATTENTION = ("triton", "torch_native")


def prepare_scheduler(scheduler, server_args, *args, **kwargs):
    """Before-hook on ``Scheduler.__init__``: say how the overlap scheduler serves deterministic
    requests (or turn it off where its loop is not the one ``verify_before_scheduling`` knows)."""
    if not server_args.disable_overlap_schedule:
        if server_args.disaggregation_mode != "null" or server_args.pp_size > 1:
            server_args.override(SOURCE, disable_overlap_schedule=True)
            logger.warning("sglang-tokenweave: overlap scheduler turned off for the whole server: "
                           "deterministic requests roll tokens back, which needs each step's result "
                           "before the next step is scheduled")
            report.set_feature_status("overlap_schedule", False, "turned off by --enable-deterministic-requests "
                                      "(PD disaggregation or pipeline parallelism)")
        else:
            logger.info("sglang-tokenweave: overlap scheduler kept; it waits for the steps in flight "
                        "only before a verification pass of deterministic requests")
            report.set_feature_status("overlap_schedule", True, "kept; synchronized only before the "
                                      "verification passes of deterministic requests")
    if server_args.enable_mixed_chunk:
        server_args.override(SOURCE, enable_mixed_chunk=False)
        logger.warning("sglang-tokenweave: mixed chunked prefill turned off: a deterministic "
                       "prefill must run alone")
        report.set_feature_status("mixed_chunk", False, "turned off by --enable-deterministic-requests")
    backend = server_args.prefill_attention_backend or server_args.attention_backend
    if backend not in PINNED_ATTENTION:
        # Their split of the KV among thread blocks depends on the other rows of the pass.
        logger.warning("sglang-tokenweave: attention backend %r may split the verification pass's "
                       "attention differently under load; deterministic requests are bit-exact with "
                       "--attention-backend %s", backend, " or ".join(PINNED_ATTENTION))
        report.set_feature_status("deterministic_attention", False,
                                  f"backend {backend!r}: use --attention-backend triton")
    requested = runtime().config.sampling_kernel
    # Raises for a kernel the device cannot run (the launcher checks first; this covers SGLang's
    # own entry point).
    cfg = runtime().config = runtime().config.for_device(server_args.device)
    if cfg.verify_graph == "full" and (error := full_graph_error(server_args)):
        # Refused here too for SGLang's own entry point (the launcher refuses first).
        report.set_feature_status(VERIFY_GRAPH_FEATURE, False, error)
        raise ValueError(f"sglang-tokenweave: {error}")
    graph, why = choose_verify_graph(cfg.verify_graph, server_args, cfg.verify_eager)
    cfg = runtime().config = dataclasses.replace(cfg, verify_graph=graph)
    kernel = cfg.sampling_kernel
    if requested != kernel:
        kernel += f" ({requested} on --device {server_args.device})"
    report.set_feature_status(FEATURE, True, f"window W={cfg.window}, verify rows B={cfg.verify_rows}, "
                                         f"lookahead blocks L={cfg.lookahead_blocks}, sampling kernel {kernel}, "
                                         f"logits {cfg.logits_dtype}, verify graph {graph} ({why})")
    return None


def start_metrics(result, scheduler, *args, **kwargs):
    """After-hook on ``Scheduler.__init__``: register the Prometheus counters (TP rank 0)."""
    metrics_export.init(scheduler)
    return None


def track_deterministic_req(result, req, *args, **kwargs):
    """After-hook on ``Req.__init__``: every deterministic request joins ``runtime().live``."""
    if is_deterministic_req(req):
        runtime().live.add(req)
    return None


def verify_before_scheduling(original, scheduler, running_batch, last_batch, *args, **kwargs):
    """Around-hook on ``Scheduler.get_next_batch_to_run``: run due verification passes first.

    In the overlap loop, the steps still in flight are processed here first when a pass is due
    (see the module docstring); the loop then finds no step of its own to process."""
    if not runtime().live:
        return original(scheduler, running_batch, last_batch, *args, **kwargs)
    queue = getattr(scheduler, "result_queue", None)  # the overlap loop's unprocessed steps
    if queue and _blocked_once_processed(running_batch, queue):
        started = time.perf_counter()
        while queue:
            scheduler.process_batch_result(*queue.popleft())
        runtime().metrics.on_drain(time.perf_counter() - started)
    if not queue:
        verify_due(scheduler, running_batch)
    plan = original(scheduler, running_batch, last_batch, *args, **kwargs)
    if queue is not None and not queue:
        # The overlap loop processes "the last batch" after launching the next one; it was
        # processed here already, and the loop must not pop an empty queue.
        scheduler.last_batch = None
    return plan


def _blocked_once_processed(running_batch, queue) -> bool:
    """Whether a deterministic request of the running batch needs a pass before its next step,
    counting the tokens that the decode steps in flight will bring."""
    dets = [(req, det) for req in (running_batch.reqs if running_batch else ())
            if is_deterministic_req(req) and not req.finished() and (det := det_of(req)) is not None]
    if not dets:
        return False
    in_flight = Counter(id(req) for batch, _ in queue if batch.forward_mode.is_decode() for req in batch.reqs)
    return any(det.state.blocked_after(in_flight[id(req)]) for req, det in dets)


def isolate_deterministic_prefill(original, scheduler, *args, **kwargs):
    """Around-hook on ``Scheduler._get_new_batch_prefill_raw``: a deterministic prefill runs
    alone, so hide the rest of the waiting queue (or hide deterministic requests while another
    request's chunked prefill is in flight)."""
    if not runtime().live:
        return original(scheduler, *args, **kwargs)
    queue = scheduler.waiting_queue
    chunked = scheduler.chunked_req
    has_det = any(is_deterministic_req(r) for r in queue)
    if chunked is not None and is_deterministic_req(chunked):
        visible = []
    elif not has_det:
        return original(scheduler, *args, **kwargs)
    elif chunked is not None:
        visible = [r for r in queue if not is_deterministic_req(r)]
    else:
        visible = [next(r for r in queue if is_deterministic_req(r))]
    visible_ids = {id(r) for r in visible}
    scheduler.waiting_queue = list(visible)
    try:
        return original(scheduler, *args, **kwargs)
    finally:
        left = {id(r) for r in scheduler.waiting_queue}
        added = [r for r in scheduler.waiting_queue if id(r) not in visible_ids]
        scheduler.waiting_queue = [r for r in queue if id(r) not in visible_ids or id(r) in left] + added


class _NoMatch:
    """A prefix cache seen through a miss: every lookup matches nothing (SGLang's own
    ``zero_match_result``, as with SGLANG_RADIX_FORCE_MISS, but for one request)."""

    def __init__(self, cache):
        self._cache = cache

    def match_prefix(self, params):
        from sglang.srt.mem_cache.base_prefix_cache import zero_match_result

        return zero_match_result(self._cache, self._cache.match_prefix(params), extra_key=params.key.extra_key)

    def __getattr__(self, name):
        return getattr(self._cache, name)


def no_prefix_reuse(original, req, tree_cache=None, *args, **kwargs):
    """Around-hook on ``Req.init_next_round_input``."""
    if is_deterministic_req(req):
        req.skip_radix_cache_insert = True
        if tree_cache is not None:
            tree_cache = _NoMatch(tree_cache)
    return original(req, tree_cache, *args, **kwargs)


def stash_own_chunk(original, scheduler, req, *args, **kwargs):
    """Around-hook on ``Scheduler.stash_chunked_request``: a deterministic request's next chunk
    continues on its own KV (it is never inserted into the shared prefix cache)."""
    if not is_deterministic_req(req):
        return original(scheduler, req, *args, **kwargs)
    import torch

    kv = scheduler.req_to_token_pool.req_to_token[req.req_pool_idx, : req.extend_range.end]
    req.prefix_indices = kv.to(dtype=torch.int64, copy=True)
    return None


def finish_on_committed(original, req, *args, **kwargs):
    """Around-hook on ``Req.update_finish_state``, called after each new output token."""
    if not is_deterministic_req(req) or req.finished() or req.to_finish:
        return original(req, *args, **kwargs)
    det = det_for(req)
    state = det.state
    token = req.output_ids[-1]
    if state.phase is Phase.PREFILL:  # the isolated prefill's token: committed at once
        result = state.on_prefill_token(token)
        runtime().metrics.on_commit(result)
        metrics_export.publish(runtime().metrics)
        if result.finish is not None:
            req.finished_reason = sglang_finish_reason(result.finish)
            req.finished_len = len(state.out)
        return None
    if not state.can_decode():
        # Launched before its fast-path finish was known (see the module docstring): not a
        # proposal. Its KV slot, past the state's KV, is freed before the verification pass.
        del req.output_ids[-1]
        return None
    state.on_fast_token(token)
    original(req, *args, **kwargs)
    finished_by_fast_path = req.finished()
    if finished_by_fast_path:  # a proposal only: the verifier decides
        req.finished_reason = None
        req.finished_len = None
    state.needs_verification(finished_by_fast_path)
    return None


def stream_committed_only(original, streamer, reqs, *args, **kwargs):
    """Around-hook on ``SchedulerOutputStreamer.stream_output``."""
    if not runtime().live or not any(is_deterministic_req(r) for r in reqs):
        return original(streamer, reqs, *args, **kwargs)
    shown, swapped = [], []
    for req in reqs:
        det = det_of(req) if is_deterministic_req(req) else None
        if det is not None and det.state.num_unverified > 0:
            if not req.finished():
                continue  # unverified tokens are never shown
            swapped.append((req, req.output_ids))  # aborted: show the committed part only
            req.output_ids = array("q", det.state.committed_ids)
        elif det is not None and not req.finished() and len(req.output_ids) <= req.send_token_offset:
            continue  # regenerating, after a restart, tokens the client already has
        shown.append(req)
    try:
        return original(streamer, shown, *args, **kwargs) if shown else None
    finally:
        for req, output_ids in swapped:
            req.output_ids = output_ids


def restart_on_retract(result, req, *args, **kwargs):
    """After-hook on ``Req.reset_for_retract``: prefill again from the prompt alone."""
    det = det_of(req) if is_deterministic_req(req) else None
    if det is None or det.state.finished:
        return None
    det.state.retract()
    runtime().metrics.on_restart()
    req.output_ids = array("q")
    if req.return_logprob:  # the restarted prefill and verifications append them again
        lp = req.logprob
        for values in (lp.output_token_logprobs_val, lp.output_token_logprobs_idx,
                       lp.output_top_logprobs_val, lp.output_top_logprobs_idx):
            if values is not None:
                del values[:]
    return None
