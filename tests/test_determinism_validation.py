"""Request validation: which deterministic requests get HTTP 400, naming field and reason."""

import pytest

from sglang_tokenweave.determinism.request_validation import (
    is_deterministic,
    validate_generate_request,
    validate_openai_request,
    validate_sampling_params,
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


def test_sampling_params_built_for_tool_calls_are_checked_too():
    assert validate_sampling_params({"deterministic": True, "json_schema": "{}"}, prefix="").field == "json_schema"


def test_token_ids_logprob_is_refused_for_deterministic_requests():
    body = {"text": "x", "token_ids_logprob": [1, 2], "sampling_params": {"deterministic": True}}
    error = validate_generate_request(body)
    assert error is not None and error.field == "token_ids_logprob"
    assert validate_generate_request({**body, "sampling_params": {"deterministic": False}}) is None
