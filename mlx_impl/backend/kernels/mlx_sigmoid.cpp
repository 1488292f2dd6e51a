// mx.sigmoid's bits in one vectorised pass (mlx_bits.h): MLX's CPU sigmoid is scalar, ~5 ns an
// element here, and CAMPPlus takes one of every CAM layer's (T, 128) masks (52 layers).
#include "common.h"
#include "kernels.h"
#include "mlx_bits.h"

namespace ck {
namespace {

void sigmoid_range(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = mlx_sigmoid(x[i]);
}

class MlxSigmoidKernel : public CpuPrimitive {
 public:
  explicit MlxSigmoidKernel(mx::Stream s) : CpuPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    require_row_contiguous(x, name());
    allocate_like(x, out);
    auto& enc = encoder(inputs, out);
    enc.dispatch([src = x.data<float>(), dst = out.data<float>(), n = static_cast<int64_t>(x.size())]() {
      sigmoid_range(src, dst, n);
    });
  }
  const char* name() const override { return "CpuKernelMlxSigmoid"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

}  // namespace

mx::array mlx_sigmoid(const mx::array& x) {
  check_input(x, "mlx_sigmoid");
  auto s = cpu_stream("mlx_sigmoid");
  return mx::array(x.shape(), mx::float32, std::make_shared<MlxSigmoidKernel>(s), {mx::contiguous(x, false, s)});
}

}  // namespace ck
