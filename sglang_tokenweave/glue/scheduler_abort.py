"""Refusing one request in the scheduler with a message for its client (SGLang glue).

SGLang's scheduler refuses a request for an unknown session this way: a ``Req`` with a
one-token prompt, finished with a bad-request abort and queued, so that the abort reaches the
client (HTTP 400, or an error event on a stream) through the normal output path and the
scheduler carries on. Our scheduler-side checks refuse requests the same way.
"""

from __future__ import annotations

from array import array

from sglang_tokenweave.determinism.request_validation import RESERVED_PREFIX


def abort_request(scheduler, recv_req, message: str) -> None:
    """Queue ``recv_req`` (a ``TokenizedGenerateReqInput``) as a request aborted with ``message``."""
    from sglang.srt.managers.schedule_batch import Req

    params = recv_req.sampling_params
    if isinstance(params.custom_params, dict):  # a plain request from here on: no overlay hook may see it
        params.custom_params = {k: v for k, v in params.custom_params.items() if not k.startswith(RESERVED_PREFIX)}
    req = Req(recv_req.rid, recv_req.input_text, array("q", [0]), params,
              vocab_size=scheduler.model_config.vocab_size, http_worker_ipc=recv_req.http_worker_ipc)
    req.tokenizer = scheduler.tokenizer
    req.set_finish_with_abort(message)
    scheduler.init_req_max_new_tokens(req)
    scheduler._add_request_to_queue(req)
