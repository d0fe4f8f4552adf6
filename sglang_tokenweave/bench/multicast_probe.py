"""``python -m sglang_tokenweave.bench.multicast_probe --tp N``: the NVLink multicast pointer
that torch symmetric memory gives each of N GPUs in this process's environment.

SGLang 0.5.17's default custom all-reduce (v2) allocates its workspace with the same two calls
(``custom_all_reduce_v2._allocate_symmetric_memory``: ``empty_strided_p2p`` on its CPU group,
then ``rendezvous``) and uses multicast where the pointer is not 0; SGLang does not log the
pointer, so the harness runs this probe with the servers' environment and requires 0 on every
rank. Prints one line per rank: ``multicast_ptr rank R = P``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from typing import Mapping

LINE = re.compile(r"^multicast_ptr rank (\d+) = (\d+)$", re.M)


def _rank(rank: int, tp: int, port: int) -> None:
    import torch
    import torch.distributed as dist
    from torch._C._distributed_c10d import _SymmetricMemory

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("gloo", rank=rank, world_size=tp)  # SGLang hands v2 its CPU (gloo) group
    group = dist.group.WORLD
    if torch.__version__ < "2.11.0":
        import torch.distributed._symmetric_memory as symm_mem

        symm_mem.enable_symm_mem_for_group(group.group_name)
    device = torch.device("cuda", rank)
    tensor = _SymmetricMemory.empty_strided_p2p((1 << 20,), [1], torch.uint8, device, group.group_name)
    handle = _SymmetricMemory.rendezvous(tensor)
    print(f"multicast_ptr rank {rank} = {int(handle.multicast_ptr)}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


def parse(output: str, tp: int) -> list[int]:
    """Each rank's pointer, in rank order; ValueError unless every rank reported once."""
    found = {int(r): int(p) for r, p in LINE.findall(output)}
    if sorted(found) != list(range(tp)):
        raise ValueError(f"multicast probe: expected ranks 0-{tp - 1}, got {sorted(found)}:\n{output[-2000:]}")
    return [found[r] for r in range(tp)]


def probe(tp: int, env: Mapping[str, str], timeout: float = 600) -> list[int]:
    """Run the probe in a fresh process with ``env``; every rank's multicast pointer."""
    from .server import free_port

    out = subprocess.run([sys.executable, "-m", __name__, "--tp", str(tp), "--port", str(free_port())],
                         env=dict(env), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"multicast probe failed ({out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")
    return parse(out.stdout, tp)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, required=True)
    parser.add_argument("--port", type=int, default=29555)
    args = parser.parse_args(argv)
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(args.tp, args.port), nprocs=args.tp)


if __name__ == "__main__":
    main()
