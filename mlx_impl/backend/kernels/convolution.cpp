// Convolutions: torch's conv1d through the wide BLAS, and the depthwise convolution of
// S3TokenizerV2's FSMN memory.
#include <cstring>
#include <optional>

#include "common.h"
#include "kernels.h"
#include "wide_blas.h"

namespace ck {
namespace {

// torch's conv1d (groups 1) channels last through the wide BLAS: x (B, T, C_in), w (C_out, K, C_in)
// -> (B, T_out, C_out), per block of 256 output rows (the block's outputs stay in cache):
// - C_in >= 32: one product per tap, x shifted by k * dilation (rows `stride` apart) times w's tap
//   k, accumulated into the block (beta = 1) as MLX's addmm form does. One product over all K C_in
//   inputs at once (im2col) would be faster still, but OpenBLAS's kernel sums each output in one
//   chain over its inner axis: HiFT's phase was 126.5 dB from float64 that way against 133.5 dB
//   for the per-tap sums (docs/MLX_CPU.md);
// - fewer channels (HiFT's source_downs: 18, K = 30): the block's im2col in a buffer of the thread
//   and one product (an inner axis of 18 leaves the products at a fraction of their speed).
constexpr int64_t kConvRows = 256;
constexpr int64_t kConvTapsMinChannels = 32;

struct ConvShape {
  int64_t T, C_in, C_out, K, stride, padding, dilation, T_out;
};

// xp: the input with `padding` zero rows on both sides
void conv1d_taps_rows(const float* xp, const float* w, const float* bias, float* y, const ConvShape& c,
                      int64_t t0, int64_t rows) {
  float* yb = y + t0 * c.C_out;
  for (int64_t k = 0; k < c.K; ++k)
    sgemm(true, kTrans, rows, c.C_out, c.C_in, 1.0f, xp + (t0 * c.stride + k * c.dilation) * c.C_in,
          c.stride * c.C_in, w + k * c.C_in, c.K * c.C_in, k ? 1.0f : 0.0f, yb, c.C_out);
  add_bias_rows(yb, bias, rows, c.C_out);
}

void conv1d_im2col_rows(const float* x, const float* w, const float* bias, float* y, const ConvShape& c,
                        int64_t t0, int64_t rows, std::vector<float>& cols) {
  int64_t width = c.K * c.C_in;
  cols.resize(static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < c.K; ++k) {
      int64_t t = (t0 + r) * c.stride + k * c.dilation - c.padding;
      float* dst = cols.data() + r * width + k * c.C_in;
      if (t < 0 || t >= c.T)
        std::fill(dst, dst + c.C_in, 0.0f);
      else
        std::memcpy(dst, x + t * c.C_in, c.C_in * sizeof(float));
    }
  sgemm(true, kTrans, rows, c.C_out, width, 1.0f, cols.data(), width, w, width, 0.0f, y + t0 * c.C_out, c.C_out);
  add_bias_rows(y + t0 * c.C_out, bias, rows, c.C_out);
}

void conv1d_batch(const float* x, const float* w, const float* bias, float* y, const ConvShape& c) {
  int64_t blocks = (c.T_out + kConvRows - 1) / kConvRows;
  int threads = static_cast<int>(std::min<int64_t>(wide_threads(true, c.T_out), blocks));
  bool taps = c.C_in >= kConvTapsMinChannels;
  std::vector<float> padded;
  const float* xp = x;
  if (taps && c.padding) {
    padded.assign(static_cast<size_t>((c.T + 2 * c.padding) * c.C_in), 0.0f);
    std::memcpy(padded.data() + c.padding * c.C_in, x, c.T * c.C_in * sizeof(float));
    xp = padded.data();
  }
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> cols;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < blocks; ++i) {
      int64_t t0 = i * kConvRows, rows = std::min(kConvRows, c.T_out - t0);
      if (taps)
        conv1d_taps_rows(xp, w, bias, y, c, t0, rows);
      else
        conv1d_im2col_rows(x, w, bias, y, c, t0, rows, cols);
    }
  }
}

class Conv1dKernel : public CpuPrimitive {
 public:
  Conv1dKernel(mx::Stream s, int64_t stride, int64_t padding, int64_t dilation)
      : CpuPrimitive(s), stride_(stride), padding_(padding), dilation_(dilation) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &w = inputs[1];
    auto [enc, bias] = product_encoder(inputs, out);
    ConvShape c{x.shape(1), x.shape(2), w.shape(0), w.shape(1), stride_, padding_, dilation_, out.shape(1)};
    enc->dispatch([xp = x.data<float>(), wp = w.data<float>(), bias, dst = out.data<float>(), c, B = x.shape(0)]() {
      for (int64_t b = 0; b < B; ++b)
        conv1d_batch(xp + b * c.T * c.C_in, wp, bias, dst + b * c.T_out * c.C_out, c);
    });
  }
  const char* name() const override { return "CpuKernelConv1d"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const Conv1dKernel&>(other);
    return stride_ == o.stride_ && padding_ == o.padding_ && dilation_ == o.dilation_;
  }

 private:
  int64_t stride_, padding_, dilation_;
};


// Depthwise 'valid' convolution, channels last (S3TokenizerV2's FSMN memory, K = 31): y[t, c] =
// x[t, c] w[0, c] + x[t + 1, c] w[1, c] + ..., each product rounded and summed in k order (as the
// ops form, a sum of K shifted products: bit-identical). x (B, T + K - 1, C), w (K, C), row-contiguous.
// In blocks of kDepthwiseChannels channels: a block's taps and the K input rows an output row reads
// stay in L1 (over all C channels, 2 x 155 KB a row for C = 1280, they came from L2).
constexpr int64_t kDepthwiseChannels = 64;

