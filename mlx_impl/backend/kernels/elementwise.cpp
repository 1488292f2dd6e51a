// Elementwise and row kernels: exp, sigmoid, SiLU, Mish, exact GELU, SwiGLU, softmax, LayerNorm,
// RMSNorm and Snake over contiguous float32 data, each one pass. The math is that of
// mlx_impl/backend/elementwise.py's arithmetic forms (same polynomials, same order), written as plain
// loops that the compiler vectorises.
#include <thread>

#include "common.h"
#include "elementwise.h"
#include "kernels.h"

namespace ck {
namespace {

// erfc(z), z >= 0: Numerical Recipes' Chebyshev fit (elementwise.py `_erfc_abs`).
inline float erfc_nonneg(float z) {
  float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  return t * exp_full(-z * z + p);
}

inline float gelu_erf(float x) {
  float z = x * -0.7071067811865476f;  // Phi(x) = erfc(-x / sqrt 2) / 2
  float e = erfc_nonneg(std::fabs(z));
  return 0.5f * x * (z >= 0.0f ? e : 2.0f - e);
}

inline float mish(float x) {
  float e = exp_full(std::min(x, 20.0f));
  float n = e * (e + 2.0f);
  return x > 20.0f ? x : x * n / (n + 2.0f);
}

template <Unary op>
void unary_loop(const float* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float x = src[i];
    if constexpr (op == Unary::Exp) dst[i] = exp_full(x);
    if constexpr (op == Unary::Sigmoid) dst[i] = 1.0f / (1.0f + exp_full(-x));
    if constexpr (op == Unary::Silu) dst[i] = x / (1.0f + exp_full(-x));
    if constexpr (op == Unary::Mish) dst[i] = mish(x);
    if constexpr (op == Unary::Gelu) dst[i] = gelu_erf(x);
  }
}

void run_unary(Unary op, const float* src, float* dst, size_t n) {
  switch (op) {
    case Unary::Exp: return unary_loop<Unary::Exp>(src, dst, n);
    case Unary::Sigmoid: return unary_loop<Unary::Sigmoid>(src, dst, n);
    case Unary::Silu: return unary_loop<Unary::Silu>(src, dst, n);
    case Unary::Mish: return unary_loop<Unary::Mish>(src, dst, n);
    case Unary::Gelu: return unary_loop<Unary::Gelu>(src, dst, n);
  }
}

// silu(g) * u of fused gate/up rows (g the first half of each row, u the second): T3's fused MLP,
// whose halves MLX's compiled kernels read as strided views at a fraction of their speed.
void swiglu_rows(const float* x, float* y, size_t rows, size_t h) {
  for (size_t r = 0; r < rows; ++r, x += 2 * h, y += h)
    for (size_t j = 0; j < h; ++j) {
      float g = x[j];
      y[j] = g / (1.0f + exp_full(-g)) * x[h + j];
    }
}

float row_mean(const float* x, size_t n) {
  float s[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) s[l] += x[i + l];
  float total = lane_sum(s);
  for (; i < n; ++i) total += x[i];
  return total / static_cast<float>(n);
}

float row_variance(const float* x, size_t n, float mean) {
  float s[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      float d = x[i + l] - mean;
      s[l] += d * d;
    }
  float total = lane_sum(s);
  for (; i < n; ++i) total += (x[i] - mean) * (x[i] - mean);
  return total / static_cast<float>(n);
}

void layer_norm_rows(const float* x, const float* w, const float* b, float* y, size_t rows,
                     size_t n, float eps) {
  for (size_t r = 0; r < rows; ++r, x += n, y += n) {
    float mean = row_mean(x, n);
    float inv = 1.0f / std::sqrt(row_variance(x, n, mean) + eps);
    for (size_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * inv * w[i] + b[i];
  }
}

// RMSNorm (mx.fast.rms_norm's formula): x / sqrt(mean(x^2) + eps) * w.
void rms_norm_rows(const float* x, const float* w, float* y, size_t rows, size_t n, float eps) {
  for (size_t r = 0; r < rows; ++r, x += n, y += n) {
    float total = 0.0f;  // in order, as MLX's CPU sum: the result is mx.fast.rms_norm's
    for (size_t i = 0; i < n; ++i) total += x[i] * x[i];
    float inv = 1.0f / std::sqrt(total / static_cast<float>(n) + eps);
    for (size_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
  }
}

class UnaryKernel : public CpuPrimitive {
 public:
  UnaryKernel(mx::Stream s, Unary op) : CpuPrimitive(s), op_(op) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& in = inputs[0];
    require_row_contiguous(in, name());
    allocate_like(in, out);
    auto& enc = encoder(inputs, out);
    enc.dispatch([src = in.data<float>(), dst = out.data<float>(), n = in.size(), op = op_]() {
      parallel_rows(n, 1, [=](size_t lo, size_t count) { run_unary(op, src + lo, dst + lo, count); });
    });
  }
  const char* name() const override { return "CpuKernelUnary"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return op_ == static_cast<const UnaryKernel&>(other).op_;
  }

 private:
  Unary op_;
};

// A kernel over rows, fn(src, dst, rows, n) with n the output's last axis (an input row may be
// wider: SwiGLU's holds gate and up, 2n): softmax and SwiGLU.
class RowsKernel : public CpuPrimitive {
 public:
  using RowsFn = void (*)(const float*, float*, size_t, size_t);
  RowsKernel(mx::Stream s, RowsFn fn, const char* name) : CpuPrimitive(s), fn_(fn), name_(name) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& in = inputs[0];
    require_row_contiguous(in, name());
    if (in.shape() == out.shape())
      allocate_like(in, out);
    else
      out.set_data(mx::allocator::malloc(out.nbytes()));
    size_t n = out.shape().back(), n_in = in.shape().back();
    auto& enc = encoder(inputs, out);
    enc.dispatch([src = in.data<float>(), dst = out.data<float>(), rows = out.size() / n, n, n_in, fn = fn_]() {
      parallel_rows(rows, n_in, [=](size_t lo, size_t count) { fn(src + lo * n_in, dst + lo * n, count, n); });
    });
  }
  const char* name() const override { return name_; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return fn_ == static_cast<const RowsKernel&>(other).fn_;
  }

 private:
  RowsFn fn_;
  const char* name_;
};

// LayerNorm (inputs x, weight, bias) or, without a bias, RMSNorm (x, weight) over the last axis.
class LayerNormKernel : public CpuPrimitive {
 public:
  LayerNormKernel(mx::Stream s, float eps) : CpuPrimitive(s), eps_(eps) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& in = inputs[0];
    for (const auto& a : inputs) require_row_contiguous(a, name());
    allocate_like(in, out);
    size_t n = in.shape().back();
    auto& enc = encoder(inputs, out);
    const float* b = inputs.size() == 3 ? inputs[2].data<float>() : nullptr;
    enc.dispatch([src = in.data<float>(), w = inputs[1].data<float>(), b, dst = out.data<float>(),
                  rows = in.size() / n, n, eps = eps_]() {
      parallel_rows(rows, n, [=](size_t lo, size_t count) {
        if (b)
          layer_norm_rows(src + lo * n, w, b, dst + lo * n, count, n, eps);
        else
          rms_norm_rows(src + lo * n, w, dst + lo * n, count, n, eps);
      });
    });
  }
  const char* name() const override { return "CpuKernelLayerNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return eps_ == static_cast<const LayerNormKernel&>(other).eps_;
  }

