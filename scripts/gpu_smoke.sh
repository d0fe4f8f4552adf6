#!/usr/bin/env bash
# GPU smoke test of the launcher on a machine with 2+ GPUs and SGLang 0.5.17 importable:
# starts a TP=2 server on the built-in tiny model through our launcher, checks that the overlay
# reports itself active in both TP processes and that /generate answers.
#   bash scripts/gpu_smoke.sh            (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
# NVLink multicast stays off in every process this starts; SGLang runs at its defaults.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
python3 -c "import sglang_tokenweave, importlib.metadata as m; print('sglang', m.version('sglang'))"
python3 -m pytest -m gpu tests/gpu/test_launcher_gpu.py -v -s -p no:cacheprovider "$@"
