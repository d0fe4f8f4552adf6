"""SGLang plugin entry point (group ``sglang.srt.plugins``).

SGLang calls ``activate`` through ``load_plugins()`` in its main process and in every scheduler
process it spawns. Without the switch (``SGLANG_TOKENWEAVE=1``, set by our launcher) this is a
no-op, so installing the package never changes a plain ``sglang.launch_server``.
"""

from __future__ import annotations

import logging
import multiprocessing

from sglang_tokenweave.config import overlay_switched_on

logger = logging.getLogger("sglang_tokenweave")


def activate() -> None:
    if not overlay_switched_on():
        return
    try:
        _activate()
    except Exception as error:  # SGLang's load_plugins logs and swallows Exceptions: abort instead
        raise SystemExit(f"sglang-tokenweave could not start: {error}") from error


def _activate() -> None:
    from sglang_tokenweave.glue import process_state, report
    from sglang_tokenweave.glue.cpu_support import cuda_available
    from sglang_tokenweave.glue.patching import register_hooks
    from sglang_tokenweave.versions import check_sglang_version

    check_sglang_version()
    config = process_state.overlay_config()
    features = {"core", *config.active_features()}
    if not cuda_available():
        features.add("cpu")
    if multiprocessing.parent_process() is None:  # SGLang's children are spawned; this is the top
        features.add("http")
    registered = register_hooks(features)
    report.note_hooks([t.target for t in registered], config.active_features())
    logger.info("sglang-tokenweave plugin: features %s, %d hooks registered", sorted(features), len(registered))
