"""The benchmark harness, shared by the benchmark scripts and the test suite.

- ``server``: a server process on a free port, ready when it answers, killed with its tree;
- ``sides``: what is compared: stock SGLang as its users run it (SGLang's entry point and
  defaults) and ours (our launcher and defaults plus the feature under test), with only what
  every process of our machines needs added to both;
- ``plan``: interleaved (ABBA) runs, a fresh server process per run;
- ``stats``: medians with min-max, ratios' spreads from per-repeat pairs;
- ``record``: a result's metadata (git sha and dirty flag, card, versions, command);
- ``allreduce_log`` and ``multicast_probe``: which all-reduce path SGLang chose, and that
  NVLink multicast stayed off;
- ``results``: the results folder's layout and its generated index.

It lives in the package, not beside the scripts, because both the scripts (run as files from
``scripts/``) and the tests (``tests/``) import it without path edits: the package is installed
(editable or not) wherever either runs. Nothing here imports SGLang or torch at module level,
so the tests of the plan, the statistics and the records stay fast.
"""
