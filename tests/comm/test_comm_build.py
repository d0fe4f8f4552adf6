"""The CUDA kernels compile for sm_90 without a GPU, and the library loads and exposes its ops.

Runs where nvcc is installed (CI has it); the build lands in the persistent kernel cache,
so a rerun with unchanged sources only loads.
"""

import shutil
import subprocess
import sys
import textwrap

import pytest

from sglang_tokenweave.comm.build import find_cuda_home

SCRIPT = textwrap.dedent("""
    import torch
    from sglang_tokenweave.comm import build
    from sglang_tokenweave.comm.launch_shape import LaunchShape, shape_error
    build.load(["90"])
    ops = torch.ops.tokenweave
    for name in build.OPS:
        assert hasattr(ops, name), name
    # host-side shape rules agree with the Python mirror
    for shape in [(8192, 1, 1024, 1, 16), (8192, 1, 512, 1, 16), (5120, 2, 320, 1, 8), (2048, 1, 256, 5, 4)]:
        h, vpt, tpr, rows, blocks = shape
        py = shape_error(LaunchShape(blocks, vpt, tpr, rows), h)
        assert ops.shape_error(h, vpt, tpr, rows, blocks) == py, (shape, py)
    print("OK")
""")


@pytest.mark.skipif(shutil.which("nvcc") is None and find_cuda_home() is None, reason="no CUDA toolkit (nvcc) here")
def test_kernels_build_for_sm90_and_load():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-3000:] + proc.stderr[-3000:]
