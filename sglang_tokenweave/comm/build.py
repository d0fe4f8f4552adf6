"""Builds and loads the CUDA kernels (``torch.ops.tokenweave``).

The kernels are compiled on first use with ``torch.utils.cpp_extension`` into a persistent,
content-addressed cache: the directory name hashes the sources, flags, target archs and the
torch/CUDA versions, so an edit or an upgrade builds afresh and anything else loads the
library that is already there. Importing this module compiles nothing and needs no GPU.

    python -m sglang_tokenweave.comm.build              # sm_90, and sm_100 where nvcc has it
    python -m sglang_tokenweave.comm.build --arch 90    # what CI runs (no GPU needed)

Cache location: ``$SGLANG_TOKENWEAVE_CACHE_DIR``, else ``$TORCH_EXTENSIONS_DIR/sglang_tokenweave``,
else ``~/.cache/sglang_tokenweave/kernels``.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

LIB_NAME = "tokenweave_ops"
SOURCES = ("bindings.cpp", "fused_ar_norm_p2p.cu", "fused_ar_norm_multimem.cu", "copy_floor.cu")
HEADERS = ("fused_ar_norm.h", "device_utils.cuh")
OPS = ("fused_ar_norm", "fused_ar_norm_multimem", "p2p_copy_floor", "shape_error")
CXX_FLAGS = ("-O3", "-std=c++17")
NVCC_FLAGS = ("-O3", "-std=c++17", "-lineinfo")


def csrc_dir() -> Path:
    """The CUDA sources: shipped inside the package when installed, else the repo's csrc/."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "_csrc", here.parents[1] / "csrc"):
        if (candidate / SOURCES[0]).is_file():
            return candidate
    raise FileNotFoundError("sglang_tokenweave CUDA sources not found (looked for _csrc/ and csrc/)")


def cache_root() -> Path:
    if os.environ.get("SGLANG_TOKENWEAVE_CACHE_DIR"):
        return Path(os.environ["SGLANG_TOKENWEAVE_CACHE_DIR"])
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "sglang_tokenweave"
    return Path.home() / ".cache" / "sglang_tokenweave" / "kernels"


def nvcc_archs() -> set[str]:
    """Compute capabilities nvcc can target, like {"90", "100"}; empty without nvcc."""
    nvcc = shutil.which("nvcc") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    try:
        out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {line.strip().removeprefix("compute_") for line in out.split() if line.startswith("compute_")}


def default_archs() -> list[str]:
    """The current GPU's arch when there is one (fastest build); else sm_90 plus sm_100
    where this nvcc supports it."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return [f"{major}{minor}"]
    return ["90"] + (["100"] if "100" in nvcc_archs() else [])


def gencode_flags(archs: Sequence[str]) -> list[str]:
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]


def build_key(archs: Sequence[str]) -> str:
    import torch

    h = hashlib.sha256()
    src = csrc_dir()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((src / name).read_bytes())
    for part in (CXX_FLAGS, NVCC_FLAGS, tuple(archs), (torch.__version__, str(torch.version.cuda))):
        h.update(repr(part).encode())
    return h.hexdigest()[:16]


def find_cuda_home() -> Optional[str]:
    """A CUDA toolkit root that has the runtime headers. torch guesses the root from the nvcc
    on PATH, which is wrong when that nvcc is a wrapper script outside the toolkit."""
    from torch.utils import cpp_extension

    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME, "/usr/local/cuda"]
    for home in candidates:
        if home and os.path.isfile(os.path.join(home, "include", "cuda_runtime_api.h")):
            return home
    return None


def prepare_toolchain() -> None:
    """Point torch's extension builder at a complete CUDA toolkit, or say plainly why not."""
    import torch
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        raise RuntimeError("this torch build has no CUDA; the tokenweave kernels need a CUDA torch")
    home = find_cuda_home()
    if home is None:
        raise RuntimeError("no CUDA toolkit found: set CUDA_HOME to the directory holding bin/nvcc and include/")
    # The builder reads this module global for nvcc, include and library paths.
    cpp_extension.CUDA_HOME = home


def load(archs: Optional[Sequence[str]] = None, verbose: bool = False) -> Path:
    """Build if needed and load the library into this process; returns its path."""
    import torch

    archs = list(archs) if archs else default_archs()
    key = build_key(archs)
    build_dir = cache_root() / f"{LIB_NAME}_{key}"
    lib = build_dir / f"{LIB_NAME}_{key}.so"
    if not lib.is_file():
        prepare_toolchain()
        from torch.utils import cpp_extension

        build_dir.mkdir(parents=True, exist_ok=True)
        src = csrc_dir()
        cpp_extension.load(
            name=f"{LIB_NAME}_{key}",
            sources=[str(src / s) for s in SOURCES],
            extra_cflags=list(CXX_FLAGS),
            extra_cuda_cflags=list(NVCC_FLAGS) + gencode_flags(archs),
            extra_include_paths=[str(src)],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=verbose,
        )
    else:
        torch.ops.load_library(str(lib))
    return lib


@lru_cache(maxsize=1)
def ops():
    """``torch.ops.tokenweave``, building the library on first use."""
    import torch

    load()
    return torch.ops.tokenweave


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help="compute capability, e.g. 90 (repeatable)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    import torch

    lib = load(args.arch, verbose=args.verbose)
    missing = [op for op in OPS if not hasattr(torch.ops.tokenweave, op)]
    print(f"built {lib}" + (f"; missing ops: {missing}" if missing else ""))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
