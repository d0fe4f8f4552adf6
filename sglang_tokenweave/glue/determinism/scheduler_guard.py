"""The scheduler's own check of deterministic requests (defence in depth behind ``http_api``).

The marker travels in ``custom_params`` (``markers``), which SGLang forwards as it gets it. The
HTTP layer refuses client keys with the reserved prefix and stamps the requests it validated;
here every marked request must carry the stamp and is held to ``replay_rules`` once more, on
SGLang's own request object, so sampling parameters that SGLang adds itself (the server's
``--preferred-sampling-params``, the model's generation config on the chat route) are seen too.
A refused request is finished with SGLang's own bad-request abort (``scheduler_abort``): the
client gets HTTP 400 (an error event on a stream) with the reason, and the scheduler carries on.

The stamp is not a secret: every TP rank, on every node, must reach the same decision. It tells
requests that passed the HTTP validation from markers that arrived another way; forging it
gains nothing, since the rules are checked here again.
"""

from __future__ import annotations

from typing import Optional

from sglang_tokenweave.determinism.replay_rules import REQUEST_RULES, SAMPLING_RULES, check_replayable
from sglang_tokenweave.glue.scheduler_abort import abort_request

from .markers import VALIDATED_KEY, is_marked

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
