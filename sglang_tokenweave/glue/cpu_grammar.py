"""Constrained decoding (``regex``, ``json_schema``, ``ebnf``) on a CPU server.

SGLang's xgrammar backend allocates its token bitmask in pinned memory (for a non-blocking copy
to the GPU) and applies it with a Triton kernel; without a CUDA driver both raise inside the
scheduler, which then dies with every request in flight. On CPU the bitmask stays an ordinary
CPU tensor (the logits' device) and xgrammar's own CPU kernel applies it. Declared in the patch
table under feature ``cpu``, so a machine with a GPU keeps SGLang's path untouched.
"""

from __future__ import annotations


def allocate_bitmask_unpinned(vocab_size: int, batch_size: int):
    """SGLang's bitmask (every token allowed) without pinning: there is no GPU to copy it to."""
    import torch
    from xgrammar import bitmask_dtype, get_bitmask_shape

    return torch.full(get_bitmask_shape(batch_size, vocab_size), -1, dtype=bitmask_dtype)


def apply_bitmask_on_cpu(original, grammar, logits=None, vocab_mask=None, **kwargs):
    """CPU logits: xgrammar's CPU kernel (SGLang raises "Unsupported device: cpu"); else SGLang's."""
    if logits is not None and logits.device.type == "cpu":
        from xgrammar import apply_token_bitmask_inplace

        apply_token_bitmask_inplace(logits, vocab_mask.to(logits.device))
        return None
    return original(grammar, logits=logits, vocab_mask=vocab_mask, **kwargs)
