"""Which requests may be deterministic: checks over plain JSON bodies, for HTTP 400 answers.

``deterministic`` must be a JSON boolean wherever it appears (``/generate``: in
``sampling_params``; ``/v1/completions`` and ``/v1/chat/completions``: a body field, so the
OpenAI client's ``extra_body`` carries it). A request without it, or with ``false``, is not
checked any further: it runs exactly as in stock SGLang.

A deterministic request may not use (each with the reason given in the error):
- constrained decoding: ``json_schema``, ``regex``, ``ebnf``, ``structural_tag``,
  ``response_format`` other than text, ``tool_choice`` "required" or a named tool, strict tools;
  the grammar's state advances with every proposed token and is not rolled back;
- ``frequency_penalty``, ``presence_penalty``, ``repetition_penalty``, ``min_new_tokens`` /
  ``min_tokens``: the penalisers count proposed tokens, so a rollback would leave them wrong;
- ``logit_bias`` and custom logit processors: the verifier applies no logit processor;
- ``return_hidden_states``, ``return_routed_experts``, ``return_indexer_topk``,
  ``return_sampling_mask``: these come from the batched fast path and are not reproducible;
- sessions (``session_params``, ``session_id``): they resume from cached KV of another request;
- ``token_ids_logprob`` (logprobs of caller-chosen token ids): the verifier returns the chosen
  tokens' and the top-k logprobs only;
- ``max_new_tokens`` / ``max_tokens`` of 0.
Allowed: temperature, top_p, top_k, min_p, a seed (int64; ``seed`` or ``sampling_seed``),
n > 1 (each choice gets its own derived seed), stop strings and token ids, logprobs, streaming.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

from .seeds import SEED_MAX, SEED_MIN

FIELD = "deterministic"
_GRAMMAR = "constrained decoding (grammar) is not supported for deterministic requests"
_PENALTY = "penalties count tokens that a deterministic request may roll back; not supported"
_PROCESSOR = "logit processors are not applied by the verifier of deterministic requests"
_FAST_PATH = "this output comes from the batched fast path and is not reproducible"
_SESSION = "sessions reuse another request's KV cache, which deterministic requests never do"
_TOKEN_IDS_LOGPROB = "logprobs of chosen token ids are not returned for deterministic requests (use top logprobs)"
_DISABLED = "the server was started without --enable-deterministic-requests"


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


def _set(value: Any) -> bool:
    return value is not None and value is not False and value != "" and value != {} and value != []


def _not(neutral: float) -> Callable[[Any], bool]:
    return lambda value: value is not None and value != neutral


# field -> (is it in use?, why a deterministic request may not use it)
_SAMPLING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "json_schema": (_set, _GRAMMAR),
    "regex": (_set, _GRAMMAR),
    "ebnf": (_set, _GRAMMAR),
    "structural_tag": (_set, _GRAMMAR),
    "frequency_penalty": (_not(0), _PENALTY),
    "presence_penalty": (_not(0), _PENALTY),
    "repetition_penalty": (_not(1), _PENALTY),
    "logit_bias": (_set, _PROCESSOR),
    "custom_logit_processor": (_set, _PROCESSOR),
}
_GENERATE_SAMPLING_RULES = {**_SAMPLING_RULES, "min_new_tokens": (_not(0), _PENALTY)}
# OpenAI bodies carry sampling fields and request-level fields side by side.
_OPENAI_SAMPLING_RULES = {**_SAMPLING_RULES, "min_tokens": (_not(0), _PENALTY)}
# Request-level fields (top level of /generate, per request when given as a list).
_REQUEST_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "return_hidden_states": (_set, _FAST_PATH),
    "return_routed_experts": (_set, _FAST_PATH),
    "return_indexer_topk": (_set, _FAST_PATH),
    "return_sampling_mask": (_set, _FAST_PATH),
    "session_params": (_set, _SESSION),
    "session_id": (_set, _SESSION),
    "custom_logit_processor": (_set, _PROCESSOR),
    "token_ids_logprob": (_set, _TOKEN_IDS_LOGPROB),
}


def check_flag(value: Any, field: str = FIELD) -> Optional[RequestError]:
    """``deterministic`` must be true or false (not null, 0/1 or "true")."""
    if not isinstance(value, bool):
        return RequestError(field, f"must be a boolean (true or false), got {type(value).__name__}")
    return None


def check_seed(value: Any, field: str) -> Optional[RequestError]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return RequestError(field, f"must be an integer, got {type(value).__name__}")
    if not SEED_MIN <= value <= SEED_MAX:
        return RequestError(field, f"must be in [{SEED_MIN}, {SEED_MAX}], got {value}")
    return None


def _check_rules(body: Mapping, rules: Mapping, prefix: str, index: Optional[int] = None) -> Optional[RequestError]:
    for name, (in_use, reason) in rules.items():
        value = body.get(name)
        if index is not None and isinstance(value, list):
            value = value[index] if index < len(value) else None
        if in_use(value):
            return RequestError(prefix + name, reason)
    return None


def _check_max_tokens(value: Any, field: str) -> Optional[RequestError]:
    if value == 0 and not isinstance(value, bool):
        return RequestError(field, "must be at least 1 for deterministic requests")
    return None


def validate_sampling_params(params: Any, prefix: str = "sampling_params.") -> Optional[RequestError]:
    """Check one ``/generate`` sampling_params dict (also usable on the params SGLang builds
    from an OpenAI request, which catches grammars added for tool calls)."""
    if not isinstance(params, Mapping) or FIELD not in params:
        return None
    error = check_flag(params[FIELD], prefix + FIELD)
    if error or not params[FIELD]:
        return error
    return (
        check_seed(params.get("sampling_seed"), prefix + "sampling_seed")
        or _check_max_tokens(params.get("max_new_tokens"), prefix + "max_new_tokens")
        or _check_rules(params, _GENERATE_SAMPLING_RULES, prefix)
    )


def validate_generate_request(body: Mapping, *, enabled: bool = True) -> Optional[RequestError]:
    """Check a ``/generate`` body (single or batched); None when it may proceed."""
    params = body.get("sampling_params")
    entries = list(enumerate(params)) if isinstance(params, list) else [(None, params)]
    for index, entry in entries:
        prefix = "sampling_params." if index is None else f"sampling_params[{index}]."
        error = validate_sampling_params(entry, prefix)
        if error:
            return error
        if isinstance(entry, Mapping) and entry.get(FIELD) is True:
            if not enabled:
                return RequestError(prefix + FIELD, _DISABLED)
            error = _check_rules(body, _REQUEST_RULES, "", index)
            if error:
                return error
    return None


def validate_openai_request(body: Mapping, *, enabled: bool = True) -> Optional[RequestError]:
    """Check a ``/v1/completions`` or ``/v1/chat/completions`` body; None when it may proceed."""
    if FIELD not in body:
        return None
    error = check_flag(body[FIELD])
    if error or not body[FIELD]:
        return error
    if not enabled:
        return RequestError(FIELD, _DISABLED)
    return (
        check_seed(body.get("seed"), "seed")
        or _check_max_tokens(body.get("max_tokens"), "max_tokens")
        or _check_max_tokens(body.get("max_completion_tokens"), "max_completion_tokens")
        or _check_rules(body, _OPENAI_SAMPLING_RULES, "")
        or _check_rules(body, _REQUEST_RULES, "")
        or _check_response_format(body.get("response_format"))
        or _check_tools(body)
    )


def _check_response_format(value: Any) -> Optional[RequestError]:
    kind = value.get("type") if isinstance(value, Mapping) else value
    if kind not in (None, "text"):
        return RequestError("response_format", _GRAMMAR)
    return None


def _check_tools(body: Mapping) -> Optional[RequestError]:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if choice == "required" or isinstance(choice, Mapping):
        return RequestError("tool_choice", _GRAMMAR)
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and function.get("strict"):
            return RequestError(f"tools[{i}].function.strict", _GRAMMAR)
    return None


def is_deterministic(params_or_body: Any) -> bool:
    """True for a validated sampling_params dict or OpenAI body that asks for determinism."""
    return isinstance(params_or_body, Mapping) and params_or_body.get(FIELD) is True
