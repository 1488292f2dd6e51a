// CAMPPlus's 2-D convolutions (the FCM head: 3x3 over (80 or 40 or 20 frequencies, T frames, 32
// channels)) as im2col + MLX's BLAS, with the column buffer built in blocks of output rows and each
// block's product done at once, over the stream's threads. backend.conv2d_im2col's MLX-ops form
// builds the whole column buffer (T x 80 x 288 floats, ~28 MB at T = 607) with 9 slices and a
// concatenation, which takes 3x the product's time here. Same product as that form's `cols @ w^T`
// (the same BLAS call per block; blocks only where a probe shows the BLAS gives a block's rows the
// whole product's bits), so the same bits (unit test).
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "common.h"
#include "kernels.h"
#include "wide_blas.h"

extern "C" int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));

namespace ck {
namespace {

struct Conv2dShape {
  int64_t H, W, C, O, KH, KW, SH, SW, PH, PW, HO, WO;
  int64_t taps() const { return KH * KW * C; }
};

// The im2col rows of output positions [m0, m1) of one image (row m = ho * WO + wo), tap-major
// (i, j, c) like weight.reshape(O, KH * KW * C); zeros where a tap falls into the padding.
void im2col_rows(const float* x, const Conv2dShape& s, int64_t m0, int64_t m1, float* cols) {
  const int64_t K = s.taps();
  for (int64_t m = m0; m < m1; ++m, cols += K) {
    int64_t ho = m / s.WO, wo = m % s.WO;
    float* dst = cols;
    for (int64_t i = 0; i < s.KH; ++i) {
      int64_t hi = ho * s.SH + i - s.PH, wi0 = wo * s.SW - s.PW;
      if (hi >= 0 && hi < s.H && wi0 >= 0 && wi0 + s.KW <= s.W) {  // the row's taps: one contiguous run
        std::memcpy(dst, x + (hi * s.W + wi0) * s.C, s.KW * s.C * sizeof(float));
        dst += s.KW * s.C;
        continue;
      }
      for (int64_t j = 0; j < s.KW; ++j, dst += s.C) {
        int64_t wi = wo * s.SW + j - s.PW;
        if (hi < 0 || hi >= s.H || wi < 0 || wi >= s.W)
          std::memset(dst, 0, s.C * sizeof(float));
        else
          std::memcpy(dst, x + (hi * s.W + wi) * s.C, s.C * sizeof(float));
      }
    }
  }
}

// Whether products of `block` rows on one BLAS thread give the rows of the whole product (M rows,
// the stream's threads) bit for bit, for (M, K) x (N, K)^T: a probe with pseudo-random rows and
// the weights, kept per shape. A BLAS may choose its kernel by the row count.
bool blocks_keep_bits(const float* w, int64_t M, int64_t block, int64_t N, int64_t K) {
  static std::mutex lock;
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, bool> known;
  std::lock_guard<std::mutex> guard(lock);
  auto key = std::make_tuple(M, block, N, K);
  if (auto it = known.find(key); it != known.end()) return it->second;
  std::vector<float> a(M * K), whole(M * N), part(M * N);
  uint32_t state = 12345;
  for (auto& v : a) v = static_cast<float>((state = state * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
  sgemm(false, kTrans, M, N, K, 1.0f, a.data(), K, w, K, 0.0f, whole.data(), N);
  int previous = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : -1;
  for (int64_t lo = 0; lo < M; lo += block)
    sgemm(false, kTrans, std::min(block, M - lo), N, K, 1.0f, &a[lo * K], K, w, K, 0.0f, &part[lo * N], N);
  if (previous >= 0) MKL_Set_Num_Threads_Local(previous);
  return known[key] = std::memcmp(whole.data(), part.data(), whole.size() * sizeof(float)) == 0;
}

// One image: out (HO * WO, O) = im2col(x) @ w^T, in blocks of output rows over the threads, or as
// one product on the stream's threads where blocks would round differently.
void conv2d_image(const float* x, const float* w, float* out, const Conv2dShape& s) {
  const int64_t M = s.HO * s.WO, K = s.taps(), N = s.O;
  int64_t block = std::min(std::max<int64_t>((1 << 18) / K, 256), M);  // about 1 MB of columns
  int threads = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(stream_threads()), (M + block - 1) / block));
  if (block < M && !blocks_keep_bits(w, M, block, N, K)) block = M, threads = 1;
  int64_t n_blocks = (M + block - 1) / block;
  if (n_blocks == 1) {
    std::vector<float> cols(M * K);
    im2col_rows(x, s, 0, M, cols.data());
    sgemm(false, kTrans, M, N, K, 1.0f, cols.data(), K, w, K, 0.0f, out, N);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int previous = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : -1;
    std::vector<float> cols(block * K);
#pragma omp for schedule(static)
    for (int64_t bi = 0; bi < n_blocks; ++bi) {
      int64_t m0 = bi * block, m1 = std::min(M, m0 + block);
      im2col_rows(x, s, m0, m1, cols.data());
      sgemm(false, kTrans, m1 - m0, N, K, 1.0f, cols.data(), K, w, K, 0.0f, out + m0 * N, N);
    }
    if (previous >= 0) MKL_Set_Num_Threads_Local(previous);
  }
}

class Conv2dKernel : public CpuPrimitive {
 public:
  Conv2dKernel(mx::Stream s, Conv2dShape shape) : CpuPrimitive(s), s_(shape) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &x = inputs[0], &w = inputs[1];
    require_row_contiguous(x, name());
    require_row_contiguous(w, name());
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(inputs, out);
    enc.dispatch([xp = x.data<float>(), wp = w.data<float>(), dst = out.data<float>(), B = x.shape(0), s = s_]() {
      for (int64_t b = 0; b < B; ++b)
        conv2d_image(xp + b * s.H * s.W * s.C, wp, dst + b * s.HO * s.WO * s.O, s);
    });
  }
  const char* name() const override { return "CpuKernelConv2dIm2col"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const Conv2dKernel&>(other).s_;
    return std::memcmp(&o, &s_, sizeof(s_)) == 0;
  }

