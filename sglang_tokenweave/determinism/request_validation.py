"""Which requests may be deterministic: checks over decoded JSON bodies, for HTTP 400 answers.

Where ``deterministic`` goes (a JSON boolean wherever it appears):
- ``/generate``: at the top level of the body (for every item of a batch) or in
  ``sampling_params`` (for that item; a list of sampling_params gives each item its own). Both
  present and different is an error naming both.
- ``/v1/completions`` and ``/v1/chat/completions``: a body field (the OpenAI client's
  ``extra_body`` carries it).
A request without it, or with ``false``, is not checked any further (it runs exactly as in
stock SGLang), except that ``custom_params`` must be an object whose keys do not start with
``tokenweave_`` (reserved for the server).

A deterministic request is held to ``replay_rules``, plus, on the OpenAI routes: no
``response_format`` other than text, no forced or strict tool calls (both are grammars), no
image, video or audio content parts. Allowed: temperature, top_p, top_k, min_p, a seed (int64;
``seed`` or ``sampling_seed``), n > 1 (each choice gets its own derived seed), stop strings,
stop regexes and stop token ids, logprobs, streaming.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from .replay_rules import (
    GRAMMAR,
    MULTIMODAL,
    REQUEST_RULES,
    SAMPLING_RULES,
    RequestError,
    check_max_tokens,
    check_replayable,
    check_rules,
    check_seed,
)

__all__ = ["FIELD", "RESERVED_PREFIX", "RequestError", "check_flag", "check_generate_shape", "generate_flags",
           "is_deterministic", "validate_generate_request", "validate_openai_request"]

FIELD = "deterministic"
RESERVED_PREFIX = "tokenweave_"  # custom_params keys the server sets on its way to the scheduler
_DISABLED = "the server was started without --enable-deterministic-requests"
_MEDIA_PARTS = ("image_url", "video_url", "audio_url", "input_audio")
# OpenAI bodies carry sampling fields and request-level fields side by side, some renamed.
_OPENAI_RULES = {"min_tokens" if name == "min_new_tokens" else name: rule
                 for name, rule in {**SAMPLING_RULES, **REQUEST_RULES}.items()}


def check_flag(value: Any, field: str = FIELD) -> Optional[RequestError]:
    """``deterministic`` must be true or false (not null, 0/1 or "true")."""
    if not isinstance(value, bool):
        return RequestError(field, f"must be a boolean (true or false), got {type(value).__name__}")
    return None


def check_custom_params(value: Any, field: str) -> Optional[RequestError]:
    """``custom_params`` is an object (or null) and holds none of the server's own keys."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return RequestError(field, f"must be an object, got {type(value).__name__}")
    for key in value:
        if isinstance(key, str) and key.startswith(RESERVED_PREFIX):
            return RequestError(f"{field}.{key}", f"keys starting with {RESERVED_PREFIX!r} are reserved for "
                                                  f"the server; send \"{FIELD}\": true instead")
    return None


def _entries(params: Any) -> list[tuple[Optional[int], Any, str]]:
    """(index or None, entry, field prefix) of /generate's sampling_params, single or a list."""
    if isinstance(params, list):
        return [(i, entry, f"sampling_params[{i}].") for i, entry in enumerate(params)]
    return [(None, params, "sampling_params.")]


def generate_flags(body: Mapping) -> tuple[Optional[RequestError], list[bool]]:
    """Whether each sampling_params entry of a /generate body is deterministic (one for a
    single dict or none), with both placements of the field resolved; or the error."""
    top = body.get(FIELD)
    if FIELD in body and (error := check_flag(top)):
        return error, []
    params = body.get("sampling_params")
    if top is True and params is not None and not isinstance(params, (Mapping, list)):
        return RequestError("sampling_params", "must be an object or a list of objects"), []
    if top is True and params == []:
        return RequestError("sampling_params", "must not be an empty list for a deterministic request"), []
    flags = []
    for _, entry, prefix in _entries(params):
        if not isinstance(entry, Mapping):
            if top is True and entry is not None:
                return RequestError(prefix[:-1], "must be an object"), []
            flags.append(top is True)
            continue
        error = check_custom_params(entry.get("custom_params"), prefix + "custom_params")
        if error:
            return error, []
        if FIELD not in entry:
            flags.append(top is True)
            continue
        own = entry[FIELD]
        if error := check_flag(own, prefix + FIELD):
            return error, []
        if FIELD in body and own != top:
            return RequestError(FIELD, f"conflicts with {prefix}{FIELD} ({str(top).lower()} vs {str(own).lower()}); "
                                       "give it once, or the same value in both places"), []
        flags.append(own)
    return None, flags


