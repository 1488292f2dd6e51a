// Linear: x @ weight^T + bias, the product (MLX's BLAS or the wide BLAS), then the bias.
#include <optional>

#include "common.h"
#include "kernels.h"
#include "wide_blas.h"

namespace ck {
namespace {

// Rows [0, M) of x (M, K) @ w^T (w (N, K)) + bias, split into one block of rows per thread.
void linear_rows(bool wide, const float* x, const float* w, const float* bias, float* y, int64_t M,
                 int64_t N, int64_t K) {
  int threads = wide_threads(wide, M);
  int64_t per = (M + threads - 1) / threads;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int i = 0; i < threads; ++i) {
    int64_t lo = i * per, rows = std::min(per, M - lo);
    if (rows <= 0) continue;
    sgemm(wide, kTrans, rows, N, K, 1.0f, x + lo * K, K, w, K, 0.0f, y + lo * N, N);
    add_bias_rows(y + lo * N, bias, rows, N);
  }
}

// x @ weight^T + bias, x (M, K) rows, weight (N, K), bias (N) or none: the product, then the bias
// added to each row (MLX's addmm first broadcasts the bias into the output with a strided copy:
// 0.5 ms of a 1.1 ms product of (350, 256) x (256, 1024) here).
class LinearKernel : public CpuPrimitive {
 public:
  LinearKernel(mx::Stream s, bool wide) : CpuPrimitive(s), wide_(wide) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &w = inputs[1];
    auto [enc, bias] = product_encoder(inputs, out);
    int64_t K = w.shape(1), N = w.shape(0), M = x.size() / K;
    enc->dispatch([xp = x.data<float>(), wp = w.data<float>(), bias, dst = out.data<float>(), M, N, K,
                  wide = wide_]() { linear_rows(wide, xp, wp, bias, dst, M, N, K); });
  }
  const char* name() const override { return "CpuKernelLinear"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return wide_ == static_cast<const LinearKernel&>(other).wide_;
  }

 private:
  bool wide_;
};

}  // namespace

mx::array linear(const mx::array& x, const mx::array& weight, std::optional<mx::array> bias, bool wide) {
  check_input(x, "linear");
  check_input(weight, "linear");
  if (x.ndim() == 0 || weight.ndim() != 2 || x.shape().back() != weight.shape(1) ||
      (bias && (bias->ndim() != 1 || bias->shape(0) != weight.shape(0))))
    throw std::invalid_argument("linear: x (..., K), weight (N, K), bias (N,) expected");
  auto s = cpu_stream("linear");
  std::vector<mx::array> in = {mx::contiguous(x, false, s), mx::contiguous(weight, false, s)};
  if (bias) {
    check_input(*bias, "linear");
    in.push_back(mx::contiguous(*bias, false, s));
  }
  auto shape = x.shape();
  shape.back() = weight.shape(0);
  return mx::array(shape, mx::float32, std::make_shared<LinearKernel>(s, wide), in);
}

}  // namespace ck
