"""Test-only: noise on the fast path's logits, to force verification mismatches.

With noise, the fast path proposes tokens the verifier often rejects, so every rollback path
runs; the committed output must still equal the unperturbed one, since committed tokens come
from the verifier, whose logits are never perturbed. Enabled by a hidden flag; never in
production.
"""

from __future__ import annotations

from typing import Optional

import torch


def perturb_fast_path_logits(
    logits: torch.Tensor, scale: float, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """``logits`` plus Gaussian noise of standard deviation ``scale`` (a new tensor).

    Deliberately not keyed by (seed, position): the proposals must vary from run to run while
    the committed output does not.
    """
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    if scale == 0:
        return logits
    noise = torch.randn(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    return (logits.to(torch.float32) + scale * noise).to(logits.dtype)
