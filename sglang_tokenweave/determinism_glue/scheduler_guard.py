"""The scheduler's own check of deterministic requests (defence in depth behind ``http_api``).

The marker travels in ``custom_params`` (``markers``), which SGLang forwards as it gets it. The
HTTP layer refuses client keys with the reserved prefix and stamps the requests it validated;
here every marked request must carry the stamp and is held to ``replay_rules`` once more, on
SGLang's own request object, so sampling parameters that SGLang adds itself (the server's
``--preferred-sampling-params``, the model's generation config on the chat route) are seen too.
A refused request is finished with SGLang's own bad-request abort, as SGLang refuses a request
for an unknown session: the client gets HTTP 400 (an error event on a stream) with the reason,
and the scheduler carries on.

The stamp is not a secret: every TP rank, on every node, must reach the same decision. It tells
requests that passed the HTTP validation from markers that arrived another way; forging it
gains nothing, since the rules are checked here again.
"""

from __future__ import annotations

from array import array
from typing import Optional

from sglang_tokenweave.determinism.replay_rules import REQUEST_RULES, SAMPLING_RULES, check_replayable

from .markers import RESERVED_PREFIX, VALIDATED_KEY, is_marked

_SAMPLING_FIELDS = (*SAMPLING_RULES, "sampling_seed", "max_new_tokens")
_NOT_VALIDATED = ("custom_params: the deterministic marker is set by the server's HTTP validation only; "
                  "send \"deterministic\": true instead")


def refusal(recv_req) -> Optional[str]:
    """Why the scheduler must refuse a ``TokenizedGenerateReqInput``; None to serve it."""
    params = recv_req.sampling_params
    custom = params.custom_params
    if not is_marked(custom):
        return None
    if custom.get(VALIDATED_KEY) is not True:
        return _NOT_VALIDATED
    sampling = {name: getattr(params, name, None) for name in _SAMPLING_FIELDS}
    request = {name: getattr(recv_req, name, None) for name in REQUEST_RULES}
    request["max_thinking_tokens"] = custom.get("thinking_budget")  # where SGLang puts it
    error = check_replayable(sampling, request)
    return error.message if error else None


def refuse_unreplayable(original, scheduler, recv_req, *args, **kwargs):
    """Around-hook on ``Scheduler.handle_generate_request``."""
    reason = refusal(recv_req)
    if reason is None:
        return original(scheduler, recv_req, *args, **kwargs)
    abort_request(scheduler, recv_req, f"deterministic request refused: {reason}")
    return None


def abort_request(scheduler, recv_req, message: str) -> None:
    """Queue ``recv_req`` as an aborted request, as ``handle_generate_request`` does for an
    unknown session (one token of prefill, then the abort reaches the client)."""
    from sglang.srt.managers.schedule_batch import Req

    params = recv_req.sampling_params
    # A plain request from here on: no deterministic hook may see it.
    params.custom_params = {k: v for k, v in params.custom_params.items() if not k.startswith(RESERVED_PREFIX)}
    req = Req(recv_req.rid, recv_req.input_text, array("q", [0]), params,
              vocab_size=scheduler.model_config.vocab_size, http_worker_ipc=recv_req.http_worker_ipc)
    req.tokenizer = scheduler.tokenizer
    req.set_finish_with_abort(message)
    scheduler.init_req_max_new_tokens(req)
    scheduler._add_request_to_queue(req)
