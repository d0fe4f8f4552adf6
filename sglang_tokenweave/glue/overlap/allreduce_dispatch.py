"""Which all-reduce SGLang's tensor-parallel group ran, observed rather than re-derived.

``GroupCoordinator.all_reduce`` picks, per call, one of its communicators (custom all-reduce
v1 or v2, quick all-reduce, mscclpp, torch symmetric memory, pynccl) or plain
``torch.distributed``; the pick depends on the size, on whether a CUDA graph is being
captured, and on what the machine allowed at start-up. ``record_dispatch`` wraps those entry
points on one group for a ``with`` block and notes each call's path and whether it ran under
graph capture; benchmarks report the paths beside their timings. ``group_setup`` says which
custom all-reduce the group built and the multicast addresses it mapped: with NVLink
multicast switched off every one of them must be 0.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Optional

import torch

# (group attribute, method, label); the custom all-reduce's label comes from its class.
ENTRY_POINTS = (
    ("ca_comm", "custom_all_reduce", None),
    ("qr_comm", "quick_all_reduce", "quick_ar"),
    ("pymscclpp_comm", "all_reduce", "mscclpp"),
    ("torch_symm_mem_comm", "all_reduce", "torch_symm_mem"),
    ("pynccl_comm", "all_reduce", "pynccl"),
    ("pynccl_comm", "outplace_all_reduce", "pynccl"),
)
CUSTOM_AR_LABELS = {"CustomAllReduceV2": "custom_ar_v2", "CustomAllreduce": "custom_ar_v1"}
# What each path is, in the words of the benchmark tables (pynccl and torch.distributed are
# both NCCL on a CUDA group).
KINDS = {"custom_ar_v2": "v2", "custom_ar_v1": "v1", "pynccl": "NCCL", "torch_distributed": "NCCL",
         "torch_symm_mem": "symm-mem", "mscclpp": "mscclpp", "quick_ar": "quick-AR"}
MULTICAST_ATTRS = ("mc_base_ptr", "pull_sem_mc_ptr")  # CustomAllReduceV2's multicast addresses


def custom_ar_label(communicator) -> str:
    name = type(communicator).__name__
    return CUSTOM_AR_LABELS.get(name, f"custom_ar:{name}")


@contextlib.contextmanager
def record_dispatch(group, calls: list, capturing: Callable[[], bool] = torch.cuda.is_current_stream_capturing):
    """Append ``(path, under_capture)`` to ``calls`` for every all-reduce ``group`` runs
    inside the block (the outermost entry point only); everything is restored afterwards."""
    depth = [0]
    restore = []

    def wrap(owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        own = name in getattr(owner, "__dict__", {})  # an instance attribute, or a module's

        def recorded(*args, **kwargs):
            if depth[0] == 0:
                calls.append((label, bool(capturing())))
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(owner, name, recorded)
        restore.append((owner, name, original if own else None))

    try:
        for attr, method, label in ENTRY_POINTS:
            communicator = getattr(group, attr, None)
            if communicator is not None and hasattr(communicator, method):
                wrap(communicator, method, label or custom_ar_label(communicator))
        wrap(torch.distributed, "all_reduce", "torch_distributed")
        yield calls
    finally:
        for owner, name, original in reversed(restore):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def dispatch_summary(calls: Iterable[tuple[str, bool]]) -> dict:
    """{"graph": path, "eager": path}: the path taken under capture and outside it ("a+b" if
    several, None if none ran there)."""
    seen = {True: [], False: []}
    for label, under_capture in calls:
        if label not in seen[under_capture]:
            seen[under_capture].append(label)
    return {"graph": "+".join(seen[True]) or None, "eager": "+".join(seen[False]) or None}


def path_kind(label: Optional[str]) -> Optional[str]:
    """The table name of a path ("v2", "NCCL", ...); None stays None."""
    if label is None:
        return None
    return "+".join(KINDS.get(part, part) for part in label.split("+"))


def group_setup(group) -> dict:
    """The custom all-reduce ``group`` built (None: none, SGLang uses NCCL) and the multicast
    addresses it holds."""
    communicator = getattr(group, "ca_comm", None)
    usable = communicator is not None and not getattr(communicator, "disabled", True)
    pointers = {}
    if usable:
        pointers = {a: int(getattr(communicator, a) or 0) for a in MULTICAST_ATTRS if hasattr(communicator, a)}
    return {"custom_all_reduce": custom_ar_label(communicator) if usable else None, "multicast_ptrs": pointers}


def multicast_refusal(setup: dict) -> str:
    """Why this setup breaks the multicast-off rule ('' when every multicast pointer is 0)."""
    mapped = {k: v for k, v in setup.get("multicast_ptrs", {}).items() if v}
    return f"SGLang's custom all-reduce mapped NVLink multicast: {mapped}" if mapped else ""
