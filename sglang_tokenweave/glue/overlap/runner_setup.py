"""Once per process: may TokenWeave run here, and the state it runs with.

Runs right after the model runner built its attention backends, which is after the model
and the tensor-parallel groups exist and before any CUDA graph is captured, so the fused ops
(and their symmetric-memory rendezvous, a collective) are made outside every capture. Every
rank takes the same decision: the local reasons are exchanged and the first one wins.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Optional

import torch

from sglang_tokenweave.glue import report
from sglang_tokenweave.comm import FusedARNorm
from sglang_tokenweave.config import OverlayConfig
from sglang_tokenweave.overlap import TuningKey, TuningTable, load_tuning
from sglang_tokenweave.overlap.fallbacks import ProcessFacts, fallback_reason
from sglang_tokenweave.overlap.layer_parts import layer_shapes, writes_into_buffer

logger = logging.getLogger("sglang_tokenweave")

FEATURE = "tokenweave"
STATE_ATTR = "_tokenweave_state"  # set on the decoder stack (LlamaModel / Qwen2Model)
MIN_CAPACITY = 256
MAX_INITIAL_CAPACITY = 32768  # rows; bigger batches (bench_one_batch) grow the ops on demand


@dataclass
class WeaveState:
    """What the model forward hook needs: built once, read on every forward."""

    config: OverlayConfig
    table: TuningTable
    key: TuningKey
    group: object  # the TP device process group (gloo off CUDA)
    world_size: int
    hidden: int
    dtype: torch.dtype
    eps: float
    on_cuda: bool
    use_multimem: bool
    runner: weakref.ref  # the ModelRunner, for split attention backends
    ops: list = field(default_factory=list)  # [whole batch or split A, split B]
    retired_ops: list = field(default_factory=list)  # replaced ops that captured graphs still use
    split_backends: Optional[list] = None
    comm_stream: Optional[torch.cuda.Stream] = None
    noted: set = field(default_factory=set)  # messages already logged
    # The path of the latest forward the hook ran ("split", "fuse-only", "sglang"), and of each
    # captured CUDA graph by its token count (decode and prefill sizes share keys: a size takes
    # the same path in both): what benchmarks report (glue/overlap/bench_paths.py).
    last_path: str = ""
    captured_paths: dict = field(default_factory=dict)

    @property
    def capacity(self) -> int:
        return self.ops[0].max_tokens if self.ops else 0

    def make_ops(self, max_tokens: int) -> None:
        """(Re)build both fused ops for batches of up to ``max_tokens`` rows (collective).

        A CUDA graph captured with the fused path replays the addresses of the ops it ran
        (buffers, peer pointers, signal pads), so those ops stay alive once replaced."""
        if any(path != "sglang" for path in self.captured_paths.values()):
            self.retired_ops.extend(self.ops)
        self.ops = []  # free the old buffers first (unless a graph replays them)
        self.ops = [
            FusedARNorm(self.group, max_tokens, self.hidden, self.dtype, self.eps, use_multimem=self.use_multimem)
            for _ in range(2)
        ]

    def note_path(self, num_tokens: int, path: str, capturing: bool) -> None:
        self.last_path = path
        if capturing:
            self.captured_paths[num_tokens] = path

    def note_once(self, key: str, message: str) -> None:
        """Log (and publish) ``message`` the first time ``key`` happens in this process."""
        if key not in self.noted:
            self.noted.add(key)
            report.set_feature_status(FEATURE, True, message)


def decoder_stack(model_runner):
    """The LlamaModel / Qwen2Model inside the runner's causal-LM wrapper, or None."""
    from sglang.srt.models.llama import LlamaModel
    from sglang.srt.models.qwen2 import Qwen2Model

    inner = getattr(model_runner.model, "model", None)
    return inner if isinstance(inner, (LlamaModel, Qwen2Model)) else None


def setup_runner(model_runner, config: OverlayConfig) -> Optional[WeaveState]:
    """Decide for this runner's model; attach the state to it when TokenWeave runs."""
    from sglang.srt.distributed.parallel_state import get_tp_group

    tp = get_tp_group()
    model = decoder_stack(model_runner)
    reason = _local_reason(model_runner, model, tp)
    if tp.world_size > 1:
        reasons = [None] * tp.world_size
        torch.distributed.all_gather_object(reasons, reason, group=tp.cpu_group)
        reason = next((r for r in reasons if r), None)
    state = None
    if reason is None:
        table = load_tuning(config.tokenweave_config)  # a bad file aborts start-up, naming the key
        try:
            state = _make_state(model_runner, model, tp, config, table)
        except Exception as error:  # build, rendezvous or shape problems: keep SGLang's path
            reason = f"fused communication op unavailable: {type(error).__name__}: {error}"
    if reason is not None:
        report.set_feature_status(FEATURE, False, f"SGLang's own path kept: {reason}")
        return None
    setattr(model, STATE_ATTR, state)
    multimem = state.ops[0].multimem_refusal if state.use_multimem else ""
    variant = "multimem" if state.use_multimem and not multimem else "p2p"
    if state.on_cuda:
        detail = f"{variant} variant" + (f" ({multimem}; using P2P)" if multimem else "")
    else:
        detail = "reference (gloo) path"
    report.set_feature_status(
        FEATURE, True,
        f"fused all-reduce + residual + RMSNorm, {detail}, tp={state.world_size}, "
        f"tuning {'file ' + config.tokenweave_config if config.tokenweave_config else 'defaults'}",
    )
    return state


def _local_reason(model_runner, model, tp) -> Optional[str]:
    if model is None:
        return f"unsupported model ({type(model_runner.model).__name__}): not a Llama / Qwen2 / Qwen3 decoder stack"
    return fallback_reason(_facts(model_runner, model, tp))


