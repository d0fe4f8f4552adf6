"""Parameters of deterministic requests: window W, verifier rows B, test perturbation.

Choosing W (tokens per verification):
- Each verification costs one extend pass of B x W tokens, shared by up to B requests,
  so its cost per verified token falls as W grows ...
- ... but a mismatch at row m throws away the rest of the window (W - m - 1 tokens, about
  W/2 on average), so the waste per mismatch grows with W; and the client receives tokens
  only once they are verified, so W is also the streaming granularity (a W-token delay).
Choosing B (rows per pass): the pass's shape is fixed, so a pass costs the same with one real
row or B; a larger B verifies more requests per pass under load but wastes more padding when
few deterministic requests run.
Choosing L (lookahead blocks): with L = 1 a request stops at the end of each block until it is
verified, so passes run as soon as any one request fills a block and rarely carry more than one
row. With L > 1 it decodes on into the next block(s); a pass runs when some request cannot go on,
and takes every request with a complete block. Fewer, fuller passes, at the price of more
discarded tokens after a mismatch (later blocks are built on the wrong token) and of streaming
in coarser steps.
Defaults: W=32, B=8 (256 tokens, a small extend pass), L=2 (or B, if B is smaller). Measured
(benchmarks/results/bench_determinism/bench_determinism_h100_tp2_llama-1b*.json: 2 H100s, TP2, a 1B-parameter
random-weight Llama, 512 requests x 128 tokens at concurrency 64): with L=1 a pass carries about
one request's row and passes take 28% of the wall time at 10% deterministic traffic; L=2 cut the
passes 2.5x (189 -> 77) and raised throughput 1.29x at 10%, 1.31x at 50%, 1.41x at 100%; L=4
added little over L=2 (72 passes, +9% at 10%, within run-to-run noise) and rolled back more
(35% of verified tokens vs 27%). On a 2-core CPU (tiny model, host-bound) L=2 did not help.
W=16, 32 and 64 (same setup, 10% deterministic, side by side) were within run-to-run noise in
throughput (0.57 / 0.56 / 0.60 of their all-non-deterministic rate) while the rolled-back share
grew with W (16% / 27% / 38%) and passes fell (97 / 76 / 63): W=32 is the middle of a flat range.
"""

from __future__ import annotations

import dataclasses

DEFAULT_WINDOW = 32
WINDOW_RANGE = (1, 512)
DEFAULT_VERIFY_ROWS = 8
VERIFY_ROWS_RANGE = (1, 256)
DEFAULT_LOOKAHEAD_BLOCKS = 2
# How seeded sampling runs: PyTorch ops, or Triton kernels (``sampling_kernel``).
SAMPLING_KERNELS = ("torch", "triton")
# The flag's choices: "auto" picks one of SAMPLING_KERNELS for the server's device.
SAMPLING_KERNEL_CHOICES = ("auto", *SAMPLING_KERNELS)
# The LM head's output dtype in a server that accepts deterministic requests: "float32" keeps
# the GEMM's float32 accumulator instead of rounding it to the model dtype; "model" is SGLang's.
LOGITS_DTYPES = ("float32", "model")
LOGITS_DTYPE_CHOICES = ("auto", *LOGITS_DTYPES)
# Which CUDA graph a verification pass replays on GPUs: SGLang's breakable prefill graph (attention
# eager between captured pieces), or one full graph of the whole pass (determinism/verify_graph.py).
VERIFY_GRAPHS = ("breakable", "full")
# The flag's choices: "auto" picks one of VERIFY_GRAPHS for the server (``choose_verify_graph``).
VERIFY_GRAPH_CHOICES = ("auto", *VERIFY_GRAPHS)


def sampling_kernel_error(kernel: str, device: str) -> str | None:
    """Why ``kernel`` cannot serve on SGLang's ``--device``, or None."""
    if kernel == "triton" and device != "cuda":
        return (f"--deterministic-sampling-kernel triton needs CUDA GPUs (--device {device}); "
                "use --deterministic-sampling-kernel auto (the default) or torch")
    return None


def resolve_sampling_kernel(kernel: str, device: str) -> str:
    """The kernel that serves on SGLang's ``--device``: ``auto`` is the Triton kernel on CUDA
    GPUs (on an H100 it takes less host time and less GPU time per batch than the PyTorch path
    at 512 and 151,936 tokens: benchmarks/results/bench_seeded_sampler/bench_seeded_sampler_h100.json) and the
    PyTorch path elsewhere (Triton has no CPU backend)."""
    if error := sampling_kernel_error(kernel, device):
        raise ValueError(error)
    if kernel == "auto":
        return "triton" if device == "cuda" else "torch"
    return kernel


