"""T3's one-token decode step in half precision keeps its weights in their dtype: no weight is cast
to float32 on the way to a matrix product (a bfloat16 weight times a float32 row makes MLX cast
the weight, every step: a float32 constant, cache or input in the step would do it).

On the CPU, with a small seeded T3 (no original needed):
- the MLX-ops steps (the plain model call, the per-layer "layers" step, the "graph" step's
  MLX-ops form) in bfloat16 and float16: the graph of one step (`mx.export_to_dot`, compilation
  off) has no cast (AsType) feeding a matrix product; the check itself is shown to fail on a
  product of a bfloat16 weight with a float32 row;
- the "graph" step's CUDA path, with the kernels stood in by a recorder (`mx.fast.cuda_kernel`)
  and MLX's CUDA backend reported present: "auto" takes it in bfloat16 and float16, every kernel
  gets the model's own weight arrays (the same objects, uncast) and half-precision rows, caches
  and outputs; only the RoPE tables are float32;
- the whole fast decode (T3.inference with float32 conditioning): every step's input row and the
  KV cache in the weights' dtype.
"""
from __future__ import annotations

import copy
import re

import mlx.core as mx
import numpy as np
import pytest

from mlx_impl.t3 import T3, T3Cond, T3Config
from mlx_impl.t3.inference import GreedyDraw, cuda_kernels, fast_decode, step_kinds
from mlx_impl.t3.inference.graph_step import GraphStep
from mlx_impl.t3.inference.layer_step import CompiledStep
from mlx_impl.t3.llama_configs import LLAMA_520M_CONFIG_DICT

HALF = (mx.bfloat16, mx.float16)
DIM, LAYERS, PROMPT = 256, 2, 20
# ops that pass an array on unchanged in value (views, copies): a cast reaching a product through
# them is still a cast of that product's operand
PASS_THROUGH = {"Transpose", "Reshape", "Broadcast", "Slice", "ExpandDims", "Squeeze", "Flatten", "Unflatten",
                "Copy", "Contiguous"}
PRODUCTS = {"Matmul", "AddMM", "GatherMM", "BlockMaskedMM"}


def small_t3(dtype) -> T3:
    """A 2-layer, 256-wide T3 (head dim 64, T3's RoPE), seeded, fused, in `dtype`."""
    cfg = copy.deepcopy(LLAMA_520M_CONFIG_DICT)
    cfg.update(hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=4, head_dim=64,
               intermediate_size=512)
    mx.random.seed(0)
    m = T3(T3Config(704, llama_config=cfg))
    mx.eval(m.parameters())
    m.fuse_projections()
    m.set_dtype(dtype)
    mx.eval(m.parameters())  # the weights themselves in `dtype`, no pending casts
    return m


def prefilled(m, dtype):
    cache = m.make_cache()
    embeds = mx.random.normal((2, PROMPT, DIM), key=mx.random.key(1)).astype(dtype)
    mx.eval(m.speech_logits(embeds, cache), [c.state for c in cache])
    return cache


def casts_into_products(*outputs) -> int:
    """How many operands of matrix products in the (unevaluated) graph of `outputs` are casts
    (AsType) of evaluated arrays (the weights, the caches, the step's input), directly or through
    PASS_THROUGH ops on either side of the cast; the graph must hold products. (Casts of arrays
    computed in the step, such as the float32 RMSNorm and RoPE forms of MLX's CPU fallbacks
    casting their results back, are not weights.)"""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".dot") as f:
        mx.export_to_dot(f.name, *outputs)
        dot = f.read()
    op = dict(re.findall(r'\{ (\d+) \[label ="(\w+)"', dot))
    producer = {a: n for n, a in re.findall(r'(\d+) -> "([^"]+)"', dot)}
    inputs: dict = {}
    for a, n in re.findall(r'"([^"]+)" -> (\d+)', dot):
        inputs.setdefault(n, []).append(a)
    assert PRODUCTS & set(op.values()), sorted(set(op.values()))  # the parse found the products

    def origin(array):  # the op that made `array`, past PASS_THROUGH ops (None: an evaluated array)
        n = producer.get(array)
        while n is not None and op[n] in PASS_THROUGH:
            n = producer.get(inputs[n][0])
        return n

    def is_cast(array) -> bool:
        n = origin(array)
        return n is not None and op[n] == "AsType" and origin(inputs[n][0]) is None

    return sum(is_cast(a) for n, kind in op.items() if kind in PRODUCTS for a in inputs.get(n, []))


