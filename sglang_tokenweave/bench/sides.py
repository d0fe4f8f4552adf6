"""The two sides of a comparison, and what both get alike.

Stock is SGLang as its users run it: ``python -m sglang.launch_server`` with SGLang's defaults.
Ours is ``python -m sglang_tokenweave.launch_server`` with our defaults plus the feature flag
under test. Both get only what every process on our GPU machines must have (NVLink multicast
off: ``MULTICAST_OFF``) and what the environment forces on both alike (``Forced``: on the GPU
bundle, the Triton attention and PyTorch sampling backends, because it carries no FA3 kernels
and FlashInfer's kernels JIT-compile there; on a CPU, a small KV pool), each recorded with its
reason. Variables inherited from the caller's shell that would change the overlay or SGLang's
all-reduce choice are dropped from every server's environment (``clean_environ``), so neither
side runs with a setting the other lacks.

On a CPU SGLang cannot serve by itself (it imports vllm for a rotary kernel), so there the
stock side is our launcher without any feature flag (only the hooks that let SGLang run on a
CPU), and its record says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

STOCK_MODULE = "sglang.launch_server"
OURS_MODULE = "sglang_tokenweave.launch_server"

# Every GPU process we start keeps NVLink multicast off (the same switches as comm/multicast.py).
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

GPU_BUNDLE_ARGS = ("--attention-backend", "triton", "--sampling-backend", "pytorch")
GPU_BUNDLE_WHY = ("the GPU machines' SGLang bundle carries no FA3 kernels (SGLang's default attention on "
                  "Hopper) and FlashInfer's attention and sampling kernels JIT-compile there")
# Small KV pool: allocating SGLang's default pool on CPU takes most of a minute.
CPU_SERVER_ARGS = ["--max-total-tokens", "8192", "--mem-fraction-static", "0.5", "--log-level", "info"]
# When a request has had no output for this long, SGLang asks Starlette whether the client is
# still connected, and on a busy 2-core CPU that probe can answer "disconnected" for a live client
# (seen during start-up warm-up). Forwards of seconds are normal here, so probe later.
CPU_SERVER_ENV = {"SGLANG_REQUEST_STATE_WAIT_TIMEOUT": "300"}
CPU_WHY = ("a CPU: a small KV pool (SGLang's default takes most of a minute to allocate) and a later "
           "client-disconnect probe (forwards of seconds are normal there)")
CPU_STOCK_STAND_IN = ("SGLang cannot serve on a CPU by itself (it imports vllm for a rotary kernel): stock "
                      "is our launcher without any feature flag, i.e. SGLang plus the hooks that let it "
                      "run on a CPU")

# Inherited variables that would switch the overlay on or change SGLang's all-reduce (or its
# deterministic mode) for one side only.
_OVERRIDE = re.compile(r"^SGLANG_TOKENWEAVE(_ARGS)?$|^SGLANG_.*(ALL_?REDUCE|_AR_|SYMM_MEM|DETERMINISTIC)|^NCCL_(ALGO|PROTO)$")
# What a result records of each side's environment (values of these only).
_RECORDED = re.compile(r"^(SGLANG_|NCCL_|TORCH_|NVSHMEM_|PYTORCH_)|^(CUDA_VISIBLE_DEVICES|OMP_NUM_THREADS)$")


def is_override(name: str) -> bool:
    return bool(_OVERRIDE.search(name))


def clean_environ(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``environ`` without the overrides, and the names dropped."""
    dropped = sorted(k for k in environ if is_override(k))
    return {k: v for k, v in environ.items() if k not in dropped}, dropped


def recorded_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: env[k] for k in sorted(env) if _RECORDED.search(k)}


@dataclass(frozen=True)
class Forced:
    """Flags and environment that both sides get alike, and why."""

    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    why: str = ""

    def record(self) -> dict:
        return {"args": list(self.args), "env": dict(self.env), "why": self.why}


def forced_on_both(device: str, gpu_args: Sequence[str] = GPU_BUNDLE_ARGS) -> Forced:
    if device == "cpu":
        return Forced(tuple(CPU_SERVER_ARGS), dict(CPU_SERVER_ENV), CPU_WHY)
    return Forced(tuple(gpu_args), {}, GPU_BUNDLE_WHY if gpu_args else "")


@dataclass(frozen=True)
class Side:
    """One server configuration: its entry point and its own flags (beyond the common and forced
    ones). ``stand_in``: why it is not quite what its name says (empty when it is)."""

    name: str
    module: str
    flags: tuple[str, ...] = ()
    stand_in: str = ""


def stock_side(device: str, name: str = "stock", flags: Sequence[str] = ()) -> Side:
    """SGLang's own server (``flags``: an SGLang mode such as --enable-deterministic-inference)."""
    if device == "cpu":
        return Side(name, OURS_MODULE, tuple(flags), CPU_STOCK_STAND_IN)
    return Side(name, STOCK_MODULE, tuple(flags))


def ours_side(flags: Sequence[str], name: str = "ours") -> Side:
    return Side(name, OURS_MODULE, tuple(flags))


@dataclass
class Launch:
    """How every side of one benchmark starts: the common SGLang flags (model, TP), what both
    get alike, and the cleaned environment they inherit."""

    common_args: Sequence[str]
    forced: Forced
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def __post_init__(self):
        self.base_env, self.dropped_env = clean_environ(self.environ)

    def args(self, side: Side) -> list[str]:
        return [*self.common_args, *self.forced.args, *side.flags]

    def env(self, side: Side) -> dict[str, str]:
        """The variables set on top of the cleaned inherited environment (the same for every side)."""
        return {**MULTICAST_OFF, **self.forced.env}

    def child_env(self, side: Side) -> dict[str, str]:
        return {**self.base_env, **self.env(side)}

    def record(self, side: Side, file_args: Sequence[str] = ("--model-path", "--tokenizer-path")) -> dict:
        """What a result says of ``side``: the exact server command (file arguments by name only,
        no machine paths) and the environment the server saw (SGLang / NCCL / torch variables)."""
        args = self.args(side)
        shown = [Path(a).name if i and args[i - 1] in file_args else a for i, a in enumerate(args)]
        return {"entry": f"python -m {side.module}", "args": shown, "flags": list(side.flags),
                "env": recorded_env(self.child_env(side)), "stand_in": side.stand_in or None}