def _batch_size(body: Mapping) -> Optional[int]:
    """The number of prompts of a batched /generate body; None for a single prompt (as SGLang
    tells them apart: text a list, input_ids a list of lists, input_embeds a list of lists of
    lists)."""
    for key, depth in (("text", 1), ("input_ids", 2), ("input_embeds", 3)):
        value = body.get(key)
        if value is None:
            continue
        inner = value
        for _ in range(depth - 1):
            inner = inner[0] if isinstance(inner, list) and inner else None
        return len(value) if isinstance(value, list) and isinstance(inner, list) else None
    return None


def check_generate_shape(body: Mapping) -> Optional[RequestError]:
    """A list of sampling_params must give every prompt one (SGLang answers 500 otherwise)."""
    params = body.get("sampling_params")
    if not isinstance(params, list):
        return None
    if not params:
        return RequestError("sampling_params", "must not be an empty list")
    size = _batch_size(body)
    if size is None:
        return RequestError("sampling_params", "must be an object for a single prompt (a list is for a batch)")
    if len(params) < size:
        return RequestError("sampling_params", f"has {len(params)} entries for a batch of {size} prompts")
    return None


def validate_generate_request(body: Mapping, *, enabled: bool = True) -> Optional[RequestError]:
    """Check a ``/generate`` body (single or batched); None when it may proceed."""
    error, flags = generate_flags(body)
    if error:
        return error
    error = check_generate_shape(body)
    if error:
        return error
    per_item = isinstance(body.get("sampling_params"), list)
    for (index, entry, prefix), deterministic in zip(_entries(body.get("sampling_params")), flags):
        if not deterministic:
            continue
        if not enabled:
            return RequestError(prefix + FIELD if isinstance(entry, Mapping) and FIELD in entry else FIELD, _DISABLED)
        error = check_replayable(entry if isinstance(entry, Mapping) else {}, body,
                                 sampling_prefix=prefix, index=index if per_item else None)
        if error:
            return error
    return None


def validate_openai_request(body: Mapping, *, enabled: bool = True) -> Optional[RequestError]:
    """Check a ``/v1/completions`` or ``/v1/chat/completions`` body; None when it may proceed."""
    error = check_custom_params(body.get("custom_params"), "custom_params")
    if error or FIELD not in body:
        return error
    error = check_flag(body[FIELD])
    if error or not body[FIELD]:
        return error
    if not enabled:
        return RequestError(FIELD, _DISABLED)
    return (
        check_seed(body.get("seed"), "seed")
        or check_max_tokens(body.get("max_tokens"), "max_tokens")
        or check_max_tokens(body.get("max_completion_tokens"), "max_completion_tokens")
        or check_rules(body, _OPENAI_RULES)
        or _check_response_format(body.get("response_format"))
        or _check_tools(body)
        or _check_media(body.get("messages"))
    )


def _check_response_format(value: Any) -> Optional[RequestError]:
    kind = value.get("type") if isinstance(value, Mapping) else value
    if kind not in (None, "text"):
        return RequestError("response_format", GRAMMAR)
    return None


def _check_tools(body: Mapping) -> Optional[RequestError]:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if choice == "required" or isinstance(choice, Mapping):
        return RequestError("tool_choice", GRAMMAR)
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and function.get("strict"):
            return RequestError(f"tools[{i}].function.strict", GRAMMAR)
    return None


def _check_media(messages: Any) -> Optional[RequestError]:
    """Chat content parts that carry images, video or audio."""
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, Mapping) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, Mapping) and part.get("type") in _MEDIA_PARTS:
                return RequestError(f"messages[{i}].content[{j}]", f"{part['type']}: {MULTIMODAL}")
    return None


def is_deterministic(params_or_body: Any) -> bool:
    """True for a validated sampling_params dict or OpenAI body that asks for determinism."""
    return isinstance(params_or_body, Mapping) and params_or_body.get(FIELD) is True
