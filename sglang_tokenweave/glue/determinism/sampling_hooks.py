"""Seeded sampling of deterministic rows on the fast path, and full-window logits for the verifier.

The scheduler launches one batch per loop iteration in this process (overlapped or not), and
samples it in the same iteration: the rows of the batch are noted just before ``run_batch`` and
used by the sampler inside it (or in SGLang's delayed sampling later in that iteration).
A deterministic row is sampled by ``determinism.sampling`` keyed by (seed, position), the same
function the verifier uses, so identical logits give identical tokens at any temperature.

Two ways to plan a batch's deterministic rows, which give the same tokens:
- decode steps, while every live deterministic request's parameters are in the row table
  (``determinism.row_table``; written at each request's prefill): the plan is made on the device
  from the batch's request rows and positions, with no host work per row;
- otherwise (prefills; while a request with top-k / top-p lives) the rows are found and
  planned on the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Optional, Union

import torch

from sglang_tokenweave.determinism.logprobs import token_logprobs, top_logprobs
from sglang_tokenweave.determinism.perturbation import perturb_fast_path_logits
from sglang_tokenweave.determinism.row_table import RowTable, supports
from sglang_tokenweave.determinism.sampling import plan_sampling, sample, sample_at_batch_rows, write_at_batch_rows

from .markers import is_deterministic_req
from .runtime import det_for, row_params, runtime


@dataclasses.dataclass
class _HostRows:
    """The batch's deterministic rows, to be planned on the host."""

    indices: list[int]  # their rows in the batch
    rows: list  # their RowParams
    is_decode: bool
    noted: float  # host seconds spent noting them


@dataclasses.dataclass
class _TableRows:
    """A decode step planned on the device from the row table (every row of the batch)."""

    request_rows: torch.Tensor  # the batch's rows of the request-to-token pool, on the device
    noted: float


# What the batch about to run needs from the sampler, or None when it has no deterministic row.
_pending: Optional[Union[_HostRows, _TableRows]] = None
# True while the verifier's pass runs: logits are needed at every position.
_verifying = False


def note_batch_rows(scheduler, batch, *args, **kwargs):
    """Before-hook on ``Scheduler.run_batch``."""
    global _pending
    _pending = None
    rt = runtime()
    if batch is None or not batch.reqs or not rt.live:
        return None
    started = time.perf_counter()
    is_decode = batch.forward_mode.is_decode()
    if is_decode and _table_plans_decode(rt):
        _pending = _TableRows(batch.req_pool_indices, time.perf_counter() - started)
        return None
    indices, rows = [], []
    seq_lens = None
    for i, req in enumerate(batch.reqs):
        if is_deterministic_req(req):
            det = det_for(req)
            indices.append(i)
            if is_decode:
                # The sequence length after this step's input token is the new token's position;
                # output_ids may still lack the token of the step in flight (overlap scheduler).
                if seq_lens is None:
                    seq_lens = batch.seq_lens_cpu.tolist()  # one call, not a tensor index per row
                position = seq_lens[i]
            else:  # the prefill's token: output token 0
                position = det.state.sample_position(len(req.output_ids))
            rows.append(row_params(req, det, position))
    if indices and not is_decode:
        _enter_row_table(scheduler, [batch.reqs[i] for i in indices], rows)
    if indices:
        _pending = _HostRows(indices, rows, is_decode, time.perf_counter() - started)
    return None


def _table_plans_decode(rt) -> bool:
    table = rt.row_table
    return table is not None and bool(table.marked) and not rt.untabled


def _enter_row_table(scheduler, reqs, rows) -> None:
    """Write prefilled deterministic requests' parameters at their request rows (or note that
    the table cannot hold them)."""
    rt = runtime()
    if rt.row_table is None:
        pool = scheduler.req_to_token_pool
        rt.row_table = RowTable(pool.req_to_token.shape[0], pool.device)
    tabled_rows, tabled_params = [], []
    for req, row in zip(reqs, rows):
        if supports(row):
            tabled_rows.append(req.req_pool_idx)
            tabled_params.append(row)
        else:
            rt.untabled.add(req)
            rt.row_table.unmark([req.req_pool_idx])  # a former holder's entry
    rt.row_table.mark(tabled_rows, tabled_params)


def leave_row_table(result, pool, reqs, *args, **kwargs):
    """After-hook on ``ReqToTokenPool.alloc``: a request row given to a request that is not
    deterministic leaves the row table (a deterministic one's is rewritten at its prefill)."""
    table = runtime().row_table
    if table is not None and table.marked and result is not None:
        table.unmark([req.req_pool_idx for req in reqs if not is_deterministic_req(req)])
    return None


