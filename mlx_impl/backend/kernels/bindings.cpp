// The Python module `_kernels` (nanobind, in MLX's ABI domain): float32 CPU kernels for MLX's Linux
// CPU backend (mlx_impl/backend/native.py loads it). Why they exist: MLX 0.32's CPU backend runs
// these operations as chains of scalar kernels (one pass per operation, mx.compile fuses at most 11
// operations deep), 5-20x slower than PyTorch's vectorised ones. Each kernel runs on the thread of
// the stream it is called on, like MLX's own CPU kernels (callers get two cores busy by running
// independent work on two streams), except the elementwise and row kernels on large inputs (GELU,
// softmax, LayerNorm, Snake, the depthwise convolution), the products through the wide BLAS,
// one-token attention and the S3 tokenizer's attention, which split their rows or heads over the
// stream's threads (set_stream_blas_threads).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "kernels.h"
#include "wide_blas.h"

namespace nb = nanobind;
using namespace nb::literals;
using namespace ck;

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
        "axis, cos and sin (L, D / 2), or (L, D): x * cos + rotate_half(x) * sin with a table per half "
        "-> (B, H, L, D)");
  m.def("attention", &attention, "q"_a, "k"_a, "v"_a, "scale"_a, "bias"_a = nb::none(), "wide"_a = false,
        "softmax(q k^T * scale + bias) v: q (B, H, T, D), k, v (B, H, S, D) with a unit-stride "
        "last axis, bias (B|1, H|1, T|1, S) or None -> (B, T, H, D); wide: products through the "
        "wide BLAS (T > 1), heads over the stream's threads");
  m.def("attention_split_scale", &attention_split_scale, "q"_a, "k"_a, "v"_a, "scale"_a, "bias"_a = nb::none(),
        "softmax((q * scale) (k * scale)^T + bias) v with the bits of those MLX ops (and the softmax "
        "kernel): q (B, H, T, D), k, v (B, H, S, D) with a unit-stride last axis, bias (B|1, H|1, T|1, S) "
        "or None -> (B, T, H, D)");
  m.def("snake", &snake, "x"_a, "alpha"_a,
        "x + 1 / (alpha + 1e-9) * sin(alpha x)^2, alpha (C,) over the last axis (HiFT's Snake)");
  m.def("linear", &linear, "x"_a, "weight"_a, "bias"_a = nb::none(), "wide"_a = false,
        "x @ weight^T + bias (nn.Linear): x (..., K), weight (N, K), bias (N,) or None; wide: the "
        "product through the wide BLAS, rows over the stream's threads");
  m.def("conv1d", &conv1d, "x"_a, "weight"_a, "bias"_a = nb::none(), "stride"_a = 1, "padding"_a = 0,
        "dilation"_a = 1,
        "torch's conv1d (groups 1), channels last, through the wide BLAS: x (B, T, C_in), weight "
        "(C_out, K, C_in), bias (C_out,) or None -> (B, T_out, C_out)");
  m.def("lstm", &lstm, "xw"_a, "w_hh"_a,
        "one LSTM layer's recurrence (gates i, f, g, o), bit-identical to MLX's nn.LSTM step on the "
        "CPU: xw = x W_ih^T + bias (B, L, 4H), w_hh (4H, H) -> (2, B, L, H): all hidden, all cell states");
  m.def("conv2d_im2col", &conv2d_im2col, "x"_a, "weight"_a, "stride_h"_a, "stride_w"_a, "pad_h"_a, "pad_w"_a,
        "conv2d (groups 1, no dilation), channels last, as im2col + MLX's BLAS in blocks of output rows "
        "(the bits of one product of the whole column buffer): x (B, H, W, C_in), weight (C_out, KH, KW, "
        "C_in) -> (B, H_out, W_out, C_out)");
  m.def("batch_norm", &batch_norm, "x"_a, "mean"_a, "inv"_a, "weight"_a = nb::none(), "bias"_a = nb::none(),
        "relu"_a = false,
        "inference BatchNorm over the last axis, as nn.BatchNorm's ops ((x - mean) * inv, then weight * . "
        "+ bias), inv = rsqrt(var + eps) given; then maximum(., 0) if relu: x (..., C), the rest (C,)");
  m.def("mlx_sigmoid", &mlx_sigmoid, "x"_a, "mx.sigmoid with its bits, one vectorised pass");
  m.def("wide_blas", []() { return wide_blas_about(); },
        "the wide BLAS (S3Gen's large products): library and core, or why MLX's BLAS is used");
  m.def("wide_blas_loaded", &wide_blas_loaded);
  m.def("stream_blas_threads", &stream_blas_threads,
        "a scalar int32 array: the BLAS threads of the default stream's worker when it is evaluated "
        "(Intel MKL; -1 with other BLAS libraries)");
  m.def("set_stream_blas_threads", &set_stream_blas_threads, "threads"_a,
        "BLAS threads of the default stream's worker thread from now on (0: the process-wide "
        "setting), and the threads these kernels use there (Snake's rows); returns False where the "
        "BLAS is not Intel MKL (its threads are then left as they are)");
}
