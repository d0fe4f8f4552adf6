"""The verification pass of deterministic requests, and applying its commit / rollback.

Run by the scheduler between batches (an EXTEND forward, in SGLang's prefill CUDA graph where
the server has one: verify_forward.py; with ``--deterministic-verify-graph full``, a
TARGET_VERIFY forward in one full CUDA graph: verify_graph.py) once some deterministic request
of the running batch cannot decode on (its L blocks of W tokens are full, or the fast path
finished it); the passes then take every request with a complete block
(``state.ready_tokens``). Each pass has the fixed shape B rows x W tokens
(``groups.plan_verify_passes``):
- a request's real rows, one per block, replay its window (``state.verify_window``) at its own
  KV slots, so the committed tokens' KV is rewritten by the verifier;
- padding tokens and dummy rows write to SGLang's reserved padding slot 0 (and dummy rows use
  the reserved padding row 0 of the request-to-token table), so they cost no KV memory;
- every position is sampled with (seed, position) from the pass's logits, planned on the device
  from the row table where it holds every request of the pass (``determinism.row_table``), as
  decode steps are; else on the host, row by row.
The pass's shape, and so its kernels' reduction order, never depends on the load.
"""

from __future__ import annotations

import logging
import time
from array import array

import numpy as np
import torch

from sglang_tokenweave.determinism.groups import ReadyRequest, plan_verify_passes
from sglang_tokenweave.determinism.logprobs import token_logprobs, top_logprobs
from sglang_tokenweave.determinism.pinned_staging import array_to_device
from sglang_tokenweave.determinism.sampling import RowParams, plan_sampling, sample
from sglang_tokenweave.determinism.state import FinishReason
from sglang_tokenweave.determinism.verify_graph import pass_layout

from . import metrics_export
from .markers import is_deterministic_req
from .runtime import det_of, row_params, runtime
from .sampling_hooks import full_logits
from .verify_forward import pass_logits
from .verify_graph import verify_input

logger = logging.getLogger("sglang_tokenweave")

PAD_TOKEN_ID = 0
PAD_SLOT = 0  # SGLang's reserved KV slot for padded tokens
PAD_REQ_ROW = 0  # SGLang's reserved request-to-token row for padded requests


def due_requests(running_batch):
    """(index, req, det, tokens) of the running batch's deterministic requests with tokens
    ready for verification, and whether any of them cannot decode on without one."""
    due, blocked = [], False
    for i, req in enumerate(running_batch.reqs):
        if is_deterministic_req(req) and not req.finished():
            det = det_of(req)
            tokens = det.state.ready_tokens() if det is not None else 0
            if tokens:
                due.append((i, req, det, tokens))
                blocked |= det.state.needs_verification()
    return due, blocked


def verify_due(scheduler, running_batch) -> None:
    if running_batch is None or running_batch.is_empty():
        return
    due, blocked = due_requests(running_batch)
    if not blocked:  # everyone can decode on: wait, so that the pass gathers more windows
        return
    for _, req, det, _ in due:
        _free_dropped_steps(scheduler, req, det)
    config = runtime().config
    by_key = {det.key: (i, req, det, tokens) for i, req, det, tokens in due}
    # A request's rows hold its block's replayed committed inputs, then the tokens to verify.
    ready = [ReadyRequest(det.key, det.state.num_replayed + tokens) for _, _, det, tokens in due]
    for verify_pass in plan_verify_passes(ready, config.verify_rows, config.window):
        _run_pass(scheduler, running_batch, verify_pass, by_key)


def _free_dropped_steps(scheduler, req, det) -> None:
    """Give back the KV slots of steps launched past a fast-path finish (their tokens were
    dropped, see scheduling.py): the pass pads the request's row from its KV length on."""
    allocated, kv_len = req.kv.kv_allocated_len, det.state.kv_len
    if allocated > kv_len:
        slots = scheduler.req_to_token_pool.req_to_token[req.req_pool_idx, kv_len:allocated]
        scheduler.token_to_kv_pool_allocator.free(slots.to(torch.int64))
        req.kv.kv_allocated_len = req.kv_committed_len = kv_len


