"""Per-choice seeds, set where SGLang's tokenizer manager sends each request to the scheduler.

For n > 1 SGLang sends every choice with the same sampling parameters (and, first, a
prompt-caching request with max_new_tokens = 0); each deterministic choice must get its own
seed, ``seeds.choice_seed(seed, index)``, the same whatever n is.
"""

from __future__ import annotations

import copy

from sglang_tokenweave.determinism.seeds import choice_seed

from .markers import DETERMINISTIC_KEY, NEXT_CHOICE_KEY, SEED_KEY, is_marked


def assign_choice_seed(manager, tokenized_obj, *args, **kwargs):
    """Before-hook on ``TokenizerManager._send_one_request``."""
    params = getattr(tokenized_obj, "sampling_params", None)
    custom = getattr(params, "custom_params", None)
    if not is_marked(custom):
        return None
    own = copy.copy(params)
    if params.max_new_tokens == 0:  # n > 1 prompt-caching request: generates nothing
        own.custom_params = {k: v for k, v in custom.items() if k not in (DETERMINISTIC_KEY, NEXT_CHOICE_KEY)}
    else:
        # The choices of one prompt share ``custom`` (shallow copies): count them there.
        index = custom.get(NEXT_CHOICE_KEY, 0)
        custom[NEXT_CHOICE_KEY] = index + 1
        own.custom_params = {**{k: v for k, v in custom.items() if k != NEXT_CHOICE_KEY},
                             SEED_KEY: choice_seed(params.sampling_seed, index)}
    tokenized_obj.sampling_params = own
    return None
