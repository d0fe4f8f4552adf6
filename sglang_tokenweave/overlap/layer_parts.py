"""A Llama / Qwen2 / Qwen3 decoder layer cut at its two tensor-parallel all-reduces.

Each part ends with a row-parallel GEMM that writes its partial sums straight into the fused
op's buffer (``output_tensor``) and skips SGLang's all-reduce; the fused op then reduces,
adds the residual and applies the next RMSNorm. The norms themselves are never called here.
"""

from __future__ import annotations

import torch


def _qkv_with_rotary(attn, positions: torch.Tensor, hidden: torch.Tensor):
    # Llama and Qwen3 keep their q/k/v preparation (Qwen3 adds the q/k norms) in one method;
    # Qwen2 does the same steps inline in its forward.
    prepare = getattr(attn, "forward_prepare_native", None)
    if prepare is not None:
        return prepare(positions, hidden)
    qkv, _ = attn.qkv_proj(hidden)
    q, k, v = qkv.split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
    q, k = attn.rotary_emb(positions, q, k)
    return q, k, v


def attention_into(layer, positions, hidden, forward_batch, out: torch.Tensor) -> None:
    """Self-attention of ``hidden`` (already normed); o_proj's partial sums go to ``out``."""
    attn = layer.self_attn
    q, k, v = _qkv_with_rotary(attn, positions, hidden)
    context = attn.attn(q, k, v, forward_batch)
    attn.o_proj(context, skip_all_reduce=True, output_tensor=out)


def mlp_into(layer, hidden: torch.Tensor, out: torch.Tensor) -> None:
    """Gated MLP of ``hidden`` (already normed); down_proj's partial sums go to ``out``."""
    mlp = layer.mlp
    gate_up, _ = mlp.gate_up_proj(hidden)
    mlp.down_proj(mlp.act_fn(gate_up), skip_all_reduce=True, output_tensor=out)


def writes_into_buffer(layer) -> bool:
    """Both row-parallel layers can write into a caller's buffer (unquantized weights)."""
    linears = (layer.self_attn.o_proj, layer.mlp.down_proj)
    return all(hasattr(lin.quant_method, "apply_into") for lin in linears)


def layer_shapes(layer) -> dict[str, tuple[int, int]]:
    """Per-shard [in, out] of the layer's four GEMMs: part of the tuning key."""
    linears = {
        "qkv": layer.self_attn.qkv_proj,
        "o": layer.self_attn.o_proj,
        "gate_up": layer.mlp.gate_up_proj,
        "down": layer.mlp.down_proj,
    }
    return {name: (int(lin.weight.shape[1]), int(lin.weight.shape[0])) for name, lin in linears.items()}
