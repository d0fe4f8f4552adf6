// Torch operator bindings (torch.ops.tokenweave.*). Uses only the torch C++ library API,
// not the Python C API, so the built library depends on the torch build, not on the
// Python version.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "fused_ar_norm.h"

namespace tokenweave {
namespace {

DType dtype_of(const at::Tensor& t) {
  if (t.scalar_type() == at::kBFloat16) return DType::kBF16;
  TORCH_CHECK(t.scalar_type() == at::kHalf, "tokenweave: dtype must be bfloat16 or float16, got ",
              t.scalar_type());
  return DType::kFP16;
}

LaunchShape make_shape(int64_t num_blocks, int64_t vpt, int64_t tpr, int64_t rows, int64_t hidden) {
  LaunchShape s{static_cast<int>(num_blocks), static_cast<int>(vpt), static_cast<int>(tpr),
                static_cast<int>(rows)};
  const char* why = check_shape(s, static_cast<int>(hidden));
  TORCH_CHECK(why[0] == '\0', "tokenweave: bad launch shape: ", why);
  return s;
}

void check_signals(int64_t signal_base, int64_t num_blocks, int64_t world, int64_t signal_slots) {
  TORCH_CHECK(signal_base >= 0 && signal_base + signal_slots_needed(num_blocks, world) <= signal_slots,
              "tokenweave: ", num_blocks, " blocks need ", signal_slots_needed(num_blocks, world),
              " signal slots from ", signal_base, ", the pad has ", signal_slots);
}

void check_residual(const std::optional<at::Tensor>& residual, const at::Tensor& weight,
                    bool has_residual, bool write_residual, int64_t row_end) {
  if (!has_residual && !write_residual) return;
  TORCH_CHECK(residual.has_value(), "tokenweave: residual tensor required");
  const at::Tensor& r = *residual;
  TORCH_CHECK(r.is_cuda() && r.is_contiguous() && r.dim() == 2, "tokenweave: residual must be a contiguous 2-D CUDA tensor");
  TORCH_CHECK(r.scalar_type() == weight.scalar_type(), "tokenweave: residual dtype must match weight");
  TORCH_CHECK(r.size(1) == weight.size(0) && r.size(0) >= row_end,
              "tokenweave: residual must be [num_tokens, hidden]");
  TORCH_CHECK(r.device() == weight.device(), "tokenweave: residual and weight on different devices");
}

void check_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.is_cuda() && weight.dim() == 1 && weight.is_contiguous(),
              "tokenweave: weight must be a contiguous 1-D CUDA tensor");
}

