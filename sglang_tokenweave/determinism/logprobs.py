"""Log-probabilities whose value for a row depends on that row alone.

The log-normaliser (log-sum-exp) is computed as in ``sampling``: terms exp(x - max) are
quantised to integers (2**40 per unit) and summed exactly, so no float reduction whose rounding
depends on the number of rows is involved. The result is the log-probability under the
temperature-scaled distribution before top-k/top-p/min-p filtering, as SGLang returns by default
(greedy rows use temperature 1). Logits are scaled in float32, as in the sampler; the
quantisation adds an absolute error below vocab * 2**-41 to the normaliser (< 1e-6 for a
2**21 vocabulary), under float32 resolution in practice.
"""

from __future__ import annotations

import math

import torch

from .sampling import MAX_VOCAB, SamplingPlan

_TERM_BITS = 40  # vocab * 2**40 <= 2**61: the integer sum cannot overflow int64


def _scaled(logits: torch.Tensor, plan: SamplingPlan) -> torch.Tensor:
    if tuple(logits.shape) != (plan.num_rows, plan.vocab_size) or plan.vocab_size > MAX_VOCAB:
        raise ValueError(f"logits of shape {tuple(logits.shape)} for a plan of {plan.num_rows} x {plan.vocab_size}")
    return logits.float() / plan.temperature[:, None]  # float32, as the sampler scales them


def _log_normaliser(scaled: torch.Tensor) -> torch.Tensor:
    """float64 [N, 1]: log of the sum of exp(scaled) over each row."""
    top = scaled.amax(dim=-1, keepdim=True)
    terms = torch.round((scaled - top).exp_().mul_(float(1 << _TERM_BITS))).to(torch.int64)
    total = terms.sum(dim=-1, keepdim=True).to(torch.float64)
    return top.to(torch.float64) + (torch.log(total) - _TERM_BITS * math.log(2.0))


def token_logprobs(logits: torch.Tensor, plan: SamplingPlan, token_ids: torch.Tensor) -> torch.Tensor:
    """float32 log-probabilities of ``token_ids`` ([N] or [N, K]) under each row's distribution."""
    scaled = _scaled(logits, plan)
    ids = token_ids.to(device=logits.device, dtype=torch.int64)
    flat = ids.dim() == 1
    ids = ids[:, None] if flat else ids
    values = (scaled.gather(1, ids).to(torch.float64) - _log_normaliser(scaled)).to(torch.float32)
    return values[:, 0] if flat else values


def top_logprobs(logits: torch.Tensor, plan: SamplingPlan, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely tokens of each row: (float32 log-probabilities, int64 ids) [N, k].

    Ties are ordered by ascending token id (stable sort), so the ids are reproducible too.
    """
    scaled = _scaled(logits, plan)
    k = min(k, plan.vocab_size)
    ordered = torch.sort(scaled, dim=-1, descending=True, stable=True)
    values = ordered.values[:, :k].to(torch.float64) - _log_normaliser(scaled)
    return values.to(torch.float32), ordered.indices[:, :k]
