"""The ForwardBatch and attention backend of one token split.

SGLang's two-batch-overlap code cuts a ForwardBatch by token and request ranges
(``TboForwardBatchPreparer.filter_batch``); it assumes every request lies wholly in one child.
Our cut may fall inside a request, so the per-request lengths are then rewritten from the
plan: the straddling request's piece in split B sees its piece in split A as cached prefix
(attention(A) writes that KV before attention(B) reads it, in every layer).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from sglang_tokenweave.overlap import Split


def _device_ints(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(list(values), dtype=like.dtype).to(like.device, non_blocking=True)


def child_batch(parent, split: Split):
    """The batch attention sees for ``split``'s rows (raises if SGLang cannot cut ``parent``)."""
    from sglang.srt.batch_overlap.two_batch_overlap import TboForwardBatchPreparer

    requests = split.request_slice
    child = TboForwardBatchPreparer.filter_batch(
        parent,
        start_token_index=split.token_start,
        end_token_index=split.token_end,
        start_seq_index=requests.start,
        end_seq_index=requests.stop,
        out_num_token_non_padded=_device_ints([split.num_tokens], parent.seq_lens),
    )
    seq_lens = split.seq_lens
    child.seq_lens = _device_ints(seq_lens, parent.seq_lens)
    child.seq_lens_cpu = torch.tensor(seq_lens, dtype=parent.seq_lens_cpu.dtype)
    child.seq_lens_sum = sum(seq_lens)
    child.extend_seq_lens = _device_ints(split.extend_seq_lens, parent.extend_seq_lens)
    child.extend_seq_lens_cpu = list(split.extend_seq_lens)
    child.extend_prefix_lens = _device_ints(split.extend_prefix_lens, parent.extend_prefix_lens)
    child.extend_prefix_lens_cpu = list(split.extend_prefix_lens)
    child.extend_start_loc = _device_ints(split.extend_start_loc, parent.extend_start_loc)
    child.extend_num_tokens = split.num_real_tokens
    return child


def new_attention_backend(model_runner):
    """A second instance of the runner's prefill attention backend: its per-forward plan
    (index buffers, metadata) is instance state, so each split needs its own."""
    from sglang.srt.model_executor.model_runner_components.attention_backend_setup import (
        _build_backend_from_str,
    )

    backend_name = model_runner.prefill_attention_backend_str
    return _build_backend_from_str(model_runner=model_runner, backend_str=backend_name, init_new_workspace=False)


def split_attention_scope(part):
    """The forward context with ``part``'s own attention backend (the runner's when it has none)."""
    if part.backend is None:
        return contextlib.nullcontext()
    from sglang.srt.model_executor.forward_context import forward_context, get_forward_context

    return forward_context(dataclasses.replace(get_forward_context(), attn_backend=part.backend))
