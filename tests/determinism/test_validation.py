"""Request validation: which deterministic requests get HTTP 400, naming field and reason."""

import pytest

from sglang_tokenweave.determinism.replay_rules import check_replayable, in_use
from sglang_tokenweave.determinism.request_validation import (
    is_deterministic,
    validate_generate_request,
    validate_openai_request,
)


def generate(**params):
    return {"text": "hi", "sampling_params": {"deterministic": True, **params}}


def openai(**fields):
    return {"model": "m", "messages": [], "deterministic": True, **fields}


@pytest.mark.parametrize("value", [None, 1, 0, "true", "false", [True], {"x": 1}])
def test_non_boolean_flag_is_rejected_everywhere(value):
    error = validate_generate_request({"sampling_params": {"deterministic": value}})
    assert error.field == "sampling_params.deterministic" and "boolean" in error.reason
    error = validate_openai_request({"deterministic": value})
    assert error.field == "deterministic" and "boolean" in error.message
    assert error.openai_body()["error"]["param"] == "deterministic"


def test_plain_and_false_requests_are_untouched():
    odd = {"frequency_penalty": 1.0, "regex": "a+", "logit_bias": {"1": 2.0}, "return_hidden_states": True}
    assert validate_generate_request({"sampling_params": odd}) is None
    assert validate_generate_request({"sampling_params": {**odd, "deterministic": False}}) is None
    assert validate_openai_request(odd) is None
    assert validate_openai_request({**odd, "deterministic": False}) is None
    assert validate_generate_request({"text": "x"}) is None


def test_supported_deterministic_requests_pass():
    ok = dict(temperature=0.7, top_p=0.9, top_k=20, min_p=0.05, n=3, stop=["\n"], max_new_tokens=64,
              frequency_penalty=0.0, repetition_penalty=1.0, sampling_seed=-5)
    assert validate_generate_request({**generate(**ok), "return_logprob": True, "stream": True}) is None
    body = openai(seed=2**63 - 1, n=2, logprobs=True, top_logprobs=3, stream=True, temperature=1.2,
                  response_format={"type": "text"}, tools=[{"type": "function", "function": {"name": "f"}}],
                  tool_choice="auto")
    assert validate_openai_request(body) is None
    assert is_deterministic(body) and not is_deterministic({"deterministic": 1})


@pytest.mark.parametrize(
    "params, field, words",
    [
        (dict(regex="a+"), "regex", "grammar"),
        (dict(json_schema="{}"), "json_schema", "grammar"),
        (dict(ebnf="root ::= 'a'"), "ebnf", "grammar"),
        (dict(structural_tag="{}"), "structural_tag", "grammar"),
        (dict(frequency_penalty=0.5), "frequency_penalty", "penalties"),
        (dict(presence_penalty=-0.1), "presence_penalty", "penalties"),
        (dict(repetition_penalty=1.1), "repetition_penalty", "penalties"),
        (dict(min_new_tokens=3), "min_new_tokens", "penalties"),
        (dict(logit_bias={"5": 1.0}), "logit_bias", "logit processors"),
        (dict(sampling_seed=1.5), "sampling_seed", "integer"),
        (dict(sampling_seed=True), "sampling_seed", "integer"),
        (dict(sampling_seed=2**63), "sampling_seed", "must be in"),
        (dict(max_new_tokens=0), "max_new_tokens", "at least 1"),
    ],
)
def test_unsupported_generate_params(params, field, words):
    error = validate_generate_request(generate(**params))
    assert error.field == "sampling_params." + field and words in error.reason


@pytest.mark.parametrize(
    "extra, field",
    [
        (dict(return_hidden_states=True), "return_hidden_states"),
        (dict(return_routed_experts=True), "return_routed_experts"),
        (dict(custom_logit_processor="{...}"), "custom_logit_processor"),
        (dict(session_params={"id": "s"}), "session_params"),
    ],
)
def test_unsupported_generate_request_fields(extra, field):
    assert validate_generate_request({**generate(), **extra}).field == field


def test_batched_generate_checks_each_deterministic_entry():
    body = {
        "text": ["a", "b", "c"],
        "sampling_params": [{"regex": "x"}, {"deterministic": True}, {"deterministic": True, "regex": "y"}],
        "custom_logit_processor": ["p", None, None],
    }
    error = validate_generate_request(body)
    assert error.field == "sampling_params[2].regex"
    body["sampling_params"][2].pop("regex")
    assert validate_generate_request(body) is None  # entry 0's processor is not deterministic
    body["custom_logit_processor"] = "p"
    assert validate_generate_request(body).field == "custom_logit_processor"


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(response_format={"type": "json_schema", "json_schema": {}}), "response_format"),
        (dict(response_format={"type": "json_object"}), "response_format"),
        (dict(tools=[{"function": {"name": "f"}}], tool_choice="required"), "tool_choice"),
        (dict(tools=[{"function": {"name": "f"}}], tool_choice={"type": "function", "function": {"name": "f"}}), "tool_choice"),
        (dict(tools=[{"function": {"name": "f", "strict": True}}]), "tools[0].function.strict"),
        (dict(logit_bias={"1": -100}), "logit_bias"),
        (dict(min_tokens=2), "min_tokens"),
        (dict(presence_penalty=0.3), "presence_penalty"),
        (dict(regex="a"), "regex"),
        (dict(seed="7"), "seed"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(return_hidden_states=True), "return_hidden_states"),
        (dict(custom_logit_processor="x"), "custom_logit_processor"),
    ],
)
def test_unsupported_openai_fields(fields, field):
    assert validate_openai_request(openai(**fields)).field == field


