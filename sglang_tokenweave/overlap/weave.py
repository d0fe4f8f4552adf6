"""One forward pass of a Llama / Qwen2 / Qwen3 decoder stack with TokenWeave.

Every all-reduce + residual add + RMSNorm is one fused call (``comm.FusedARNorm``); the
residual stays sharded across layers (each rank keeps the rows it reduces), and the final
norm runs inside the last layer's fused call. With two token splits, each split has its own
fused op (buffer and barrier slots), and the split's communication runs on a high-priority
stream while the other split computes:

    compute: attn(A) attn(B) mlp(A) mlp(B) | attn(A) ...
    comm:         ar(A)   ar(B)  ar(A)  ar(B)|

Events order the two streams. Off CUDA the same calls run in the same order on one thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, ContextManager, Optional

import torch

from sglang_tokenweave.overlap.gemm_carveout import gemm_carveout
from sglang_tokenweave.overlap.layer_parts import attention_into, mlp_into


@dataclasses.dataclass
class SplitState:
    """The running state of one token split (the whole batch when it is not split), through the layers."""

    op: object  # comm.FusedARNorm
    rows: slice
    num_tokens: int
    batch: object  # the ForwardBatch attention sees
    backend: Optional[object]  # the split's attention backend; None: the runner's
    positions: torch.Tensor
    residual: torch.Tensor  # rows of the batch-wide residual (valid on owned rows only)
    hidden: torch.Tensor  # normed input of the next GEMM
    ready: Optional[torch.cuda.Event] = None  # hidden is written (comm stream)


def _no_scope(part: SplitState):
    return contextlib.nullcontext()


class _Lanes:
    """Compute on the current stream; communication on ``comm_stream`` when given."""

    def __init__(self, comm_stream: Optional[torch.cuda.Stream]):
        self.comm_stream = comm_stream

    def communicate(self, part: SplitState, fused_call) -> None:
        if self.comm_stream is None:
            part.hidden = fused_call()
            return
        compute = torch.cuda.current_stream()  # never cached: graphs capture on a side stream
        gemm_done = torch.cuda.Event()
        gemm_done.record(compute)
        with torch.cuda.stream(self.comm_stream):
            self.comm_stream.wait_event(gemm_done)
            part.hidden = fused_call()
            part.ready = torch.cuda.Event()
            part.ready.record(self.comm_stream)

    def wait(self, part: SplitState) -> None:
        if part.ready is not None:
            torch.cuda.current_stream().wait_event(part.ready)
            part.ready = None


def run_decoder(model, parts: list[SplitState], comm_stream, num_blocks: Optional[int],
                mode: Optional[str] = None, carveout: int = 0,
                attention_scope: Callable[[SplitState], ContextManager] = _no_scope) -> None:
    """All decoder layers of ``model`` on ``parts`` (one split, or A and B in this order).

    Afterwards each part's ``hidden`` holds its rows of the final norm's output. ``mode``
    forces the fused op's variant (default: the op's own choice by size). ``carveout``: SMs
    the GEMMs leave to the communication kernel while two splits overlap. ``attention_scope(part)``:
    the context each part's attention runs in (the glue selects the split's attention backend).
    """
    overlapped = len(parts) > 1 and comm_stream is not None
    with gemm_carveout(carveout if overlapped else 0):
        _run_layers(model, parts, _Lanes(comm_stream if len(parts) > 1 else None), num_blocks, mode,
                    attention_scope)


def _run_layers(model, parts: list[SplitState], lanes: "_Lanes", num_blocks: Optional[int], mode: Optional[str],
                attention_scope):
    last = model.end_layer - 1
    for i in range(model.start_layer, model.end_layer):
        layer = model.layers[i]
        after_attention = layer.post_attention_layernorm
        after_mlp = model.norm if i == last else model.layers[i + 1].input_layernorm
        for part in parts:
            lanes.wait(part)
            with attention_scope(part):
                attention_into(layer, part.positions, part.hidden, part.batch, part.op.buffer(part.num_tokens))
            lanes.communicate(part, _fused(part, after_attention, num_blocks, mode, final=False))
        for part in parts:
            lanes.wait(part)
            mlp_into(layer, part.hidden, part.op.buffer(part.num_tokens))
            lanes.communicate(part, _fused(part, after_mlp, num_blocks, mode, final=i == last))
    for part in parts:
        lanes.wait(part)


def _fused(part: SplitState, norm, num_blocks: Optional[int], mode: Optional[str], final: bool):
    def call():
        return part.op.run(part.num_tokens, part.residual, norm.weight, final=final, num_blocks=num_blocks,
                           mode=mode)

    return call
