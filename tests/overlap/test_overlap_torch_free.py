"""The overlap planner and comm's planning modules import without torch (their docstrings say so):
checked in a child interpreter in which ``import torch`` fails."""

import json
import subprocess
import sys
import textwrap

TORCH_FREE = [
    "sglang_tokenweave.overlap",
    "sglang_tokenweave.overlap.split_plan",
    "sglang_tokenweave.overlap.tuning",
    "sglang_tokenweave.overlap.fallbacks",
    "sglang_tokenweave.comm",
    "sglang_tokenweave.comm.plan",
    "sglang_tokenweave.comm.launch_shape",
    "sglang_tokenweave.comm.sharding",
    "sglang_tokenweave.comm.multicast",
]

CHILD = textwrap.dedent("""
    import importlib, json, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked: {name}")
            return None

    sys.meta_path.insert(0, NoTorch())
    result = {"imported": [], "failed": {}}
    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
            result["imported"].append(name)
        except ImportError as e:
            result["failed"][name] = repr(e)
    try:
        from sglang_tokenweave.comm import FusedARNorm  # needs torch: must fail here
        result["fused_ar_norm"] = "imported"
    except ImportError as e:
        result["fused_ar_norm"] = repr(e)
    result["torch_loaded"] = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps(result))
""")


def test_overlap_and_comm_planning_import_without_torch():
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(TORCH_FREE)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["imported"] == TORCH_FREE
    assert result["torch_loaded"] == []
    # The blocker works: the one public name that needs torch fails to load.
    assert "torch is blocked" in result["fused_ar_norm"]
