"""SGLang's ``bench_one_batch`` with the plugins loaded in every process it starts.

``python -m sglang_tokenweave.tokenweave.one_batch <sglang.bench_one_batch flags>``, with
``SGLANG_TOKENWEAVE=1`` and ``SGLANG_TOKENWEAVE_ARGS`` set for the overlay (unset: stock SGLang).
SGLang's benchmark never calls ``load_plugins()`` itself; its TP workers are
``multiprocessing`` children, which re-import this module when spawned (and inherit the
patched functions when forked), so loading the plugins at import covers both.
"""

from sglang.srt.plugins import load_plugins

load_plugins()

if __name__ == "__main__":
    from sglang.benchmark.one_batch import cli_main

    cli_main()
