// CPU kernels for MLX's Linux CPU backend: exp, sigmoid, SiLU, Mish, exact GELU, Snake, SwiGLU,
// softmax, LayerNorm and RMSNorm over the last axis, RoPE, each one pass over contiguous float32 data; Linear (one BLAS
// product, then the bias) and attention, softmax(q k^T * scale + bias) v, per head and block of
// query rows in cache (BLAS products, the softmax in between, no T x T array in memory).
//
// Why: MLX 0.32's CPU backend runs these as chains of scalar kernels (one pass per operation,
// mx.compile fuses at most 11 operations deep), 5-20x slower than PyTorch's vectorised ones. The
// math is that of mlx_impl/s3gen/transformer/activation.py's arithmetic forms (same polynomials,
// same order), written as plain loops that the compiler vectorises (-O3 -march=native). Each
// kernel runs on the thread of the stream it is called on, like MLX's own CPU kernels (callers
// get two cores busy by running independent work on two streams), except Snake, which splits its
// rows over the cores unless the stream's threads are set to one (set_stream_blas_threads).
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

// the BLAS MLX is linked with (libmlx.so's dependency, found in its load scope)
extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c,
                            int ldc);
// Intel MKL only: BLAS threads of the calling thread (weak: absent with other BLAS libraries)
extern "C" int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));
extern "C" int MKL_Get_Max_Threads() __attribute__((weak));

namespace mx = mlx::core;
namespace nb = nanobind;
using namespace nb::literals;

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2Hi = 0.693359375f;  // n * kLn2Hi is exact for |n| < 2^8
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpMin = -87.33f, kExpMax = 88.72f;
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23

