"""The CUDA kernels of the "graph" step kind (MLX's CUDA backend; `mx.fast.cuda_kernel`): each
layer's one-token attention with its RoPE and new-key write (`attend_appended_cuda`), and the
one-token matrix products with their RMSNorm / SwiGLU / residual add (`gemv`). Nothing here runs
on the CPU or on Metal.

Each kernel reads and writes the model's dtype (float32, bfloat16 or float16: `KERNEL_DTYPES`)
and computes in float32 (RoPE, norms, dot products, softmax; shared memory in float32), so that
half-precision weights are read as they are stored: nothing casts them to float32 first (an MLX
product of a bfloat16 weight with a float32 row would, every step). The float32 kernels' sources
are those the float32 records were measured with; the half-precision ones differ only in their
loads and stores (16-byte weight loads of 8 values instead of 4)."""
from __future__ import annotations

from functools import lru_cache

import mlx.core as mx

from ...backend.device import on_cuda
from .fused_layers import rope_tables_apply

CUDA_MAX_POSITIONS = 4096  # the attention kernel's scores live in shared memory (16 KB)
KERNEL_DTYPES = (mx.float32, mx.bfloat16, mx.float16)


def cuda_attend_applies(rope_module, dtype, head_dim: int, capacity: int) -> bool:
    return (on_cuda() and dtype in KERNEL_DTYPES and head_dim == 64 and capacity < CUDA_MAX_POSITIONS
            and rope_tables_apply(rope_module, head_dim))


def _typed(dtype):
    """(load, store, template) for kernel sources in `dtype`: load(e) turns an element read into a
    float, store(e) a float into the element type `T`; template: the launch's template arguments
    that name the type (none for float32: its sources, kernel names and launches stay as measured).
    The template also keeps kernels of different dtypes apart: MLX caches a custom kernel's
    compiled module by its name, which holds the template arguments but not the input types."""
    if dtype == mx.float32:
        return (lambda e: e), (lambda e: e), []
    widen, narrow = {mx.bfloat16: ("__bfloat162float", "__float2bfloat16"), mx.float16: ("__half2float", "__float2half")}[dtype]
    return (lambda e: f"{widen}({e})"), (lambda e: f"{narrow}({e})"), [("T", dtype)]


def attend_appended_cuda(qkv, tables, keys, values, offset, layer_id, new_kv, scale: float):
    """graph_step.attend_appended as one kernel (`cuda_attend_applies`): RoPE of the query and new
    key from `tables` (cos, sin), the attention, and this layer's key / value written into new_kv."""
    L, B, H, capacity, D = keys.shape
    if not (qkv.dtype == keys.dtype == values.dtype == new_kv.dtype):
        raise TypeError(f"attend_appended_cuda: qkv {qkv.dtype}, keys {keys.dtype}, values {values.dtype} and "
                        f"new_kv {new_kv.dtype} must share one dtype")
    cos, sin = tables  # float32 (1, D / 2), as rope_tables computes them
    return _attend_appended_kernel(scale, qkv.dtype)(
        inputs=[qkv, cos, sin, keys, values, offset.reshape(1), layer_id, new_kv],
        template=[("C", capacity), ("D", D), ("H", H), ("NL", L)] + _typed(qkv.dtype)[2], grid=(B * H * 256, 1, 1),
        threadgroup=(256, 1, 1), output_shapes=[(B, 1, H * D), new_kv.shape], output_dtypes=[qkv.dtype] * 2)