def sample_deterministic_rows(original, sampler, logits_output, sampling_info, return_logprob,
                              top_logprobs_nums, *args, **kwargs):
    """Around-hook on ``Sampler.forward``: overwrite deterministic rows with seeded samples."""
    global _pending
    pending, _pending = _pending, None
    logits = logits_output.next_token_logits
    if pending is None or logits is None or logits.shape[0] != len(sampling_info.temperatures):
        return original(sampler, logits_output, sampling_info, return_logprob, top_logprobs_nums, *args, **kwargs)
    started = time.perf_counter()
    rt = runtime()
    kernel, perturbed = rt.config.sampling_kernel, rt.config.perturb_logits > 0
    # Our rows are sampled before SGLang's sampler runs: it changes the logits in place.
    if isinstance(pending, _TableRows):
        # SGLang passes each row's input position (for its own seeded sampling).
        positions = kwargs["positions"] if "positions" in kwargs else args[1]
        plan = rt.row_table.plan(pending.request_rows, positions, logits.shape[1], kernel=kernel)
        det_ids = sample(_with_test_noise(rt, logits) if perturbed else logits, plan, kernel=kernel)
        is_decode, logprobs, det_logits, indices = True, False, None, None
    else:
        indices, rows, is_decode = pending.indices, pending.rows, pending.is_decode
        plan = plan_sampling(rows, logits.shape[1], device=logits.device, batch_rows=indices)
        logprobs = return_logprob and not is_decode
        perturbed = perturbed and is_decode  # only proposals: the isolated prefill's token is committed as is
        det_logits = logits.index_select(0, plan.batch_rows) if logprobs or perturbed else None
        if perturbed:
            det_ids = sample(_with_test_noise(rt, det_logits), plan, kernel=kernel)
        else:
            det_ids = sample_at_batch_rows(logits, plan, kernel=kernel)
    ours = pending.noted + time.perf_counter() - started
    ids = original(sampler, logits_output, sampling_info, return_logprob, top_logprobs_nums, *args, **kwargs)
    started = time.perf_counter()
    write_at_batch_rows(ids, det_ids, plan, kernel=kernel)
    if logprobs:
        # The prefill's token is committed with its logprobs: the same batch-invariant formula
        # as the verifier's, for our token (SGLang's were for the token it sampled itself).
        _replace_logprobs(logits_output, indices, det_logits, plan, det_ids, top_logprobs_nums)
    # Host time: what these rows add to launching the step (a decode step's work here never
    # waits for the GPU; a prefill's logprobs may).
    rt.metrics.on_sampled(is_decode, ours + time.perf_counter() - started)
    return ids


def _with_test_noise(rt, logits):
    """Test-only (``--deterministic-test-perturb-logits``): the proposals' logits with noise.
    The generator's seed is the same on every TP rank (same step count)."""
    generator = torch.Generator(device=logits.device)
    generator.manual_seed(next(rt.perturb_steps) + 12345)
    return perturb_fast_path_logits(logits, rt.config.perturb_logits, generator)


def _replace_logprobs(logits_output, indices, det_logits, plan, det_ids, top_logprobs_nums) -> None:
    """``indices``: the deterministic rows (``plan.batch_rows`` on the logits' device)."""
    chosen = token_logprobs(det_logits, plan, det_ids)
    target = logits_output.next_token_logprobs
    target[plan.batch_rows.to(target.device)] = chosen.to(device=target.device, dtype=target.dtype)
    ks = [top_logprobs_nums[i] if top_logprobs_nums else 0 for i in indices]
    if max(ks) > 0 and logits_output.next_token_top_logprobs_val is not None:
        values, ids = top_logprobs(det_logits, plan, max(ks))
        for j, (i, k) in enumerate(zip(indices, ks)):
            # Same container as SGLang's entries: device tensors before its copy to the host.
            old = logits_output.next_token_top_logprobs_val[i]
            if isinstance(old, torch.Tensor):
                logits_output.next_token_top_logprobs_val[i] = values[j, :k].to(old.device, old.dtype)
                logits_output.next_token_top_logprobs_idx[i] = ids[j, :k].to(old.device)
            else:
                logits_output.next_token_top_logprobs_val[i] = values[j, :k].tolist()
                logits_output.next_token_top_logprobs_idx[i] = ids[j, :k].tolist()


@contextlib.contextmanager
def full_logits():
    global _verifying
    _verifying = True
    try:
        yield
    finally:
        _verifying = False


def keep_every_position(original, processor, hidden_states, hidden_states_before_norm,
                        aux_hidden_states, logits_metadata, *args, **kwargs):
    """Around-hook on ``LogitsProcessor._get_pruned_states``: during verification, logits of
    every token of the pass, not only of each row's last one."""
    if not _verifying:
        return original(processor, hidden_states, hidden_states_before_norm, aux_hidden_states,
                        logits_metadata, *args, **kwargs)
    return hidden_states, hidden_states_before_norm, aux_hidden_states, None, None, []
