"""The full-CUDA-graph verification pass: its inputs, and the servers it cannot run on.

With ``--deterministic-verify-graph full`` a pass is SGLang's TARGET_VERIFY forward (the mode
that checks speculative drafts: every row a block of W new tokens on its own KV prefix, logits
at every position), captured once as one CUDA graph of B rows x W tokens. The breakable
prefill graph it replaces launches attention eagerly between its captured pieces: on an H100
(SmolLM2-135M, 30 layers, 8 x 32-token passes) the host's launches took about 7.4 ms of a
10 ms pass; in the full graph the launch takes 0.4 ms and a pass about 4 ms, and at 100%
deterministic traffic the server ran 1.29x faster
(benchmarks/results/bench_determinism/bench_determinism_h100_tp1_smollm2-ab.json).

Both paths run the same causal Triton extend kernel for attention, each row reading its own
prefix; the inputs differ: in TARGET_VERIFY a row's sequence length is its prefix (the tokens
before its window), not prefix + W, and positions are given explicitly.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

# The attention backend the full graph is built on: its TARGET_VERIFY forward without a custom
# mask is the causal extend kernel, one grid block per (row, head, query tile).
FULL_GRAPH_ATTENTION = "triton"


@dataclasses.dataclass(frozen=True)
class PassLayout:
    """A pass's sequence lengths (one per row) and, for the full graph, its positions (one per
    token; None where SGLang derives them from the prefix and extend lengths)."""

    seq_lens: list[int]
    positions: Optional[list[int]]


def pass_layout(prefix_lens: Sequence[int], window: int, full_graph: bool) -> PassLayout:
    """The layout of a pass of ``len(prefix_lens)`` rows of ``window`` tokens, row r's tokens at
    positions ``prefix_lens[r] .. prefix_lens[r] + window - 1``."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if any(prefix < 0 for prefix in prefix_lens):
        raise ValueError(f"prefix lengths must be >= 0, got {list(prefix_lens)}")
    if full_graph:
        return PassLayout([int(p) for p in prefix_lens], [int(p) + j for p in prefix_lens for j in range(window)])
    return PassLayout([int(p) + window for p in prefix_lens], None)


def choose_verify_graph(choice: str, server_args, verify_eager: bool) -> tuple[str, str]:
    """The graph (``breakable`` or ``full``) of a server's passes for ``--deterministic-verify-graph
    choice``, and why. ``auto`` takes the full graph where it can serve, on one GPU: across GPUs
    every rank captures it at the same pass, which has not run on a multi-GPU machine yet."""
    if choice != "auto":
        return choice, f"--deterministic-verify-graph {choice}"
    if verify_eager:
        return "breakable", "auto: --deterministic-verify-eager runs the passes eagerly"
    if error := full_graph_error(server_args):
        return "breakable", f"auto: {error}"
    if server_args.tp_size > 1:
        return "breakable", (f"auto: --tp {server_args.tp_size}; the full graph is taken on one GPU "
                             "(--deterministic-verify-graph full asks for it across GPUs)")
    return "full", "auto: one GPU, SGLang's Triton attention on CUDA"


def full_graph_error(server_args) -> Optional[str]:
    """Why ``--deterministic-verify-graph full`` cannot serve with SGLang's ``server_args`` (its
    parsed ``ServerArgs``), or None. Each refused setting would change what the captured graph computes
    or clobber state that SGLang's own graphs keep."""
    flag = "--deterministic-verify-graph full"
    device = server_args.device
    if device != "cuda":
        return f"{flag} needs CUDA GPUs (--device {device}); use --deterministic-verify-graph breakable"
    default = server_args.attention_backend
    prefill = server_args.prefill_attention_backend or default
    decode = server_args.decode_attention_backend or default
    if prefill != FULL_GRAPH_ATTENTION or decode != FULL_GRAPH_ATTENTION:
        return (f"{flag} captures SGLang's Triton attention (prefill backend {prefill!r}, decode backend "
                f"{decode!r}): add --attention-backend {FULL_GRAPH_ATTENTION}")
    refused = (
        ("speculative_algorithm", "--speculative-algorithm", "the server's own speculative decoding owns "
         "SGLang's TARGET_VERIFY forwards"),
        ("enable_dp_attention", "--enable-dp-attention", "the pass is not padded and gathered across "
         "data-parallel ranks"),
        ("enable_two_batch_overlap", "--enable-two-batch-overlap", "a captured pass is one batch"),
        ("enable_lora", "--enable-lora", "SGLang's LoRA graph state is sized for its own decode graphs"),
        ("enable_pdmux", "--enable-pdmux", "its stream groups re-plan the server's decode attention backends"),
        ("enable_deterministic_inference", "--enable-deterministic-inference", "SGLang's Triton attention "
         "then runs its unified kernel, not the extend kernel the full graph is designed on"),
    )
    for name, option, why in refused:
        value = getattr(server_args, name)
        if value:
            shown = option if value is True else f"{option} {value}"
            return f"{flag} cannot serve with {shown}: {why}"
    pp_size = server_args.pp_size
    if pp_size > 1:
        return f"{flag} cannot serve with --pp-size {pp_size}: a captured pass runs the whole model"
    return None
