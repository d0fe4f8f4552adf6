"""What the verifier of deterministic requests can replay: one set of rules for both layers.

The HTTP layer holds a request's JSON body to these rules (``request_validation``) and the
scheduler holds every request it receives to them again (``glue.determinism.scheduler_guard``),
so a request that reaches the scheduler by a path the HTTP layer does not see meets the same
rules. Names are SGLang's: sampling fields as in ``SamplingParams`` (the keys of
``/generate``'s ``sampling_params``), request fields as in ``GenerateReqInput`` and
``TokenizedGenerateReqInput``.

A deterministic request may not use (each with the reason given in the error):
- constrained decoding (a grammar, a thinking budget): its state advances with every proposed
  token and is not rolled back;
- penalties and ``min_new_tokens``: the penalisers count proposed tokens, so a rollback would
  leave them wrong;
- ``logit_bias`` and custom logit processors: the verifier applies no logit processor;
- outputs of the batched fast path (hidden states, routed experts, indexer top-k, sampling
  masks): not reproducible;
- sessions: they resume from cached KV of another request;
- ``token_ids_logprob``: the verifier returns the chosen tokens' and the top-k logprobs only;
- LoRA adapters: the verification pass runs the base model;
- multimodal inputs, ``input_embeds``, positional embedding overrides: the verification pass
  replays token ids alone;
- ``max_new_tokens`` of 0 (nothing to verify), a seed outside int64.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

from .seeds import SEED_MAX, SEED_MIN

GRAMMAR = "constrained decoding (grammar) is not supported for deterministic requests"
PENALTY = "penalties count tokens that a deterministic request may roll back; not supported"
PROCESSOR = "logit processors are not applied by the verifier of deterministic requests"
FAST_PATH = "this output comes from the batched fast path and is not reproducible"
SESSION = "sessions reuse another request's KV cache, which deterministic requests never do"
TOKEN_IDS_LOGPROB = "logprobs of chosen token ids are not returned for deterministic requests (use top logprobs)"
LORA = "the verifier of deterministic requests runs the base model without LoRA adapters"
MULTIMODAL = "the verifier of deterministic requests replays token ids only (no multimodal inputs)"
EMBEDS = "the verifier of deterministic requests replays token ids only (no input embeddings)"


@dataclasses.dataclass(frozen=True)
class RequestError:
    field: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.field}: {self.reason}"

    def openai_body(self) -> dict:
        """An OpenAI-style error body for the HTTP 400 answer."""
        return {"error": {"message": self.message, "type": "BadRequestError", "param": self.field, "code": 400}}


def in_use(value: Any) -> bool:
    """Whether a request field asks for something: not null, false, empty, nor a list of such."""
    if value is None or value is False:
        return False
    if isinstance(value, (list, tuple)):
        return any(in_use(item) for item in value)
    if isinstance(value, (str, dict)):
        return len(value) > 0
    return True


def _not(neutral: float) -> Callable[[Any], bool]:
    return lambda value: value is not None and value != neutral


# SamplingParams field -> (is it in use?, why a deterministic request may not use it)
SAMPLING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "json_schema": (in_use, GRAMMAR),
    "regex": (in_use, GRAMMAR),
    "ebnf": (in_use, GRAMMAR),
    "structural_tag": (in_use, GRAMMAR),
    "frequency_penalty": (_not(0), PENALTY),
    "presence_penalty": (_not(0), PENALTY),
    "repetition_penalty": (_not(1), PENALTY),
    "min_new_tokens": (_not(0), PENALTY),
    "logit_bias": (in_use, PROCESSOR),
    "custom_logit_processor": (in_use, PROCESSOR),
}
# Request-level field -> (is it in use?, why). A field given per item of a batch is a list.
REQUEST_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "return_hidden_states": (in_use, FAST_PATH),
    "return_routed_experts": (in_use, FAST_PATH),
    "return_indexer_topk": (in_use, FAST_PATH),
    "return_sampling_mask": (in_use, FAST_PATH),
    "session_params": (in_use, SESSION),
    "session_id": (in_use, SESSION),
    "custom_logit_processor": (in_use, PROCESSOR),
    "max_thinking_tokens": (lambda value: value is not None, GRAMMAR),
    "token_ids_logprob": (in_use, TOKEN_IDS_LOGPROB),
    "lora_path": (in_use, LORA),
    "lora_id": (in_use, LORA),
    "image_data": (in_use, MULTIMODAL),
    "video_data": (in_use, MULTIMODAL),
    "audio_data": (in_use, MULTIMODAL),
    "mm_inputs": (in_use, MULTIMODAL),  # the scheduler's name for them
    "input_embeds": (in_use, EMBEDS),
    "positional_embed_overrides": (in_use, EMBEDS),
}


def check_seed(value: Any, field: str) -> Optional[RequestError]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return RequestError(field, f"must be an integer, got {type(value).__name__}")
    if not SEED_MIN <= value <= SEED_MAX:
        return RequestError(field, f"must be in [{SEED_MIN}, {SEED_MAX}], got {value}")
    return None


def check_max_tokens(value: Any, field: str) -> Optional[RequestError]:
    if value == 0 and not isinstance(value, bool):
        return RequestError(field, "must be at least 1 for deterministic requests")
    return None


def check_rules(fields: Mapping, rules: Mapping, prefix: str = "", index: Optional[int] = None) -> Optional[RequestError]:
    """The first field of ``fields`` that ``rules`` forbid. With ``index``, a list value is a
    batch's per-item values and only item ``index`` counts."""
    for name, (used, reason) in rules.items():
        value = fields.get(name)
        if index is not None and isinstance(value, list):
            value = value[index] if index < len(value) else None
        if used(value):
            return RequestError(prefix + name, reason)
    return None


def check_replayable(sampling: Mapping, request: Mapping, *, sampling_prefix: str = "sampling_params.",
                     index: Optional[int] = None) -> Optional[RequestError]:
    """Whether the verifier can replay a deterministic request: ``sampling`` holds its sampling
    fields (SGLang's names), ``request`` its request-level fields (``index``: its item of a
    batch). None when it can; else the first field it cannot, with the reason."""
    return (
        check_seed(sampling.get("sampling_seed"), sampling_prefix + "sampling_seed")
        or check_max_tokens(sampling.get("max_new_tokens"), sampling_prefix + "max_new_tokens")
        or check_rules(sampling, SAMPLING_RULES, sampling_prefix)
        or check_rules(request, REQUEST_RULES, "", index)
    )