 private:
  float eps_;
};

// Snake (HiFT): x + 1 / (alpha + 1e-9) * sin(alpha x)^2, alpha per channel (the last axis); sin^2
// by the range reduction and polynomial of elementwise.py `sin_squared` (3-part pi, round half
// to even). Rows are split over the machine's cores: the vocoder runs on one stream.
constexpr float kOneOverPi = 0.31830988618379067f;
constexpr float kPi1 = 3.140625f, kPi2 = 9.67502593994140625e-4f, kPi3 = 1.509957990978376432e-7f;

inline float sin_squared(float y) {
  float k = std::nearbyint(y * kOneOverPi);
  float r = ((y - k * kPi1) - k * kPi2) - k * kPi3;
  float z = r * r;
  float p = (((-2.3847027236263876e-08f * z + 2.752263865641467e-06f) * z + -0.00019840804449596213f) * z + 0.00833333049909834f) * z + -0.16666666606560165f;
  float sn = r + p * z * r;
  return sn * sn;
}

void snake_rows(const float* x, const float* alpha, float* y, size_t rows, size_t c) {
  std::vector<float> inv(c);
  for (size_t j = 0; j < c; ++j) inv[j] = 1.0f / (alpha[j] + 1e-9f);
  for (size_t r = 0; r < rows; ++r, x += c, y += c)
    for (size_t j = 0; j < c; ++j) y[j] = x[j] + inv[j] * sin_squared(x[j] * alpha[j]);
}

