"""MLX T3 decoding: the effect of each speed change, one after the other, in one process, plus a
profile of one decode step (host time to queue it, kernel count and kernel time, read through
CUPTI by torch.profiler on a GPU machine) and its floor: the step's weight products alone
(`weight_products_ms`: every weight read once; on the CPU memory-bound, `weight_gb_per_s`).

Variants: `mirror` (the step-by-step loop that mirrors the original, host-side sampling), `fast`
(inference/fast_decode.py: device-side compiled sampling, next step queued before the token is
read), `fused` (q/k/v and gate/up fused), `layers` (fused, with fast_decode's compiled one-token
step: one compiled call per layer), `graph-gemv` (the "graph" step: one compiled call per step,
CUDA kernels for the attention and the products) and its ablations `graph` (products MLX's) and
`graph-ops` (attention in MLX ops too; t3_step_ablations.py), then `bf16`, `bf16-layers`,
`bf16-graph` (the graph step's kernels reading bfloat16), `fp16` and `fp16-graph` weights (fused).
Run them in this order: a variant only casts weights down, never back up; consecutive variants with
the same weights alternate round by round. Medians of --rounds runs of --tokens steps after a warm-up;
random draws (MLX's generator, fixed seed), CFG on. Usage:
    python benchmarks/bench_t3_steps.py [--checkpoint DIR] [--device cpu|gpu] [--tokens 200] [--rounds 3]
        [--variants fused layers bf16 bf16-layers] [--out reports/out/bench_t3_steps_gpu.json]
    python benchmarks/bench_t3_steps.py --best RESULTS.json   # bench_pipeline's MLX options for the fastest
MLX_MAX_OPS_PER_BUFFER (CUDA backend: kernels per CUDA graph) is read from the environment
(default: mlx_impl.backend.apply_mlx_defaults()'s).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from parity.fixtures import write_text_atomic  # noqa: E402

# variant -> (fast decode, fused projections, weights dtype, fast_decode's step kind, its ablation in
# t3_step_ablations.py or None)
VARIANTS = {
    "mirror": (False, False, "float32", "plain", None),
    "fast": (True, False, "float32", "plain", None),
    "fused": (True, True, "float32", "plain", None),
    "layers": (True, True, "float32", "layers", None),
    "graph": (True, True, "float32", "graph", "GraphStepCublas"),  # its products MLX's (cuBLAS)
    "graph-ops": (True, True, "float32", "graph", "GraphStepOps"),  # its attention in MLX ops, as on the CPU
    "graph-gemv": (True, True, "float32", "graph", None),  # its products as custom kernels: the default graph step
    "bf16": (True, True, "bfloat16", "plain", None),
    "bf16-layers": (True, True, "bfloat16", "layers", None),
    "bf16-graph": (True, True, "bfloat16", "graph", None),  # the graph step's kernels in bfloat16
    "fp16": (True, True, "float16", "plain", None),
    "fp16-graph": (True, True, "float16", "graph", None),
}


def use_variant(t3, v: str) -> None:
    _, _, _, kind, ablation = VARIANTS[v]
    if ablation is None:
        t3.compile_steps = kind
    else:
        import t3_step_ablations

        t3.compile_steps = getattr(t3_step_ablations, ablation)


def load(ckpt: Path, case_name: str):
    import mlx.core as mx

    from mlx_impl.convert.t3 import load_t3
    from mlx_impl.tokenizers import EnTokenizer
    from mlx_impl.tts import ChatterboxTTS, Conditionals
    from parity.cases import get_case
    from parity.checkpoint_dir import read_safetensors

    t3 = load_t3(read_safetensors(ckpt / "t3_cfg.safetensors"))  # unfused: the variants fuse it later
    conds = Conditionals.load(ckpt / "conds.pt")
    tok = EnTokenizer(str(ckpt / "tokenizer.json"))
    text = ChatterboxTTS(t3, None, None, tok).text_tokens(get_case(case_name).text)
    mx.eval(t3.parameters())
    return t3, conds.t3, text


def decode(t3, cond, text, n_tokens: int, seed: int = 0):
    """(tokens decoded, seconds, the tokens) of one decode with the seeded sampler."""
    import mlx.core as mx
    import numpy as np

    from mlx_impl.t3.inference.sampling import MLXDraw

    cond.cond_prompt_speech_emb = None  # re-embedded in the model's dtype
    t0 = time.perf_counter()
    tokens = t3.inference(t3_cond=cond, text_tokens=text, max_new_tokens=n_tokens,
                          draw=MLXDraw(mx.random.key(seed)), min_p=0.05, top_p=1.0)
    dt = time.perf_counter() - t0
    return tokens.shape[1], dt, np.array(tokens).tolist()


def profile_step(t3, cond, text, n_warm: int = 20):
    """One decode step after n_warm steps: host time to queue it, wall time, and (GPU) the kernels."""
    import mlx.core as mx
    import numpy as np

    from mlx_impl.t3.inference.step_kinds import make_step

    embeds, _ = t3.prepare_input_embeds(t3_cond=cond, text_tokens=text,
                                        speech_tokens=np.full((2, 1), t3.hp.start_speech_token), cfg_weight=0.5)
    dtype = t3.speech_emb.weight.dtype
    cache = t3.make_cache()
    mx.eval(t3.speech_logits(embeds.astype(dtype), cache))  # prefill in the weights' dtype, as decoding does
    step = make_step(t3)
    x = mx.random.normal((2, 1, t3.dim)).astype(dtype)
    for _ in range(n_warm):
        mx.eval(step(x, cache))

    def one():
        t0 = time.perf_counter()
        out = step(x, cache)
        mx.async_eval(out)
        t1 = time.perf_counter()
        mx.eval(out)
        return t1 - t0, time.perf_counter() - t0

    walls = [one() for _ in range(10)]
    res = {"host_queue_ms": 1e3 * statistics.median(w[0] for w in walls),
           "step_wall_ms": 1e3 * statistics.median(w[1] for w in walls), **weight_floor(t3, dtype)}
    if mx.default_device() == mx.gpu:
        try:
            import torch
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                one()
            kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
            res["kernels"] = len(kernels)
            res["kernel_ms"] = sum(e.device_time for e in kernels) / 1e3
            names = {}
            for e in kernels:
                count, us = names.get(e.name[:60], (0, 0.0))
                names[e.name[:60]] = (count + 1, us + e.device_time)
            res["top_kernels"] = [[name, count, round(us / 1e3, 4)]  # name, launches, ms in all
                                  for name, (count, us) in sorted(names.items(), key=lambda kv: -kv[1][1])[:12]]
        except Exception as e:  # profiling is best effort; the timings above stand
            res["kernel_profile_error"] = repr(e)[:200]
    return res


def weight_floor(t3, dtype, repeats: int = 7) -> dict:
    """The step's matrix products alone, every weight read once as a decode step reads it (the CFG
    pair's 2 rows, one graph): the step's memory-bandwidth floor, and the bandwidth it reached."""
    import mlx.core as mx
    import mlx.nn as nn

    weights = [m.weight for layer in t3.tfmr.layers for _, m in layer.named_modules() if isinstance(m, nn.Linear)]
    weights.append(t3.speech_head.weight)
    rows = {w.shape[1]: mx.random.normal((2, 1, w.shape[1])).astype(dtype) for w in weights}
    mx.eval(rows)

    def once():
        t0 = time.perf_counter()
        mx.eval([rows[w.shape[1]] @ w.T for w in weights])
        return time.perf_counter() - t0

    once()
    ms = 1e3 * statistics.median(once() for _ in range(repeats))
    gb = sum(w.nbytes for w in weights) / 1e9
    return {"weight_products_ms": ms, "weight_gb": gb, "weight_gb_per_s": gb / ms * 1e3}


def dtype_probe(t3) -> dict:
    """dtypes through one decode step of layer 0 with bfloat16 weights and inputs on this device
    (a copy of the layer; the model keeps its dtype)."""
    import copy

    import mlx.core as mx

    layer = copy.deepcopy(t3.tfmr.layers[0])
    layer.set_dtype(mx.bfloat16)
    cache = t3.make_cache()[0]
    x = mx.random.normal((2, 8, t3.dim)).astype(mx.bfloat16)
    layer(x, "causal", cache)
    x1 = x[:, :1]
    attn = layer.self_attn
    out = {"input": x1, "norm": layer.input_layernorm(x1)}
    if hasattr(attn, "qkv_proj"):
        out["qkv"] = attn.qkv_proj(out["norm"])
    out["rope"] = attn.rope(mx.ones((2, attn.n_heads, 1, t3.dim // attn.n_heads), mx.bfloat16), offset=8)
    out["attn"] = attn(out["norm"], None, cache)
    out["layer"] = layer(x1, None, cache)
    mx.eval(list(out.values()))
    return {k: str(v.dtype) for k, v in out.items()} | {"cache": str(cache.keys.dtype)}


def attend_appended_check(rope_module, seed: int = 0, dtype=None) -> dict:
    """The graph step's attention (graph_step.attend_appended: one CUDA kernel on MLX's CUDA
    backend, RoPE included) against its unfused MLX form (mx.fast.rope, then MLX ops) on the same
    device: T3's shapes (B 2, 16 heads, D 64, here 4 layers) and RoPE, capacities 256 / 1024,
    several valid lengths; the attention output and the new key / value buffer. With a half
    `dtype`: the kernel on half-precision inputs against the MLX form in float32 on the same
    (rounded) values, and MLX's own half-precision form against that too (`mlx_*_snr_db`)."""
    import mlx.core as mx
    import numpy as np

    from mlx_impl.t3.inference.cuda_kernels import cuda_attend_applies
    from mlx_impl.t3.inference.fused_layers import rope_tables
    from mlx_impl.t3.inference.graph_step import attend_appended, attend_appended_unfused
    from parity.metrics import compare

    half = dtype is not None and dtype != mx.float32
    rows = []
    key = mx.random.key(seed)
    L, B, H, D = 4, 2, 16, 64
    for capacity, offset, layer in ((256, 1, 0), (256, 37, 3), (256, 255, 1), (1024, 600, 2)):
        key, *ks = mx.random.split(key, 5)
        qkv, new_kv = (mx.random.normal(shape, key=k) for k, shape in zip(ks, ((B, 1, 3 * H * D), (L, B, 2, H, D))))
        keys, values = (mx.random.normal((L, B, H, capacity, D), key=k) for k in ks[2:])
        off = mx.array([offset], dtype=mx.int32)
        if half:
            qkv, keys, values, new_kv = (t.astype(dtype) for t in (qkv, keys, values, new_kv))
        tables = rope_tables(rope_module, off.reshape(()), 1)
        layer_id = mx.array([layer], dtype=mx.int32)
        args = (qkv, rope_module, tables, keys, values, off, layer_id, new_kv, 0.125)
        a = attend_appended(*args)
        if half:  # the reference: float32 ops on the same half-precision values
            wide = [t.astype(mx.float32) for t in (qkv, keys, values, new_kv)]
            b = attend_appended_unfused(wide[0], rope_module, tables, *wide[1:3], off, layer_id, wide[3], 0.125)
        else:
            b = attend_appended_unfused(*args)
        row = {"capacity": capacity, "offset": offset, "layer": layer,
               "out_snr_db": round(compare(np.array(b[0]), np.array(a[0].astype(mx.float32))).snr_db, 1),
               "out_max_abs": float(mx.abs(a[0].astype(mx.float32) - b[0]).max()),
               "new_kv_snr_db": round(compare(np.array(b[1]), np.array(a[1].astype(mx.float32))).snr_db, 1)}
        if half:
            c = attend_appended_unfused(*args)
            row["mlx_out_snr_db"] = round(compare(np.array(b[0]), np.array(c[0].astype(mx.float32))).snr_db, 1)
        rows.append(row)
    return {"kernel": cuda_attend_applies(rope_module, dtype or mx.float32, D, 256),
            "dtype": str(dtype or mx.float32), "cases": rows}