def resolve_logits_dtype(choice: str, device: str) -> str:
    """The logits dtype that serves on SGLang's ``--device``: ``auto`` is float32 on CUDA GPUs.

    Why: SGLang rounds the LM head's output to bf16 before upcasting it. A logit near 16 then
    moves in steps of 0.125, so a last-bit difference between the fast path's hidden state and
    the verifier's can turn into a whole step, enough to reorder near-tied candidates and roll
    a window back. Keeping the float32 accumulator costs the same GEMM (cuBLAS writes float32
    instead of bf16); the difference left is the hidden state's own. On CPUs ``auto`` keeps
    SGLang's numerics (no float32-output GEMM there; ``float32`` upcasts the operands)."""
    if choice not in LOGITS_DTYPE_CHOICES:
        raise ValueError(f"logits dtype must be one of {LOGITS_DTYPE_CHOICES}, got {choice!r}")
    if choice == "auto":
        return "float32" if device == "cuda" else "model"
    return choice


@dataclasses.dataclass(frozen=True)
class DeterminismConfig:
    window: int = DEFAULT_WINDOW  # W: unverified tokens that trigger a verification
    verify_rows: int = DEFAULT_VERIFY_ROWS  # B: rows of every verification pass
    # L: blocks the fast path may run ahead; None: the default, or B if B is smaller
    lookahead_blocks: int | None = None
    # Test-only: standard deviation of Gaussian noise added to the fast path's logits of
    # deterministic requests, so that verification must roll back (0 = off; never in production).
    perturb_logits: float = 0.0
    # Run every verification pass eagerly even where SGLang captured prefill CUDA graphs.
    verify_eager: bool = False
    # The CUDA graph of verification passes (VERIFY_GRAPH_CHOICES); "full" excludes verify_eager;
    # a server resolves "auto" at scheduler start (``determinism.verify_graph.choose_verify_graph``).
    verify_graph: str = "auto"
    # How deterministic rows are sampled (SAMPLING_KERNEL_CHOICES), fast path and verifier
    # alike; a server resolves "auto" for its device (``for_device``).
    sampling_kernel: str = "auto"
    # The LM head's output dtype (LOGITS_DTYPE_CHOICES) for every request of the server, so the
    # fast path and the verifier round alike; resolved for the device by ``for_device``.
    logits_dtype: str = "auto"

    def __post_init__(self):
        low, high = WINDOW_RANGE
        if not low <= self.window <= high:
            raise ValueError(f"window must be in [{low}, {high}], got {self.window}")
        low, high = VERIFY_ROWS_RANGE
        if not low <= self.verify_rows <= high:
            raise ValueError(f"verify_rows must be in [{low}, {high}], got {self.verify_rows}")
        if self.lookahead_blocks is None:
            object.__setattr__(self, "lookahead_blocks", min(DEFAULT_LOOKAHEAD_BLOCKS, self.verify_rows))
        if not 1 <= self.lookahead_blocks <= self.verify_rows:
            # one request's replay of L blocks takes L rows of one pass
            raise ValueError(f"lookahead_blocks must be in [1, verify_rows={self.verify_rows}], "
                             f"got {self.lookahead_blocks}")
        if self.sampling_kernel not in SAMPLING_KERNEL_CHOICES:
            raise ValueError(f"sampling_kernel must be one of {SAMPLING_KERNEL_CHOICES}, "
                             f"got {self.sampling_kernel!r}")
        if self.verify_graph not in VERIFY_GRAPH_CHOICES:
            raise ValueError(f"verify_graph must be one of {VERIFY_GRAPH_CHOICES}, got {self.verify_graph!r}")
        if self.verify_eager and self.verify_graph == "full":
            raise ValueError("verify_eager and verify_graph='full' exclude each other")
        if self.logits_dtype not in LOGITS_DTYPE_CHOICES:
            raise ValueError(f"logits_dtype must be one of {LOGITS_DTYPE_CHOICES}, got {self.logits_dtype!r}")
        if not self.perturb_logits >= 0.0:
            raise ValueError(f"perturb_logits must be >= 0, got {self.perturb_logits}")

    def for_device(self, device: str) -> "DeterminismConfig":
        """This configuration with the sampling kernel and logits dtype resolved for SGLang's ``--device``."""
        return dataclasses.replace(self, sampling_kernel=resolve_sampling_kernel(self.sampling_kernel, device),
                                   logits_dtype=resolve_logits_dtype(self.logits_dtype, device))

    @property
    def tokens_per_pass(self) -> int:
        return self.window * self.verify_rows

    @classmethod
    def from_flags(cls, flags) -> "DeterminismConfig":
        """From the overlay's parsed flags (``deterministic_window``, ``..._verify_rows``,
        ``..._lookahead_blocks``, ``..._test_perturb_logits``, ``..._verify_eager``,
        ``..._verify_graph``, ``..._sampling_kernel``, ``..._logits``)."""
        return cls(
            window=flags.deterministic_window,
            verify_rows=flags.deterministic_verify_rows,
            lookahead_blocks=flags.deterministic_lookahead_blocks,
            perturb_logits=flags.deterministic_test_perturb_logits,
            verify_eager=flags.deterministic_verify_eager,
            verify_graph=flags.deterministic_verify_graph,
            sampling_kernel=flags.deterministic_sampling_kernel,
            logits_dtype=flags.deterministic_logits,
        )
