"""Whether TokenWeave may run in a process, and if not, the one reason to log.

The glue gathers plain facts about the process (TP size, nodes, peer access, model layers,
linear layers, flags) and this module decides, so the rules are testable without SGLang or a
GPU. The order of the checks is the order of the reasons a user should see first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

SUPPORTED_LAYERS = ("LlamaDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer")
# The CUDA kernel is compiled for these world sizes (csrc/bindings.cpp); off CUDA the reference
# path serves any size.
CUDA_KERNEL_WORLD_SIZES = (2, 4, 8)


@dataclass(frozen=True)
class ProcessFacts:
    tp_size: int
    nnodes: int = 1
    tp_in_one_node: bool = True
    on_cuda: bool = True
    peer_access: bool = True  # every pair of the group's GPUs (ignored off CUDA)
    pp_size: int = 1
    layer_types: tuple[str, ...] = ()
    norms_plain: bool = True  # no RMSNorm variant (fp32 residual, casts, size override)
    linears_write_into: bool = True  # every row-parallel layer can write into a given buffer
    captures_aux_hidden: bool = False  # EAGLE-style auxiliary hidden states
    other_flags: tuple[str, ...] = field(default=())  # conflicting SGLang flags that are on


def fallback_reason(facts: ProcessFacts) -> Optional[str]:
    """None when TokenWeave can run; otherwise why SGLang's own path is kept."""
    if facts.tp_size < 2:
        return f"tensor parallel size is {facts.tp_size}: nothing to all-reduce"
    if facts.nnodes > 1 or not facts.tp_in_one_node:
        return "tensor-parallel group spans nodes: the fused kernel serves one NVLink domain"
    if facts.on_cuda and facts.tp_size not in CUDA_KERNEL_WORLD_SIZES:
        sizes = ", ".join(map(str, CUDA_KERNEL_WORLD_SIZES))
        return f"tensor parallel size is {facts.tp_size}: the fused CUDA kernel serves TP {sizes}"
    if facts.on_cuda and not facts.peer_access:
        return "no peer access between the tensor-parallel GPUs"
    if facts.pp_size > 1:
        return f"pipeline parallelism (pp size {facts.pp_size}) is not supported"
    unsupported = sorted({t for t in facts.layer_types if t not in SUPPORTED_LAYERS})
    if not facts.layer_types or unsupported:
        found = ", ".join(unsupported) or "no decoder layers"
        return f"unsupported model ({found}); supported: dense {', '.join(SUPPORTED_LAYERS)}"
    if not facts.norms_plain:
        return "unsupported model: RMSNorm variant with fp32 residual or dtype overrides"
    if not facts.linears_write_into:
        return "quantized linear layers: the GEMM cannot write into the communication buffer"
    if facts.captures_aux_hidden:
        return "auxiliary hidden states are captured (speculative decoding): they need the full residual"
    if facts.other_flags:
        return f"not supported together with {', '.join(facts.other_flags)}"
    return None
