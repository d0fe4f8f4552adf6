"""The overlay configuration is parsed once per process and read through one object."""

from sglang_tokenweave.config import ARGS_ENV, OverlayConfig
from sglang_tokenweave.glue import process_state


def test_config_is_parsed_once_until_reset(monkeypatch):
    monkeypatch.setattr(process_state, "_config", None)
    monkeypatch.setenv(ARGS_ENV, "--enable-deterministic-requests")
    first = process_state.overlay_config()
    assert first.enable_deterministic_requests
    monkeypatch.setenv(ARGS_ENV, "")
    assert process_state.overlay_config() is first  # the environment is not read again
    process_state.reset()
    assert process_state.overlay_config() == OverlayConfig()