 private:
  Conv2dShape s_;
};

}  // namespace

mx::array conv2d_im2col(const mx::array& x, const mx::array& weight, int stride_h, int stride_w, int pad_h,
                        int pad_w) {
  for (const auto* a : {&x, &weight}) check_input(*a, "conv2d_im2col");
  if (x.ndim() != 4 || weight.ndim() != 4 || x.shape(3) != weight.shape(3))
    throw std::invalid_argument("conv2d_im2col: x (B, H, W, C_in), weight (C_out, KH, KW, C_in) expected");
  if (stride_h < 1 || stride_w < 1 || pad_h < 0 || pad_w < 0)
    throw std::invalid_argument("conv2d_im2col: strides >= 1, paddings >= 0 expected");
  Conv2dShape s{x.shape(1), x.shape(2), x.shape(3), weight.shape(0), weight.shape(1), weight.shape(2),
                stride_h, stride_w, pad_h, pad_w, 0, 0};
  s.HO = (s.H + 2 * s.PH - s.KH) / s.SH + 1;
  s.WO = (s.W + 2 * s.PW - s.KW) / s.SW + 1;
  if (s.H + 2 * s.PH < s.KH || s.W + 2 * s.PW < s.KW)
    throw std::invalid_argument("conv2d_im2col: input smaller than the kernel");
  auto st = cpu_stream("conv2d_im2col");
  return mx::array({x.shape(0), static_cast<int>(s.HO), static_cast<int>(s.WO), weight.shape(0)}, mx::float32,
                   std::make_shared<Conv2dKernel>(st, s),
                   {mx::contiguous(x, false, st), mx::contiguous(weight, false, st)});
}

}  // namespace ck