def _run_pass(scheduler, running_batch, verify_pass, by_key) -> None:
    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

    started = time.perf_counter()
    window = verify_pass.window
    pool = scheduler.req_to_token_pool
    width = pool.req_to_token.shape[1]
    input_ids, pool_rows, prefix_lens, real_lens, sample_rows = [], [], [], [], []
    windows, reqs = {}, []  # key -> (window, {part: flat slots of that row's inputs})
    table = _table_of_pass(verify_pass, by_key)
    for r, row in enumerate(verify_pass.rows):
        if row.key is None:
            prefix, pool_row, ids = 0, PAD_REQ_ROW, []
            if table is None:
                sample_rows += [RowParams(seed=0, position=j) for j in range(window)]
            reqs.append(None)
        else:
            _, req, det, tokens = by_key[row.key]
            if row.key not in windows:
                windows[row.key] = (det.state.verify_window(tokens), {})
            w, slots = windows[row.key]
            block = w.block_rows(window)[row.part]
            prefix, pool_row, ids = w.row_start + block.start, req.req_pool_idx, w.row_ids[block.start : block.stop]
            if prefix + window > width:
                raise RuntimeError(f"deterministic request {req.rid}: window beyond the context length")
            if prefix + len(ids) < min(prefix + window, req.kv.kv_allocated_len):
                # Its padding would take its own slots there (which would leak) and free slot 0.
                raise RuntimeError(f"deterministic request {req.rid}: KV allocated past the verified window")
            slots[row.part] = range(r * window, r * window + len(ids))
            if table is None:
                # Row j samples the token after its input j, at position row start + j + 1.
                sample_rows += [row_params(req, det, prefix + 1 + j) for j in range(window)]
            reqs.append(req)
        input_ids += ids
        input_ids += [PAD_TOKEN_ID] * (window - len(ids))
        pool_rows.append(pool_row)
        prefix_lens.append(prefix)
        real_lens.append(len(ids))

    rows = len(verify_pass.rows)
    full_graph = runtime().config.verify_graph == "full"
    layout = pass_layout(prefix_lens, window, full_graph)
    seq_lens = layout.seq_lens
    inputs = _PassInputs(pool, window, input_ids, pool_rows, prefix_lens, real_lens, seq_lens, layout.positions)
    real_reqs = [r for r in reqs if r is not None]
    batch = ScheduleBatch.init_new(
        [r if r is not None else real_reqs[0] for r in reqs],
        pool, scheduler.token_to_kv_pool_allocator, scheduler.tree_cache, scheduler.model_config,
        False, scheduler.spec_algorithm,
    )
    if full_graph:  # sequence lengths are the prefixes; positions are given (pass_layout)
        batch.forward_mode = ForwardMode.TARGET_VERIFY
        batch.spec_info = verify_input(inputs.positions, window)
    else:
        batch.forward_mode = ForwardMode.EXTEND
    batch.return_logprob = False
    batch.return_hidden_states = False
    batch.input_ids = inputs.input_ids
    batch.req_pool_indices = inputs.pool_rows
    batch.seq_lens_cpu = torch.tensor(seq_lens, dtype=torch.int64)
    batch.seq_lens = inputs.seq_lens
    batch.orig_seq_lens = inputs.seq_lens.to(torch.int32)
    batch.seq_lens_sum = int(sum(seq_lens))
    batch.out_cache_loc = inputs.out_cache_loc
    batch.prefix_lens = prefix_lens
    batch.extend_lens = [window] * rows
    batch.extend_num_tokens = rows * window
    batch.extend_logprob_start_lens = [window] * rows
    batch.multimodal_inputs = [None] * rows
    batch.sampling_info = None
    batch.top_logprobs_nums = None
    batch.token_ids_logprobs = None

    model_runner = scheduler.tp_worker.model_runner
    with full_logits(), torch.inference_mode():
        forward_batch = ForwardBatch.init_new(batch, model_runner, return_hidden_states_before_norm=False)
        built = time.perf_counter()
        logits = pass_logits(model_runner, forward_batch, rows, window)
    launched = time.perf_counter()
    kernel = runtime().config.sampling_kernel
    with torch.inference_mode():
        if table is not None:
            plan = table.plan_windows(inputs.pool_rows, inputs.row_starts, window, logits.shape[1], kernel=kernel)
        else:
            plan = plan_sampling(sample_rows, logits.shape[1], device=logits.device)
        verified_ids = sample(logits, plan, kernel=kernel)
        logprobs = _logprobs(logits, plan, verified_ids, real_reqs)
        verified = verified_ids.tolist()  # waits for the pass
    sampled = time.perf_counter()

    rt = runtime()
    kv_lens = {}  # batch index -> committed KV length
    to_stream = []  # requests with newly committed tokens or finished: one message for the pass
    for key, (w, slots) in windows.items():
        i, req, det, tokens = by_key[key]
        input_slots = [slot for part in sorted(slots) for slot in slots[part]]
        token_slots = input_slots[w.num_replayed :]  # replayed inputs re-derive committed tokens
        committed_before = det.state.num_committed
        result = det.state.apply_verification([verified[s] for s in token_slots], num_tokens=tokens)
        rt.metrics.on_commit(result, tokens_verified=tokens, greedy=row_params(req, det, 0).greedy)
        if req.return_logprob:
            _set_logprobs(req, committed_before, result, logprobs, token_slots)
        _apply(scheduler, req, det, result)
        kv_lens[i] = result.kv_len
        if result.finish is not None or len(result.stream):
            to_stream.append(req)
    _set_seq_lens(running_batch, kv_lens)
    if to_stream:  # as SGLang streams a decode batch: per-request logprobs, the flag for any
        scheduler.output_streamer.stream_output(to_stream, any(r.return_logprob for r in to_stream))
    done = time.perf_counter()
    rt.metrics.on_pass(verify_pass.num_real_rows, {"build": built - started, "forward": launched - built,
                                                   "wait": sampled - launched, "apply": done - sampled})
    metrics_export.publish(rt.metrics)