@pytest.fixture
def no_compile():
    """Compiled steps traced op by op (their graph visible to export_to_dot)."""
    mx.disable_compile()
    yield
    mx.enable_compile()


def test_the_check_sees_a_weight_cast(no_compile):
    """A bfloat16 head times a float32 row: MLX casts the weight, and the check counts it."""
    m = small_t3(mx.bfloat16)
    x = mx.random.normal((2, DIM))
    x16 = x.astype(mx.bfloat16)
    mx.eval(x, x16)
    assert casts_into_products(m.speech_head(x)) == 1
    assert casts_into_products(m.speech_head(x16)) == 0


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["plain", "layers", "graph"])
def test_half_precision_step_casts_no_weight(kind, dtype, no_compile):
    m = small_t3(dtype)
    m.compile_steps = kind
    cache = prefilled(m, dtype)
    step = step_kinds.make_step(m, PROMPT + 8)
    assert isinstance(step, {"layers": CompiledStep, "graph": GraphStep}.get(kind, object))
    x = mx.random.normal((2, 1, DIM), key=mx.random.key(2)).astype(dtype)
    mx.eval(x)
    logits = step(x, cache)
    assert logits.dtype == dtype
    assert casts_into_products(logits) == 0
    kv = (step.keys, step.values) if isinstance(step, GraphStep) else (cache[0].keys, cache[0].values)
    assert all(a.dtype == dtype for a in kv)


class KernelRecorder:
    """Stands in for mx.fast.cuda_kernel: records each launch (name, inputs, outputs' dtypes,
    template) and returns zeros of the outputs' shapes and dtypes."""

    def __init__(self):
        self.launches = []

    def __call__(self, name, input_names, output_names, source, **_):
        def launch(*, inputs, output_shapes, output_dtypes, template=(), grid=None, threadgroup=None, **__):
            self.launches.append(dict(name=name, inputs=dict(zip(input_names, inputs)), out_dtypes=list(output_dtypes),
                                      template=dict(template), grid=grid, threadgroup=threadgroup))
            return [mx.zeros(s, d) for s, d in zip(output_shapes, output_dtypes)]

        return launch


@pytest.fixture
def cuda_kernels_recorded(monkeypatch):
    recorder = KernelRecorder()
    monkeypatch.setattr(cuda_kernels, "on_cuda", lambda: True)
    monkeypatch.setattr(mx.fast, "cuda_kernel", recorder)
    cuda_kernels._gemv_kernel.cache_clear()
    cuda_kernels._attend_appended_kernel.cache_clear()
    yield recorder
    cuda_kernels._gemv_kernel.cache_clear()
    cuda_kernels._attend_appended_kernel.cache_clear()


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_graph_step_kernels_read_the_weights_as_stored(dtype, cuda_kernels_recorded):
    m = small_t3(dtype)
    cache = prefilled(m, dtype)
    assert m.compile_steps == "auto"
    step = step_kinds.make_step(m, PROMPT + 8)
    assert isinstance(step, GraphStep)  # "auto" on CUDA: the graph step and its kernels in half precision too
    x = mx.random.normal((2, 1, DIM), key=mx.random.key(2)).astype(dtype)
    logits = step(x, cache)
    assert logits.dtype == dtype and step.keys.dtype == dtype
    launches = cuda_kernels_recorded.launches
    names = [k["name"] for k in launches]
    assert names == ["t3_gemv2_norm", "t3_attend_appended_v2", "t3_gemv2_plain_res", "t3_gemv2_norm",
                     "t3_gemv2_swiglu_res"] * LAYERS + ["t3_gemv2_norm"]
    weights = [w for layer in m.tfmr.layers for w in (layer.self_attn.qkv_proj.weight, layer.self_attn.o_proj.weight,
                                                      layer.mlp.gate_up_proj.weight, layer.mlp.down_proj.weight)]
    weights.append(m.speech_head.weight)
    passed = [k["inputs"]["w"] for k in launches if "w" in k["inputs"]]
    assert len(passed) == len(weights) and all(p is w for p, w in zip(passed, weights))  # the very arrays: no cast
    for k in launches:
        assert k["template"].get("T") == dtype, k["name"]  # the half-precision kernels, not float32's
        assert all(d == dtype for d in k["out_dtypes"]), k["name"]
        for input_name, a in k["inputs"].items():
            if input_name in ("cos_t", "sin_t"):  # RoPE's angles, (1, D / 2): float32 by design
                assert a.dtype == mx.float32 and a.size == 32
            elif mx.issubdtype(a.dtype, mx.floating):
                assert a.dtype == dtype, (k["name"], input_name, a.dtype)