def gemv_check(t3, seed: int = 0, dtype=None) -> dict:
    """The graph step's custom product kernels (cuda_kernels.gemv) against MLX ops on the same
    device, with T3's layer-0 weights: norm + qkv, o + residual, norm + gate / up, SwiGLU + down +
    residual, final norm + head; B = 2 rows. With a half `dtype` (the model still float32): the
    kernels on half-precision copies of the weights and rows against float32 ops on the same
    (rounded) values, and MLX's half-precision ops against those too (`mlx_snr_db`)."""
    import mlx.core as mx
    import numpy as np

    if dtype is not None and dtype != mx.float32:
        return gemv_check_half(t3, dtype, seed)

    from mlx_impl.t3.inference.cuda_kernels import gemv, gemv_applies
    from parity.metrics import compare

    layer, B = t3.tfmr.layers[0], 2
    k = mx.random.split(mx.random.key(seed), 4)
    x, r = (mx.random.normal((B, 1, 1024), key=kk) for kk in k[:2])
    if not gemv_applies(x):  # the kernels are CUDA's: nothing to compare elsewhere
        return {"kernel": False}
    gu = mx.random.normal((B, 1, 2 * layer.mlp.hidden), key=k[2])
    attn, mlp = layer.self_attn, layer.mlp
    cases = {
        "norm_qkv": (gemv(x, attn.qkv_proj.weight, norm=layer.input_layernorm), attn.qkv_proj(layer.input_layernorm(x))),
        "o_residual": (gemv(x, attn.o_proj.weight, residual=r), r + attn.o_proj(x)),
        "norm_gate_up": (gemv(x, mlp.gate_up_proj.weight, norm=layer.post_attention_layernorm),
                         mlp.gate_up_proj(layer.post_attention_layernorm(x))),
        "swiglu_down_residual": (gemv(gu, mlp.down_proj.weight, residual=r, swiglu=True), r + mlp.down_proj(mlp.activation(gu))),
        "norm_head": (gemv(x, t3.speech_head.weight, norm=t3.tfmr.norm), t3.speech_head(t3.tfmr.norm(x))),
    }
    return {"kernel": True, **{name: {"snr_db": round(compare(np.array(b), np.array(a)).snr_db, 1),
                                      "max_abs": float(mx.abs(a - b).max())} for name, (a, b) in cases.items()}}