// e^x for x in [kExpMin, kExpMax]: x = n ln2 + r, a degree-7 polynomial for e^r, 2^n in the
// exponent bits (activation.py `_exp_arith`).
inline float exp_clipped(float xc) {
  float n = (xc * kLog2e + kRoundMagic) - kRoundMagic;
  float r = xc - n * kLn2Hi - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

inline float exp_full(float x) {
  float y = exp_clipped(std::min(std::max(x, kExpMin), kExpMax));
  return x < kExpMin ? 0.0f : y;
}

// erfc(z), z >= 0: Numerical Recipes' Chebyshev fit (activation.py `_erfc_abs`).
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

enum class Unary { Exp, Sigmoid, Silu, Mish, Gelu };

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

// Threads a kernel on this stream's worker may use (0: the machine's cores), set with the BLAS
// threads (set_stream_blas_threads): a stream that shares the cores with another uses one.
thread_local int t_stream_threads = 0;

size_t stream_threads() {
  return t_stream_threads > 0 ? static_cast<size_t>(t_stream_threads)
                              : std::max(1u, std::thread::hardware_concurrency());
}

constexpr int kLanes = 16;  // partial sums / maxima, one per SIMD lane of AVX-512

float row_max(const float* x, size_t n) {
  float m[kLanes];
  std::fill(m, m + kLanes, -INFINITY);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
  float out = -INFINITY;
  for (int l = 0; l < kLanes; ++l) out = m[l] > out ? m[l] : out;
  for (; i < n; ++i) out = x[i] > out ? x[i] : out;
  return out;
}

float lane_sum(const float* s) {
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += s[l];
  return total;
}

// exp(d) for d = x - max <= 0, 0 below kExpMin: the clipped polynomial gives ~1.2e-38 there, and
// as a product with 2^-126 that value is denormal: masked scores (-inf, -1e10) made a 2 x 86
// causal attention 15x slower (denormal arithmetic in the softmax and in p v).
inline float exp_nonpositive(float d) { return d < kExpMin ? 0.0f : exp_clipped(d); }

// e = exp(x - max) into y, returns the sum of e (activation.py `_exp_nonpositive`).
float exp_shifted_sum(const float* x, float* y, size_t n, float max) {
  float s[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      float e = exp_nonpositive(x[i + l] - max);
      y[i + l] = e;
      s[l] += e;
    }
  float total = lane_sum(s);
  for (; i < n; ++i) {
    y[i] = exp_nonpositive(x[i] - max);
    total += y[i];
  }
  return total;
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

void softmax_rows(const float* x, float* y, size_t rows, size_t n) {
  for (size_t r = 0; r < rows; ++r, x += n, y += n) {
    float max = row_max(x, n);
    float sum = exp_shifted_sum(x, y, n, max);
    for (size_t i = 0; i < n; ++i) y[i] = y[i] / sum;
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

void check_input(const mx::array& a, const char* what) {
  if (a.dtype() != mx::float32)
    throw std::invalid_argument(std::string(what) + ": float32 input expected");
}

// Output storage: the input's buffer when MLX may donate it, else a fresh one.
void allocate_like(const mx::array& in, mx::array& out) {
  if (in.is_donatable() && in.flags().row_contiguous && in.itemsize() == out.itemsize())
    out.copy_shared_buffer(in);
  else
    out.set_data(mx::allocator::malloc(out.nbytes()));
}

void require_row_contiguous(const mx::array& a, const char* what) {
  if (!a.flags().row_contiguous)
    throw std::invalid_argument(std::string(what) + ": row-contiguous input expected");
}

// A primitive with one output that runs on the CPU only.
class CpuPrimitive : public mx::UnaryPrimitive {
 public:
  using mx::UnaryPrimitive::UnaryPrimitive;
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("cpu_kernels: CPU only");
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

class UnaryKernel : public CpuPrimitive {
 public:
  UnaryKernel(mx::Stream s, Unary op) : CpuPrimitive(s), op_(op) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& in = inputs[0];
    require_row_contiguous(in, name());
    allocate_like(in, out);
    auto& enc = encoder(inputs, out);
    enc.dispatch([src = in.data<float>(), dst = out.data<float>(), n = in.size(), op = op_]() {
      run_unary(op, src, dst, n);
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
    size_t n = out.shape().back();
    auto& enc = encoder(inputs, out);
    enc.dispatch([src = in.data<float>(), dst = out.data<float>(), rows = out.size() / n, n, fn = fn_]() {
      fn(src, dst, rows, n);
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
      if (b)
        layer_norm_rows(src, w, b, dst, rows, n, eps);
      else
        rms_norm_rows(src, w, dst, rows, n, eps);
    });
  }
  const char* name() const override { return "CpuKernelLayerNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return eps_ == static_cast<const LayerNormKernel&>(other).eps_;
  }

 private:
  float eps_;
};


constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int64_t kQueryBlock = 128;  // query rows per block: scores of 128 x S floats stay in L2

// The "wide" BLAS: a second BLAS for S3Gen's large products (many rows). Intel MKL, which MLX is
// linked with here because it is 2-3x faster than OpenBLAS for T3's two-row products, runs its
// AVX2 kernels on AMD CPUs: 82-87 GFLOP/s a core where OpenBLAS's AVX-512 (SkylakeX) kernels reach
// 145-206 (docs/MLX_CPU.md). OpenBLAS is loaded privately (RTLD_LOCAL) with the core chosen from
// the CPU's features, and always runs one thread: callers split rows over the stream's threads.
// Not loaded where MLX's BLAS is MKL on an Intel CPU (MKL's own fast path; not measured here).
// CHATTERBOX_WIDE_BLAS: a library path, or 0 for MLX's BLAS everywhere (then the same math, slower);
// CHATTERBOX_WIDE_BLAS_CORE: the OpenBLAS core (machine images may set OPENBLAS_CORETYPE=Haswell
// for other programs: it is not inherited).
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                         float, float*, int);

struct WideBlas {
  SgemmFn sgemm = nullptr;
  std::string about;  // the library and its core, or why it is not used
};

const char* openblas_core_for_this_cpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;  // OpenBLAS's own choice
}

bool intel_cpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_is("intel");
#else
  return false;
#endif
}

// setenv for the library's initialisation only (OpenBLAS reads its core and threads when loaded)
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

WideBlas load_wide_blas() {
  WideBlas out;
  const char* setting = std::getenv("CHATTERBOX_WIDE_BLAS");
  std::string path = setting && *setting ? setting : "libopenblas.so.0";
  if (path == "0") {
    out.about = "off (CHATTERBOX_WIDE_BLAS=0)";
    return out;
  }
  if (!(setting && *setting) && MKL_Get_Max_Threads && intel_cpu()) {
    out.about = "not used: MLX's BLAS is Intel MKL on an Intel CPU (MKL's own AVX-512 kernels there)";
    return out;
  }
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  bool already_loaded = lib != nullptr;
  const char* core_setting = std::getenv("CHATTERBOX_WIDE_BLAS_CORE");  // else OPENBLAS_CORETYPE is overridden
  const char* core = core_setting && *core_setting ? core_setting : openblas_core_for_this_cpu();
  if (!lib) {
    ScopedEnv core_env("OPENBLAS_CORETYPE", core), threads_env("OPENBLAS_NUM_THREADS", "1");
    lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  }
  if (!lib) {
    out.about = "not loaded (" + path + ": " + dlerror() + ")";
    return out;
  }
  auto sgemm = reinterpret_cast<SgemmFn>(dlsym(lib, "cblas_sgemm"));
  auto set_threads = reinterpret_cast<void (*)(int)>(dlsym(lib, "openblas_set_num_threads"));
  auto corename = reinterpret_cast<const char* (*)()>(dlsym(lib, "openblas_get_corename"));
  if (!sgemm || !set_threads) {
    out.about = "not used (" + path + " is not OpenBLAS: no cblas_sgemm / openblas_set_num_threads)";
    return out;
  }
  set_threads(1);
  out.sgemm = sgemm;
  out.about = path + ", core " + (corename ? corename() : "?") +
              (already_loaded ? " (already loaded: its core is the process's)" : "");
  return out;
}

const WideBlas& wide_blas() {
  static const WideBlas blas = load_wide_blas();
  return blas;
}

// C = alpha A op(B) + beta C, row-major, A not transposed: through the wide BLAS when `wide` and
// it is loaded (one thread), else through MLX's BLAS (its threads: the stream's setting).
void sgemm(bool wide, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const WideBlas& blas = wide_blas();
  if (wide && blas.sgemm)
    blas.sgemm(kRowMajor, kNoTrans, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    cblas_sgemm(kRowMajor, kNoTrans, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Threads for a wide product of `rows` rows: the stream's, at least 64 rows each.
int wide_threads(bool wide, int64_t rows) {
  if (!wide || !wide_blas().sgemm) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(stream_threads(), rows / 64)));
}

// y (rows, n) += bias (n) on every row (nothing without a bias)
void add_bias_rows(float* y, const float* bias, int64_t rows, int64_t n) {
  if (bias)
    for (int64_t r = 0; r < rows; ++r, y += n)
      for (int64_t j = 0; j < n; ++j) y[j] += bias[j];
}

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

// A (B, H, N, D) operand: base pointer and element strides (the D axis has stride 1).
struct Operand4 {
  const float* data;
  int64_t sb, sh, sn;
};

Operand4 operand(const mx::array& a) {
  const auto& st = a.strides();
  return {a.data<float>(), st[0], st[1], st[2]};
}

// Additive bias broadcast to (B, H, T, S): strides of broadcast axes are 0.
struct Bias4 {
  const float* data = nullptr;
  int64_t sb = 0, sh = 0, st = 0;
};

// One head's attention for query rows [t0, t0 + rows): scores in `scores` (rows x S), the
// softmax's exp and sums, then the product with v into out (rows of H * D floats).
void attention_block(bool wide, const float* qb, int64_t q_sn, const float* kb, int64_t k_sn, const float* vb,
                     int64_t v_sn, const float* bias_rows, int64_t bias_st, float* ob, int64_t out_stride,
                     int64_t rows, int64_t S, int64_t D, float scale, float* scores, float* inv_sums) {
  sgemm(wide, kTrans, rows, S, D, scale, qb, q_sn, kb, k_sn, 0.0f, scores, S);
  if (bias_rows)
    for (int64_t r = 0; r < rows; ++r) {
      const float* br = bias_rows + r * bias_st;
      float* sr = scores + r * S;
      for (int64_t j = 0; j < S; ++j) sr[j] += br[j];
    }
  // softmax's exp and sums; the division by the sum is applied to the D outputs of each row after
  // the product with v (a pass over rows x D instead of rows x S)
  for (int64_t r = 0; r < rows; ++r) {
    float* sr = scores + r * S;
    inv_sums[r] = 1.0f / exp_shifted_sum(sr, sr, S, row_max(sr, S));
  }
  sgemm(wide, kNoTrans, rows, D, S, 1.0f, scores, S, vb, v_sn, 0.0f, ob, out_stride);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < D; ++j) ob[r * out_stride + j] *= inv_sums[r];
}

// Heads (and query blocks) in order. One-token steps (T == 1, decoding) split the heads over the
// stream's threads: there the work is reading the KV cache, memory-bound, and one core reads at
// about half the machine's bandwidth (inside the parallel region the BLAS runs one thread). So do
// products through the wide BLAS, which runs one thread.
void attention_heads(bool wide, Operand4 q, Operand4 k, Operand4 v, Bias4 bias, float* out, int64_t B,
                     int64_t H, int64_t T, int64_t S, int64_t D, float scale) {
  int64_t block = std::min(T, kQueryBlock);
  wide = wide && wide_blas().sgemm && T > 1;
  int threads = (T == 1 || wide) && B * H > 1 ? static_cast<int>(stream_threads()) : 1;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scores(static_cast<size_t>(block * S));
    std::vector<float> inv_sums(static_cast<size_t>(block));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      int64_t b = bh / H, h = bh % H;
      for (int64_t t0 = 0; t0 < T; t0 += kQueryBlock) {
        int64_t rows = std::min(kQueryBlock, T - t0);
        const float* br = bias.data ? bias.data + b * bias.sb + h * bias.sh + t0 * bias.st : nullptr;
        // out is (B, T, H, D): row t of head h at ((b T + t) H + h) D
        attention_block(wide, q.data + b * q.sb + h * q.sh + t0 * q.sn, q.sn, k.data + b * k.sb + h * k.sh, k.sn,
                        v.data + b * v.sb + h * v.sh, v.sn, br, bias.st, out + ((b * T + t0) * H + h) * D,
                        H * D, rows, S, D, scale, scores.data(), inv_sums.data());
      }
    }
  }
}

int64_t broadcast_stride(const mx::array& a, int axis) {
  return a.shape(axis) == 1 ? 0 : a.strides()[axis];
}

class AttentionKernel : public CpuPrimitive {
 public:
  AttentionKernel(mx::Stream s, float scale, bool wide) : CpuPrimitive(s), scale_(scale), wide_(wide) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &q = inputs[0], &k = inputs[1], &v = inputs[2];
    for (int i = 0; i < 3; ++i)
      if (inputs[i].strides().back() != 1 && inputs[i].shape().back() != 1)
        throw std::invalid_argument("attention: q, k, v with a unit-stride last axis expected");
    out.set_data(mx::allocator::malloc(out.nbytes()));
    Bias4 bias;
    if (inputs.size() == 4) {
      const auto& bb = inputs[3];
      bias = {bb.data<float>(), broadcast_stride(bb, 0), broadcast_stride(bb, 1), broadcast_stride(bb, 2)};
    }
    auto& enc = encoder(inputs, out);
    enc.dispatch([qo = operand(q), ko = operand(k), vo = operand(v), bias, dst = out.data<float>(),
                  B = q.shape(0), H = q.shape(1), T = q.shape(2), S = k.shape(2), D = q.shape(3),
                  scale = scale_, wide = wide_]() {
      attention_heads(wide, qo, ko, vo, bias, dst, B, H, T, S, D, scale);
    });
  }
  const char* name() const override { return "CpuKernelAttention"; }

 private:
  float scale_;
  bool wide_;
};

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

