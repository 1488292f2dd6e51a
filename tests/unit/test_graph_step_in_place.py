"""GraphStep's KV cache writes on MLX's CUDA backend: the attention kernel writes the new key / value
into the cache buffers in place (cuda_kernels.attend_appended_cuda), and GraphStep then skips its
slice updates (which copied both buffers every step there). The kernels are stood in for by a
recorder that returns fixed outputs and writes nothing, so these tests check GraphStep's side: the
first step's check notices writes that did not land and falls back to slice updates; a confirmed
in-place step leaves the buffers to the kernel; and the kernel's source writes both buffers."""
from __future__ import annotations

import mlx.core as mx
import pytest

from mlx_impl.t3.inference import cuda_kernels, step_kinds
from mlx_impl.t3.inference.graph_step import GraphStep

from test_bf16_step import DIM, PROMPT, prefilled, small_t3


class FixedOutputKernels:
    """mx.fast.cuda_kernel's stand-in: every output filled with `fill`, no input written."""

    def __init__(self, fill: float):
        self.fill, self.sources = fill, {}

    def __call__(self, name, input_names, output_names, source, **_):
        self.sources[name] = source

        def launch(*, inputs, output_shapes, output_dtypes, **__):
            return [mx.full(s, self.fill, d) for s, d in zip(output_shapes, output_dtypes)]

        return launch


def kernels_standing_in(monkeypatch, fill):
    kernels = FixedOutputKernels(fill)
    monkeypatch.setattr(cuda_kernels, "on_cuda", lambda: True)
    monkeypatch.setattr(mx.fast, "cuda_kernel", kernels)
    cuda_kernels._gemv_kernel.cache_clear()
    cuda_kernels._attend_appended_kernel.cache_clear()
    return kernels


@pytest.fixture(autouse=True)
def fresh_kernel_caches():
    yield
    cuda_kernels._gemv_kernel.cache_clear()
    cuda_kernels._attend_appended_kernel.cache_clear()


def graph_step(dtype=mx.float32):
    m = small_t3(dtype)
    m.compile_steps = "graph"  # "auto" picks it on CUDA only
    cache = prefilled(m, dtype)
    step = step_kinds.make_step(m, PROMPT + 8)
    assert isinstance(step, GraphStep)
    x = mx.random.normal((2, 1, DIM), key=mx.random.key(2)).astype(dtype)
    return step, cache, x


def test_writes_that_did_not_land_fall_back_to_slice_updates(monkeypatch):
    kernels_standing_in(monkeypatch, fill=1.0)  # new_kv all ones; the buffers untouched by the "kernel"
    step, cache, x = graph_step()
    step(x, cache)
    assert step.attention_in_kernel(x, step.keys.shape[4], step.keys.shape[3])  # on CUDA the kernel path applies
    assert step.in_place is False  # the first step's check saw the position still zero
    assert mx.all(step.keys[:, :, :, PROMPT] == 1).item() and mx.all(step.values[:, :, :, PROMPT] == 1).item()
    step(x, cache)
    assert not step.writes_in_place(x)
    assert mx.all(step.keys[:, :, :, PROMPT + 1] == 1).item()


def test_an_all_zero_new_entry_decides_nothing(monkeypatch):
    kernels_standing_in(monkeypatch, fill=0.0)
    step, cache, x = graph_step()
    step(x, cache)
    assert step.in_place is None  # checked again on the next step
    assert step.offset == PROMPT + 1


def test_confirmed_in_place_steps_leave_the_buffers_to_the_kernel(monkeypatch):
    kernels_standing_in(monkeypatch, fill=1.0)
    step, cache, x = graph_step()
    step(x, cache)  # takes the cache over
    step.in_place = True
    before = mx.array(step.keys)
    step(x, cache)
    assert step.offset == PROMPT + 2
    assert mx.array_equal(step.keys, before).item()  # no slice update: the kernel owns the write


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16], ids=["fp32", "bf16"])
def test_the_attention_kernel_writes_both_buffers_at_the_offset(monkeypatch, dtype):
    kernels = kernels_standing_in(monkeypatch, fill=1.0)
    step, cache, x = graph_step(dtype)
    step(x, cache)
    source = kernels.sources["t3_attend_appended_v2"]
    assert "const_cast" in source and "(kc)[(size_t)S * D + tid]" in source and "(vc)[(size_t)S * D + tid]" in source


def test_off_cuda_the_step_never_writes_in_place():
    step, cache, x = graph_step()
    step(x, cache)
    assert not step.writes_in_place(x) and step.in_place is None
