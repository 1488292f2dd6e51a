// One LSTM layer's recurrence in one primitive (the VoiceEncoder's 3 layers x 160 steps): MLX's
// nn.LSTM step is ~13 operations (3 tasks compiled), each a task of MLX's scheduler. The step here
// is what backend.LSTM's compiled step computes, in the same order, bit for bit:
//   z = x_t W_ih^T + b (given) then z += h W_hh^T (MLX's addmm: the copy, then BLAS sgemm, beta 1);
//   i, f, o = MLX's sigmoid; g = tanh (MLX's CPU tanh is libm's tanhf);
//   c = f c + i g (two roundings, no FMA: fp-contract off for this file); h = o tanh(c).
// MLX's sigmoid: y = 1 / (1 + exp(|x|)), x < 0 ? y : 1 - y, with MLX's exp polynomial
// (mlx/backend/cpu/simd/math.h: 2^(x log2 e) as 2^round * a degree-6 polynomial with exact FMAs).
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "common.h"
#include "kernels.h"
#include "mlx_bits.h"
#include "wide_blas.h"

// Intel MKL only: BLAS threads of the calling thread (weak: absent with other BLAS libraries)
extern "C" int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));

namespace ck {
namespace {

// The gates of B rows of z (B, 4H: i, f, g, o) into the cell and hidden state (B, H); `first`: no
// previous cell (c = i g). The sigmoids first, in place (a loop that vectorises), then the tanhs.
void lstm_gates(float* z, float* cell, float* hidden, int64_t B, int64_t H, bool first) {
  for (int64_t b = 0; b < B; ++b, z += 4 * H, cell += H, hidden += H) {
    for (int64_t k = 0; k < 2 * H; ++k) z[k] = mlx_sigmoid(z[k]);
    for (int64_t k = 3 * H; k < 4 * H; ++k) z[k] = mlx_sigmoid(z[k]);
    for (int64_t j = 0; j < H; ++j) {
      float ig = z[j] * std::tanh(z[2 * H + j]);
      float c = first ? ig : z[H + j] * cell[j] + ig;
      cell[j] = c;
      hidden[j] = z[3 * H + j] * std::tanh(c);
    }
  }
}

// Rows of xw (rows, L, 4H) through all L steps: hidden and cell states (rows, L, H) each.
void lstm_rows(const float* xw, const float* w_hh, float* all_hidden, float* all_cell, int64_t rows, int64_t L,
               int64_t H) {
  std::vector<float> z(rows * 4 * H), hidden(rows * H), cell(rows * H);
  for (int64_t t = 0; t < L; ++t) {
    for (int64_t b = 0; b < rows; ++b) std::memcpy(&z[b * 4 * H], xw + (b * L + t) * 4 * H, 4 * H * sizeof(float));
    if (t > 0) sgemm(false, kTrans, rows, 4 * H, H, 1.0f, hidden.data(), H, w_hh, H, 1.0f, z.data(), 4 * H);
    lstm_gates(z.data(), cell.data(), hidden.data(), rows, H, t == 0);
    for (int64_t b = 0; b < rows; ++b) {
      std::memcpy(all_hidden + (b * L + t) * H, &hidden[b * H], H * sizeof(float));
      std::memcpy(all_cell + (b * L + t) * H, &cell[b * H], H * sizeof(float));
    }
  }
}

// Whether a product of `per` rows on one BLAS thread gives the rows of the whole product of B rows
// (MLX's addmm, the stream's threads) bit for bit. A BLAS may pick its kernel by the row count (MKL
// on an AVX-512 Xeon: 1 row, 2-10 rows and 11 or more rows are three paths, each rounding
// differently), so the rows are split only where a probe product (pseudo-random rows, w_hh) shows
// the same bits; the answer is kept per (B, per, H).
bool split_keeps_bits(const float* w_hh, int64_t B, int64_t per, int64_t H) {
  static std::mutex lock;
  static std::map<std::tuple<int64_t, int64_t, int64_t>, bool> known;
  std::lock_guard<std::mutex> guard(lock);
  auto key = std::make_tuple(B, per, H);
  if (auto it = known.find(key); it != known.end()) return it->second;
  std::vector<float> h(B * H), whole(B * 4 * H), part(B * 4 * H);
  uint32_t state = 12345;
  for (auto& v : h) v = static_cast<float>((state = state * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
  for (size_t k = 0; k < whole.size(); ++k) whole[k] = part[k] = h[k % h.size()] * 0.25f;
  sgemm(false, kTrans, B, 4 * H, H, 1.0f, h.data(), H, w_hh, H, 1.0f, whole.data(), 4 * H);
  int previous = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : -1;
  for (int64_t lo = 0; lo < B; lo += per)
    sgemm(false, kTrans, std::min(per, B - lo), 4 * H, H, 1.0f, &h[lo * H], H, w_hh, H, 1.0f, &part[lo * 4 * H], 4 * H);
  if (previous >= 0) MKL_Set_Num_Threads_Local(previous);
  return known[key] = std::memcmp(whole.data(), part.data(), whole.size() * sizeof(float)) == 0;
}

// xw (B, L, 4H), w_hh (4H, H) row-contiguous -> out (2, B, L, H): all hidden states, all cell states.
// The rows (the VoiceEncoder's partials) are independent sequences: with more than one thread on
// this stream, each thread runs a block of rows through every step with a one-thread BLAS (no
// synchronisation between steps), where that gives the bits of the whole (split_keeps_bits).
void lstm_layer(const float* xw, const float* w_hh, float* out, int64_t B, int64_t L, int64_t H) {
  int threads = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(stream_threads()), B));
  int64_t per = (B + threads - 1) / threads;
  if (threads > 1 && L > 1 && !split_keeps_bits(w_hh, B, per, H)) threads = 1, per = B;
  float* all_cell = out + B * L * H;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int i = 0; i < threads; ++i) {
    int64_t lo = i * per, rows = std::min(per, B - lo);
    if (rows <= 0) continue;
    int previous = (threads > 1 && MKL_Set_Num_Threads_Local) ? MKL_Set_Num_Threads_Local(1) : -1;
    lstm_rows(xw + lo * L * 4 * H, w_hh, out + lo * L * H, all_cell + lo * L * H, rows, L, H);
    if (previous >= 0) MKL_Set_Num_Threads_Local(previous);
  }
}

class LstmKernel : public CpuPrimitive {
 public:
  explicit LstmKernel(mx::Stream s) : CpuPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &xw = inputs[0], &w = inputs[1];
    require_row_contiguous(xw, name());
    require_row_contiguous(w, name());
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(inputs, out);
    enc.dispatch([src = xw.data<float>(), wp = w.data<float>(), dst = out.data<float>(), B = xw.shape(0),
                  L = xw.shape(1), H = w.shape(1)]() { lstm_layer(src, wp, dst, B, L, H); });
  }
  const char* name() const override { return "CpuKernelLstm"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

}  // namespace

mx::array lstm(const mx::array& xw, const mx::array& w_hh) {
  for (const auto* a : {&xw, &w_hh}) check_input(*a, "lstm");
  if (xw.ndim() != 3 || w_hh.ndim() != 2 || w_hh.shape(0) != 4 * w_hh.shape(1) || xw.shape(2) != w_hh.shape(0) ||
      xw.shape(1) == 0)
    throw std::invalid_argument("lstm: xw (B, L >= 1, 4H) and w_hh (4H, H) expected");
  auto s = cpu_stream("lstm");
  return mx::array({2, xw.shape(0), xw.shape(1), w_hh.shape(1)}, mx::float32, std::make_shared<LstmKernel>(s),
                   {mx::contiguous(xw, false, s), mx::contiguous(w_hh, false, s)});
}

}  // namespace ck
