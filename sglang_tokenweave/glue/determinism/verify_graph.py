"""The verification pass as one full CUDA graph (``--deterministic-verify-graph full``).

SGLang captures the TARGET_VERIFY forwards of speculative decoding with its decode-family graph
runner (``DecodeCudaGraphRunner``: one full graph per shape, attention included). This module
builds one more such runner for the pass's one shape, B rows x W tokens
(``determinism/verify_graph.py`` says why and what differs from the extend forward), on a
server without speculative decoding. It is built at the first pass and kept: every TP rank runs
its passes in lockstep, so all ranks capture together, as capture's barriers need.

What the runner gets, so that it touches none of the state of the server's own graphs:
- its own Triton attention backend (capture sizes a backend's graph buffers; the server's keeps
  its decode graphs'), its KV-index buffer sized B x context length (SGLang sizes it per token,
  B x W x context length, for trees of drafts; a pass reads one prefix per row);
- its own logits buffer of B x W rows (SGLang's shared one is sized for its decode graphs);
- static input buffers of its own, outside SGLang's process-wide pool that hands same-named,
  same-sized buffers to every runner;
- capture width W and the one batch size B in place of the server's (width 1 without
  speculative decoding; its decode batch sizes), only while it is built.
Its graph shares SGLang's CUDA graph memory pool, as SGLang's own graphs do: a pass runs only
once every step in flight has been processed (scheduling.py) and finishes before the next step
is launched (its tokens are read back), so it never replays while another graph does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time

import torch

from sglang_tokenweave.determinism.verify_graph import FULL_GRAPH_ATTENTION
from sglang_tokenweave.glue import report

from .runtime import runtime

logger = logging.getLogger("sglang_tokenweave")

FEATURE = "deterministic_verify_graph"  # the status of the passes' path, whichever it is (verify_forward.py)
CAPTURE_REPORT = "deterministic_verify_full_graph"  # what was captured, in the process report


def verify_input(positions, window: int):
    """SGLang's TARGET_VERIFY input of a pass: rows of ``window`` new tokens each, attending
    causally to their own prefix and to each other, no custom mask, no hidden states. DFlash's
    verify input is exactly that (a linear block of drafts, logits at every token); the Triton
    backend reads the block width from ``draft_token_num`` (there is no speculative decoding
    to read it from)."""
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
    from sglang.srt.speculative.dflash_info import DFlashVerifyInput

    return DFlashVerifyInput(draft_token=None, positions=positions, draft_token_num=window,
                             custom_mask=None, capture_hidden_mode=CaptureHiddenMode.NULL)


def run_full_graph(model_runner, forward_batch, rows: int, window: int):
    """The logits (rows x window, vocabulary) of a TARGET_VERIFY pass, replayed in the full graph
    captured at the first pass. The logits live in the graph's static buffer: read them before
    the next pass."""
    rt = runtime()
    if rt.verify_graph is None:
        rt.verify_graph = False  # until the capture succeeds: a failed one is never tried again
        rt.verify_runner = _capture_or_fail(model_runner, rows, window)
        rt.verify_graph = True
    runner = rt.verify_runner
    if runner is None:
        raise RuntimeError("deterministic verification pass: the full CUDA graph failed to capture at the first pass")
    if not runner.can_run_graph(forward_batch):
        raise RuntimeError("deterministic verification pass: the full CUDA graph runner refused a pass of its "
                           "own shape; its kernels would change")
    return runner.execute(forward_batch).next_token_logits


def _capture_or_fail(model_runner, rows: int, window: int):
    """The runner, reported (log and /tokenweave/status); a failure is reported and raised: the
    user asked for this path, and switching silently would change the verifier's numerics."""
    tokens = rows * window
    started = time.perf_counter()
    free_before, _ = torch.cuda.mem_get_info()
    try:
        runner = build_runner(model_runner, rows, window)
    except Exception as error:
        reason = (f"{tokens}-token passes: --deterministic-verify-graph full could not capture its graph "
                  f"({type(error).__name__}: {error})")
        report.set_feature_status(FEATURE, False, reason)
        logger.error("sglang-tokenweave: %s", reason)
        raise RuntimeError(f"deterministic verification pass: {reason}") from error
    seconds = time.perf_counter() - started
    mib = (free_before - torch.cuda.mem_get_info()[0]) / 2**20
    report.publish(CAPTURE_REPORT, {"rows": rows, "window": window, "tokens": tokens, "mode": "TARGET_VERIFY",
                                    "attention": FULL_GRAPH_ATTENTION, "capture_seconds": round(seconds, 3),
                                    "device_memory_mib": round(mib, 1)})
    report.set_feature_status(FEATURE, True, f"{tokens}-token passes ({rows} rows x {window} tokens) replay one "
                                             f"full CUDA graph (SGLang's TARGET_VERIFY capture, {FULL_GRAPH_ATTENTION} "
                                             f"attention), captured at the first pass in {seconds:.2f} s, "
                                             f"{mib:.0f} MiB of device memory")
    return runner


