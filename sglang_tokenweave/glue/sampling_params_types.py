"""``/generate``'s sampling_params held to SGLang's own declaration of them (HTTP 400).

SGLang 0.5.17 builds its ``SamplingParams`` from the JSON object without checking it: an unknown
key or a value of the wrong type ends in a 500, and some (a list where a grammar string goes)
reach the scheduler and end it. The struct declares every field's type; each value is checked
against it with msgspec (SGLang's own dependency), as SGLang reads it: null means the default,
an integral float passes for an int. Integers must fit in 64 bits (the scheduler's tensors).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional

from sglang_tokenweave.determinism.replay_rules import RequestError
from sglang_tokenweave.determinism.request_validation import FIELD

# Fields of the struct that SGLang sets itself (normalize(), __post_init__): not for clients.
INTERNAL = ("stop_strs", "stop_regex_strs", "stop_str_max_len", "stop_regex_max_len", "is_normalized")
INT64 = (-(2**63), 2**63 - 1)


@functools.cache
def sglang_field_types() -> dict[str, Any]:
    import msgspec
    from sglang.srt.sampling.sampling_params import SamplingParams

    return {f.name: f.type for f in msgspec.structs.fields(SamplingParams) if f.name not in INTERNAL}


def _as_sglang_reads(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _too_big(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not INT64[0] <= value <= INT64[1]
    if isinstance(value, (list, tuple)):
        return any(_too_big(v) for v in value)
    if isinstance(value, Mapping):
        return any(_too_big(v) for v in value.values())
    return False


def check_sampling_params(params: Mapping, prefix: str = "sampling_params.",
                          types: Optional[Mapping[str, Any]] = None) -> Optional[RequestError]:
    """The first key of one sampling_params object that SGLang would not read; None if none."""
    import msgspec

    types = sglang_field_types() if types is None else types
    for key, value in params.items():
        if key == FIELD:  # ours (moved on by http_api)
            continue
        if key not in types:
            return RequestError(prefix + key, "not a sampling parameter")
        if value is None:  # SGLang's default
            continue
        value = _as_sglang_reads(value)
        try:
            msgspec.convert(value, types[key])
        except msgspec.ValidationError as error:
            return RequestError(prefix + key, str(error).replace("`$", "`" + key))
        if _too_big(value):
            return RequestError(prefix + key, "integers must fit in 64 bits")
    return None
