// The exp polynomial (the same steps as mlx_impl/backend/elementwise.py `_exp_reduced`) and the row
// reductions that softmax and attention share. Inline: the kernels' loops vectorise around them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace ck {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2Hi = 0.693359375f;  // n * kLn2Hi is exact for |n| < 2^8
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpMin = -87.33f, kExpMax = 88.72f;
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23

// e^x for x in [kExpMin, kExpMax]: x = n ln2 + r, a degree-7 polynomial for e^r, 2^n in the
// exponent bits.
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

// exp(d) for d = x - max <= 0, 0 below kExpMin: the clipped polynomial gives ~1.2e-38 there, and
// as a product with 2^-126 that value is denormal: masked scores (-inf, -1e10) made a 2 x 86
// causal attention 15x slower (denormal arithmetic in the softmax and in p v).
inline float exp_nonpositive(float d) { return d < kExpMin ? 0.0f : exp_clipped(d); }

constexpr int kLanes = 16;  // partial sums / maxima, one per SIMD lane of AVX-512

inline float row_max(const float* x, size_t n) {
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

inline float lane_sum(const float* s) {
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += s[l];
  return total;
}

// e = exp(x - max) into y, returns the sum of e (elementwise.py `_exp_nonpositive`).
inline float exp_shifted_sum(const float* x, float* y, size_t n, float max) {
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

// softmax of each row (max, exp(x - max) and its sum, then a division): the softmax kernel's rows
// and the S3 tokenizer attention's.
inline void softmax_rows(const float* x, float* y, size_t rows, size_t n) {
  for (size_t r = 0; r < rows; ++r, x += n, y += n) {
    float max = row_max(x, n);
    float sum = exp_shifted_sum(x, y, n, max);
    for (size_t i = 0; i < n; ++i) y[i] = y[i] / sum;
  }
}

}  // namespace ck