def gemv_check_half(t3, dtype, seed: int = 0) -> dict:
    import types

    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    from mlx_impl.t3.inference.cuda_kernels import gemv, gemv_applies
    from parity.metrics import compare

    layer, B = t3.tfmr.layers[0], 2
    k = mx.random.split(mx.random.key(seed), 4)
    x, r = (mx.random.normal((B, 1, 1024), key=kk).astype(dtype) for kk in k[:2])
    if not gemv_applies(x):
        return {"kernel": False, "dtype": str(dtype)}
    gu = mx.random.normal((B, 1, 2 * layer.mlp.hidden), key=k[2]).astype(dtype)
    attn, mlp = layer.self_attn, layer.mlp

    def forms(t):  # (the half-precision array, its values in float32)
        h = t.astype(dtype)
        return h, h.astype(mx.float32)

    def norm(n):
        (g, g32) = forms(n.weight)
        return types.SimpleNamespace(weight=g, eps=n.eps), types.SimpleNamespace(weight=g32, eps=n.eps)

    def ops(x, w, n=None, res=None, swiglu=False):  # MLX ops in the arrays' own dtype
        if swiglu:
            gate, up = mx.split(x, 2, axis=-1)
            x = nn.silu(gate) * up
        if n is not None:
            x = mx.fast.rms_norm(x, n.weight, n.eps)
        y = x @ w.T
        return y + res if res is not None else y

    cases = {}
    for name, (xin, w, n, res, sw) in {
        "norm_qkv": (x, attn.qkv_proj.weight, layer.input_layernorm, None, False),
        "o_residual": (x, attn.o_proj.weight, None, r, False),
        "norm_gate_up": (x, mlp.gate_up_proj.weight, layer.post_attention_layernorm, None, False),
        "swiglu_down_residual": (gu, mlp.down_proj.weight, None, r, True),
        "norm_head": (x, t3.speech_head.weight, t3.tfmr.norm, None, False),
    }.items():
        w16, w32 = forms(w)
        n16, n32 = norm(n) if n is not None else (None, None)
        ref = ops(xin.astype(mx.float32), w32, n32, None if res is None else res.astype(mx.float32), sw)
        out = gemv(xin, w16, norm=n16, residual=res, swiglu=sw).astype(mx.float32)
        mlx_half = ops(xin, w16, n16, res, sw).astype(mx.float32)
        cases[name] = {"snr_db": round(compare(np.array(ref), np.array(out)).snr_db, 1),
                       "max_abs": float(mx.abs(out - ref).max()),
                       "mlx_snr_db": round(compare(np.array(ref), np.array(mlx_half)).snr_db, 1)}
    return {"kernel": True, "dtype": str(dtype), **cases}