@lru_cache(maxsize=8)
def _attend_appended_kernel(scale: float, dtype=mx.float32):
    """One block of 256 threads per (batch, head): RoPE of its query and new key, scores of the
    cached positions (a warp per position, coalesced reads) and of the new key, the softmax (block
    reductions), p v with 4 groups of 64 threads over the positions; each block also copies its
    share of new_kv (every layer but this one, whose (b, h) key / value it writes itself)."""
    ld, st, _ = _typed(dtype)
    t = "float" if dtype == mx.float32 else "T"
    if dtype == mx.float32:  # the new key is read from shared memory like a cached one
        score = """
            const float* kr = s < S ? kc + (size_t)s * D : kn;
            float acc = 0.f;
            for (int d = lane; d < D; d += 32) acc += qs[d] * kr[d];"""
    else:
        score = f"""
            float acc = 0.f;
            if (s < S) for (int d = lane; d < D; d += 32) acc += qs[d] * {ld("kc[(size_t)s * D + d]")};
            else for (int d = lane; d < D; d += 32) acc += qs[d] * kn[d];"""
    source = f"""
        const int bh = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        const int b = bh / H, h = bh % H, B = gridDim.x / H;
        const int S = offset[0], li = layer_id[0], half = D / 2;
        const {t}* row = qkv + (size_t)b * 3 * H * D;
        const {t}* qp = row + (size_t)h * D;
        const {t}* kp = row + (size_t)(H + h) * D;
        const {t}* vn = row + (size_t)(2 * H + h) * D;
        const {t}* kc = keys + (((size_t)li * B + b) * H + h) * C * D;
        const {t}* vc = values + (((size_t)li * B + b) * H + h) * C * D;
        const size_t per_layer = (size_t)B * 2 * H * D, total = NL * per_layer;
        const size_t chunk = (total + gridDim.x - 1) / gridDim.x;
        for (size_t j = bh * chunk + tid; j < min(total, (bh + 1) * chunk); j += 256)
            if (j / per_layer != (size_t)li) new_kv_out[j] = new_kv[j];
        __shared__ float qs[D];
        __shared__ float kn[D];
        __shared__ float sc[{CUDA_MAX_POSITIONS}];
        __shared__ float red[8];
        __shared__ float part[4][D];
        if (tid < D) {{  // RoPE, rotate-half: (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos)
            const int j = tid % half;
            const float c = cos_t[j], sn = sin_t[j];
            const float qr = tid < half ? {ld("qp[tid]")} * c - {ld("qp[tid + half]")} * sn
                                        : {ld("qp[tid - half]")} * sn + {ld("qp[tid]")} * c;
            const float kr = tid < half ? {ld("kp[tid]")} * c - {ld("kp[tid + half]")} * sn
                                        : {ld("kp[tid - half]")} * sn + {ld("kp[tid]")} * c;
            qs[tid] = qr * {scale!r}f;
            kn[tid] = kr;
            size_t at = (((size_t)li * B + b) * 2 * H + h) * D + tid;
            new_kv_out[at] = {st("kr")};
            new_kv_out[at + (size_t)H * D] = vn[tid];
        }}
        __syncthreads();
        for (int s = warp; s <= S; s += 8) {{{score}
            for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, o);
            if (lane == 0) sc[s] = acc;
        }}
        __syncthreads();
        float m = -INFINITY;
        for (int s = tid; s <= S; s += 256) m = fmaxf(m, sc[s]);
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
        if (lane == 0) red[warp] = m;
        __syncthreads();
        m = red[0];
        for (int w = 1; w < 8; ++w) m = fmaxf(m, red[w]);
        __syncthreads();
        float sum = 0.f;
        for (int s = tid; s <= S; s += 256) {{ float e = expf(sc[s] - m); sc[s] = e; sum += e; }}
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
        if (lane == 0) red[warp] = sum;
        __syncthreads();
        sum = 0.f;
        for (int w = 0; w < 8; ++w) sum += red[w];
        const int d = tid % D, g = tid / D;
        float acc = 0.f;
        for (int s = g; s <= S; s += 4) acc += sc[s] * (s < S ? {ld("vc[(size_t)s * D + d]")} : {ld("vn[d]")});
        part[g][d] = acc;
        __syncthreads();
        if (tid < D) out[(size_t)bh * D + tid] = {st("(part[0][tid] + part[1][tid] + part[2][tid] + part[3][tid]) / sum")};
    """
    return mx.fast.cuda_kernel(name="t3_attend_appended",
                               input_names=["qkv", "cos_t", "sin_t", "keys", "values", "offset", "layer_id", "new_kv"],
                               output_names=["out", "new_kv_out"], source=source)


# ------------------------------------------------------------------ one-token products (CUDA)


def gemv_applies(x) -> bool:
    """T3's rows (B <= 2: the normalised rows live in 48 KB of shared memory, K up to 4096) in one
    of KERNEL_DTYPES."""
    return on_cuda() and x.dtype in KERNEL_DTYPES and x.shape[0] <= 2


