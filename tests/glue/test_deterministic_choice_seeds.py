"""Per-choice seeds set on the tokenizer side (fake request objects, no SGLang)."""

import copy
import dataclasses

from sglang_tokenweave.determinism.seeds import choice_seed
from sglang_tokenweave.glue.determinism.markers import DETERMINISTIC_KEY, SEED_KEY, is_marked
from sglang_tokenweave.glue.determinism.tokenizer_side import assign_choice_seed


@dataclasses.dataclass
class Params:
    max_new_tokens: int = 8
    sampling_seed: int | None = 42
    custom_params: dict | None = None


@dataclasses.dataclass
class Tokenized:
    sampling_params: Params


def _send_like_sglang(n):
    """What SGLang sends for n > 1: a prompt-caching request, then n shallow copies."""
    params = Params(custom_params={DETERMINISTIC_KEY: True})
    cache = Tokenized(copy.copy(params))
    cache.sampling_params.max_new_tokens = 0
    sent = [cache] + [Tokenized(params) for _ in range(n)]
    for obj in sent:
        assign_choice_seed(None, obj)
    return sent


def test_each_choice_gets_its_own_seed_and_choice_zero_matches_n1():
    cache, *choices = _send_like_sglang(3)
    assert not is_marked(cache.sampling_params.custom_params)  # generates nothing: not deterministic
    seeds = [c.sampling_params.custom_params[SEED_KEY] for c in choices]
    assert seeds == [choice_seed(42, i) for i in range(3)]
    assert len(set(seeds)) == 3
    single = Tokenized(Params(custom_params={DETERMINISTIC_KEY: True}))
    assign_choice_seed(None, single)
    assert single.sampling_params.custom_params[SEED_KEY] == seeds[0]


def test_non_deterministic_requests_are_left_alone():
    obj = Tokenized(Params(custom_params={"x": 1}))
    before = obj.sampling_params
    assign_choice_seed(None, obj)
    assert obj.sampling_params is before and obj.sampling_params.custom_params == {"x": 1}
