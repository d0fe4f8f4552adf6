"""/generate's sampling_params against SGLang's declaration of SamplingParams: what SGLang would
answer with a 500, or let reach (and end) the scheduler, gets HTTP 400 naming the field."""

import pytest

from sglang_tokenweave.glue.sampling_params_types import INTERNAL, check_sampling_params, sglang_field_types


@pytest.mark.parametrize("params, field, words", [
    ({"temperature": [0.8]}, "temperature", "Expected `float`, got `array`"),
    ({"regex": ["a"]}, "regex", "Expected `str | null`"),  # would end the scheduler (grammar cache)
    ({"stop": 5}, "stop", "got `int`"),
    ({"stop": ["a", 1]}, "stop", "at `stop[1]`"),
    ({"logit_bias": {"1": "x"}}, "logit_bias", "got `str`"),
    ({"max_new_tokens": 4.5}, "max_new_tokens", "got `float`"),
    ({"no_such_key": 1}, "no_such_key", "not a sampling parameter"),
    ({"seed": None}, "seed", "not a sampling parameter"),  # OpenAI's name; SGLang's is sampling_seed
    ({"is_normalized": True}, "is_normalized", "not a sampling parameter"),
    ({"top_k": 2**70}, "top_k", "64 bits"),
    ({"custom_params": {"a": [1, {"b": 2}]}}, "custom_params", "got `object`"),
])
def test_what_sglang_would_not_read(params, field, words):
    error = check_sampling_params(params, "sampling_params[1].")
    assert error.field == "sampling_params[1]." + field and words in error.reason


def test_what_sglang_reads():
    ok = {"max_new_tokens": 4.0, "temperature": None, "top_p": 1, "stop": ["a"], "stop_token_ids": [1, 2],
          "stop_regex": "x+", "logit_bias": {"3": -1}, "sampling_seed": -(2**63), "custom_params": {"a": [1]},
          "n": 2, "ignore_eos": True, "deterministic": "checked elsewhere"}
    assert check_sampling_params(ok) is None


def test_the_fields_are_sglangs():
    types = sglang_field_types()
    assert {"max_new_tokens", "temperature", "stop", "custom_params", "sampling_seed"} <= set(types)
    assert not set(INTERNAL) & set(types)