def gemv(x, weight, *, norm=None, residual=None, swiglu: bool = False):
    """(B, 1, K) rows times weight (N, K)^T -> (B, 1, N), as one custom CUDA kernel (B <= 2,
    `gemv_applies`): the rows RMS-normalised first (`norm`: an nn.RMSNorm, mx.fast.rms_norm's formula), or, with
    `swiglu`, x = [gate, up] (B, 1, 2K) turned into silu(gate) * up first; `residual` (B, 1, N)
    added to the products. Each warp computes one output column for all rows, reading its weight
    row once (coalesced 16-byte loads): T3's one-token products are reads of the weights, and
    cuBLAS's kernels for two rows reach ~0.7 TB/s of the H200's 4.8. Rows, weights, norm and
    residual share one dtype (KERNEL_DTYPES); the arithmetic is float32, the result rounded once."""
    B, (N, K) = x.shape[0], weight.shape
    if weight.dtype != x.dtype or (norm is not None and norm.weight.dtype != x.dtype):
        raise TypeError(f"gemv: rows {x.dtype}, weight {weight.dtype}"
                        + (f", norm {norm.weight.dtype}" if norm is not None else "") + ": one dtype expected")
    if K % (16 // x.itemsize):
        raise ValueError(f"gemv reads weight rows 16 bytes at a time: K = {K} is not a multiple of {16 // x.itemsize}")
    mode = "swiglu" if swiglu else "norm" if norm is not None else "plain"
    inputs = [x.reshape(B, -1), weight]
    if norm is not None:
        inputs.append(norm.weight)
    if residual is not None:
        inputs.append(residual.reshape(B, N))
    kernel = _gemv_kernel(mode, residual is not None, float(norm.eps) if norm is not None else 0.0, x.dtype)
    (y,) = kernel(inputs=inputs, template=[("K", K), ("N", N), ("NB", B)] + _typed(x.dtype)[2],
                  grid=(-(-N // 8) * 256, 1, 1),
                  threadgroup=(256, 1, 1), output_shapes=[(B, N)], output_dtypes=[x.dtype])
    return y.reshape(B, 1, N)


@lru_cache(maxsize=32)
def _gemv_kernel(mode: str, residual: bool, eps: float, dtype=mx.float32):
    ld, st, _ = _typed(dtype)
    names = ["x", "w"] + (["g"] if mode == "norm" else []) + (["r"] if residual else [])
    if mode == "norm":  # every block normalises the rows itself (2 x 1024 floats: cheaper than a kernel)
        prologue = f"""
        __shared__ float red[NB][8];
        for (int b = 0; b < NB; ++b) {{
            float ss = 0.f;
            for (int k = tid; k < K; k += 256) {{ float v = {ld("x[(size_t)b * K + k]")}; ss += v * v; }}
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, o);
            if (lane == 0) red[b][warp] = ss;
        }}
        __syncthreads();
        for (int b = 0; b < NB; ++b) {{
            float ss = 0.f;
            for (int w8 = 0; w8 < 8; ++w8) ss += red[b][w8];
            const float inv = rsqrtf(ss / K + {eps!r}f);
            for (int k = tid; k < K; k += 256) xs[b * K + k] = {ld("x[(size_t)b * K + k]")} * inv * {ld("g[k]")};
        }}"""
    elif mode == "swiglu":
        prologue = f"""
        for (int b = 0; b < NB; ++b)
            for (int k = tid; k < K; k += 256) {{
                const float gt = {ld("x[(size_t)b * 2 * K + k]")}, up = {ld("x[(size_t)b * 2 * K + K + k]")};
                xs[b * K + k] = gt / (1.f + expf(-gt)) * up;
            }}"""
    else:
        prologue = f"""
        for (int b = 0; b < NB; ++b)
            for (int k = tid; k < K; k += 256) xs[b * K + k] = {ld("x[(size_t)b * K + k]")};"""
    add = f" + {ld('r[(size_t)b * N + n]')}" if residual else ""
    if dtype == mx.float32:  # a float4 (4 weights) per load
        products = """
        const float4* wr = reinterpret_cast<const float4*>(w + (size_t)n * K);
        float acc[NB];
        for (int b = 0; b < NB; ++b) acc[b] = 0.f;
        #pragma unroll 4
        for (int k4 = lane; k4 < K / 4; k4 += 32) {
            const float4 wv = wr[k4];
            for (int b = 0; b < NB; ++b) {
                const float* xb = xs + b * K + 4 * k4;
                acc[b] += wv.x * xb[0] + wv.y * xb[1] + wv.z * xb[2] + wv.w * xb[3];
            }
        }"""
    else:  # 16 bytes (8 half-precision weights) per load, each widened to float
        products = f"""
        const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)n * K);
        float acc[NB];
        for (int b = 0; b < NB; ++b) acc[b] = 0.f;
        #pragma unroll 4
        for (int k8 = lane; k8 < K / 8; k8 += 32) {{
            const uint4 raw = wr[k8];
            const T* wv = reinterpret_cast<const T*>(&raw);
            float wf[8];
            #pragma unroll
            for (int j = 0; j < 8; ++j) wf[j] = {ld("wv[j]")};
            for (int b = 0; b < NB; ++b) {{
                const float* xb = xs + b * K + 8 * k8;
                acc[b] += ((wf[0] * xb[0] + wf[1] * xb[1]) + (wf[2] * xb[2] + wf[3] * xb[3]))
                        + ((wf[4] * xb[4] + wf[5] * xb[5]) + (wf[6] * xb[6] + wf[7] * xb[7]));
            }}
        }}"""
    source = f"""
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        __shared__ float xs[NB * K];
        {prologue}
        __syncthreads();
        const int n = blockIdx.x * 8 + warp;
        if (n >= N) return;{products}
        for (int b = 0; b < NB; ++b) {{
            float a = acc[b];
            for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffff, a, o);
            if (lane == 0) y[(size_t)b * N + n] = {st("a" + add)};
        }}
    """
    return mx.fast.cuda_kernel(name=f"t3_gemv_{mode}{'_res' if residual else ''}", input_names=names,
                               output_names=["y"], source=source)


# ------------------------------------------------------------------ device-side sampling
