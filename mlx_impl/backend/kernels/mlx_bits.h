// MLX's own CPU arithmetic for exp and sigmoid (mlx/backend/cpu/simd/math.h `exp`, unary_ops.h
// `Sigmoid`), the same float32 operations in the same order, written so that loops over them
// vectorise: bit-identical to mx.exp / mx.sigmoid (unit tests), unlike elementwise.h's exp (more
// accurate, other bits). Compile with fp-contract off (no a * b + c turned into one FMA).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ck {

// floor(v) for |v| < 2^31 without libm's floor (which keeps the loop below from vectorising):
// truncate, then step down where truncation rounded up. Exact there; larger arguments only occur
// where mlx_exp replaces the result by its clips (checked over all 2^32 float inputs: the sigmoid
// below gives the bits of the std::floor form for every non-NaN input).
inline float floor_small(float v) {
  float t = static_cast<float>(static_cast<int32_t>(v));
  return t > v ? t - 1.0f : t;
}

// MLX's CPU exp (simd::exp), the same operations for float32: bit-identical to mx.exp.
inline float mlx_exp(float x_init) {
  float x = x_init * 1.442695f;
  float ipart = floor_small(x + 0.5f);
  float fpart = x - ipart;
  x = 1.535336188319500e-4f;
  x = std::fma(x, fpart, 1.339887440266574e-3f);
  x = std::fma(x, fpart, 9.618437357674640e-3f);
  x = std::fma(x, fpart, 5.550332471162809e-2f);
  x = std::fma(x, fpart, 2.402264791363012e-1f);
  x = std::fma(x, fpart, 6.931472028550421e-1f);
  x = std::fma(x, fpart, 1.000000000000000f);
  int32_t epart = (static_cast<int32_t>(ipart) + 127) << 23;
  float two_i;
  std::memcpy(&two_i, &epart, sizeof(two_i));
  float result = x_init != x_init ? x_init : two_i * x;  // NaN kept
  result = x_init > 88.0f ? INFINITY : result;
  return x_init < -88.0f ? 0.0f : result;
}

// MLX's CPU sigmoid (unary_ops.h Sigmoid): bit-identical to mx.sigmoid.
inline float mlx_sigmoid(float x) {
  float y = 1.0f / (1.0f + mlx_exp(std::fabs(x)));
  return x < 0.0f ? y : 1.0f - y;
}

}  // namespace ck
