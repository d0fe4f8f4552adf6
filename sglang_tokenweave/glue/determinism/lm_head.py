"""Float32 logits for every request of a server that accepts deterministic requests.

Decided once per process from the configuration (not per batch), so the CUDA graphs SGLang
captures at start-up and the verification passes compute the LM head the same way.
"""

from __future__ import annotations

from sglang_tokenweave.determinism.lm_head import logits_float32

from .runtime import runtime


def _plain_weight(processor, lm_head) -> bool:
    """SGLang's own unquantized, un-LoRA'd GEMM path (the one we keep in float32)."""
    from sglang.srt.layers.logits_processor import should_apply_lm_head_quant_method

    return (
        hasattr(lm_head, "weight")
        and not hasattr(lm_head, "set_lora")
        and not should_apply_lm_head_quant_method(lm_head, getattr(lm_head, "quant_method", None))
        and not getattr(lm_head, "use_intel_amx_backend", False)
        and not processor.use_fp32_lm_head  # already float32 throughout
        and processor.rl_on_policy_target is None
    )


def compute_lm_head(original, processor, hidden_states, lm_head, embedding_bias=None):
    """Around-hook on ``LogitsProcessor._compute_lm_head``."""
    if runtime().config.logits_dtype != "float32" or not _plain_weight(processor, lm_head):
        return original(processor, hidden_states, lm_head, embedding_bias)
    return logits_float32(hidden_states, lm_head.weight)
