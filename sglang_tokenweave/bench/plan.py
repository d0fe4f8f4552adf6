"""The order of a benchmark's runs: every repeat runs every variant once, each in a fresh server
process, and the order alternates (A B, B A, A B, ...), so that neither side always runs first
(on a warmer machine, after the other's compilation caches) and a drift over the call falls on
both sides alike."""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


def alternate(items: Sequence[T], repeat: int) -> list[T]:
    """``items`` in order on even repeats, reversed on odd ones."""
    return list(items) if repeat % 2 == 0 else list(reversed(items))


def interleaved(variants: Sequence[T], repeats: int) -> list[tuple[int, T]]:
    """(repeat, variant) pairs in run order: A B B A A B ... for two variants."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if not variants:
        raise ValueError("no variants to run")
    return [(r, v) for r in range(repeats) for v in alternate(variants, r)]
