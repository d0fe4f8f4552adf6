#!/bin/bash
# One run on a 2- or 4-GPU machine: build/load the kernels, run the GPU tests, benchmark.
#
#   bash scripts/gpu_kernel_suite.sh tests          # correctness on 2 and 4 GPUs
#   bash scripts/gpu_kernel_suite.sh bench [ARGS]   # TP4 and TP2 benchmarks (ARGS go to the script)
#   bash scripts/gpu_kernel_suite.sh all [ARGS]
#
# Logs and results land in $OUT (default /tmp/kernel_suite_out); a short table is printed last.
# NVLink multicast stays off in every process started here.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
for v in NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1; do
  [ "$(printenv "${v%%=*}")" = "${v#*=}" ] || { echo "REFUSING: $v not set"; exit 4; }
done
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export SGLANG_TOKENWEAVE_CACHE_DIR=${SGLANG_TOKENWEAVE_CACHE_DIR:-$PWD/.kcache}
export SGLANG_TOKENWEAVE_BARRIER_TIMEOUT_MS=${SGLANG_TOKENWEAVE_BARRIER_TIMEOUT_MS:-60000}
OUT=${OUT:-/tmp/kernel_suite_out}; mkdir -p "$OUT"
what=${1:-all}; shift || true
ngpu=$(nvidia-smi -L | wc -l)
summary=()

nvidia-smi --query-gpu=index,name,memory.used --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
t0=$(date +%s)
python3 -c "from sglang_tokenweave.comm import build; print(build.load())" 2>&1 | tail -2
summary+=("kernel build/load: $(( $(date +%s) - t0 )) s")

if [ "$what" = tests ] || [ "$what" = all ]; then
  t0=$(date +%s)
  timeout "${TESTS_TIMEOUT:-420}" python3 -m pytest tests/gpu/test_fused_ar_norm_gpu.py tests/gpu/test_fused_ar_norm_multimem_gpu.py -m gpu -q -rs --noconftest -p no:cacheprovider -x 2>&1 | tee "$OUT/gpu_tests.log"
  rc=${PIPESTATUS[0]}
  summary+=("gpu tests: rc=$rc in $(( $(date +%s) - t0 )) s: $(tail -1 "$OUT/gpu_tests.log")")
fi

# A FlashInfer trtllm_comm library prebuilt for sm_90a (its JIT build takes minutes), if carried.
fi_so=.kcache/flashinfer/trtllm_comm.so
fi_pkg=$(python3 -c "import flashinfer, os; print(os.path.dirname(flashinfer.__file__))" 2>/dev/null)
if [ -f "$fi_so" ] && [ -n "$fi_pkg" ]; then
  mkdir -p "$fi_pkg/data/aot/trtllm_comm" && cp "$fi_so" "$fi_pkg/data/aot/trtllm_comm/"
fi

if [ "$what" = bench ] || [ "$what" = all ]; then
  for tp in 4 2; do
    [ "$ngpu" -ge "$tp" ] || continue
    t0=$(date +%s)
    timeout "${BENCH_TIMEOUT:-300}" python3 scripts/bench_fused_allreduce_rmsnorm.py --tp "$tp" --out-dir "$OUT" "$@" \
      2>&1 | grep -v -E "Warning|warnings.warn|deprecated" | tee "$OUT/bench_tp$tp.log"
    summary+=("bench tp$tp: rc=${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s")
  done
fi

echo "==== summary ===="
printf '%s\n' "${summary[@]}"
for f in "$OUT"/bench_tp*.log; do
  [ -f "$f" ] && { echo "-- $f"; grep -E "^T=" "$f" | tail -20; }
done