class SnakeKernel : public CpuPrimitive {
 public:
  explicit SnakeKernel(mx::Stream s) : CpuPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    for (const auto& a : inputs) require_row_contiguous(a, name());
    const auto &x = inputs[0], &alpha = inputs[1];
    allocate_like(x, out);
    size_t c = alpha.size();
    auto& enc = encoder(inputs, out);
    enc.dispatch([xp = x.data<float>(), ap = alpha.data<float>(), dst = out.data<float>(),
                  rows = x.size() / c, c]() {
      parallel_rows(rows, c, [=](size_t lo, size_t n) { snake_rows(xp + lo * c, ap, dst + lo * c, n, c); });
    });
  }
  const char* name() const override { return "CpuKernelSnake"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

}  // namespace

mx::array unary(const mx::array& x, Unary op, const char* what) {
  check_input(x, what);
  auto s = cpu_stream(what);
  auto in = mx::contiguous(x, false, s);
  return mx::array(in.shape(), mx::float32, std::make_shared<UnaryKernel>(s, op), {in});
}

mx::array softmax_last(const mx::array& x) {
  check_input(x, "softmax");
  if (x.ndim() == 0) throw std::invalid_argument("softmax: at least one axis expected");
  auto s = cpu_stream("softmax");
  auto in = mx::contiguous(x, false, s);
  return mx::array(in.shape(), mx::float32, std::make_shared<RowsKernel>(s, softmax_rows, "CpuKernelSoftmax"), {in});
}

mx::array swiglu_last(const mx::array& x) {
  check_input(x, "swiglu");
  if (x.ndim() == 0 || x.shape().back() % 2)
    throw std::invalid_argument("swiglu: an even last axis (gate, then up) expected");
  auto s = cpu_stream("swiglu");
  auto in = mx::contiguous(x, false, s);
  auto shape = in.shape();
  shape.back() /= 2;
  return mx::array(shape, mx::float32, std::make_shared<RowsKernel>(s, swiglu_rows, "CpuKernelSwiglu"), {in});
}

mx::array layer_norm_last(const mx::array& x, const mx::array& weight, const mx::array& bias,
                          float eps) {
  for (const auto* a : {&x, &weight, &bias}) check_input(*a, "layer_norm");
  int d = x.ndim() ? x.shape().back() : 0;
  if (x.ndim() == 0 || weight.ndim() != 1 || bias.ndim() != 1 || weight.shape(0) != d ||
      bias.shape(0) != d)
    throw std::invalid_argument("layer_norm: weight and bias of shape (last axis,) expected");
  auto s = cpu_stream("layer_norm");
  std::vector<mx::array> in = {mx::contiguous(x, false, s), mx::contiguous(weight, false, s),
                               mx::contiguous(bias, false, s)};
  return mx::array(in[0].shape(), mx::float32, std::make_shared<LayerNormKernel>(s, eps), in);
}

mx::array rms_norm_last(const mx::array& x, const mx::array& weight, float eps) {
  check_input(x, "rms_norm");
  check_input(weight, "rms_norm");
  if (x.ndim() == 0 || weight.ndim() != 1 || weight.shape(0) != x.shape().back())
    throw std::invalid_argument("rms_norm: weight of shape (last axis,) expected");
  auto s = cpu_stream("rms_norm");
  std::vector<mx::array> in = {mx::contiguous(x, false, s), mx::contiguous(weight, false, s)};
  return mx::array(in[0].shape(), mx::float32, std::make_shared<LayerNormKernel>(s, eps), in);
}

mx::array snake(const mx::array& x, const mx::array& alpha) {
  check_input(x, "snake");
  check_input(alpha, "snake");
  if (x.ndim() == 0 || alpha.ndim() != 1 || alpha.shape(0) != x.shape().back())
    throw std::invalid_argument("snake: x (..., C) and alpha (C,) expected");
  auto s = cpu_stream("snake");
  return mx::array(x.shape(), mx::float32, std::make_shared<SnakeKernel>(s),
                   {mx::contiguous(x, false, s), mx::contiguous(alpha, false, s)});
}

}  // namespace ck