void fused_ar_norm(const at::Tensor& weight, const std::optional<at::Tensor>& residual,
                   at::IntArrayRef buffer_ptrs, at::IntArrayRef signal_ptrs, int64_t signal_slots,
                   int64_t rank, int64_t row_begin, int64_t row_end, double eps, bool has_residual,
                   bool write_residual, bool one_shot, int64_t num_blocks, int64_t vecs_per_thread,
                   int64_t threads_per_row, int64_t rows_per_block, int64_t signal_base,
                   int64_t timeout_ms) {
  check_weight(weight);
  const int64_t world = static_cast<int64_t>(buffer_ptrs.size());
  TORCH_CHECK(world == 2 || world == 4 || world == 8, "tokenweave: world size must be 2, 4 or 8, got ", world);
  TORCH_CHECK(static_cast<int64_t>(signal_ptrs.size()) == world, "tokenweave: one signal pad per rank");
  TORCH_CHECK(rank >= 0 && rank < world && 0 <= row_begin && row_begin <= row_end, "tokenweave: bad rank or rows");
  check_residual(residual, weight, has_residual, write_residual, row_end);
  check_signals(signal_base, num_blocks, world, signal_slots);
  const int64_t hidden = weight.size(0);
  const LaunchShape shape = make_shape(num_blocks, vecs_per_thread, threads_per_row, rows_per_block, hidden);

  ArNormArgs a{};
  for (int64_t i = 0; i < world; ++i) {
    a.buffers[i] = reinterpret_cast<void*>(buffer_ptrs[i]);
    a.signals[i] = reinterpret_cast<uint32_t*>(signal_ptrs[i]);
  }
  a.residual = residual.has_value() ? residual->data_ptr() : nullptr;
  a.weight = weight.data_ptr();
  a.world_size = static_cast<int>(world);
  a.rank = static_cast<int>(rank);
  a.hidden = static_cast<int>(hidden);
  a.row_begin = static_cast<int>(row_begin);
  a.row_end = static_cast<int>(row_end);
  a.threads_per_row = shape.threads_per_row;
  a.eps = static_cast<float>(eps);
  a.has_residual = has_residual;
  a.write_residual = write_residual;
  a.signal_base = static_cast<int>(signal_base);
  a.timeout_ns = static_cast<unsigned long long>(timeout_ms) * 1000000ull;

  const c10::cuda::CUDAGuard guard(weight.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const cudaError_t err = one_shot ? launch_oneshot(a, dtype_of(weight), shape, stream)
                                   : launch_sharded(a, dtype_of(weight), shape, stream);
  TORCH_CHECK(err == cudaSuccess, "tokenweave: fused_ar_norm launch failed: ", cudaGetErrorString(err));
}

bool multicast_disabled_by_env() {
  const char* v = std::getenv("TORCH_SYMM_MEM_DISABLE_MULTICAST");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

void fused_ar_norm_multimem(const at::Tensor& weight, const std::optional<at::Tensor>& residual,
                            int64_t multicast_ptr, at::IntArrayRef signal_ptrs, int64_t signal_slots,
                            int64_t rank, int64_t row_begin, int64_t row_end, double eps,
                            bool has_residual, bool write_residual, int64_t num_blocks,
                            int64_t vecs_per_thread, int64_t threads_per_row, int64_t rows_per_block,
                            int64_t signal_base, int64_t timeout_ms) {
  // Second line of defence behind the Python guard: never touch a multicast address when
  // multicast is switched off for this process or absent.
  TORCH_CHECK(!multicast_disabled_by_env(), "tokenweave: multimem refused: TORCH_SYMM_MEM_DISABLE_MULTICAST=1");
  TORCH_CHECK(multicast_ptr != 0, "tokenweave: multimem refused: no multicast mapping");
  check_weight(weight);
  const int64_t world = static_cast<int64_t>(signal_ptrs.size());
  TORCH_CHECK(world == 2 || world == 4 || world == 8, "tokenweave: world size must be 2, 4 or 8");
  TORCH_CHECK(rank >= 0 && rank < world && 0 <= row_begin && row_begin <= row_end, "tokenweave: bad rank or rows");
  check_residual(residual, weight, has_residual, write_residual, row_end);
  check_signals(signal_base, num_blocks, world, signal_slots);
  const int64_t hidden = weight.size(0);
  const LaunchShape shape = make_shape(num_blocks, vecs_per_thread, threads_per_row, rows_per_block, hidden);

  MultimemArgs a{};
  a.multicast = reinterpret_cast<void*>(multicast_ptr);
  for (int64_t i = 0; i < world; ++i) a.signals[i] = reinterpret_cast<uint32_t*>(signal_ptrs[i]);
  a.residual = residual.has_value() ? residual->data_ptr() : nullptr;
  a.weight = weight.data_ptr();
  a.world_size = static_cast<int>(world);
  a.rank = static_cast<int>(rank);
  a.hidden = static_cast<int>(hidden);
  a.row_begin = static_cast<int>(row_begin);
  a.row_end = static_cast<int>(row_end);
  a.threads_per_row = shape.threads_per_row;
  a.eps = static_cast<float>(eps);
  a.has_residual = has_residual;
  a.write_residual = write_residual;
  a.signal_base = static_cast<int>(signal_base);
  a.timeout_ns = static_cast<unsigned long long>(timeout_ms) * 1000000ull;

  const c10::cuda::CUDAGuard guard(weight.device());
  const cudaError_t err = launch_multimem(a, dtype_of(weight), shape, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "tokenweave: multimem launch failed: ", cudaGetErrorString(err));
}

void p2p_copy_floor(const at::Tensor& buffer, at::IntArrayRef buffer_ptrs, int64_t rank,
                    int64_t row_begin, int64_t row_end, int64_t pattern, int64_t num_blocks,
                    int64_t vecs_per_thread, int64_t threads_per_row, int64_t rows_per_block) {
  TORCH_CHECK(buffer.is_cuda() && buffer.dim() == 2 && buffer.element_size() == 2,
              "tokenweave: buffer must be a 2-D CUDA tensor of a 16-bit dtype");
  const int64_t world = static_cast<int64_t>(buffer_ptrs.size());
  TORCH_CHECK(world == 2 || world == 4 || world == 8, "tokenweave: world size must be 2, 4 or 8");
  TORCH_CHECK(row_end <= buffer.size(0), "tokenweave: rows beyond the buffer");
  const int64_t hidden = buffer.size(1);
  const LaunchShape shape = make_shape(num_blocks, vecs_per_thread, threads_per_row, rows_per_block, hidden);
  ArNormArgs a{};
  for (int64_t i = 0; i < world; ++i) a.buffers[i] = reinterpret_cast<void*>(buffer_ptrs[i]);
  a.world_size = static_cast<int>(world);
  a.rank = static_cast<int>(rank);
  a.hidden = static_cast<int>(hidden);
  a.row_begin = static_cast<int>(row_begin);
  a.row_end = static_cast<int>(row_end);
  a.threads_per_row = shape.threads_per_row;
  const c10::cuda::CUDAGuard guard(buffer.device());
  const cudaError_t err = launch_copy_floor(a, shape, static_cast<int>(pattern), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "tokenweave: copy floor launch failed: ", cudaGetErrorString(err));
}

// Host-only: lets callers (and the CPU build test) validate a launch shape.
std::string shape_error(int64_t hidden, int64_t vecs_per_thread, int64_t threads_per_row,
                        int64_t rows_per_block, int64_t num_blocks) {
  LaunchShape s{static_cast<int>(num_blocks), static_cast<int>(vecs_per_thread),
                static_cast<int>(threads_per_row), static_cast<int>(rows_per_block)};
  return check_shape(s, static_cast<int>(hidden));
}

}  // namespace
}  // namespace tokenweave