def _facts(model_runner, model, tp) -> ProcessFacts:
    from sglang.srt.distributed.parallel_state import in_the_same_node_as

    server_args = model_runner.server_args
    on_cuda = torch.cuda.is_available() and model_runner.device == "cuda"
    layers = [model.layers[i] for i in range(model.start_layer, model.end_layer)]
    norms = [n for layer in layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    norms.append(model.norm)
    one_node = True
    if tp.world_size > 1:
        one_node = all(in_the_same_node_as(tp.cpu_group, source_rank=0))
    return ProcessFacts(
        tp_size=tp.world_size,
        nnodes=getattr(server_args, "nnodes", 1),
        tp_in_one_node=one_node,
        on_cuda=on_cuda,
        peer_access=_peer_access(tp) if on_cuda and tp.world_size > 1 else True,
        pp_size=model.pp_group.world_size,
        layer_types=tuple(_layer_type(layer) for layer in layers),
        norms_plain=all(_plain_norm(n, norms[0]) for n in norms),
        linears_write_into=all(_has_parts(layer) and writes_into_buffer(layer) for layer in layers),
        captures_aux_hidden=bool(getattr(model, "layers_to_capture", None)),
        other_flags=_conflicting_flags(server_args),
    )


def _layer_type(layer) -> str:
    from sglang.srt.models.llama import LlamaDecoderLayer
    from sglang.srt.models.qwen2 import Qwen2DecoderLayer
    from sglang.srt.models.qwen3 import Qwen3DecoderLayer

    cls = type(layer)
    exact = cls in (LlamaDecoderLayer, Qwen2DecoderLayer, Qwen3DecoderLayer)
    return cls.__name__ if exact else f"{cls.__module__}.{cls.__qualname__}"


def _has_parts(layer) -> bool:
    return all(hasattr(layer, a) for a in ("self_attn", "mlp")) and hasattr(layer.mlp, "down_proj")


def _plain_norm(norm, first) -> bool:
    # Every norm must match what the fused op computes: a weight of the model dtype, one eps.
    return (
        getattr(norm, "has_weight", True)
        and not getattr(norm, "cast_x_before_out_mul", False)
        and not getattr(norm, "fp32_residual", False)
        and getattr(norm, "override_orig_dtype", None) is None
        and getattr(norm, "variance_size_override", None) is None
        and norm.variance_epsilon == first.variance_epsilon
        and norm.weight.dtype == first.weight.dtype
    )


def _conflicting_flags(server_args) -> tuple[str, ...]:
    flags = []
    for name, label in (
        ("enable_dp_attention", "--enable-dp-attention"),
        ("enable_two_batch_overlap", "--enable-two-batch-overlap"),
        ("enable_torch_compile", "--enable-torch-compile (the fused op is not traceable)"),
    ):
        if getattr(server_args, name, False):
            flags.append(label)
    for phase in ("decode", "prefill"):
        if _graph_backend(server_args, phase) == "tc_piecewise":
            flags.append(f"the tc_piecewise {phase} CUDA graph backend (torch.compile traces the forward)")
    return tuple(flags)


def _graph_backend(server_args, phase: str) -> Optional[str]:
    phase_config = getattr(getattr(server_args, "cuda_graph_config", None), phase, None)
    backend = getattr(phase_config, "backend", None)
    return backend if backend is not None else getattr(server_args, f"cuda_graph_backend_{phase}", None)


def _peer_access(tp) -> bool:
    """Every GPU of the TP group can read and write every other one's memory."""
    devices = [None] * tp.world_size
    torch.distributed.all_gather_object(devices, torch.cuda.current_device(), group=tp.cpu_group)
    here = torch.cuda.current_device()
    return all(d == here or torch.cuda.can_device_access_peer(here, d) for d in devices)


def _make_state(model_runner, model, tp, config: OverlayConfig, table: TuningTable) -> WeaveState:
    first = model.layers[model.start_layer]
    norm = model.norm
    on_cuda = torch.cuda.is_available() and model_runner.device == "cuda"
    gpu = torch.cuda.get_device_name() if on_cuda else "cpu"
    hidden = int(norm.weight.shape[0])
    state = WeaveState(
        config=config,
        table=table,
        key=TuningKey.make(gpu, hidden, tp.world_size, layer_shapes(first)),
        group=tp.device_group,
        world_size=tp.world_size,
        hidden=hidden,
        dtype=norm.weight.dtype,
        eps=float(norm.variance_epsilon),
        on_cuda=on_cuda,
        use_multimem=config.tokenweave_comm_variant == "multimem",
        runner=weakref.ref(model_runner),
    )
    state.make_ops(_initial_capacity(model_runner.server_args))
    return state


def _initial_capacity(server_args) -> int:
    """Rows of the largest batch the scheduler forms (larger ones grow the ops later)."""
    sizes = [MIN_CAPACITY]
    chunk = getattr(server_args, "chunked_prefill_size", None)
    if not (isinstance(chunk, int) and chunk > 0):  # no chunking: whole prompts up to this
        chunk = getattr(server_args, "max_prefill_tokens", None)
    if isinstance(chunk, int) and chunk > 0:
        sizes.append(chunk)
    for phase in ("decode", "prefill"):
        phase_config = getattr(getattr(server_args, "cuda_graph_config", None), phase, None)
        max_bs = getattr(phase_config, "max_bs", None)
        if isinstance(max_bs, int) and max_bs > 0:
            sizes.append(max_bs)
    return min(max(sizes), MAX_INITIAL_CAPACITY)
