"""Serving on CPU (no CUDA device): what SGLang 0.5.17 needs to run the tiny model in tests.

Active only where torch sees no CUDA device; declared in the patch table under feature ``cpu``.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("sglang_tokenweave")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def cpu_default_args(argv: list[str]) -> list[str]:
    """SGLang flags a machine without a GPU needs, unless the user chose otherwise.

    ``--device cpu``: SGLang would refuse to start. Graphs off: on CPU SGLang "captures" its
    prefill graphs with torch.compile, minutes of compilation for no gain on the tiny model.
    """
    if cuda_available():
        return []
    defaults = {
        "--device": "cpu",
        "--cuda-graph-backend-prefill": "disabled",
        "--cuda-graph-backend-decode": "disabled",
    }
    added = [item for flag, value in defaults.items() if not _given(argv, flag) for item in (flag, value)]
    if added:
        logger.warning("No CUDA device found: serving on CPU with %s", " ".join(added))
    return added


def rotary_init_without_vllm(original_init, self, *args, **kwargs):
    """Construct the rotary embedding as SGLang's CPU engine would (forward_native, no fallback kernel)."""
    from sglang.srt.layers.rotary_embedding import base

    saved = base._is_cpu
    base._is_cpu = True
    try:
        original_init(self, *args, **kwargs)
    finally:
        base._is_cpu = saved


def group_without_gpu_communicators(self, *args, **kwargs):
    """Gloo does all the communication on CPU; no NCCL, custom all-reduce or symmetric memory."""
    for name in ("use_pynccl", "use_pymscclpp", "use_custom_allreduce", "use_torch_symm_mem_all_reduce"):
        if name in kwargs:
            kwargs[name] = False
    return (self, *args), kwargs


def share_cpu_threads(self):
    """Give each TP rank an equal share of the cores, unpinned (one NUMA node serves all ranks)."""
    import torch

    tp_size, tp_rank = self.ps.tp_size, self.ps.tp_rank
    threads = max(1, (os.cpu_count() or 1) // tp_size)
    torch.set_num_threads(threads)
    self.local_omp_cpuid = None
    logger.info("sglang-tokenweave: CPU TP rank %d/%d uses %d threads", tp_rank, tp_size, threads)
