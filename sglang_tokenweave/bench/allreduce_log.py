"""Which all-reduce path a server took, read from its log.

At SGLang's default log level, SGLang 0.5.17 logs the set-up of its default custom all-reduce
(v2: "All Reduce config: ... multicast = True|False", rank 0) and a failed custom all-reduce
set-up (it then runs NCCL); the legacy v1 and NCCL-only paths say nothing. Our overlay logs what
the fused all-reduce + RMSNorm does. A "multicast = True" means NVLink multicast is in use and
the run is refused (our machines keep it off; ``multicast_probe`` checks the pointer itself).
"""

from __future__ import annotations

import re

V2_CONFIG = re.compile(r"All Reduce config: symmetric_memory = [\d.]+ MB, local_buffer = [\d.]+ MB, "
                       r"multicast = (True|False)")
CUSTOM_AR_FAILED = "Setup Custom allreduce failed"
MARKERS = ("All Reduce config:", CUSTOM_AR_FAILED, "sglang is using nccl==", "sglang-tokenweave: tokenweave",
           "fused all-reduce:")
V2 = "custom all-reduce v2 (peer-to-peer; NCCL above its size limit)"


class MulticastOn(RuntimeError):
    pass


def allreduce_path(log_text: str, tp: int, device: str) -> dict:
    """{path, v2_multicast, lines}: the path SGLang chose, whether v2 set up multicast (None
    where v2 did not run), and the log lines it was read from (at most 8, each once)."""
    if tp <= 1:
        return {"path": "n/a (TP1: no all-reduce)", "v2_multicast": None, "lines": []}
    if device == "cpu":
        return {"path": "gloo (CPU)", "v2_multicast": None, "lines": []}
    lines = list(dict.fromkeys(l.strip() for l in log_text.splitlines() if any(m in l for m in MARKERS)))[:8]
    v2 = V2_CONFIG.search(log_text)
    if v2:
        path, multicast = V2, v2.group(1) == "True"
    elif CUSTOM_AR_FAILED in log_text:
        path, multicast = "NCCL (custom all-reduce set-up failed)", None
    else:
        path, multicast = "not logged (custom all-reduce v1 or NCCL)", None
    return {"path": path, "v2_multicast": multicast, "lines": lines}


def check_multicast_off(record: dict, where: str) -> None:
    if record.get("v2_multicast"):
        raise MulticastOn(f"{where}: SGLang's custom all-reduce set up NVLink multicast: {record['lines']}")
