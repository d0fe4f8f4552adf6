"""The overlay's own configuration: our command-line flags, their ranges, and how they travel.

SGLang spawns its scheduler / TP worker processes, so the configuration cannot live in the
launcher's memory. It travels as two environment variables that every child inherits:

- ``SGLANG_TOKENWEAVE=1`` switches the overlay on (the plugin is a no-op without it, so
  installing the package never changes a plain ``sglang.launch_server``);
- ``SGLANG_TOKENWEAVE_ARGS`` holds our flags as a command-line string, parsed by the same
  parser as the launcher's, so a value is validated the same way wherever it comes from.

Setting both by hand activates the overlay under SGLang's own tools (``sglang.bench_one_batch``,
``sglang.bench_offline_throughput``). This module imports nothing from SGLang.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from typing import Sequence

from sglang_tokenweave.determinism.config import (
    DEFAULT_LOOKAHEAD_BLOCKS,
    DEFAULT_VERIFY_ROWS,
    DEFAULT_WINDOW,
    LOGITS_DTYPE_CHOICES,
    SAMPLING_KERNEL_CHOICES,
    VERIFY_GRAPH_CHOICES,
    VERIFY_ROWS_RANGE,
    WINDOW_RANGE,
)

SWITCH_ENV = "SGLANG_TOKENWEAVE"
ARGS_ENV = "SGLANG_TOKENWEAVE_ARGS"

COMM_VARIANTS = ("auto", "p2p", "multimem")


@dataclasses.dataclass(frozen=True)
class OverlayConfig:
    enable_tokenweave: bool = False
    tokenweave_config: str | None = None
    tokenweave_split_threshold: int | None = None  # None: from the tuning data / defaults
    tokenweave_sm_budget: int | None = None  # None: from the tuning data / defaults
    tokenweave_fused_threshold: int | None = None  # None: from the tuning data / defaults
    tokenweave_comm_variant: str = "auto"
    # Benchmark-only: every tensor-parallel all-reduce of the decoder layers becomes the
    # identity (wrong outputs), the no-communication bound of bench_tokenweave_model.py.
    tokenweave_bench_skip_allreduce: bool = False
    enable_deterministic_requests: bool = False
    deterministic_window: int = DEFAULT_WINDOW
    deterministic_verify_rows: int = DEFAULT_VERIFY_ROWS
    deterministic_lookahead_blocks: int | None = None  # None: the built-in default, at most B
    deterministic_verify_eager: bool = False
    deterministic_verify_graph: str = "auto"
    deterministic_sampling_kernel: str = "auto"
    deterministic_logits: str = "auto"
    # Test-only: adds noise to the fast path's logits of deterministic requests so that
    # verification must roll tokens back. Never set in production.
    deterministic_test_perturb_logits: float = 0.0

    def to_argv(self) -> list[str]:
        """The flags that reproduce this configuration (defaults omitted)."""
        argv: list[str] = []
        default = OverlayConfig()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == getattr(default, field.name):
                continue
            flag = "--" + field.name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag)
            else:
                argv += [flag, str(value)]
        return argv

    def active_features(self) -> list[str]:
        features = []
        if self.enable_tokenweave:
            features.append("tokenweave")
        if self.enable_deterministic_requests:
            features.append("deterministic_requests")
        return features


def _in_range(name: str, kind: type, low, high):
    """An argparse type: ``kind`` (int or float) within [low, high], errors naming the flag."""
    noun = {int: "an integer", float: "a number"}[kind]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {noun}, got {text!r}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be in [{low}, {high}], got {value}")
        return value

    return parse


def add_overlay_args(parser: argparse.ArgumentParser) -> None:
    """Our flags, in groups of their own so ``--help`` shows them apart from SGLang's."""
    tw = parser.add_argument_group("sglang-tokenweave: TokenWeave (fused all-reduce + norm, token splitting)")
    tw.add_argument(
        "--enable-tokenweave",
        action="store_true",
        help="Fuse each tensor-parallel all-reduce with the residual add and RMSNorm, and split "
        "large prefill batches in two so communication overlaps computation (TP >= 2, one NVLink domain).",
    )
    tw.add_argument(
        "--tokenweave-config",
        type=str,
        default=None,
        metavar="PATH",
        help="Tuning data written by scripts/tune_tokenweave.py (split offset and SM budget per token "
        "bucket). Built-in defaults are used when absent.",
    )
    tw.add_argument(
        "--tokenweave-split-threshold",
        type=_in_range("--tokenweave-split-threshold", int, 2, 1 << 20),
        default=None,
        metavar="TOKENS",
        help="Split extend batches of at least this many tokens (default: from the tuning data, else 8192).",
    )
    tw.add_argument(
        "--tokenweave-sm-budget",
        type=_in_range("--tokenweave-sm-budget", int, 1, 256),
        default=None,
        metavar="SMS",
        help="Thread blocks (SMs) the fused communication kernel may use (default: from the tuning data).",
    )
    tw.add_argument(
        "--tokenweave-fused-threshold",
        type=_in_range("--tokenweave-fused-threshold", int, 1, 1 << 20),
        default=None,
        metavar="TOKENS",
        help="Use the fused all-reduce + residual + RMSNorm for batches of at least this many tokens; "
        "smaller ones keep SGLang's (default: from the tuning data, else 1024).",
    )
    tw.add_argument(
        "--tokenweave-comm-variant",
        choices=COMM_VARIANTS,
        default="auto",
        help="Fused kernel variant: p2p (peer loads/stores), multimem (NVLink multicast; only where the "
        "hardware reports multicast support), or auto (p2p unless multimem is explicitly requested).",
    )

    tw.add_argument(
        "--tokenweave-bench-skip-allreduce",
        action="store_true",
        help=argparse.SUPPRESS,  # benchmark-only: the no-communication bound, wrong outputs
    )

    det = parser.add_argument_group("sglang-tokenweave: deterministic requests (verify and roll back)")
    det.add_argument(
        "--enable-deterministic-requests",
        action="store_true",
        help="Accept requests with `deterministic: true`: decoded on the fast path, verified by a "
        "fixed-shape replay, only committed tokens returned.",
    )
    det.add_argument(
        "--deterministic-window",
        type=_in_range("--deterministic-window", int, *WINDOW_RANGE),
        default=OverlayConfig.deterministic_window,
        metavar="W",
        help="Unverified tokens after which a deterministic request is verified (default: %(default)s).",
    )
    det.add_argument(
        "--deterministic-verify-rows",
        type=_in_range("--deterministic-verify-rows", int, *VERIFY_ROWS_RANGE),
        default=OverlayConfig.deterministic_verify_rows,
        metavar="B",
        help="Rows of the fixed-shape verification pass (default: %(default)s).",
    )
    det.add_argument(
        "--deterministic-lookahead-blocks",
        type=_in_range("--deterministic-lookahead-blocks", int, 1, 8),
        default=OverlayConfig.deterministic_lookahead_blocks,
        metavar="L",
        help="Blocks of W tokens the fast path may run ahead of verification, so that passes "
        f"gather more requests' windows; at most B (default: {DEFAULT_LOOKAHEAD_BLOCKS}, or B if smaller).",
    )
    det.add_argument(
        "--deterministic-verify-eager",
        action="store_true",
        help="Run verification passes eagerly even where SGLang captured prefill CUDA graphs "
        "(slower; the passes stay deterministic either way, each path with its own numerics).",
    )
    det.add_argument(
        "--deterministic-verify-graph",
        choices=VERIFY_GRAPH_CHOICES,
        default=OverlayConfig.deterministic_verify_graph,
        help="The CUDA graph of verification passes: 'full' captures the whole pass, attention "
        "included, as one graph at the first pass (one GPU launch; needs --attention-backend triton), "
        "'breakable' replays SGLang's prefill graph (attention launched eagerly between its pieces), "
        "'auto' takes 'full' on one GPU where it can serve, else 'breakable' (the choice and why are "
        "logged); each path has its own numerics (default: %(default)s).",
    )
    det.add_argument(
        "--deterministic-sampling-kernel",
        choices=SAMPLING_KERNEL_CHOICES,
        default=OverlayConfig.deterministic_sampling_kernel,
        help="How deterministic rows are sampled: 'torch' (about 25 small kernels per batch), "
        "'triton' (one to three Triton kernels for rows without top-k / top-p; CUDA only) or 'auto' "
        "(triton on CUDA GPUs, torch elsewhere). Either kernel is deterministic; they may differ in "
        "rare tokens, so outputs are reproducible per kernel (default: %(default)s).",
    )
    det.add_argument(
        "--deterministic-logits",
        choices=LOGITS_DTYPE_CHOICES,
        default=OverlayConfig.deterministic_logits,
        help="The LM head's output dtype for every request of the server: 'float32' keeps the GEMM's "
        "float32 result instead of rounding it to the model dtype (same GEMM; far fewer verification "
        "mismatches), 'model' is SGLang's, 'auto' is float32 on CUDA GPUs and model elsewhere "
        "(default: %(default)s).",
    )
    det.add_argument(
        "--deterministic-test-perturb-logits",
        type=_in_range("--deterministic-test-perturb-logits", float, 0.0, 100.0),
        default=0.0,
        help=argparse.SUPPRESS,  # test-only: forces mismatches on the fast path
    )


