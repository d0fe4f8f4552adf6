"""Malformed /generate requests that SGLang answers with a 500: HTTP 400 instead.

``GenerateReqInput`` splits a request into one sub-request per prompt
(``normalize_batch_and_arguments``, then ``__getitem__``) without checking that the per-prompt
lists it indexes (``lora_path``, ``return_logprob``, ``custom_logit_processor``, ...) cover the
batch, or that their items have the right type: the IndexError or TypeError that follows is the
client's malformed request. As a ValueError, every route answers it with HTTP 400 and the
message. (Raised before the request reaches the scheduler, so nothing else is affected.)
"""

from __future__ import annotations

_CLIENT_ERRORS = (IndexError, TypeError, KeyError)


def as_bad_request(original, obj, *args, **kwargs):
    """Around-hook on ``GenerateReqInput.normalize_batch_and_arguments`` and ``__getitem__``."""
    try:
        return original(obj, *args, **kwargs)
    except _CLIENT_ERRORS as error:
        raise ValueError(f"malformed request ({type(error).__name__}: {error}); a field given as a list "
                         "needs one entry per prompt") from error