// RoPE's rotation, non-traditional (dims i and i + D/2 rotate together) over all D dims:
// y_i = x_i cos_i - x_{i+D/2} sin_i, y_{i+D/2} = x_i sin_i + x_{i+D/2} cos_i, each product rounded
// (as MLX's ops). x (B, H, L, D) with a unit-stride last axis; cos, sin (L, D/2): the caller's
// tables (mx.cos / mx.sin of MLX's angles, so that the result is mx.fast.rope's on the CPU).
void rope_rows(const float* src, const float* cos_t, const float* sin_t, float* y, int64_t half)
    __attribute__((optimize("fp-contract=off")));
void rope_rows(const float* src, const float* cos_t, const float* sin_t, float* y, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    float x1 = src[i], x2 = src[half + i];
    y[i] = x1 * cos_t[i] - x2 * sin_t[i];
    y[half + i] = x1 * sin_t[i] + x2 * cos_t[i];
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
                  B = x.shape(0), H = x.shape(1), L = x.shape(2), D = x.shape(3)]() {
      int64_t half = D / 2;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t l = 0; l < L; ++l)
            rope_rows(xo.data + b * xo.sb + h * xo.sh + l * xo.sn, cp + l * half, sp + l * half,
                      dst + ((b * H + h) * L + l) * D, half);
    });
  }
  const char* name() const override { return "CpuKernelRope"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

// Depthwise 'valid' convolution, channels last (S3TokenizerV2's FSMN memory, K = 31): y[t, c] =
// x[t, c] w[0, c] + x[t + 1, c] w[1, c] + ..., each product rounded and summed in k order (as the
// ops form, a sum of K shifted products: bit-identical). x (B, T + K - 1, C), w (K, C), row-contiguous.
void depthwise_rows(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t C)
    __attribute__((optimize("fp-contract=off")));
void depthwise_rows(const float* x, const float* w, float* y, int64_t T, int64_t K, int64_t C) {
  for (int64_t t = 0; t < T; ++t, y += C) {
    const float* xt = x + t * C;
    for (int64_t c = 0; c < C; ++c) y[c] = xt[c] * w[c];
    for (int64_t k = 1; k < K; ++k) {
      const float* xk = xt + k * C;
      const float* wk = w + k * C;
      for (int64_t c = 0; c < C; ++c) y[c] = y[c] + xk[c] * wk[c];
    }
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
      for (int64_t b = 0; b < B; ++b) depthwise_rows(src + b * Tin * C, wp, dst + b * T * C, T, K, C);
    });
  }
  const char* name() const override { return "CpuKernelDepthwise"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

// Snake (HiFT): x + 1 / (alpha + 1e-9) * sin(alpha x)^2, alpha per channel (the last axis); sin^2
// by the range reduction and polynomial of mlx_impl/ops.py `sin_squared` (3-part pi, round half
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

// fn(first_row, n_rows) over `rows`, split over the stream's threads when large.
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

mx::Stream cpu_stream(const char* what) {
  auto s = mx::to_stream({});
  if (s.device != mx::Device::cpu)
    throw std::invalid_argument(std::string(what) + ": the default stream is not a CPU stream");
  return s;
}

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


mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                    std::optional<mx::array> bias, bool wide) {
  for (const auto* a : {&q, &k, &v}) check_input(*a, "attention");
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4 || k.shape() != v.shape() ||
      q.shape(0) != k.shape(0) || q.shape(1) != k.shape(1) || q.shape(3) != k.shape(3))
    throw std::invalid_argument("attention: q (B, H, T, D), k and v (B, H, S, D) expected");
  auto s = cpu_stream("attention");
  int B = q.shape(0), H = q.shape(1), T = q.shape(2), S = k.shape(2), D = q.shape(3);
  std::vector<mx::array> in = {q, k, v};
  if (bias) {
    check_input(*bias, "attention");
    const auto& bs = bias->shape();
    bool ok = bias->ndim() == 4 && bs[3] == S;
    for (int i = 0; i < 3 && ok; ++i) ok = bs[i] == 1 || bs[i] == q.shape(i);
    if (!ok) throw std::invalid_argument("attention: bias of shape (B|1, H|1, T|1, S) expected");
    in.push_back(mx::contiguous(*bias, false, s));  // broadcast axes are read with stride 0
  }
  return mx::array({B, T, H, D}, mx::float32,
                   std::make_shared<AttentionKernel>(s, scale, wide), in);
}

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

