"""SGLang's ``bench_one_batch`` with the plugins loaded in every process it starts.

``python -m sglang_tokenweave.glue.overlap.one_batch <sglang.bench_one_batch flags>``, with
``SGLANG_TOKENWEAVE=1`` and ``SGLANG_TOKENWEAVE_ARGS`` set for the overlay (unset: stock SGLang,
the plugin a no-op). With ``SGLANG_TOKENWEAVE_BENCH_PATHS`` set, the path of every prefill is
recorded there (``bench_paths.py``), with or without the overlay.
SGLang's benchmark never calls ``load_plugins()`` itself; its TP workers are
``multiprocessing`` children, which re-import this module when spawned (and inherit the
patched functions when forked), so loading the plugins at import covers both.
"""

import os

from sglang.srt.plugins import load_plugins

from sglang_tokenweave.glue.overlap.bench_paths import FEATURE, PATHS_ENV

if os.environ.get(PATHS_ENV):
    from sglang_tokenweave.glue.patching import register_hooks

    register_hooks({FEATURE})  # applied by load_plugins below, next to the plugin's hooks
load_plugins()

if __name__ == "__main__":
    from sglang.benchmark.one_batch import cli_main

    cli_main()
