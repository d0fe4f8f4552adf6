"""The scheduler's own check of deterministic requests: a marker without the HTTP layer's stamp,
or a request the verifier cannot replay, is aborted (fake request objects; SGLang's names)."""

import dataclasses

import pytest

from sglang_tokenweave.determinism.replay_rules import REQUEST_RULES, SAMPLING_RULES
from sglang_tokenweave.glue.determinism import scheduler_guard
from sglang_tokenweave.glue.determinism.markers import DETERMINISTIC_KEY, VALIDATED_KEY, mark
from sglang_tokenweave.glue.determinism.scheduler_guard import refusal, refuse_unreplayable


@dataclasses.dataclass
class Params:  # the SamplingParams fields the guard reads, at SGLang's defaults
    custom_params: dict | None = None
    max_new_tokens: int | None = 16
    sampling_seed: int | None = None
    min_new_tokens: int = 0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    structural_tag: str | None = None
    logit_bias: dict | None = None
    stop_regex_strs: list | None = None


@dataclasses.dataclass
class Tokenized:  # TokenizedGenerateReqInput, the fields the guard reads
    sampling_params: Params
    mm_inputs: dict | None = None
    input_embeds: list | None = None
    lora_id: str | None = None
    session_params: object = None
    custom_logit_processor: str | None = None
    return_hidden_states: bool = False
    token_ids_logprob: list | None = None


def _validated(**params):
    return Tokenized(Params(custom_params=mark({"mine": 1}), **params))


def test_plain_and_validated_requests_are_served():
    assert refusal(Tokenized(Params())) is None
    assert refusal(Tokenized(Params(custom_params={"mine": 1}))) is None
    assert refusal(_validated(stop_regex_strs=["a+"], sampling_seed=-3)) is None


@pytest.mark.parametrize("custom", [{DETERMINISTIC_KEY: True}, {DETERMINISTIC_KEY: True, VALIDATED_KEY: "yes"}])
def test_a_marker_without_the_stamp_is_refused(custom):
    reason = refusal(Tokenized(Params(custom_params=custom)))
    assert reason.startswith("custom_params:") and "\"deterministic\": true" in reason


@pytest.mark.parametrize("request_, field", [
    (_validated(repetition_penalty=1.1), "sampling_params.repetition_penalty"),  # e.g. a model's generation config
    (_validated(min_new_tokens=2), "sampling_params.min_new_tokens"),
    (_validated(json_schema="{}"), "sampling_params.json_schema"),  # e.g. a grammar for tool calls
    (_validated(max_new_tokens=0), "sampling_params.max_new_tokens"),
    (_validated(sampling_seed=2**64), "sampling_params.sampling_seed"),
    (dataclasses.replace(_validated(), mm_inputs={"mm_items": [object()]}), "mm_inputs"),
    (dataclasses.replace(_validated(), input_embeds=[[0.5]]), "input_embeds"),
    (dataclasses.replace(_validated(), lora_id="adapter-1"), "lora_id"),
    (dataclasses.replace(_validated(), session_params=object()), "session_params"),
    (dataclasses.replace(_validated(), token_ids_logprob=[3]), "token_ids_logprob"),
    (Tokenized(Params(custom_params={**mark(None), "thinking_budget": 8})), "max_thinking_tokens"),
])
def test_unreplayable_requests_are_refused_naming_the_field(request_, field):
    assert refusal(request_).startswith(field + ":")


def test_the_hook_serves_or_aborts(monkeypatch):
    aborted, served = [], []
    monkeypatch.setattr(scheduler_guard, "abort_request", lambda s, r, message: aborted.append((r, message)))
    ok, bad = _validated(), _validated(presence_penalty=0.5)
    refuse_unreplayable(lambda s, r: served.append(r), "scheduler", ok)
    refuse_unreplayable(lambda s, r: served.append(r), "scheduler", bad)
    assert served == [ok]
    assert aborted == [(bad, "deterministic request refused: sampling_params.presence_penalty: "
                             "penalties count tokens that a deterministic request may roll back; not supported")]


def test_rule_names_are_sglangs():
    from sglang.srt.managers.io_struct import GenerateReqInput, TokenizedGenerateReqInput
    from sglang.srt.sampling.sampling_params import SamplingParams

    sampling = set(SamplingParams.__struct_fields__)  # a msgspec struct
    requests = {f.name for f in dataclasses.fields(GenerateReqInput)} | set(TokenizedGenerateReqInput.__struct_fields__)
    assert set(SAMPLING_RULES) - {"custom_logit_processor"} <= sampling
    assert {"sampling_seed", "max_new_tokens", "custom_params", "stop_regex_strs"} <= sampling
    assert set(REQUEST_RULES) <= requests
    assert {f.name for f in dataclasses.fields(Tokenized)} <= requests
    assert {f.name for f in dataclasses.fields(Params)} <= sampling
