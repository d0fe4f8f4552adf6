"""Serving on CPU (no CUDA device): what SGLang 0.5.17 needs to run the tiny model in tests.

Active only where torch sees no CUDA device; declared in the patch table under feature ``cpu``.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

logger = logging.getLogger("sglang_tokenweave")

# Ranks of this server that share this machine's memory; set in each TP worker by
# ``share_cpu_threads`` (None elsewhere: SGLang's own sizing applies).
_ranks_on_machine: Optional[int] = None


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
    """Give each TP rank an equal share of the cores, unpinned (one NUMA node serves all ranks),
    and, through ``rank_share_of_cpu_memory``, an equal share of the memory."""
    global _ranks_on_machine
    import torch

    tp_size, tp_rank = self.ps.tp_size, self.ps.tp_rank
    threads = max(1, (os.cpu_count() or 1) // tp_size)
    torch.set_num_threads(threads)
    self.local_omp_cpuid = None
    args = self.server_args
    _ranks_on_machine = ranks_sharing_memory(tp_size, self.ps.pp_size, args.dp_size, args.enable_dp_attention,
                                             args.nnodes)
    logger.info("sglang-tokenweave: CPU TP rank %d/%d uses %d threads and 1/%d of the free memory",
                tp_rank, tp_size, threads, _ranks_on_machine)


def ranks_sharing_memory(tp_size: int, pp_size: int, dp_size: int, dp_attention: bool, nnodes: int) -> int:
    """Scheduler ranks of one server on each machine: DP replicas each run tp x pp ranks, unless
    DP attention, which runs inside the TP group."""
    replicas = 1 if dp_attention else max(1, dp_size)
    return max(1, tp_size * pp_size * replicas // max(1, nnodes))


def rank_share_of_cpu_memory(original, device, gpu_id, distributed=False, empty_cache=True, cpu_group=None):
    """Free memory (GB) one CPU rank may size its pools from: the machine's available memory over
    the ranks sharing it. SGLang divides by the NUMA nodes (one rank per node); our ranks share
    the machine (``share_cpu_threads``), so each would otherwise take the whole and the OOM
    killer ends one. ``distributed``: the minimum over ``cpu_group``, as SGLang's."""
    if device != "cpu" or _ranks_on_machine is None:
        return original(device, gpu_id, distributed=distributed, empty_cache=empty_cache, cpu_group=cpu_group)
    import psutil
    import torch

    free = psutil.virtual_memory().available / _ranks_on_machine
    if distributed:
        tensor = torch.tensor(free, dtype=torch.float64)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MIN, group=cpu_group)
        free = tensor.item()
    return free / (1 << 30)
