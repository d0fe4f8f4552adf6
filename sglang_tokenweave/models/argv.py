"""The model in an SGLang command line: which value names it, and the line with it resolved."""

from __future__ import annotations

from typing import Callable, Sequence

MODEL_FLAGS = ("--model-path", "--model")
SERVED_NAME_FLAG = "--served-model-name"


def _flag_of(arg: str) -> str:
    return arg.split("=", 1)[0]


def model_arg(argv: Sequence[str]) -> str | None:
    """The value of the last ``--model-path``/``--model`` (argparse keeps the last), or None."""
    value = None
    for i, arg in enumerate(argv):
        flag = _flag_of(arg)
        if flag in MODEL_FLAGS:
            if "=" in arg:
                value = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                value = argv[i + 1]
    return value


def with_model_resolved(argv: Sequence[str], resolve: Callable[[str], tuple[str, str | None]]) -> list[str]:
    """``argv`` with every model value replaced by ``resolve(value)[0]``, and
    ``--served-model-name resolve(value)[1]`` added when that is a name and none was given."""
    value = model_arg(argv)
    if value is None:
        return list(argv)
    path, name = resolve(value)
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        flag = _flag_of(arg)
        if flag in MODEL_FLAGS:
            if "=" in arg:
                out.append(f"{flag}={path}")
            else:
                out += [flag, path] if i + 1 < len(argv) else [arg]
                skip = True
            continue
        out.append(arg)
    if name and not any(_flag_of(a) == SERVED_NAME_FLAG for a in argv):
        out += [SERVED_NAME_FLAG, name]
    return out
