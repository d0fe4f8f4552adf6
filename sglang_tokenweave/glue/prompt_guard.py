"""The scheduler refuses a prompt that the model cannot run: no token, or a token id outside the
vocabulary (SGLang 0.5.17 checks neither for ``input_ids`` that a client sends; the first
forward pass then raises in the embedding or the attention kernels and the scheduler process,
so the whole server, dies). Refused with a bad-request abort naming ``input_ids``."""

from __future__ import annotations

from typing import Optional, Sequence

from .scheduler_abort import abort_request


def prompt_error(input_ids: Optional[Sequence[int]], vocab_size: int) -> Optional[str]:
    """Why a prompt of token ids cannot run; None when it can."""
    if input_ids is None:
        return None  # input_embeds: no token ids to check
    if len(input_ids) == 0:
        return "input_ids: the prompt has no tokens"
    low, high = min(input_ids), max(input_ids)
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        return f"input_ids: token id {bad} is outside the vocabulary [0, {vocab_size})"
    return None


def refuse_invalid_prompt(original, scheduler, recv_req, *args, **kwargs):
    """Around-hook on ``Scheduler.handle_generate_request``."""
    error = None
    if recv_req.input_embeds is None and recv_req.mm_inputs is None:  # (multimodal: ids padded later)
        error = prompt_error(recv_req.input_ids, scheduler.model_config.vocab_size)
    if error is None:
        return original(scheduler, recv_req, *args, **kwargs)
    abort_request(scheduler, recv_req, error)
    return None
