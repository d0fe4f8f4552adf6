"""Runs a check function on W GPU processes (one per GPU, NCCL group) and collects what
failed. Workers keep NVLink multicast off, like every process on our GPU machines."""

import os
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sglang_tokenweave.comm.multicast import MULTICAST_OFF_SWITCHES as MULTICAST_OFF


class FailureLog(list):
    """A list of failure texts that is on disk as soon as each is added, so a rank that
    later dies hard (a device error, an abort) still reports what it saw."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._flush()

    def append(self, text):
        super().append(text)
        self._flush()

    def _flush(self):
        with open(self.path, "w") as f:
            f.write("\n".join(self))


def _worker(rank, world, check, init_file, result_dir, env):
    os.environ.update(env)
    failures = FailureLog(os.path.join(result_dir, f"rank{rank}.txt"))
    try:
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                device_id=torch.device("cuda", rank))
        check(rank, world, failures)
        torch.cuda.synchronize()
        dist.barrier()
        dist.destroy_process_group()
    except Exception:
        failures.append(traceback.format_exc())


def run_on_gpus(check, world, tmp_path, env=None):
    """Spawn ``world`` processes running ``check(rank, world, failures)``; returns
    {rank: failure text} for the ranks that reported any."""
    env = dict(MULTICAST_OFF if env is None else env)
    try:
        mp.spawn(_worker, args=(world, check, str(tmp_path / "init"), str(tmp_path), env), nprocs=world, join=True)
    except mp.ProcessExitedException as e:
        texts = [(tmp_path / f"rank{r}.txt").read_text() for r in range(world) if (tmp_path / f"rank{r}.txt").exists()]
        raise AssertionError(f"a rank died: {e}; reported before that: {texts}") from e
    reports = {r: (tmp_path / f"rank{r}.txt").read_text() for r in range(world)}
    return {r: text for r, text in reports.items() if text}
