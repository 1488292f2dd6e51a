// Inference BatchNorm over the last (channel) axis, optionally followed by ReLU, in one pass:
// CAMPPlus runs ~60 of them (each BatchNorm-ReLU pair of its TDNN trunk and FCM head), and MLX's
// nn.BatchNorm + nn.relu is five passes (subtract, multiply, multiply, add, maximum). The same
// operations in the same order as those (inv = rsqrt(var + eps) is given, computed by MLX), no
// FMA contraction: the same bits (unit test).
#include <cmath>

#include "common.h"
#include "kernels.h"

namespace ck {
namespace {

// MLX's maximum(y, 0): NaN kept, else y > 0 ? y : 0.
inline float mlx_relu(float y) { return std::isnan(y) ? y : (y > 0.0f ? y : 0.0f); }

// rows of x (rows, C) -> y: (x - mean) * inv, then weight * . + bias where given, then ReLU if asked.
void batch_norm_rows(const float* x, const float* mean, const float* inv, const float* weight, const float* bias,
                     float* y, int64_t rows, int64_t C, bool relu) {
  for (int64_t r = 0; r < rows; ++r, x += C, y += C) {
    for (int64_t c = 0; c < C; ++c) {
      float v = (x[c] - mean[c]) * inv[c];
      if (weight) v = weight[c] * v + bias[c];
      y[c] = relu ? mlx_relu(v) : v;
    }
  }
}

class BatchNormKernel : public CpuPrimitive {
 public:
  BatchNormKernel(mx::Stream s, bool relu) : CpuPrimitive(s), relu_(relu) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    for (const auto& a : inputs) require_row_contiguous(a, name());
    const auto& x = inputs[0];
    allocate_like(x, out);
    auto& enc = encoder(inputs, out);
    const float* weight = inputs.size() == 5 ? inputs[3].data<float>() : nullptr;
    const float* bias = inputs.size() == 5 ? inputs[4].data<float>() : nullptr;
    int64_t C = x.shape(-1), rows = C ? static_cast<int64_t>(x.size()) / C : 0;
    enc.dispatch([xp = x.data<float>(), mean = inputs[1].data<float>(), inv = inputs[2].data<float>(), weight, bias,
                  dst = out.data<float>(), rows, C, relu = relu_]() {
      int threads = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(stream_threads()),
                                                       std::max<int64_t>(1, rows * C / 65536)));
      int64_t per = (rows + threads - 1) / threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
      for (int i = 0; i < threads; ++i) {
        int64_t lo = i * per, n = std::min(per, rows - lo);
        if (n > 0) batch_norm_rows(xp + lo * C, mean, inv, weight, bias, dst + lo * C, n, C, relu);
      }
    });
  }
  const char* name() const override { return "CpuKernelBatchNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return relu_ == static_cast<const BatchNormKernel&>(other).relu_;
  }

 private:
  bool relu_;
};

}  // namespace

mx::array batch_norm(const mx::array& x, const mx::array& mean, const mx::array& inv, std::optional<mx::array> weight,
                     std::optional<mx::array> bias, bool relu) {
  check_input(x, "batch_norm");
  if (x.ndim() == 0 || weight.has_value() != bias.has_value())
    throw std::invalid_argument("batch_norm: x (..., C) and both or neither of weight, bias expected");
  std::vector<const mx::array*> params = {&mean, &inv};
  if (weight) params.insert(params.end(), {&*weight, &*bias});
  for (const auto* p : params) {
    check_input(*p, "batch_norm");
    if (p->ndim() != 1 || p->shape(0) != x.shape(-1))
      throw std::invalid_argument("batch_norm: mean, inv, weight, bias (C,) expected");
  }
  auto s = cpu_stream("batch_norm");
  std::vector<mx::array> in;
  in.push_back(mx::contiguous(x, false, s));
  for (const auto* p : params) in.push_back(mx::contiguous(*p, false, s));
  return mx::array(x.shape(), mx::float32, std::make_shared<BatchNormKernel>(s, relu), in);
}

}  // namespace ck
