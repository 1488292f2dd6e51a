// RoPE's rotation (T3's decoding steps).
#include "common.h"
#include "kernels.h"

namespace ck {
namespace {

// RoPE's rotation, non-traditional (dims i and i + D/2 rotate together) over all D dims:
// y_i = x_i cos_i - x_{i+D/2} sin_i, y_{i+D/2} = x_i sin_i + x_{i+D/2} cos_i, each product rounded
// (as MLX's ops). x (B, H, L, D) with a unit-stride last axis; cos, sin (L, D/2): the caller's
// tables (mx.cos / mx.sin of MLX's angles, so that the result is mx.fast.rope's on the CPU), or
// (L, D): a table per half, y = x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1]
// (the S3 tokenizer's form: -x2 * s + a = a - x2 * s exactly, so the same bits as those ops).
void rope_rows(const float* src, const float* cos_t, const float* sin_t, float* y, int64_t half, int64_t hi)
    __attribute__((optimize("fp-contract=off")));
void rope_rows(const float* src, const float* cos_t, const float* sin_t, float* y, int64_t half, int64_t hi) {
  for (int64_t i = 0; i < half; ++i) {
    float x1 = src[i], x2 = src[half + i];
    y[i] = x1 * cos_t[i] - x2 * sin_t[i];
    y[half + i] = x2 * cos_t[hi + i] + x1 * sin_t[hi + i];
  }
}

class RopeKernel : public CpuPrimitive {
 public:
  explicit RopeKernel(mx::Stream s) : CpuPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &cos_t = inputs[1], &sin_t = inputs[2];
    if (x.strides().back() != 1) throw std::invalid_argument("rope: x with a unit-stride last axis expected");
    require_row_contiguous(cos_t, name());
    require_row_contiguous(sin_t, name());
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(inputs, out);
    enc.dispatch([xo = operand(x), cp = cos_t.data<float>(), sp = sin_t.data<float>(), dst = out.data<float>(),
                  B = x.shape(0), H = x.shape(1), L = x.shape(2), D = x.shape(3), cos_width = cos_t.shape(1)]() {
      int64_t half = D / 2, width = cos_width, hi = width == D ? half : 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t l = 0; l < L; ++l)
            rope_rows(xo.data + b * xo.sb + h * xo.sh + l * xo.sn, cp + l * width, sp + l * width,
                      dst + ((b * H + h) * L + l) * D, half, hi);
    });
  }
  const char* name() const override { return "CpuKernelRope"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

}  // namespace

mx::array rope(const mx::array& x, const mx::array& cos_t, const mx::array& sin_t) {
  for (const auto* a : {&x, &cos_t, &sin_t}) check_input(*a, "rope");
  if (x.ndim() != 4 || x.shape(3) % 2 || cos_t.ndim() != 2 || cos_t.shape() != sin_t.shape() ||
      cos_t.shape(0) != x.shape(2) || (cos_t.shape(1) != x.shape(3) / 2 && cos_t.shape(1) != x.shape(3)))
    throw std::invalid_argument("rope: x (B, H, L, D) with D even, cos and sin (L, D / 2) or (L, D) expected");
  auto s = cpu_stream("rope");
  auto xin = x.strides().back() == 1 ? x : mx::contiguous(x, false, s);
  return mx::array(x.shape(), mx::float32, std::make_shared<RopeKernel>(s),
                   {xin, mx::contiguous(cos_t, false, s), mx::contiguous(sin_t, false, s)});
}

}  // namespace ck
