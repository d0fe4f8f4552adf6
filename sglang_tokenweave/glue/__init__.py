"""Every module that imports, hooks or calls SGLang; the packages beside ``glue`` import nothing
from SGLang (``tests/test_layering.py`` checks it).

- ``plugin``: the entry point SGLang's ``load_plugins()`` calls in every process.
- ``patch_table``: every SGLang internal we hook or call, declared once; ``patching`` resolves
  and registers it.
- ``process_state``: the per-process state (the overlay config, parsed once).
- ``report``: what the overlay did in this process, for the log and ``/tokenweave/status``.
- ``cpu_support``, ``cpu_grammar``: SGLang serving on a machine without CUDA (tests).
- ``child_exits``: which child process ended the server, and how.
- ``prompt_guard``, ``request_errors``, ``sampling_params_types``, ``scheduler_abort``: bad
  requests answered with HTTP 400 / a bad-request abort instead of a 500 or a dead scheduler.
- ``overlap``: TokenWeave's hooks (the pure schedule is ``sglang_tokenweave.overlap``).
- ``determinism``: deterministic requests' hooks (the pure logic is ``sglang_tokenweave.determinism``).
"""
