"""When the multimem (NVLink multicast) variant may run.

Multicast must stay off on machines where it is switched off: any of the standard switches
set to "off" refuses it, as does a buffer without a multicast mapping (the device or driver
has no multicast, or torch did not create one). It also has to be asked for explicitly.
"""

import os
from typing import Mapping, Optional

# Environment switches that mean "no NVLink multicast in this process".
MULTICAST_OFF_SWITCHES = {
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NCCL_NVLS_ENABLE": "0",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def multimem_refusal(requested: bool, multicast_ptr: int, env: Optional[Mapping[str, str]] = None) -> str:
    """Why the multimem variant may not run ('' when it may)."""
    env = os.environ if env is None else env
    if not requested:
        return "multimem variant not requested"
    for name, off in MULTICAST_OFF_SWITCHES.items():
        if env.get(name) == off:
            return f"NVLink multicast is switched off in this process ({name}={off})"
    if not multicast_ptr:
        return "no multicast mapping for the buffer (device or driver reports no multicast support)"
    return ""
