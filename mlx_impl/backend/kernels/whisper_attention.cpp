// The S3 tokenizer's (Whisper-style) attention with the bits of its MLX-ops form (backend/sdpa.py
// `attention_split_scale`) in one kernel instead of a chain of MLX ops (one-thread elementwise
// passes, one multi-threaded BLAS call per head for products of 152 x 64 x 152): per head q * s and
// k * s (each scaled, as Whisper does), the scores through the same BLAS call as MLX's matmul of
// those (row-major, contiguous), + bias, the softmax kernel's rows, the product with v through the
// same BLAS call; heads over the stream's threads (one BLAS thread each) only where a probe shows
// one-thread products give the stream's products bit for bit.
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "attention.h"
#include "common.h"
#include "elementwise.h"
#include "kernels.h"
#include "wide_blas.h"

extern "C" int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));

namespace ck {
namespace {

// Whether (M, K) x (K, N) products (both row-major, not transposed) on one BLAS thread give the
// stream's products bit for bit: a probe with pseudo-random operands, kept per shape.
bool one_thread_keeps_bits(int64_t M, int64_t N, int64_t K) {
  static std::mutex lock;
  static std::map<std::tuple<int64_t, int64_t, int64_t>, bool> known;
  std::lock_guard<std::mutex> guard(lock);
  auto key = std::make_tuple(M, N, K);
  if (auto it = known.find(key); it != known.end()) return it->second;
  std::vector<float> a(M * K), b(K * N), whole(M * N), one(M * N);
  uint32_t state = 2024;
  for (auto* v : {&a, &b})
    for (auto& e : *v) e = static_cast<float>((state = state * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
  sgemm(false, kNoTrans, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, whole.data(), N);
  int previous = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : -1;
  sgemm(false, kNoTrans, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, one.data(), N);
  if (previous >= 0) MKL_Set_Num_Threads_Local(previous);
  return known[key] = std::memcmp(whole.data(), one.data(), whole.size() * sizeof(float)) == 0;
}

struct HeadBuffers {
  std::vector<float> q, k, v, scores, out;
  HeadBuffers(int64_t T, int64_t S, int64_t D) : q(T * D), k(D * S), v(S * D), scores(T * S), out(T * D) {}
};

// One head: out rows (T, D) at `dst` with row stride `dst_stride`.
void split_scale_head(const float* qh, int64_t q_sn, const float* kh, int64_t k_sn, const float* vh, int64_t v_sn,
                      const float* bias, int64_t bias_st, float* dst, int64_t dst_stride, int64_t T, int64_t S,
                      int64_t D, float scale, HeadBuffers& buf) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) buf.q[t * D + d] = qh[t * q_sn + d] * scale;
  for (int64_t s = 0; s < S; ++s)  // k^T: (D, S)
    for (int64_t d = 0; d < D; ++d) buf.k[d * S + s] = kh[s * k_sn + d] * scale;
  for (int64_t s = 0; s < S; ++s) std::memcpy(&buf.v[s * D], vh + s * v_sn, D * sizeof(float));
  sgemm(false, kNoTrans, T, S, D, 1.0f, buf.q.data(), D, buf.k.data(), S, 0.0f, buf.scores.data(), S);
  if (bias)
    for (int64_t t = 0; t < T; ++t) {
      const float* br = bias + t * bias_st;
      float* sr = &buf.scores[t * S];
      for (int64_t s = 0; s < S; ++s) sr[s] = sr[s] + br[s];
    }
  softmax_rows(buf.scores.data(), buf.scores.data(), T, S);
  sgemm(false, kNoTrans, T, D, S, 1.0f, buf.scores.data(), S, buf.v.data(), D, 0.0f, buf.out.data(), D);
  for (int64_t t = 0; t < T; ++t) std::memcpy(dst + t * dst_stride, &buf.out[t * D], D * sizeof(float));
}

void split_scale_heads(Operand4 q, Operand4 k, Operand4 v, Bias4 bias, float* out, int64_t B, int64_t H,
                       int64_t T, int64_t S, int64_t D, float scale) {
  int threads = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(stream_threads()), B * H));
  if (threads > 1 && !(one_thread_keeps_bits(T, S, D) && one_thread_keeps_bits(T, D, S))) threads = 1;
#pragma omp parallel num_threads(threads)
  {
    int previous = threads > 1 && MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : -1;
    HeadBuffers buf(T, S, D);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      int64_t b = bh / H, h = bh % H;
      const float* br = bias.data ? bias.data + b * bias.sb + h * bias.sh : nullptr;
      // out is (B, T, H, D): row t of head h at ((b T + t) H + h) D
      split_scale_head(q.data + b * q.sb + h * q.sh, q.sn, k.data + b * k.sb + h * k.sh, k.sn,
                       v.data + b * v.sb + h * v.sh, v.sn, br, bias.st, out + (b * T * H + h) * D, H * D, T, S,
                       D, scale, buf);
    }
    if (previous >= 0) MKL_Set_Num_Threads_Local(previous);
  }
}

class SplitScaleAttentionKernel : public HeadsAttentionKernel {
 public:
  SplitScaleAttentionKernel(mx::Stream s, float scale)
      : HeadsAttentionKernel(s, "attention_split_scale",
                             [scale](Operand4 q, Operand4 k, Operand4 v, Bias4 bias, float* out, int64_t B, int64_t H,
                                     int64_t T, int64_t S, int64_t D) {
                               split_scale_heads(q, k, v, bias, out, B, H, T, S, D, scale);
                             }),
        scale_(scale) {}
  const char* name() const override { return "CpuKernelAttentionSplitScale"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return scale_ == static_cast<const SplitScaleAttentionKernel&>(other).scale_;
  }

 private:
  float scale_;
};

}  // namespace

mx::array attention_split_scale(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                                std::optional<mx::array> bias) {
  auto s = cpu_stream("attention_split_scale");
  auto in = attention_inputs(q, k, v, bias, s, "attention_split_scale");
  for (int i = 0; i < 3; ++i)  // strided views of projections read in place; others copied
    if (in[i].strides().back() != 1) in[i] = mx::contiguous(in[i], false, s);
  return mx::array({q.shape(0), q.shape(2), q.shape(1), q.shape(3)}, mx::float32,
                   std::make_shared<SplitScaleAttentionKernel>(s, scale), in);
}

}  // namespace ck
