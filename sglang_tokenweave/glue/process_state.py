"""The overlay's per-process state: its configuration, parsed once.

Every SGLang process (the launcher's, each scheduler / TP worker) inherits the configuration in
the environment (``config.ARGS_ENV``); it is parsed at the first read and the same object is
read everywhere after (plugin, report, hooks, HTTP middleware, the determinism runtime), so the
glue cannot disagree with itself. ``reset`` is for tests that change the environment.
"""

from __future__ import annotations

from typing import Optional

from sglang_tokenweave.config import OverlayConfig, config_from_env

_config: Optional[OverlayConfig] = None


def overlay_config() -> OverlayConfig:
    """This process's overlay configuration (parsed from the environment at the first call)."""
    global _config
    if _config is None:
        _config = config_from_env()
    return _config


def reset() -> None:
    global _config
    _config = None
