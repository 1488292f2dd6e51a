// What the two attention kernels share (attention.cpp, whisper_attention.cpp): the inputs' checks,
// q, k, v as (B, H, N, D) operands with a unit-stride last axis, and the additive bias.
#pragma once

#include <functional>
#include <optional>
#include <utility>

#include "common.h"

namespace ck {

// Additive bias broadcast to (B, H, T, S): strides of broadcast axes are 0.
struct Bias4 {
  const float* data = nullptr;
  int64_t sb = 0, sh = 0, st = 0;
};

// eval_cpu's side: q, k, v (inputs 0-2) checked, the bias (input 3) if there is one.
inline Bias4 attention_operands(const std::vector<mx::array>& inputs, const char* what) {
  for (int i = 0; i < 3; ++i)
    if (inputs[i].strides().back() != 1 && inputs[i].shape().back() != 1)
      throw std::invalid_argument(std::string(what) + ": q, k, v with a unit-stride last axis expected");
  if (inputs.size() < 4) return {};
  const auto& bb = inputs[3];
  return {bb.data<float>(), broadcast_stride(bb, 0), broadcast_stride(bb, 1), broadcast_stride(bb, 2)};
}

// The entry's side: shapes checked, the inputs (the bias contiguous, broadcast axes read with stride 0).
inline std::vector<mx::array> attention_inputs(const mx::array& q, const mx::array& k, const mx::array& v,
                                               const std::optional<mx::array>& bias, mx::Stream s,
                                               const std::string& what) {
  for (const auto* a : {&q, &k, &v}) check_input(*a, what.c_str());
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4 || k.shape() != v.shape() ||
      q.shape(0) != k.shape(0) || q.shape(1) != k.shape(1) || q.shape(3) != k.shape(3))
    throw std::invalid_argument(what + ": q (B, H, T, D), k and v (B, H, S, D) expected");
  std::vector<mx::array> in = {q, k, v};
  if (bias) {
    check_input(*bias, what.c_str());
    const auto& bs = bias->shape();
    bool ok = bias->ndim() == 4 && bs[3] == k.shape(2);
    for (int i = 0; i < 3 && ok; ++i) ok = bs[i] == 1 || bs[i] == q.shape(i);
    if (!ok) throw std::invalid_argument(what + ": bias of shape (B|1, H|1, T|1, S) expected");
    in.push_back(mx::contiguous(*bias, false, s));
  }
  return in;
}

// Every head of q, k, v (B, H, T|S, D) and the bias: out (B, T, H, D) of B, H, T, S, D.
using AttentionHeads = std::function<void(Operand4 q, Operand4 k, Operand4 v, Bias4 bias, float* out, int64_t B,
                                          int64_t H, int64_t T, int64_t S, int64_t D)>;

// The primitive of both attention kernels: the inputs checked, a fresh output, `heads` dispatched on
// the stream's thread. `what` names the entry in errors.
class HeadsAttentionKernel : public CpuPrimitive {
 public:
  HeadsAttentionKernel(mx::Stream s, const char* what, AttentionHeads heads)
      : CpuPrimitive(s), what_(what), heads_(std::move(heads)) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto &q = inputs[0], &k = inputs[1], &v = inputs[2];
    Bias4 bias = attention_operands(inputs, what_);
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = encoder(inputs, out);
    enc.dispatch([qo = operand(q), ko = operand(k), vo = operand(v), bias, dst = out.data<float>(),
                  B = q.shape(0), H = q.shape(1), T = q.shape(2), S = k.shape(2), D = q.shape(3),
                  heads = heads_]() { heads(qo, ko, vo, bias, dst, B, H, T, S, D); });
  }

 private:
  const char* what_;
  AttentionHeads heads_;
};

}  // namespace ck