class _PassInputs:
    """A pass's device inputs from one host-to-device copy, and the KV slots of its tokens.

    A row's input j writes its KV at the slot its request's table holds at prefix + j; padding
    (past the row's real inputs, and every input of a dummy row) writes to the padding slot,
    and the table points there too, so that no position of the row refers to a slot that is
    not its own. The table is read and written on the device: no wait for the GPU per row.
    ``positions`` (one per token) are copied only where given (the full graph's pass)."""

    def __init__(self, pool, window, input_ids, pool_rows, prefix_lens, real_lens, seq_lens, positions=None):
        segments = [input_ids, pool_rows, prefix_lens, real_lens, seq_lens, positions or []]
        # Every segment starts at a multiple of 16 bytes, as a fresh tensor does (Triton
        # specialises kernels on pointer alignment: no other compiled variant mid-serving).
        starts = np.cumsum([0] + [len(x) + len(x) % 2 for x in segments])
        packed = np.zeros(starts[-1], dtype=np.int64)
        for start, values in zip(starts, segments):
            packed[start : start + len(values)] = values
        device_values = array_to_device(packed, pool.device)
        self.input_ids, self.pool_rows, self.row_starts, real, self.seq_lens, device_positions = (
            device_values[start : start + len(values)] for start, values in zip(starts, segments))
        self.positions = device_positions if positions is not None else None
        offsets = torch.arange(window, device=pool.device)
        table_rows, table_cols = self.pool_rows[:, None], self.row_starts[:, None] + offsets
        slots = pool.req_to_token[table_rows, table_cols]
        slots = torch.where(offsets < real[:, None], slots, PAD_SLOT)
        pool.req_to_token[table_rows, table_cols] = slots  # the real ones are written back unchanged
        self.out_cache_loc = slots.reshape(-1).to(torch.int64)


def _table_of_pass(verify_pass, by_key):
    """The row table, where it holds the sampling parameters of every request of the pass (then
    the pass is planned on the device, as decode steps are; dummy rows sit at the padding row,
    which no request holds); else None (the plan is made on the host, row by row)."""
    table = runtime().row_table
    if table is None or PAD_REQ_ROW in table.marked:
        return None
    rows = {by_key[row.key][1].req_pool_idx for row in verify_pass.rows if row.key is not None}
    return table if rows <= table.marked else None


