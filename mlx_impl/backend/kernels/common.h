// Shared by the kernels: MLX's headers, the CPU-only primitive base, input checks, the threads of
// a stream's worker.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace mx = mlx::core;

namespace ck {

// Threads a kernel on this stream's worker may use (the machine's cores unless
// set_stream_blas_threads set a number: a stream that shares the cores with another uses one).
size_t stream_threads();

// fn(first_row, n_rows) over `rows`, split over the stream's threads when large (at least 2^18
// elements a thread): rows are independent, so the results are those of one pass.
template <class F>
void parallel_rows(size_t rows, size_t row_size, F fn) {
  size_t workers = stream_threads();
  workers = std::min(workers, std::max<size_t>(1, rows * row_size / (1 << 18)));
  workers = std::min(workers, rows);
  if (workers <= 1) return fn(0, rows);
  std::vector<std::thread> pool;
  size_t per = (rows + workers - 1) / workers;
  for (size_t w = 1; w < workers; ++w) {
    size_t lo = w * per;
    if (lo < rows) pool.emplace_back(fn, lo, std::min(per, rows - lo));
  }
  fn(0, std::min(per, rows));
  for (auto& t : pool) t.join();
}

inline void check_input(const mx::array& a, const char* what) {
  if (a.dtype() != mx::float32)
    throw std::invalid_argument(std::string(what) + ": float32 input expected");
}

// Output storage: the input's buffer when MLX may donate it, else a fresh one.
inline void allocate_like(const mx::array& in, mx::array& out) {
  if (in.is_donatable() && in.flags().row_contiguous && in.itemsize() == out.itemsize())
    out.copy_shared_buffer(in);
  else
    out.set_data(mx::allocator::malloc(out.nbytes()));
}

inline void require_row_contiguous(const mx::array& a, const char* what) {
  if (!a.flags().row_contiguous)
    throw std::invalid_argument(std::string(what) + ": row-contiguous input expected");
}

inline mx::Stream cpu_stream(const char* what) {
  auto s = mx::to_stream({});
  if (s.device != mx::Device::cpu)
    throw std::invalid_argument(std::string(what) + ": the default stream is not a CPU stream");
  return s;
}

// A primitive with one output that runs on the CPU only.
class CpuPrimitive : public mx::UnaryPrimitive {
 public:
  using mx::UnaryPrimitive::UnaryPrimitive;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("backend kernels: CPU only");
  }

 protected:
  // The stream's command encoder, with the inputs and the output registered.
  mx::cpu::CommandEncoder& encoder(const std::vector<mx::array>& inputs, mx::array& out) {
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    enc.set_output_array(out);
    return enc;
  }

  // Products (x, weight[, bias], all row-contiguous): a fresh output, the encoder, the bias or null.
  std::pair<mx::cpu::CommandEncoder*, const float*> product_encoder(const std::vector<mx::array>& inputs,
                                                                    mx::array& out) {
    for (const auto& a : inputs) require_row_contiguous(a, name());
    out.set_data(mx::allocator::malloc(out.nbytes()));
    return {&encoder(inputs, out), inputs.size() == 3 ? inputs[2].data<float>() : nullptr};
  }
};

// A (B, H, N, D) operand: base pointer and element strides (the D axis has stride 1).
struct Operand4 {
  const float* data;
  int64_t sb, sh, sn;
};

inline Operand4 operand(const mx::array& a) {
  const auto& st = a.strides();
  return {a.data<float>(), st[0], st[1], st[2]};
}

inline int64_t broadcast_stride(const mx::array& a, int axis) {
  return a.shape(axis) == 1 ? 0 : a.strides()[axis];
}

}  // namespace ck
