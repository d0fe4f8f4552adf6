"""A synthetic decoder stack with the interface ``layer_parts`` calls (no SGLang).

Per-shard GEMMs of given shapes, one request's causal attention through PyTorch SDPA, plain
RMSNorms. The tuner times the woven schedule on it with real model shapes, and the CPU tests
check the schedule's arithmetic on it against the unfused layer (all-reduce, add, norm).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from sglang_tokenweave.overlap.layer_parts import attention_into, mlp_into
from sglang_tokenweave.overlap.weave import SplitState, run_decoder


class Linear:
    def __init__(self, in_features, out_features, device, dtype):
        self.weight = torch.randn(out_features, in_features, device=device, dtype=dtype) * in_features**-0.5

    def __call__(self, x, skip_all_reduce=False, forward_batch=None, output_tensor=None):
        if output_tensor is None:
            return x @ self.weight.t(), None
        torch.mm(x, self.weight.t(), out=output_tensor)
        return output_tensor, None


class Norm:
    def __init__(self, hidden, eps, device, dtype):
        self.weight = torch.ones(hidden, device=device, dtype=dtype)
        self.variance_epsilon = eps

    def __call__(self, x):
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.variance_epsilon).to(x.dtype)


class Batch:
    """What the stand-in attention needs of a split: its rows' prefix inside the request."""

    def __init__(self, prefix_len):
        self.prefix_len = prefix_len


class Attention:
    """SDPA over one request: the split's queries see its own rows causally and every
    earlier row (the first split's KV, kept in a per-layer cache) fully."""

    def __init__(self, shapes, head_dim, max_tokens, device, dtype):
        q_out, kv_out = shapes["o"][0], (shapes["qkv"][1] - shapes["o"][0]) // 2
        self.q_size, self.kv_size, self.head_dim = q_out, kv_out, head_dim
        self.qkv_proj = Linear(*shapes["qkv"], device, dtype)
        self.o_proj = Linear(*shapes["o"], device, dtype)
        self.k_cache = torch.empty(max_tokens, kv_out, device=device, dtype=dtype)
        self.v_cache = torch.empty_like(self.k_cache)
        self.rotary_emb = lambda positions, q, k: (q, k)
        self.attn = self._attend

    def _attend(self, q, k, v, batch):
        n, start, d = q.shape[0], batch.prefix_len, self.head_dim
        self.k_cache[start:start + n].copy_(k)
        self.v_cache[start:start + n].copy_(v)
        # [1, heads, tokens, head_dim]: the 4-D layout SDPA's fused (flash) kernels take; a 3-D
        # input falls back to the unfused math path, which materialises every score in fp32.
        qh = q.view(1, n, -1, d).transpose(1, 2)
        kh = self.k_cache[: start + n].view(1, start + n, -1, d).transpose(1, 2)
        vh = self.v_cache[: start + n].view(1, start + n, -1, d).transpose(1, 2)
        groups = qh.shape[1] // kh.shape[1]
        kh, vh = kh.repeat_interleave(groups, dim=1), vh.repeat_interleave(groups, dim=1)
        if start == 0:
            out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
        else:  # queries are the last n of start + n positions: causal from the bottom right
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=causal_lower_right(n, start + n))
        return out.transpose(1, 2).reshape(n, -1)


class Mlp:
    def __init__(self, shapes, device, dtype):
        self.gate_up_proj = Linear(*shapes["gate_up"], device, dtype)
        self.down_proj = Linear(*shapes["down"], device, dtype)

    @staticmethod
    def act_fn(x):
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up


class Layer:
    def __init__(self, shapes, hidden, head_dim, max_tokens, eps, device, dtype):
        self.self_attn = Attention(shapes, head_dim, max_tokens, device, dtype)
        self.mlp = Mlp(shapes, device, dtype)
        self.input_layernorm = Norm(hidden, eps, device, dtype)
        self.post_attention_layernorm = Norm(hidden, eps, device, dtype)


class Stack:
    def __init__(self, num_layers, shapes, hidden, head_dim, max_tokens, eps, device, dtype):
        self.layers = [Layer(shapes, hidden, head_dim, max_tokens, eps, device, dtype) for _ in range(num_layers)]
        self.norm = Norm(hidden, eps, device, dtype)
        self.start_layer, self.end_layer = 0, num_layers


def run_unfused(stack, x, residual, group, communicate: bool = True):
    """SGLang's shape of a layer: all-reduce after each row-parallel GEMM, then add + norm.
    ``communicate=False`` skips the all-reduces: the no-communication bound (wrong sums)."""
    batch = Batch(0)
    out = torch.empty_like(x)
    h = stack.layers[0].input_layernorm(x)
    for i, layer in enumerate(stack.layers):
        attention_into(layer, None, h, batch, out)
        if communicate:
            dist.all_reduce(out, group=group)
        residual = residual + out
        h = layer.post_attention_layernorm(residual)
        mlp_into(layer, h, out)
        if communicate:
            dist.all_reduce(out, group=group)
        residual = residual + out
        last = i == len(stack.layers) - 1
        h = (stack.norm if last else stack.layers[i + 1].input_layernorm)(residual)
    return h


def run_woven(stack, ops, plan, x, residual, num_blocks, comm_stream, carveout: int = 0):
    """The overlay's schedule on ``plan``; returns the parts (each ``hidden`` holds its rows
    of the final norm's output)."""
    h = stack.layers[0].input_layernorm(x)
    parts = []
    for split, op in zip(plan.splits, ops):
        rows = split.token_slice
        parts.append(SplitState(op, rows, split.num_tokens, Batch(split.token_start), None, None,
                                residual[rows], h[rows]))
    run_decoder(stack, parts, comm_stream, num_blocks, carveout=carveout)
    return parts