def overlay_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a prefix of one of SGLang's flags must never be taken for one of ours.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_overlay_args(parser)
    return parser


def config_from_namespace(ns: argparse.Namespace) -> OverlayConfig:
    names = {f.name for f in dataclasses.fields(OverlayConfig)}
    return OverlayConfig(**{k: v for k, v in vars(ns).items() if k in names})


def split_overlay_argv(argv: Sequence[str]) -> tuple[OverlayConfig, list[str]]:
    """Separate our flags from the rest; the rest goes to SGLang untouched.

    Bad values of our flags exit with status 2 and a message naming the flag (argparse).
    """
    parser = overlay_parser()
    ns, rest = parser.parse_known_args(list(argv))
    lookahead = ns.deterministic_lookahead_blocks
    if lookahead is not None and lookahead > ns.deterministic_verify_rows:
        parser.error(f"--deterministic-lookahead-blocks ({ns.deterministic_lookahead_blocks}) must be at most "
                     f"--deterministic-verify-rows ({ns.deterministic_verify_rows}): a request's L blocks "
                     "are verified as L rows of one pass")
    if ns.deterministic_verify_eager and ns.deterministic_verify_graph == "full":
        parser.error("--deterministic-verify-eager and --deterministic-verify-graph full exclude each other: "
                     "a full-graph pass is never eager")
    return config_from_namespace(ns), rest


def config_to_env(config: OverlayConfig) -> dict[str, str]:
    return {SWITCH_ENV: "1", ARGS_ENV: shlex.join(config.to_argv())}


def overlay_switched_on(environ=os.environ) -> bool:
    return environ.get(SWITCH_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def config_from_env(environ=os.environ) -> OverlayConfig:
    """The configuration a child process (or SGLang's own tools) runs with."""
    ns, unknown = overlay_parser().parse_known_args(shlex.split(environ.get(ARGS_ENV, "")))
    if unknown:
        raise ValueError(f"{ARGS_ENV} holds flags that are not ours: {' '.join(unknown)}")
    return config_from_namespace(ns)
