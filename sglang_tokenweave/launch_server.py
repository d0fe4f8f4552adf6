"""``python -m sglang_tokenweave.launch_server``: SGLang's server plus the overlay.

Every SGLang flag passes through unchanged to SGLang's own argument handling; our flags are
taken out first (``config.split_overlay_argv``) and reach every SGLang process through the
environment (see ``config``), where the plugin applies the overlay. The model is ours to make
ready first: ``--model-path smollm2`` (the default) or ``tiny``, or a GGUF file, become checkpoint
directories (see ``models``); any other value is SGLang's.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sglang_tokenweave.config import OverlayConfig, add_overlay_args, config_to_env, split_overlay_argv
from sglang_tokenweave.determinism.config import sampling_kernel_error
from sglang_tokenweave.determinism.verify_graph import full_graph_error
from sglang_tokenweave.glue.report import RUN_DIR_ENV

logger = logging.getLogger("sglang_tokenweave")
PROG = "python -m sglang_tokenweave.launch_server"


@dataclass
class LaunchArgs:
    server_args: object  # sglang.srt.server_args.ServerArgs
    overlay: OverlayConfig
    used_default_model: bool


def _print_help() -> None:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ServerArgs.add_cli_args(parser)
    add_overlay_args(parser)
    parser.print_help()


def _names_a_model(argv: Sequence[str]) -> bool:
    flags = ("--model-path", "--model", "--config")  # a --config file may name the model
    return any(a.split("=", 1)[0] in flags for a in argv)


def sglang_argv_with_model(sglang_argv: Sequence[str]) -> tuple[list[str], bool]:
    """SGLang's own flags with the model made ready: the default model (SmolLM2) when none is
    named, and names and GGUF files resolved to checkpoints (see ``models``). A model that cannot
    be made ready exits with status 1 and one message."""
    from sglang_tokenweave.models import ModelError
    from sglang_tokenweave.models.argv import with_model_resolved
    from sglang_tokenweave.models.catalog import DEFAULT_MODEL
    from sglang_tokenweave.models.resolve import resolve_model

    argv = list(sglang_argv)
    used_default_model = not _names_a_model(argv)
    if used_default_model:
        argv = ["--model-path", DEFAULT_MODEL, *argv]

    def resolve(value: str) -> tuple[str, str | None]:
        resolved = resolve_model(value)
        return resolved.path, resolved.name

    try:
        argv = with_model_resolved(argv, resolve)
    except ModelError as e:
        sys.exit(f"sglang-tokenweave: {e}")
    except KeyboardInterrupt:
        sys.exit("sglang-tokenweave: interrupted while preparing the model")
    return [*argv, *_converted_model_dtype_on_cpu(argv)], used_default_model


def _converted_model_dtype_on_cpu(argv: list[str]) -> list[str]:
    """``--dtype float32`` for a checkpoint we converted (bf16) on a machine without CUDA, unless
    a dtype is given: CPUs without native bf16 (AVX2 machines) run bf16 matmuls several times
    slower than fp32, and a 135M model's fp32 weights are small."""
    from sglang_tokenweave.glue.cpu_support import cuda_available
    from sglang_tokenweave.models.argv import model_arg
    from sglang_tokenweave.models.cache import is_complete

    model = model_arg(argv)
    if any(a.split("=", 1)[0] == "--dtype" for a in argv) or model is None or not is_complete(Path(model)):
        return []
    if cuda_available():
        return []
    logger.warning("No CUDA device found: serving the converted checkpoint in float32 (--dtype float32)")
    return ["--dtype", "float32"]


def sglang_argv_with_defaults(sglang_argv: Sequence[str]) -> tuple[list[str], bool]:
    """SGLang's own flags plus what this machine needs: the model, CPU settings."""
    from sglang_tokenweave.glue.cpu_support import cpu_default_args

    argv, used_default_model = sglang_argv_with_model(sglang_argv)
    return [*argv, *cpu_default_args(argv)], used_default_model


def parse_launch_args(argv: Sequence[str]) -> LaunchArgs:
    """Parse a launcher command line. Exits with status 2 and a message on a bad flag, 1 when
    the model cannot be made ready."""
    from sglang.srt.server_args import prepare_server_args

    overlay, sglang_argv = split_overlay_argv(argv)
    sglang_argv, used_default_model = sglang_argv_with_defaults(sglang_argv)
    return LaunchArgs(prepare_server_args(sglang_argv), overlay, used_default_model)


def deterministic_refusal(overlay: OverlayConfig, server_args) -> str | None:
    """Why our deterministic-request flags cannot serve with SGLang's parsed ``server_args``
    (said before SGLang starts anything), or None."""
    if not overlay.enable_deterministic_requests:
        return None
    if error := sampling_kernel_error(overlay.deterministic_sampling_kernel, server_args.device):
        return error
    if overlay.deterministic_verify_graph == "full":
        return full_graph_error(server_args)
    return None


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        _print_help()
        return
    from sglang_tokenweave.versions import check_sglang_version

    check_sglang_version()
    overlay, sglang_argv = split_overlay_argv(argv)
    # The model first: fetching or converting it may fail, before anything else has started.
    sglang_argv, used_default_model = sglang_argv_with_model(sglang_argv)
    os.environ.update(config_to_env(overlay))
    run_dir = tempfile.mkdtemp(prefix="sglang-tokenweave-")  # per-process reports (see report.py)
    os.environ[RUN_DIR_ENV] = run_dir

    from sglang.launch_server import run_server
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    from sglang_tokenweave.glue.cpu_support import cpu_default_args

    # As sglang.launch_server does: plugins first, so hooks on ServerArgs see the parsing.
    # SGLang loads the plugins again in every process it spawns.
    load_plugins()
    server_args = prepare_server_args([*sglang_argv, *cpu_default_args(sglang_argv)])
    if error := deterministic_refusal(overlay, server_args):
        shutil.rmtree(run_dir, ignore_errors=True)
        sys.exit(f"sglang-tokenweave: {error}")
    if used_default_model:
        logger.warning("No --model-path given: serving %s from %s (--model-path tiny: the built-in tiny "
                       "random-weight model)", server_args.served_model_name, server_args.model_path)
    logger.info("sglang-tokenweave overlay: features %s, flags %s", overlay.active_features(), overlay.to_argv())
    try:
        run_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