def test_float32_kernels_keep_their_launches(cuda_kernels_recorded):
    """float32: no type template (the kernel names and sources measured in the float32 records)."""
    m = small_t3(mx.float32)
    cache = prefilled(m, mx.float32)
    step = step_kinds.make_step(m, PROMPT + 8)
    step(mx.random.normal((2, 1, DIM)), cache)
    launches = cuda_kernels_recorded.launches
    assert len(launches) == 5 * LAYERS + 1 and all("T" not in k["template"] for k in launches)


@pytest.mark.parametrize("K, itemsize, warps", [(1024, 4, 1), (4096, 4, 4), (1024, 2, 1), (4096, 2, 2), (64, 4, 1),
                                                (16384, 4, 8), (65536, 2, 8)])
def test_gemv_warps_per_column_keep_a_lanes_loads_in_registers(K, itemsize, warps):
    assert cuda_kernels.warps_per_column(K, itemsize) == warps


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", [64, 1000, 1024, 4096, 8200])
def test_gemv_launch_covers_every_weight_column_and_value(K, dtype, cuda_kernels_recorded):
    """The launch's KS warps x V loads x 32 lanes x (16 bytes) span the whole weight row, and the
    grid has a warp group for every output column (N not a multiple of the columns per block too)."""
    N = 8194
    cuda_kernels.gemv(mx.zeros((2, 1, K), dtype), mx.zeros((N, K), dtype))
    (launch,) = cuda_kernels_recorded.launches
    t = launch["template"]
    per_load = 16 // mx.zeros((1,), dtype).itemsize
    assert t["KS"] * t["V"] * 32 * per_load >= K > (t["KS"] * t["V"] - t["KS"]) * 32 * per_load
    assert t["V"] <= 8 or t["KS"] == 8
    blocks, threads = launch["grid"][0] // launch["threadgroup"][0], launch["threadgroup"][0]
    columns_per_block = cuda_kernels.WARPS // t["KS"]
    assert threads == cuda_kernels.THREADS and blocks * columns_per_block >= N > (blocks - 1) * columns_per_block


def test_gemv_refuses_mixed_dtypes(cuda_kernels_recorded):
    w = mx.zeros((16, 64), mx.bfloat16)
    with pytest.raises(TypeError, match="one dtype"):
        cuda_kernels.gemv(mx.zeros((2, 1, 64)), w)


@pytest.mark.parametrize("kind", ["layers", "graph"])
def test_half_precision_decode_steps_in_the_weights_dtype(kind, monkeypatch):
    """T3.inference with float32 conditioning (as loaded from conds.pt) on bfloat16 weights: the
    prefill's cache and every step's input row are bfloat16."""
    m = small_t3(mx.bfloat16)
    m.compile_steps = kind
    seen = []
    make_step = fast_decode.make_step

    def recording_make_step(t3, capacity=0):
        step = make_step(t3, capacity)

        def recorded(x, cache):
            seen.append((x.dtype, cache[0].keys.dtype))
            return step(x, cache)

        return recorded

    monkeypatch.setattr(fast_decode, "make_step", recording_make_step)
    rng = np.random.default_rng(0)
    cond = T3Cond(speaker_emb=mx.array(rng.standard_normal((1, 256)).astype(np.float32)),
                  cond_prompt_speech_tokens=mx.array(rng.integers(0, 6561, (1, 150)).astype(np.int32)),
                  emotion_adv=0.5 * mx.ones((1, 1, 1)))
    text = np.concatenate([[255], rng.integers(1, 700, 20), [0]]).astype(np.int32)[None]
    tokens = m.inference(t3_cond=cond, text_tokens=np.concatenate([text, text]), max_new_tokens=6,
                         draw=GreedyDraw())
    assert tokens.shape[1] >= 1 and len(seen) >= 1
    assert all(s == (mx.bfloat16, mx.bfloat16) for s in seen), seen