def test_server_without_the_feature_rejects_deterministic_requests():
    assert "--enable-deterministic-requests" in validate_openai_request(openai(), enabled=False).reason
    assert validate_generate_request(generate(), enabled=False).field == "sampling_params.deterministic"
    assert validate_openai_request({"deterministic": False}, enabled=False) is None


def test_the_scheduler_side_names_are_checked_by_the_same_rules():
    # What the scheduler sees: SGLang's SamplingParams fields and its tokenized request's fields.
    assert check_replayable({"json_schema": "{}"}, {}).field == "sampling_params.json_schema"
    assert check_replayable({"repetition_penalty": 1.2}, {}).field == "sampling_params.repetition_penalty"
    assert check_replayable({"frequency_penalty": 0.0, "repetition_penalty": 1.0, "min_new_tokens": 0,
                             "max_new_tokens": None, "sampling_seed": None}, {}) is None
    assert check_replayable({}, {"mm_inputs": {"mm_items": [1]}}).field == "mm_inputs"
    assert check_replayable({}, {"lora_id": "adapter"}).field == "lora_id"
    assert check_replayable({}, {"max_thinking_tokens": 0}).field == "max_thinking_tokens"
    assert check_replayable({}, {"return_hidden_states": False, "session_params": None}) is None


def test_token_ids_logprob_is_refused_for_deterministic_requests():
    body = {"text": "x", "token_ids_logprob": [1, 2], "sampling_params": {"deterministic": True}}
    error = validate_generate_request(body)
    assert error is not None and error.field == "token_ids_logprob"
    assert validate_generate_request({**body, "sampling_params": {"deterministic": False}}) is None


@pytest.mark.parametrize("value, used", [
    (None, False), (False, False), ("", False), ({}, False), ([], False), ([None, False], False),
    (True, True), (0, True), ("x", True), ({"a": 1}, True), ([None, "x"], True), ([[0.5]], True),
])
def test_in_use(value, used):
    assert in_use(value) is used


# --- placements of the field on /generate ---

def test_top_level_flag_is_checked_like_the_sampling_params_one():
    """The field at the top level of /generate, where SGLang users put rid or stream, is honoured
    and checked (SGLang itself would drop it and decode non-deterministically)."""
    body = {"text": "hi", "deterministic": True, "sampling_params": {"regex": "a+"}}
    assert validate_generate_request(body).field == "sampling_params.regex"
    assert validate_generate_request({"text": "hi", "deterministic": True}) is None
    assert validate_generate_request({"text": "hi", "deterministic": True}, enabled=False).field == "deterministic"
    assert validate_generate_request({"text": "hi", "deterministic": "yes"}).field == "deterministic"
    assert validate_generate_request({"text": "hi", "deterministic": False, "sampling_params": {"regex": "a"}}) is None


def test_top_level_flag_applies_to_every_item_of_a_batch():
    body = {"text": ["a", "b"], "deterministic": True, "sampling_params": [{}, {"min_new_tokens": 2}]}
    assert validate_generate_request(body).field == "sampling_params[1].min_new_tokens"
    body = {"input_ids": [[1, 2], [3]], "deterministic": True, "sampling_params": {"logit_bias": {"1": 1.0}}}
    assert validate_generate_request(body).field == "sampling_params.logit_bias"


@pytest.mark.parametrize("top, own, where", [
    (True, False, "sampling_params.deterministic"),
    (False, True, "sampling_params.deterministic"),
])
def test_both_placements_must_agree(top, own, where):
    error = validate_generate_request({"text": "x", "deterministic": top, "sampling_params": {"deterministic": own}})
    assert error.field == "deterministic" and where in error.reason
    error = validate_generate_request({"text": ["x", "y"], "deterministic": top,
                                       "sampling_params": [{"deterministic": top}, {"deterministic": own}]})
    assert error.field == "deterministic" and "sampling_params[1].deterministic" in error.reason
    same = {"text": "x", "deterministic": top, "sampling_params": {"deterministic": top}}
    assert validate_generate_request(same) is None


@pytest.mark.parametrize("params, field", [(5, "sampling_params"), ("x", "sampling_params"),
                                           ([{}, 3], "sampling_params[1]")])
def test_top_level_flag_needs_sampling_params_it_can_mark(params, field):
    body = {"text": ["x", "y"], "deterministic": True, "sampling_params": params}
    assert validate_generate_request(body).field == field
    body.pop("deterministic")  # without the flag, SGLang reports its own type errors
    assert validate_generate_request(body) is None


