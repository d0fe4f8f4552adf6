"""Per-process state of deterministic serving in a scheduler / TP worker process."""

from __future__ import annotations

import dataclasses
import itertools
import re
import weakref
from http import HTTPStatus
from typing import Optional

from sglang_tokenweave.glue.process_state import overlay_config
from sglang_tokenweave.determinism.config import DeterminismConfig
from sglang_tokenweave.determinism.metrics import DeterminismMetrics
from sglang_tokenweave.determinism.row_table import RowTable
from sglang_tokenweave.determinism.sampling import RowParams
from sglang_tokenweave.determinism.seeds import choice_seed
from sglang_tokenweave.determinism.state import DeterministicRequest

from .markers import SEED_KEY

_STATE_ATTR = "_tokenweave_det"


@dataclasses.dataclass
class Runtime:
    config: DeterminismConfig
    metrics: DeterminismMetrics = dataclasses.field(default_factory=DeterminismMetrics)
    arrivals: itertools.count = dataclasses.field(default_factory=itertools.count)
    perturb_steps: itertools.count = dataclasses.field(default_factory=itertools.count)
    # Whether verification passes replay a CUDA graph (SGLang's prefill graph, or the full graph
    # of --deterministic-verify-graph full); decided by the first pass.
    verify_graph: Optional[bool] = None
    # The full graph's runner (verify_graph.py), captured at the first pass; None on the other paths.
    verify_runner: Optional[object] = None
    # The deterministic ``Req``s alive in this process, added as each is created. A request
    # leaves when it is garbage, never earlier: an empty set proves that no request needs the
    # hooks' per-step work, so they skip it (no deterministic traffic, no loop over the batch).
    # TP ranks may collect a finished request at different times; that is safe because the
    # hooks' full path does what the skip does for batches without deterministic requests.
    live: weakref.WeakSet = dataclasses.field(default_factory=weakref.WeakSet)
    # Decoding deterministic requests' sampling parameters by request row (sampling_hooks.py),
    # made at the first deterministic prefill.
    row_table: Optional[RowTable] = None
    # Live deterministic requests whose parameters the table cannot hold (top-k / top-p):
    # while one lives, decode steps plan their deterministic rows on the host.
    untabled: weakref.WeakSet = dataclasses.field(default_factory=weakref.WeakSet)


_runtime: Optional[Runtime] = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(DeterminismConfig.from_flags(overlay_config()))
    return _runtime


@dataclasses.dataclass
class ReqDet:
    """What the glue keeps on a deterministic ``Req``."""

    state: DeterministicRequest
    seed: int
    key: int  # arrival number: orders verification rows oldest first


def stop_token_ids(req) -> set[int]:
    """The token ids that end ``req``, as SGLang's own token-based finish check sees them."""
    params = req.sampling_params
    if params.ignore_eos:
        return set()
    ids = set(params.stop_token_ids or ())
    ids |= set(req.eos_token_ids or ())
    tokenizer = req.tokenizer
    if tokenizer is not None:
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        ids |= set(getattr(tokenizer, "additional_stop_token_ids", None) or ())
    return ids


def _stop_string_hook(req):
    """Finish on a stop string or stop regex found in the committed text, as SGLang's own check
    (``Req._check_str_based_finish``) does on every token: FINISH_MATCHED_STR,
    FINISHED_MATCHED_REGEX."""
    params = req.sampling_params
    stops = [s for s in (params.stop_strs or []) if s]
    regexes = [r for r in (params.stop_regex_strs or []) if r]
    tokenizer = req.tokenizer
    if not (stops or regexes) or tokenizer is None:
        return None
    from sglang.srt.managers.schedule_batch import FINISH_ABORT, FINISH_MATCHED_STR, FINISHED_MATCHED_REGEX

    tail_tokens = params.stop_str_max_len + 8
    regex_tail_tokens = params.stop_regex_max_len + 1  # SGLang's window for regexes

    def hook(committed):
        if stops:
            tail = tokenizer.decode(list(committed[-tail_tokens:]))
            for stop in stops:
                if stop in tail:
                    return FINISH_MATCHED_STR(matched=stop)
        if regexes:
            tail = tokenizer.decode(list(committed[-regex_tail_tokens:]))
            for regex in regexes:
                try:
                    if re.search(regex, tail):
                        return FINISHED_MATCHED_REGEX(matched=regex)
                except (re.error, RecursionError) as error:  # as SGLang: fail the request, not the server
                    return FINISH_ABORT(f"invalid stop_regex {regex!r}: {error}", HTTPStatus.BAD_REQUEST,
                                        "BadRequestError")
        return None

    return hook


def det_of(req) -> Optional[ReqDet]:
    return getattr(req, _STATE_ATTR, None)


def det_for(req) -> ReqDet:
    """The request's deterministic state, created on first use (the tokenizer is set by then)."""
    det = det_of(req)
    if det is None:
        rt = runtime()
        custom = req.sampling_params.custom_params
        seed = custom.get(SEED_KEY)
        if seed is None:
            seed = choice_seed(req.sampling_params.sampling_seed, 0)
        state = DeterministicRequest(
            len(req.origin_input_ids),
            rt.config.window,
            max_new_tokens=req.sampling_params.max_new_tokens,
            stop_token_ids=stop_token_ids(req),
            finish_hook=_stop_string_hook(req),
            lookahead_blocks=rt.config.lookahead_blocks,
        )
        det = ReqDet(state=state, seed=int(seed), key=next(rt.arrivals))
        setattr(req, _STATE_ATTR, det)
        rt.metrics.on_request()
    return det


def row_params(req, det: ReqDet, position: int) -> RowParams:
    p = req.sampling_params
    return RowParams(seed=det.seed, position=position, temperature=p.temperature, top_p=p.top_p,
                     top_k=p.top_k, min_p=p.min_p)
