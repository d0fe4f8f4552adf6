"""The forward of a verification pass: in SGLang's prefill CUDA graph, or eager (or, with
``--deterministic-verify-graph full``, in one full graph of its own: verify_graph.py).

A pass is an extend forward of B x W tokens, always the same number, so when the server
captured prefill CUDA graphs (SGLang's default on CUDA: breakable graphs, attention run
eagerly between the captured pieces) every pass replays the same captured kernels for the same
token bucket: its numerics depend on the server's configuration alone, as eager ones do. The
eager forward launches its kernels one by one from the host: on 2 H100s (TP2, a 16-layer 1B
model, 256-token passes) a pass took about 22 ms eager and 12 ms in the graph, for about 3 ms
of GPU work (benchmarks/results/bench_determinism/bench_determinism_h100_tp2_llama-1b-verify-path-and-window.json).

The path is chosen at the first pass, logged and reported (``/tokenweave/status``), then kept:
were a later pass refused by the graph runner (it cannot be, for a fixed shape), it fails
loudly rather than silently switching kernels.
"""

from __future__ import annotations

import contextlib

from sglang_tokenweave.glue import report

from .runtime import runtime
from .verify_graph import FEATURE, run_full_graph


def pass_logits(model_runner, forward_batch, rows: int, window: int):
    """The pass's logits at every position (rows x window, vocabulary), on the configured path."""
    if runtime().config.verify_graph == "full":
        return run_full_graph(model_runner, forward_batch, rows, window)
    return run_forward(model_runner, forward_batch).logits_output.next_token_logits


def run_forward(model_runner, forward_batch):
    """``model_runner.forward`` of the pass, on the path chosen at the first pass."""
    rt = runtime()
    if rt.verify_graph is None:
        rt.verify_graph, reason = _choose(model_runner, forward_batch, rt.config.verify_eager)
        report.set_feature_status(FEATURE, rt.verify_graph, reason)  # logged there
    if rt.verify_graph:
        if not model_runner.prefill_cuda_graph_runner.can_run_graph(forward_batch):
            raise RuntimeError("deterministic verification pass: the prefill CUDA graph runner refused "
                               "a pass it ran before; its kernels would change")
        return model_runner.forward(forward_batch)
    with _without_prefill_graph(model_runner):
        return model_runner.forward(forward_batch)


def _choose(model_runner, forward_batch, eager_flag: bool) -> tuple[bool, str]:
    from sglang.srt.model_executor.runner.eager_runner import EagerRunner

    tokens = len(forward_batch.input_ids)
    if eager_flag:
        return False, f"{tokens}-token passes eager: --deterministic-verify-eager"
    runner = model_runner.prefill_cuda_graph_runner
    if runner is None or isinstance(runner, EagerRunner):
        return False, f"{tokens}-token passes eager: the server captured no prefill CUDA graph"
    if not runner.can_run_graph(forward_batch):
        return False, f"{tokens}-token passes eager: the prefill CUDA graph runner does not take them"
    backend = getattr(runner, "prefill_backend_name", "prefill")
    return True, f"{tokens}-token passes replay SGLang's {backend} prefill CUDA graph"


@contextlib.contextmanager
def _without_prefill_graph(model_runner):
    runner, model_runner.prefill_cuda_graph_runner = model_runner.prefill_cuda_graph_runner, None
    try:
        yield
    finally:
        model_runner.prefill_cuda_graph_runner = runner