@pytest.mark.parametrize("body, words", [
    ({"text": "x", "sampling_params": []}, "empty list"),
    ({"text": ["x", "y"], "sampling_params": []}, "empty list"),
    ({"text": "x", "sampling_params": [{}]}, "single prompt"),
    ({"input_ids": [1, 2], "sampling_params": [{}]}, "single prompt"),
    ({"text": ["x", "y"], "sampling_params": [{}]}, "1 entries for a batch of 2"),
    ({"input_ids": [[1], [2], [3]], "sampling_params": [{}, {}]}, "2 entries for a batch of 3"),
])
def test_a_list_of_sampling_params_covers_the_batch(body, words):
    """SGLang answers these with a 500 (an IndexError or AttributeError of its own)."""
    error = validate_generate_request(body)
    assert error.field == "sampling_params" and words in error.reason


def test_batches_with_enough_sampling_params_pass():
    assert validate_generate_request({"text": ["x", "y"], "sampling_params": [{}, {}, {}]}) is None
    assert validate_generate_request({"input_ids": [[1], [2]], "sampling_params": [{}, {}]}) is None
    assert validate_generate_request({"input_embeds": [[[0.5]], [[0.5]]], "sampling_params": [{}, {}]}) is None


# --- custom_params ---

@pytest.mark.parametrize("value", [5, "x", [1], True])
def test_custom_params_must_be_an_object(value):
    for params in ({"custom_params": value}, {"custom_params": value, "deterministic": True}):
        error = validate_generate_request({"text": "x", "sampling_params": params})
        assert error.field == "sampling_params.custom_params" and "object" in error.reason
    error = validate_openai_request({"model": "m", "custom_params": value, "deterministic": True})
    assert error.field == "custom_params"
    assert validate_generate_request({"text": "x", "sampling_params": {"custom_params": None}}) is None


@pytest.mark.parametrize("key", ["tokenweave_deterministic", "tokenweave_validated", "tokenweave_seed",
                                 "tokenweave_anything"])
def test_reserved_custom_params_keys_are_refused(key):
    error = validate_generate_request({"text": "x", "sampling_params": {"custom_params": {key: True}}})
    assert error.field == f"sampling_params.custom_params.{key}" and "reserved" in error.reason
    error = validate_openai_request({"model": "m", "custom_params": {"mine": 1, key: True}})
    assert error.field == f"custom_params.{key}"
    batch = {"text": ["x", "y"], "sampling_params": [{}, {"custom_params": {key: 1}}]}
    assert validate_generate_request(batch).field == f"sampling_params[1].custom_params.{key}"


# --- LoRA, multimodal inputs, input embeddings; stop regexes ---

@pytest.mark.parametrize("extra, field, words", [
    (dict(lora_path="my-adapter"), "lora_path", "LoRA"),
    (dict(lora_id="id"), "lora_id", "LoRA"),
    (dict(image_data="https://x/y.png"), "image_data", "multimodal"),
    (dict(image_data=["a.png", "b.png"]), "image_data", "multimodal"),
    (dict(video_data="v.mp4"), "video_data", "multimodal"),
    (dict(audio_data="a.wav"), "audio_data", "multimodal"),
    (dict(input_embeds=[[0.1, 0.2]]), "input_embeds", "embeddings"),
    (dict(positional_embed_overrides={"x": 1}), "positional_embed_overrides", "embeddings"),
    (dict(max_thinking_tokens=16), "max_thinking_tokens", "grammar"),
])
def test_unreplayable_inputs_are_refused(extra, field, words):
    error = validate_generate_request({**generate(), **extra})
    assert error.field == field and words in error.reason
    top = {"text": "hi", "deterministic": True, **extra}
    assert validate_generate_request(top).field == field
    assert validate_generate_request({"text": "hi", **extra}) is None  # not deterministic: SGLang's business


def test_per_item_inputs_of_a_batch_count_for_their_item_only():
    body = {"text": ["a", "b"], "lora_path": ["x", None], "sampling_params": [{}, {"deterministic": True}]}
    assert validate_generate_request(body) is None
    body["lora_path"] = [None, "x"]
    assert validate_generate_request(body).field == "lora_path"
    # one sampling_params for the whole batch: any item's adapter counts
    assert validate_generate_request({"text": ["a", "b"], "lora_path": ["x", None], "deterministic": True}).field \
        == "lora_path"


def test_openai_lora_and_media_parts_are_refused():
    assert validate_openai_request(openai(lora_path="a")).field == "lora_path"
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    body = openai(messages=[{"role": "user", "content": "hi"},
                            {"role": "user", "content": [{"type": "text", "text": "look"}, image]}])
    error = validate_openai_request(body)
    assert error.field == "messages[1].content[1]" and "multimodal" in error.reason
    body["deterministic"] = False
    assert validate_openai_request(body) is None


def test_stop_regex_is_allowed():
    """Honoured on committed tokens (the scheduler's committed-token finish check)."""
    assert validate_generate_request(generate(stop_regex=["a+b", "\\d"])) is None
    assert validate_openai_request(openai(stop_regex="x$")) is None