mx::array rms_norm_last(const mx::array& x, const mx::array& weight, float eps) {
  check_input(x, "rms_norm");
  check_input(weight, "rms_norm");
  if (x.ndim() == 0 || weight.ndim() != 1 || weight.shape(0) != x.shape().back())
    throw std::invalid_argument("rms_norm: weight of shape (last axis,) expected");
  auto s = cpu_stream("rms_norm");
  std::vector<mx::array> in = {mx::contiguous(x, false, s), mx::contiguous(weight, false, s)};
  return mx::array(in[0].shape(), mx::float32, std::make_shared<LayerNormKernel>(s, eps), in);
}

mx::array rope(const mx::array& x, const mx::array& cos_t, const mx::array& sin_t) {
  for (const auto* a : {&x, &cos_t, &sin_t}) check_input(*a, "rope");
  if (x.ndim() != 4 || x.shape(3) % 2 || cos_t.ndim() != 2 || cos_t.shape() != sin_t.shape() ||
      cos_t.shape(0) != x.shape(2) || cos_t.shape(1) != x.shape(3) / 2)
    throw std::invalid_argument("rope: x (B, H, L, D) with D even, cos and sin (L, D / 2) expected");
  auto s = cpu_stream("rope");
  auto xin = x.strides().back() == 1 ? x : mx::contiguous(x, false, s);
  return mx::array(x.shape(), mx::float32, std::make_shared<RopeKernel>(s),
                   {xin, mx::contiguous(cos_t, false, s), mx::contiguous(sin_t, false, s)});
}