def _set_seq_lens(running_batch, kv_lens: dict[int, int]) -> None:
    """The running batch's sequence lengths at the given indices, in new tensors (steps in
    flight may still read the old ones): one indexed write per tensor, not one per request."""
    if not kv_lens:
        return
    where, values = list(kv_lens), list(kv_lens.values())
    on_device = None  # the indices and lengths, copied once for the device tensors
    for name in ("seq_lens", "seq_lens_cpu", "orig_seq_lens"):
        tensor = getattr(running_batch, name, None)
        if tensor is None:
            continue
        if tensor.device.type == "cpu":
            index, new = torch.tensor(where), torch.tensor(values)
        else:
            if on_device is None:
                on_device = array_to_device(np.array(where + values, dtype=np.int64), tensor.device)
            index, new = on_device[: len(where)], on_device[len(where) :]
        tensor = tensor.clone()
        tensor[index] = new.to(tensor.dtype)
        setattr(running_batch, name, tensor)
    running_batch.seq_lens_sum = None


def _logprobs(logits, plan, ids, reqs):
    """Batch-invariant logprobs of the verifier's tokens (and top-k), when any row asks."""
    asking = [r for r in reqs if r.return_logprob]
    if not asking:
        return None
    chosen = token_logprobs(logits, plan, ids).tolist()
    k = max(r.logprob.top_logprobs_num for r in asking)
    top = top_logprobs(logits, plan, k) if k > 0 else None
    return chosen, (top[0].tolist(), top[1].tolist()) if top is not None else None


def _set_logprobs(req, committed_before, result, logprobs, token_slots) -> None:
    """Replace the fast path's logprobs of the window by the verifier's (``token_slots``: the
    pass's slot of each verified token, in order)."""
    chosen, top = logprobs
    lp = req.logprob
    slots = token_slots[: len(result.committed_ids)]
    del lp.output_token_logprobs_val[committed_before:]
    del lp.output_token_logprobs_idx[committed_before:]
    lp.output_token_logprobs_val.extend(chosen[slot] for slot in slots)
    lp.output_token_logprobs_idx.extend(result.committed_ids)
    if lp.top_logprobs_num > 0:
        k = lp.top_logprobs_num
        del lp.output_top_logprobs_val[committed_before:]
        del lp.output_top_logprobs_idx[committed_before:]
        for slot in slots:
            lp.output_top_logprobs_val.append(top[0][slot][:k])
            lp.output_top_logprobs_idx.append(top[1][slot][:k])


def sglang_finish_reason(finish):
    """SGLang's finish reason for one found by the state machine's built-in checks."""
    from sglang.srt.managers.schedule_batch import FINISH_LENGTH, FINISH_MATCHED_TOKEN

    if isinstance(finish, FinishReason):
        if finish.kind == "length":
            return FINISH_LENGTH(length=finish.matched)
        return FINISH_MATCHED_TOKEN(matched=finish.matched)
    return finish  # the stop-string hook already returns SGLang's object


def _apply(scheduler, req, det, result) -> None:
    """Make SGLang's request agree with the committed sequence (its batch: ``_set_seq_lens``;
    streaming: once for the whole pass)."""
    from sglang.srt.mem_cache.common import release_kv_cache

    pool = scheduler.req_to_token_pool
    freed = result.free_kv_positions
    if len(freed):
        slots = pool.req_to_token[req.req_pool_idx, freed.start : freed.stop].to(torch.int64)
        scheduler.token_to_kv_pool_allocator.free(slots)
    state = det.state
    req.output_ids = array("q", state.out)
    req.kv_committed_len = result.kv_len
    req.kv.kv_allocated_len = result.kv_len
    # The next decode step reads its input token from here (see resolve_forward_inputs).
    scheduler.future_map.output_tokens_buf[req.req_pool_idx] = state.out[-1]
    if result.finish is not None:
        req.finished_reason = sglang_finish_reason(result.finish)
        req.finished_len = len(state.out)
        table = runtime().row_table
        if table is not None:  # decode steps stop sampling its row
            table.unmark([req.req_pool_idx])
        release_kv_cache(req, scheduler.tree_cache)
        req.time_stats.set_completion_time()