def build_runner(model_runner, rows: int, window: int):
    """SGLang's decode-family graph runner with one captured graph: TARGET_VERIFY, ``rows`` x ``window``."""
    from sglang.srt.model_executor.graph_shared_output import GraphSharedOutput
    from sglang.srt.model_executor.runner import decode_cuda_graph_runner
    from sglang.srt.model_executor.runner_utils.buffers import DecodeInputBuffers

    backend = _own_attention_backend(model_runner, rows)
    logits = GraphSharedOutput(device=model_runner.device, max_rows=rows * window)
    with contextlib.ExitStack() as scope:
        scope.enter_context(_swapped(model_runner, "decode_num_tokens_per_req", lambda **_: window))
        scope.enter_context(_swapped(decode_cuda_graph_runner, "get_batch_sizes_to_capture",
                                     lambda *_args, **_kwargs: ([rows], [])))
        scope.enter_context(_swapped(model_runner, "graph_shared_output", logits))
        scope.enter_context(_swapped(DecodeInputBuffers, "share_buffers", lambda self: None))
        return _runner_class()(model_runner, attn_backend=backend, speculative_num_draft_tokens=window)


def _own_attention_backend(model_runner, rows: int):
    """A Triton attention backend of the pass's graph alone, its KV-index buffer sized for
    ``rows`` prefixes of at most the request-to-token table's width."""
    from sglang.srt.layers.attention.triton_backend import TritonAttnBackend
    from sglang.srt.model_executor.model_runner_components.attention_backend_setup import (
        _build_backend_from_str,
    )

    backend = _build_backend_from_str(model_runner=model_runner, backend_str=FULL_GRAPH_ATTENTION,
                                      init_new_workspace=False)
    if not isinstance(backend, TritonAttnBackend):  # hybrid / linear-attention models wrap it
        raise RuntimeError(f"the model's attention is {type(backend).__name__}, not SGLang's plain Triton "
                           "attention backend")
    width = model_runner.req_to_token_pool.req_to_token.shape[1]
    kv_indices = torch.zeros(rows * width, dtype=torch.int64, device=model_runner.device)
    backend.init_cuda_graph_state = functools.partial(backend.init_cuda_graph_state, kv_indices_buf=kv_indices)
    return backend


@functools.cache
def _runner_class():
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    from sglang.srt.model_executor.runner.decode_cuda_graph_runner import DecodeCudaGraphRunner
    from sglang.srt.model_executor.runner_backend.full_cuda_graph_backend import FullCudaGraphBackend

    class VerifyPassGraphRunner(DecodeCudaGraphRunner):
        """SGLang's decode-family runner capturing the pass's TARGET_VERIFY shape as one full graph."""

        def capture(self) -> None:
            # Without speculative decoding the constructor chose DECODE, and the server's decode
            # graph backend, which may be the breakable one.
            self.capture_forward_mode = ForwardMode.TARGET_VERIFY
            saver = self.model_runner.server_args.enable_memory_saver
            self.backend = FullCudaGraphBackend(self, enable_memory_saver=saver)
            super().capture()

        def get_spec_info(self, num_tokens: int):
            return verify_input(None, self.captured_req_width)

    return VerifyPassGraphRunner


@contextlib.contextmanager
def _swapped(owner, name: str, value):
    """``owner.name`` (an object's, a class's or a module's) is ``value`` inside, then as before:
    restored where ``owner`` held it itself, removed where it came from ``owner``'s class."""
    own = name in vars(owner)
    before = vars(owner).get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, before)
        else:
            delattr(owner, name)
