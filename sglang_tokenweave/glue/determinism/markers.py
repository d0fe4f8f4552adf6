"""How a deterministic request travels from the HTTP server to the scheduler.

SGLang's ``SamplingParams`` is a closed msgspec struct, but it carries ``custom_params``, a
JSON dict that survives the IPC to the scheduler. The HTTP layer validates ``deterministic:
true`` on the decoded body and moves it there, with a stamp saying that it did; the tokenizer
side adds the choice's seed. Clients may not send keys with the reserved prefix (HTTP 400),
and the scheduler refuses a marked request without the stamp, or one the verifier cannot
replay (``scheduler_guard``): a marker that reached it by another path is never served.
"""

from __future__ import annotations

from sglang_tokenweave.determinism.request_validation import RESERVED_PREFIX

DETERMINISTIC_KEY = "tokenweave_deterministic"
VALIDATED_KEY = "tokenweave_validated"  # set by the HTTP layer next to DETERMINISTIC_KEY
SEED_KEY = "tokenweave_seed"  # the choice's sampling seed (uint64)
NEXT_CHOICE_KEY = "tokenweave_next_choice"  # n > 1: index of the next choice to send
OUR_KEYS = (DETERMINISTIC_KEY, VALIDATED_KEY, SEED_KEY, NEXT_CHOICE_KEY)


def mark(custom_params) -> dict:
    """The custom_params of a validated deterministic request (a new dict)."""
    return {**(custom_params or {}), DETERMINISTIC_KEY: True, VALIDATED_KEY: True}


def is_marked(custom_params) -> bool:
    return isinstance(custom_params, dict) and custom_params.get(DETERMINISTIC_KEY) is True


def is_deterministic_req(req) -> bool:
    """True for a scheduler ``Req`` of a deterministic request."""
    return is_marked(req.sampling_params.custom_params)