def step_name(step) -> str:
    """The class of the one-token step fast_decode runs (GraphStep, CompiledStep, ...)."""
    return "speech_logits (plain)" if getattr(step, "__name__", "") == "speech_logits" else type(step).__name__


def gpu_name():
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


def weight_groups(variants):
    """Consecutive variants that share the weights (fast decode, fusion, dtype) and differ only in the
    step kind: their rounds alternate, so that a machine's drift hits them alike."""
    groups = []
    for v in variants:
        if groups and VARIANTS[groups[-1][0]][:3] == VARIANTS[v][:3]:
            groups[-1].append(v)
        else:
            groups.append([v])
    return groups


def best_variant_args(path: Path) -> str:
    """bench_pipeline.py's --mlx-dtype/--mlx-step for the fastest fused variant of a results file."""
    rows = [r for r in json.loads(path.read_text())["results"] if VARIANTS.get(r["variant"], (0, False))[1]]
    _, _, dtype, step_kind, _ = VARIANTS[max(rows, key=lambda r: r["tokens_per_s"])["variant"]]
    return f"--mlx-dtype {dtype} --mlx-step {step_kind}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--case", default="espeak_22k")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["mirror", "fast", "fused", "layers"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--best", type=Path, default=None,
                    help="print bench_pipeline's --mlx-dtype/--mlx-step for the fastest fused variant of this results file")
    args = ap.parse_args()
    if args.best:
        print(best_variant_args(args.best))
        return
    import mlx.core as mx

    from mlx_impl import backend
    from mlx_impl.t3.inference.step_kinds import make_step

    backend.apply_mlx_defaults()
    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    if args.checkpoint is None:
        from benchmarks.bench_checkpoint import default_bench_checkpoint

        args.checkpoint = default_bench_checkpoint()
    t3, cond, text = load(Path(args.checkpoint), args.case)
    results = []
    probe = dtype_probe(t3)
    print(json.dumps({"dtype_probe": probe}), flush=True)
    check = attend_appended_check(t3.tfmr.layers[0].self_attn.rope) if any(VARIANTS[v][3] == "graph" for v in args.variants) else None
    print(json.dumps({"attend_appended_check": check}), flush=True)
    gemv = None
    if "graph-gemv" in args.variants:
        t3.fuse_projections()
        gemv = gemv_check(t3)
        print(json.dumps({"gemv_check": gemv}), flush=True)
    half_checks = {}  # the kernels in the half precisions of the graph variants asked for
    for dtype in sorted({VARIANTS[v][2] for v in args.variants if VARIANTS[v][3] == "graph"} - {"float32"}):
        t3.fuse_projections()
        half_checks[dtype] = {"gemv_check": gemv_check(t3, dtype=getattr(mx, dtype)),
                              "attend_appended_check": attend_appended_check(
                                  t3.tfmr.layers[0].self_attn.rope, dtype=getattr(mx, dtype))}
        print(json.dumps({f"checks_{dtype}": half_checks[dtype]}), flush=True)
    for group in weight_groups(args.variants):
        fast, fused, dtype, _, _ = VARIANTS[group[0]]
        t3.use_fast_decode = fast
        if fused:
            t3.fuse_projections()
        if t3.speech_emb.weight.dtype != getattr(mx, dtype):
            t3.set_dtype(getattr(mx, dtype))
        runs = {v: [] for v in group}
        for v in group:  # warm-up (compiles)
            use_variant(t3, v)
            decode(t3, cond, text, min(args.tokens, 20))
        for r in range(args.rounds):  # the variants of one weight setting alternate, round by round
            for v in group if r % 2 == 0 else group[::-1]:
                use_variant(t3, v)
                runs[v].append(decode(t3, cond, text, args.tokens, seed=r))
        for v in group:
            use_variant(t3, v)
            row = {"variant": v, "dtype": dtype, "step": step_name(make_step(t3)),
                   "tokens_per_s": statistics.median(n / dt for n, dt, _ in runs[v]),
                   "rounds_tokens_per_s": [round(n / dt, 1) for n, dt, _ in runs[v]],
                   "tokens": [n for n, _, _ in runs[v]],
                   # the same seeded draws in every round: the tokens of the group's first variant
                   "same_tokens_as_" + group[0]: all(a[2] == b[2] for a, b in zip(runs[v], runs[group[0]])),
                   **profile_step(t3, cond, text)}
            results.append(row)
            print(json.dumps(row), flush=True)
    record = {"dtype_probe": probe, "attend_appended_check": check, "gemv_check": gemv,
              "half_precision_checks": half_checks, "device": args.device, "gpu": gpu_name(), "mlx": mx.__version__, "default_device": str(mx.default_device()),
              "max_ops_per_buffer": os.environ.get("MLX_MAX_OPS_PER_BUFFER", "default"), "tokens": args.tokens,
              "rounds": args.rounds, "results": results, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
