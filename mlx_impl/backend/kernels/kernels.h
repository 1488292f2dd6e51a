// The kernels' entry points (bindings.cpp exposes them to Python). Each checks its inputs and
// returns a lazy array computed by a CPU-only primitive on the default (CPU) stream.
#pragma once

#include <optional>

#include "mlx/array.h"

namespace mx = mlx::core;

namespace ck {

enum class Unary { Exp, Sigmoid, Silu, Mish, Gelu };

// elementwise.cpp
mx::array unary(const mx::array& x, Unary op, const char* what);
mx::array softmax_last(const mx::array& x);
mx::array swiglu_last(const mx::array& x);
mx::array layer_norm_last(const mx::array& x, const mx::array& weight, const mx::array& bias, float eps);
mx::array rms_norm_last(const mx::array& x, const mx::array& weight, float eps);
mx::array snake(const mx::array& x, const mx::array& alpha);

// linear.cpp, attention.cpp, convolution.cpp, rope.cpp
mx::array linear(const mx::array& x, const mx::array& weight, std::optional<mx::array> bias, bool wide);
mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                    std::optional<mx::array> bias, bool wide);
mx::array conv1d(const mx::array& x, const mx::array& weight, std::optional<mx::array> bias, int stride,
                 int padding, int dilation);
mx::array depthwise_conv1d(const mx::array& x, const mx::array& w);
mx::array rope(const mx::array& x, const mx::array& cos_t, const mx::array& sin_t);

// whisper_attention.cpp: the S3 tokenizer's attention with its MLX-ops form's bits
mx::array attention_split_scale(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                                std::optional<mx::array> bias);

// recurrent.cpp
mx::array lstm(const mx::array& xw, const mx::array& w_hh);

// im2col.cpp
mx::array conv2d_im2col(const mx::array& x, const mx::array& weight, int stride_h, int stride_w, int pad_h,
                        int pad_w);

// normalization.cpp
mx::array batch_norm(const mx::array& x, const mx::array& mean, const mx::array& inv, std::optional<mx::array> weight,
                     std::optional<mx::array> bias, bool relu);

// mlx_sigmoid.cpp
mx::array mlx_sigmoid(const mx::array& x);

// threads.cpp
bool set_stream_blas_threads(int threads);
mx::array stream_blas_threads();

}  // namespace ck