mx::array depthwise_conv1d(const mx::array& x, const mx::array& w) {
  for (const auto* a : {&x, &w}) check_input(*a, "depthwise_conv1d");
  if (x.ndim() != 3 || w.ndim() != 2 || w.shape(1) != x.shape(2) || x.shape(1) < w.shape(0))
    throw std::invalid_argument("depthwise_conv1d: x (B, T + K - 1, C) and w (K, C) expected");
  auto s = cpu_stream("depthwise_conv1d");
  return mx::array({x.shape(0), x.shape(1) - w.shape(0) + 1, x.shape(2)}, mx::float32,
                   std::make_shared<DepthwiseKernel>(s), {mx::contiguous(x, false, s), mx::contiguous(w, false, s)});
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

// MLX runs each CPU stream's work on its own thread; with two streams busy at once, BLAS calls
// that each start a team of threads oversubscribe the cores (measured: 2-thread MKL products on
// two streams at once are slower than 1-thread ones). The setting is MKL's thread-local one, set
// on the stream's thread in queue order.
bool set_stream_blas_threads(int threads) {
  if (threads < 0) throw std::invalid_argument("set_stream_blas_threads: threads >= 0 expected");
  auto s = cpu_stream("set_stream_blas_threads");
  bool mkl = MKL_Set_Num_Threads_Local != nullptr;
  mx::cpu::get_command_encoder(s).dispatch([threads, mkl]() {
    t_stream_threads = threads;
    if (mkl) MKL_Set_Num_Threads_Local(threads);
  });
  return mkl;
}

// The BLAS threads a product queued here would use, read on the stream's thread in queue order
// (-1 without MKL): what one_blas_thread's tests check.
class BlasThreadsProbe : public CpuPrimitive {
 public:
  explicit BlasThreadsProbe(mx::Stream s) : CpuPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(inputs, out);
    enc.dispatch([dst = out.data<int32_t>()]() { *dst = MKL_Get_Max_Threads ? MKL_Get_Max_Threads() : -1; });
  }
  const char* name() const override { return "CpuKernelBlasThreadsProbe"; }
};