// Output rows [t, t + R) of one channel block of width N (N = 0: n channels): R x N running sums.
template <int64_t R, int64_t N>
inline void depthwise_tile(const float* x, const float* w, float* y, int64_t K, int64_t C, int64_t n)
    __attribute__((always_inline, optimize("fp-contract=off")));
template <int64_t R, int64_t N>
inline void depthwise_tile(const float* x, const float* w, float* y, int64_t K, int64_t C, int64_t n) {
  const int64_t width = N > 0 ? N : n;
  float acc[R][kDepthwiseChannels];
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < width; ++c) acc[r][c] = x[r * C + c] * w[c];
  for (int64_t k = 1; k < K; ++k)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < width; ++c) acc[r][c] = acc[r][c] + x[(r + k) * C + c] * w[k * C + c];
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < width; ++c) y[r * C + c] = acc[r][c];
}

template <int64_t N>
void depthwise_block(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t C, int64_t n)
    __attribute__((optimize("fp-contract=off")));  // the tiles inlined here: no a * b + c as one FMA
template <int64_t N>
void depthwise_block(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t C, int64_t n) {
  constexpr int64_t R = 4;  // rows at once: 4 x 64 sums, 16 AVX-512 registers of independent chains
  int64_t t = 0;
  for (; t + R <= T; t += R) depthwise_tile<R, N>(x + t * C, w, y + t * C, K, C, n);
  for (; t < T; ++t) depthwise_tile<1, N>(x + t * C, w, y + t * C, K, C, n);
}

void depthwise_rows(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t C) {
  for (int64_t c0 = 0; c0 < C; c0 += kDepthwiseChannels) {
    int64_t n = std::min(kDepthwiseChannels, C - c0);
    if (n == kDepthwiseChannels)
      depthwise_block<kDepthwiseChannels>(x + c0, w + c0, y + c0, T, K, C, n);
    else
      depthwise_block<0>(x + c0, w + c0, y + c0, T, K, C, n);
  }
}

class DepthwiseKernel : public CpuPrimitive {
 public:
  explicit DepthwiseKernel(mx::Stream s) : CpuPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &w = inputs[1];
    require_row_contiguous(x, name());
    require_row_contiguous(w, name());
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(inputs, out);
    enc.dispatch([src = x.data<float>(), wp = w.data<float>(), dst = out.data<float>(), B = x.shape(0),
                  Tin = x.shape(1), K = w.shape(0), C = w.shape(1)]() {
      int64_t T = Tin - K + 1;
      for (int64_t b = 0; b < B; ++b)
        parallel_rows(T, K * C / 4, [=](size_t lo, size_t n) {
          depthwise_rows(src + (b * Tin + lo) * C, wp, dst + (b * T + lo) * C, n, K, C);
        });
    });
  }
  const char* name() const override { return "CpuKernelDepthwise"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

}  // namespace

mx::array conv1d(const mx::array& x, const mx::array& weight, std::optional<mx::array> bias, int stride,
                 int padding, int dilation) {
  check_input(x, "conv1d");
  check_input(weight, "conv1d");
  if (x.ndim() != 3 || weight.ndim() != 3 || x.shape(2) != weight.shape(2) ||
      (bias && (bias->ndim() != 1 || bias->shape(0) != weight.shape(0))))
    throw std::invalid_argument("conv1d: x (B, T, C_in), weight (C_out, K, C_in), bias (C_out,) expected");
  if (stride < 1 || dilation < 1 || padding < 0)
    throw std::invalid_argument("conv1d: stride >= 1, dilation >= 1, padding >= 0 expected");
  int t_out = (x.shape(1) + 2 * padding - dilation * (weight.shape(1) - 1) - 1) / stride + 1;
  if (t_out <= 0)
    throw std::invalid_argument("conv1d: input of length " + std::to_string(x.shape(1)) +
                                " too short for kernel " + std::to_string(weight.shape(1)) +
                                ", dilation " + std::to_string(dilation));
  auto s = cpu_stream("conv1d");
  std::vector<mx::array> in = {mx::contiguous(x, false, s), mx::contiguous(weight, false, s)};
  if (bias) {
    check_input(*bias, "conv1d");
    in.push_back(mx::contiguous(*bias, false, s));
  }
  return mx::array({x.shape(0), t_out, weight.shape(0)}, mx::float32,
                   std::make_shared<Conv1dKernel>(s, stride, padding, dilation), in);
}

mx::array depthwise_conv1d(const mx::array& x, const mx::array& w) {
  for (const auto* a : {&x, &w}) check_input(*a, "depthwise_conv1d");
  if (x.ndim() != 3 || w.ndim() != 2 || w.shape(1) != x.shape(2) || x.shape(1) < w.shape(0))
    throw std::invalid_argument("depthwise_conv1d: x (B, T + K - 1, C) and w (K, C) expected");
  auto s = cpu_stream("depthwise_conv1d");
  return mx::array({x.shape(0), x.shape(1) - w.shape(0) + 1, x.shape(2)}, mx::float32,
                   std::make_shared<DepthwiseKernel>(s), {mx::contiguous(x, false, s), mx::contiguous(w, false, s)});
}

}  // namespace ck
