"""The CUDA kernels of the "graph" step kind (MLX's CUDA backend; `mx.fast.cuda_kernel`): each
layer's one-token attention with its RoPE and new-key write (`attend_appended_cuda`), and the
one-token matrix products with their RMSNorm / SwiGLU / residual add (`gemv`). Nothing here runs
on the CPU or on Metal.

Each kernel reads and writes the model's dtype (float32, bfloat16 or float16: `KERNEL_DTYPES`)
and computes in float32 (RoPE, norms, dot products, softmax; shared memory in float32), so that
half-precision weights are read as they are stored: nothing casts them to float32 first (an MLX
product of a bfloat16 weight with a float32 row would, every step). The half-precision sources
differ from the float32 ones only in their loads and stores (16-byte loads of 8 values instead of 4)."""
from __future__ import annotations

from functools import lru_cache

import mlx.core as mx

from ...backend.device import on_cuda
from .fused_layers import rope_tables_apply

CUDA_MAX_POSITIONS = 4096  # the attention kernel's scores live in shared memory (16 KB)
THREADS = 256  # a block of the attention and product kernels: 8 warps
WARPS = THREADS // 32
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
    key from `tables` (cos, sin), the attention, and this layer's key / value written into new_kv
    AND into `keys` / `values` at position `offset`, in place. MLX's arrays are immutable, so this
    is the one place that writes into an input: GraphStep then skips its slice updates, which on
    MLX's CUDA backend copied both whole buffers every step (the previous step's kernels still held
    them, so the update could not take the buffer over: +2 buffers in flight, ~1 GB in float32).
    Only GraphStep's own contiguous buffers may be passed, and nothing else may read them between
    the kernel and the next step (each step's kernels follow the previous step's through its token)."""
    L, B, H, capacity, D = keys.shape
    if not (qkv.dtype == keys.dtype == values.dtype == new_kv.dtype):
        raise TypeError(f"attend_appended_cuda: qkv {qkv.dtype}, keys {keys.dtype}, values {values.dtype} and "
                        f"new_kv {new_kv.dtype} must share one dtype")
    cos, sin = tables  # float32 (1, D / 2), as rope_tables computes them
    return _attend_appended_kernel(scale, qkv.dtype)(
        inputs=[qkv, cos, sin, keys, values, offset.reshape(1), layer_id, new_kv],
        template=[("C", capacity), ("D", D), ("H", H), ("NL", L)] + _typed(qkv.dtype)[2], grid=(B * H * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1), output_shapes=[(B, 1, H * D), new_kv.shape], output_dtypes=[qkv.dtype] * 2)


@lru_cache(maxsize=8)
def _attend_appended_kernel(scale: float, dtype=mx.float32):
    """One block of THREADS threads per (batch, head): RoPE of its query and new key, scores of the
    cached positions and of the new key (a thread per position, its key row read 16 bytes at a
    time: independent loads in flight, where a warp per position waited on each row in turn), the
    softmax (block reductions), p v with THREADS / 16 groups of 16 threads over the positions (4
    values of a value row per thread); each block also copies its share of new_kv (every layer but this one,
    whose (b, h) key / value it writes itself)."""
    ld, st, _ = _typed(dtype)
    t = "float" if dtype == mx.float32 else "T"
    vec = "float4" if dtype == mx.float32 else "uint4"  # 16 bytes: 4 float32 or 8 half-precision values
    vw = 4 if dtype == mx.float32 else 8
    quad = "float4" if dtype == mx.float32 else "uint2"  # 4 values of a value row
    widen = "" if dtype == mx.float32 else f"""
                alignas(16) {t} hv[{vw}]; *reinterpret_cast<{vec}*>(hv) = raw;"""
    elems = ["raw.x", "raw.y", "raw.z", "raw.w"] if dtype == mx.float32 else [ld(f"hv[{j}]") for j in range(vw)]
    dot = " + ".join(f"qs[{vw} * i + {j}] * {e}" for j, e in enumerate(elems))
    score = f"""
            float acc = 0.f;
            if (s < S) {{
                const {vec}* kr = reinterpret_cast<const {vec}*>(kc + (size_t)s * D);
                #pragma unroll
                for (int i = 0; i < D / {vw}; ++i) {{
                    const {vec} raw = kr[i];{widen}
                    acc += {dot};
                }}
            }} else {{
                for (int d = 0; d < D; ++d) acc += qs[d] * kn[d];
            }}"""
    velems = ["raw.x", "raw.y", "raw.z", "raw.w"] if dtype == mx.float32 else [ld(f"hv[{j}]") for j in range(4)]
    vwiden = "" if dtype == mx.float32 else f"""
            alignas(8) {t} hv[4]; *reinterpret_cast<uint2*>(hv) = raw;"""
    value = f"""
        const int d0 = 4 * (tid % 16), g = tid / 16;
        float a4[4] = {{0.f, 0.f, 0.f, 0.f}};
        for (int s = g; s <= S; s += {THREADS // 16}) {{
            const {quad} raw = *reinterpret_cast<const {quad}*>((s < S ? vc + (size_t)s * D : vn) + d0);{vwiden}
            const float p = sc[s];
            {" ".join(f"a4[{j}] += p * {e};" for j, e in enumerate(velems))}
        }}
        for (int j = 0; j < 4; ++j) part[g][d0 + j] = a4[j];
        __syncthreads();
        if (tid < D) {{
            float o = 0.f;
            for (int k = 0; k < {THREADS // 16}; ++k) o += part[k][tid];
            out[(size_t)bh * D + tid] = {st("o / sum")};
        }}"""
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
        for (size_t j = bh * chunk + tid; j < min(total, (bh + 1) * chunk); j += {THREADS})
            if (j / per_layer != (size_t)li) new_kv_out[j] = new_kv[j];
        __shared__ float qs[D];
        __shared__ float kn[D];
        __shared__ float sc[{CUDA_MAX_POSITIONS}];
        __shared__ float red[{WARPS}];
        __shared__ float part[{THREADS // 16}][D];
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
            // the cache's position S written in place (`attend_appended_cuda`); this block reads rows < S only
            const_cast<{t}*>(kc)[(size_t)S * D + tid] = {st("kr")};
            const_cast<{t}*>(vc)[(size_t)S * D + tid] = vn[tid];
        }}
        __syncthreads();
        for (int s = tid; s <= S; s += {THREADS}) {{{score}
            sc[s] = acc;
        }}
        __syncthreads();
        float m = -INFINITY;
        for (int s = tid; s <= S; s += {THREADS}) m = fmaxf(m, sc[s]);
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
        if (lane == 0) red[warp] = m;
        __syncthreads();
        m = red[0];
        for (int w = 1; w < {WARPS}; ++w) m = fmaxf(m, red[w]);
        __syncthreads();
        float sum = 0.f;
        for (int s = tid; s <= S; s += {THREADS}) {{ float e = expf(sc[s] - m); sc[s] = e; sum += e; }}
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
        if (lane == 0) red[warp] = sum;
        __syncthreads();
        sum = 0.f;
        for (int w = 0; w < {WARPS}; ++w) sum += red[w];
{value}
    """
    return mx.fast.cuda_kernel(name="t3_attend_appended_v2",
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
    added to the products. `warps_per_column(K)` warps share an output column, all rows at once;
    each lane issues all its 16-byte weight loads (coalesced within its warp) before the rows are
    prepared, so the weight reads are in flight while the block normalises: T3's one-token
    products are reads of the weights, and cuBLAS's kernels for two rows reach ~0.7 TB/s of the
    H200's 4.8. Rows, weights, norm and residual share one dtype (KERNEL_DTYPES); the arithmetic
    is float32, the result rounded once."""
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
    ks = warps_per_column(K, x.itemsize)
    per_lane = -(-K * x.itemsize // 16 // (32 * ks))
    kernel = _gemv_kernel(mode, residual is not None, float(norm.eps) if norm is not None else 0.0, x.dtype)
    (y,) = kernel(inputs=inputs, template=[("K", K), ("N", N), ("NB", B), ("KS", ks), ("V", per_lane)] + _typed(x.dtype)[2],
                  grid=(-(-N // (WARPS // ks)) * THREADS, 1, 1),
                  threadgroup=(THREADS, 1, 1), output_shapes=[(B, N)], output_dtypes=[x.dtype])
    return y.reshape(B, 1, N)


def warps_per_column(K: int, itemsize: int, loads_per_lane: int = 8) -> int:
    """Warps sharing one output column (1, 2, 4 or 8): as few as keep a lane's 16-byte weight
    loads at `loads_per_lane` or under (they are held in registers)."""
    loads = -(-K * itemsize // (16 * 32))
    ks = 1
    while ks < 8 and loads > ks * loads_per_lane:
        ks *= 2
    return ks


@lru_cache(maxsize=32)
def _gemv_kernel(mode: str, residual: bool, eps: float, dtype=mx.float32):
    """One block of WARPS warps computes WARPS / KS columns; a column's KS warps each take every KS-th
    512-byte stretch of its weight row (V 16-byte loads a lane), then add their sums in shared memory."""
    ld, st, _ = _typed(dtype)
    names = ["x", "w"] + (["g"] if mode == "norm" else []) + (["r"] if residual else [])
    if mode == "norm":  # every block normalises the rows itself (2 x 1024 floats: cheaper than a kernel)
        prologue = f"""
        __shared__ float red[NB][{WARPS}];
        for (int b = 0; b < NB; ++b) {{
            float ss = 0.f;
            for (int k = tid; k < K; k += {THREADS}) {{ float v = {ld("x[(size_t)b * K + k]")}; ss += v * v; }}
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, o);
            if (lane == 0) red[b][warp] = ss;
        }}
        __syncthreads();
        for (int b = 0; b < NB; ++b) {{
            float ss = 0.f;
            for (int w = 0; w < {WARPS}; ++w) ss += red[b][w];
            const float inv = rsqrtf(ss / K + {eps!r}f);
            for (int k = tid; k < K; k += {THREADS}) xs[b * K + k] = {ld("x[(size_t)b * K + k]")} * inv * {ld("g[k]")};
        }}"""
    elif mode == "swiglu":
        prologue = f"""
        for (int b = 0; b < NB; ++b)
            for (int k = tid; k < K; k += {THREADS}) {{
                const float gt = {ld("x[(size_t)b * 2 * K + k]")}, up = {ld("x[(size_t)b * 2 * K + K + k]")};
                xs[b * K + k] = gt / (1.f + expf(-gt)) * up;
            }}"""
    else:
        prologue = f"""
        for (int b = 0; b < NB; ++b)
            for (int k = tid; k < K; k += {THREADS}) xs[b * K + k] = {ld("x[(size_t)b * K + k]")};"""
    add = f" + {ld('r[(size_t)b * N + n]')}" if residual else ""
    vw = 4 if dtype == mx.float32 else 8  # values per 16-byte load
    if dtype == mx.float32:
        widen = "const float* wf = reinterpret_cast<const float*>(&wv[i]);"
    else:
        widen = f"""const T* wh = reinterpret_cast<const T*>(&wv[i]);
                float wf[8];
                #pragma unroll
                for (int j = 0; j < 8; ++j) wf[j] = {ld("wh[j]")};"""
    terms = " + ".join(f"wf[{j}] * xb[{j}]" for j in range(vw))
    source = f"""
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        constexpr int KV = K / {vw};  // 16-byte loads in a weight row
        const int slice = warp % KS, n = blockIdx.x * ({WARPS} / KS) + warp / KS;
        const bool live = n < N;
        __shared__ float xs[NB * K];
        uint4 wv[V];
        const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)(live ? n : 0) * K);
        #pragma unroll
        for (int i = 0; i < V; ++i) {{
            const int at = (i * KS + slice) * 32 + lane;
            wv[i] = live && at < KV ? wr[at] : make_uint4(0, 0, 0, 0);
        }}
        {prologue}
        __syncthreads();
        float acc[NB];
        for (int b = 0; b < NB; ++b) acc[b] = 0.f;
        #pragma unroll
        for (int i = 0; i < V; ++i) {{
            const int at = (i * KS + slice) * 32 + lane;
            if (at < KV) {{
                {widen}
                for (int b = 0; b < NB; ++b) {{
                    const float* xb = xs + b * K + {vw} * at;
                    acc[b] += {terms};
                }}
            }}
        }}
        __shared__ float part[{WARPS}][NB];
        for (int b = 0; b < NB; ++b) {{
            float a = acc[b];
            for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffff, a, o);
            if (lane == 0) part[warp][b] = a;
        }}
        if (KS > 1) __syncthreads();
        if (live && slice == 0 && lane == 0)
            for (int b = 0; b < NB; ++b) {{
                float a = part[warp][b];
                for (int j = 1; j < KS; ++j) a += part[warp + j][b];
                y[(size_t)b * N + n] = {st("a" + add)};
            }}
    """
    return mx.fast.cuda_kernel(name=f"t3_gemv2_{mode}{'_res' if residual else ''}", input_names=names,
                               output_names=["y"], source=source)


# ------------------------------------------------------------------ device-side sampling
