"""Resolving the patch table against the installed SGLang and registering its hooks.

A target that is missing aborts start-up with its name: a silent no-op hook would leave the
server running without the behaviour the user asked for.
"""

from __future__ import annotations

import importlib
import logging
from typing import Iterable

from sglang_tokenweave.glue.patch_table import CALLED, PATCH_TABLE, PatchTarget

logger = logging.getLogger("sglang_tokenweave")


class PatchTargetMissing(RuntimeError):
    pass


def resolve(dotted: str):
    """Import the longest importable module prefix of ``dotted``, then walk attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # this prefix is not a module; try a shorter one
            raise
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                raise PatchTargetMissing(f"SGLang patch target {dotted!r}: {attr!r} not found in {obj!r}")
            obj = getattr(obj, attr)
        return obj
    raise PatchTargetMissing(f"SGLang patch target {dotted!r}: no importable module")


def resolve_hook(spec: str):
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def check_targets(targets: Iterable[PatchTarget] = PATCH_TABLE) -> None:
    """Resolve every target (and our hook for it); raise one error naming all that are missing."""
    problems = []
    for t in targets:
        try:
            resolve(t.target)
        except PatchTargetMissing as error:
            problems.append(str(error))
        try:
            resolve_hook(t.hook)
        except (ImportError, AttributeError) as error:
            problems.append(f"hook {t.hook!r} for {t.target!r}: {error}")
    if problems:
        raise PatchTargetMissing("; ".join(problems))


def register_hooks(features: set[str], targets: Iterable[PatchTarget] = PATCH_TABLE) -> list[PatchTarget]:
    """Register the hooks of the active features with SGLang's HookRegistry (their called
    internals are resolved, not registered); returns the hooks registered.

    SGLang's ``load_plugins`` applies them right after the plugin returns.
    """
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    chosen = [t for t in targets if t.feature in features]
    check_targets(chosen)  # the called internals too: a rename fails here, not at first use
    for t in chosen:
        if t.kind == CALLED:
            continue
        HookRegistry.register(t.target, resolve_hook(t.hook), HookType[t.kind.upper()])
        logger.debug("sglang-tokenweave: %s hook on %s (%s)", t.kind, t.target, t.why)
    return [t for t in chosen if t.kind != CALLED]