TORCH_LIBRARY(tokenweave, m) {
  m.def(
      "fused_ar_norm(Tensor weight, Tensor(a!)? residual, int[] buffer_ptrs, int[] signal_ptrs, "
      "int signal_slots, int rank, int row_begin, int row_end, float eps, bool has_residual, "
      "bool write_residual, bool one_shot, int num_blocks, int vecs_per_thread, "
      "int threads_per_row, int rows_per_block, int signal_base, int timeout_ms) -> ()");
  m.def(
      "fused_ar_norm_multimem(Tensor weight, Tensor(a!)? residual, int multicast_ptr, "
      "int[] signal_ptrs, int signal_slots, int rank, int row_begin, int row_end, float eps, "
      "bool has_residual, bool write_residual, int num_blocks, int vecs_per_thread, "
      "int threads_per_row, int rows_per_block, int signal_base, int timeout_ms) -> ()");
  m.def(
      "p2p_copy_floor(Tensor buffer, int[] buffer_ptrs, int rank, int row_begin, int row_end, "
      "int pattern, int num_blocks, int vecs_per_thread, int threads_per_row, "
      "int rows_per_block) -> ()");
  m.def("shape_error(int hidden, int vecs_per_thread, int threads_per_row, int rows_per_block, "
        "int num_blocks) -> str",
        &tokenweave::shape_error);
}

TORCH_LIBRARY_IMPL(tokenweave, CUDA, m) {
  m.impl("fused_ar_norm", &tokenweave::fused_ar_norm);
  m.impl("fused_ar_norm_multimem", &tokenweave::fused_ar_norm_multimem);
  m.impl("p2p_copy_floor", &tokenweave::p2p_copy_floor);
}
