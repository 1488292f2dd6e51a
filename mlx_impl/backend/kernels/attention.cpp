// Attention, softmax(q k^T * scale + bias) v, per head and block of query rows in cache (BLAS
// products, the softmax in between, no T x T array in memory).
#include "attention.h"
#include "common.h"
#include "elementwise.h"
#include "kernels.h"
#include "wide_blas.h"

namespace ck {
namespace {

constexpr int64_t kQueryBlock = 128;  // query rows per block: scores of 128 x S floats stay in L2

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
  wide = wide && wide_blas_loaded() && T > 1;
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


class AttentionKernel : public HeadsAttentionKernel {
 public:
  AttentionKernel(mx::Stream s, float scale, bool wide)
      : HeadsAttentionKernel(s, "attention", [scale, wide](Operand4 q, Operand4 k, Operand4 v, Bias4 bias, float* out,
                                                           int64_t B, int64_t H, int64_t T, int64_t S, int64_t D) {
          attention_heads(wide, q, k, v, bias, out, B, H, T, S, D, scale);
        }) {}
  const char* name() const override { return "CpuKernelAttention"; }
};

}  // namespace

mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                    std::optional<mx::array> bias, bool wide) {
  auto s = cpu_stream("attention");
  auto in = attention_inputs(q, k, v, bias, s, "attention");
  int B = q.shape(0), H = q.shape(1), T = q.shape(2), D = q.shape(3);
  return mx::array({B, T, H, D}, mx::float32,
                   std::make_shared<AttentionKernel>(s, scale, wide), in);
}

}  // namespace ck
