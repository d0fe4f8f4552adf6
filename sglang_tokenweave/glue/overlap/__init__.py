"""TokenWeave inside SGLang: the feature's modules that import or hook SGLang.

- ``hooks``: the functions the patch table registers (model forward, attention backends,
  prefill CUDA graph admission).
- ``runner_setup``: once per process, decide whether TokenWeave runs (fallback reasons) and build
  the fused communication ops before any CUDA graph is captured.
- ``split_batch``: the ForwardBatch, attention backend and forward context of each token split.
- ``allreduce_dispatch``: which all-reduce SGLang's TP group ran (benchmarks).
- ``bench_paths``: per-forward path records for benchmarks.
- ``one_batch``: SGLang's bench_one_batch with the plugins loaded in every process.

The schedule (``weave``, ``layer_parts``, ``gemm_carveout``, ``synthetic``) and the decisions
(split point, SM budget, fallbacks) are SGLang-free and live in ``sglang_tokenweave.overlap``.
"""
