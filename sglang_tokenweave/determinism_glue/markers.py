"""How a deterministic request travels from the HTTP server to the scheduler.

SGLang's ``SamplingParams`` is a closed msgspec struct, but it carries ``custom_params``, a
JSON dict that survives the IPC to the scheduler. The HTTP layer moves ``deterministic: true``
there (and strips these keys from what clients send, so the validation cannot be bypassed);
the tokenizer side adds the choice's seed.
"""

from __future__ import annotations

DETERMINISTIC_KEY = "tokenweave_deterministic"
SEED_KEY = "tokenweave_seed"  # the choice's sampling seed (uint64)
NEXT_CHOICE_KEY = "tokenweave_next_choice"  # n > 1: index of the next choice to send
OUR_KEYS = (DETERMINISTIC_KEY, SEED_KEY, NEXT_CHOICE_KEY)


def is_marked(custom_params) -> bool:
    return isinstance(custom_params, dict) and custom_params.get(DETERMINISTIC_KEY) is True


def is_deterministic_req(req) -> bool:
    """True for a scheduler ``Req`` of a deterministic request."""
    return is_marked(req.sampling_params.custom_params)