mx::array stream_blas_threads() {
  auto s = cpu_stream("stream_blas_threads");
  return mx::array({}, mx::int32, std::make_shared<BlasThreadsProbe>(s), {});
}

}  // namespace

NB_MODULE(_kernels, m) {
  m.doc() = "float32 CPU kernels for MLX (exp-family activations, softmax, LayerNorm)";
  m.def("exp", [](const mx::array& x) { return unary(x, Unary::Exp, "exp"); }, "x"_a);
  m.def("sigmoid", [](const mx::array& x) { return unary(x, Unary::Sigmoid, "sigmoid"); }, "x"_a);
  m.def("silu", [](const mx::array& x) { return unary(x, Unary::Silu, "silu"); }, "x"_a);
  m.def("mish", [](const mx::array& x) { return unary(x, Unary::Mish, "mish"); }, "x"_a);
  m.def("gelu", [](const mx::array& x) { return unary(x, Unary::Gelu, "gelu"); }, "x"_a);
  m.def("depthwise_conv1d", &depthwise_conv1d, "x"_a, "w"_a,
        "depthwise 'valid' convolution, channels last: x (B, T + K - 1, C), w (K, C) -> (B, T, C)");
  m.def("swiglu", &swiglu_last, "x"_a,
        "silu(gate) * up for x = [gate, up] along the last axis (2H) -> (..., H)");
  m.def("softmax", &softmax_last, "x"_a, "softmax over the last axis");
  m.def("layer_norm", &layer_norm_last, "x"_a, "weight"_a, "bias"_a, "eps"_a,
        "LayerNorm over the last axis");
  m.def("rms_norm", &rms_norm_last, "x"_a, "weight"_a, "eps"_a,
        "RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight");
  m.def("rope", &rope, "x"_a, "cos"_a, "sin"_a,
        "RoPE's rotation, non-traditional, over all D dims: x (B, H, L, D) with a unit-stride last "
        "axis, cos and sin (L, D / 2) -> (B, H, L, D)");
  m.def("attention", &attention, "q"_a, "k"_a, "v"_a, "scale"_a, "bias"_a = nb::none(), "wide"_a = false,
        "softmax(q k^T * scale + bias) v: q (B, H, T, D), k, v (B, H, S, D) with a unit-stride "
        "last axis, bias (B|1, H|1, T|1, S) or None -> (B, T, H, D); wide: products through the "
        "wide BLAS (T > 1), heads over the stream's threads");
  m.def("snake", &snake, "x"_a, "alpha"_a,
        "x + 1 / (alpha + 1e-9) * sin(alpha x)^2, alpha (C,) over the last axis (HiFT's Snake)");
  m.def("linear", &linear, "x"_a, "weight"_a, "bias"_a = nb::none(), "wide"_a = false,
        "x @ weight^T + bias (nn.Linear): x (..., K), weight (N, K), bias (N,) or None; wide: the "
        "product through the wide BLAS, rows over the stream's threads");
  m.def("conv1d", &conv1d, "x"_a, "weight"_a, "bias"_a = nb::none(), "stride"_a = 1, "padding"_a = 0,
        "dilation"_a = 1,
        "torch's conv1d (groups 1), channels last, through the wide BLAS: x (B, T, C_in), weight "
        "(C_out, K, C_in), bias (C_out,) or None -> (B, T_out, C_out)");
  m.def("wide_blas", []() { return wide_blas().about; },
        "the wide BLAS (S3Gen's large products): library and core, or why MLX's BLAS is used");
  m.def("wide_blas_loaded", []() { return wide_blas().sgemm != nullptr; });
  m.def("stream_blas_threads", &stream_blas_threads,
        "a scalar int32 array: the BLAS threads of the default stream's worker when it is evaluated "
        "(Intel MKL; -1 with other BLAS libraries)");
  m.def("set_stream_blas_threads", &set_stream_blas_threads, "threads"_a,
        "BLAS threads of the default stream's worker thread from now on (0: the process-wide "
        "setting), and the threads these kernels use there (Snake's rows); returns False where the "
        "BLAS is not Intel MKL (its threads are then left as they are)");
}
