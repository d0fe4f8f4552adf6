"""TokenWeave inside SGLang: the only modules of the feature that import SGLang.

- ``hooks``: the functions the patch table registers (model forward, attention backends,
  prefill CUDA graph admission).
- ``runner_setup``: once per process, decide whether TokenWeave runs (fallback reasons) and build
  the fused communication ops before any CUDA graph is captured.
- ``weave``: one forward pass, fuse-only or in two token splits with overlapped communication.
- ``layer_parts``: a decoder layer cut at its all-reduces (attention part, MLP part).
- ``split_batch``: the ForwardBatch and attention backend of each token split.
- ``one_batch``: SGLang's bench_one_batch with the plugins loaded in every process.
- ``synthetic``: a decoder stack of given shapes without SGLang (the tuner and CPU tests).

Decisions (split point, SM budget, fallbacks) are pure and live in ``sglang_tokenweave.overlap``.
"""
