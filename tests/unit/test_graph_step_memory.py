"""The "graph" step's KV buffers live as long as the decode that made them, and no longer.

GraphStep compiles its own step method; kept on the object as a bound method, that was a
reference cycle, so every generate() left its step, both KV buffers (2 x 252 MB in float32 at the
old 1024-position capacity) and the prefill cache it took over held until Python's cyclic
collector ran: 600 MB more held after each of three decodes of the synthetic checkpoint on the
CPU, and the GPU pipeline benchmark's peak grew with its rounds. These tests run with the cyclic
collector off, so only reference counts free anything. The buffers' capacity is the decode's
positions rounded up to GraphStep.GROW (256).
"""
from __future__ import annotations

import gc
import weakref

import mlx.core as mx
import pytest

from mlx_impl.t3.inference import GreedyDraw, step_kinds
from mlx_impl.t3.inference.fast_decode import fast_decode
from mlx_impl.t3.inference.graph_step import GraphStep, capacity_for
from tests.unit.test_bf16_step import DIM, PROMPT, prefilled, small_t3


@pytest.fixture
def no_cyclic_gc():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def graph_t3():
    m = small_t3(mx.float32)
    m.compile_steps = "graph"
    return m


def test_graph_step_freed_with_its_last_reference(no_cyclic_gc):
    m = graph_t3()
    cache = prefilled(m, mx.float32)
    step = step_kinds.make_step(m, PROMPT + 8)
    assert isinstance(step, GraphStep)
    mx.eval(step(mx.random.normal((2, 1, DIM), key=mx.random.key(2)), cache))
    assert step.keys.shape[3] == capacity_for(PROMPT + 8) == GraphStep.GROW == 256
    buffers = weakref.ref(step.keys), weakref.ref(step.values)
    ref = weakref.ref(step)
    del step
    assert ref() is None, "the GraphStep outlived its last reference (a reference cycle)"
    assert all(b() is None for b in buffers)


def test_capacity_rounds_up_to_grow():
    assert [capacity_for(n) for n in (1, 256, 257, 450, 1025)] == [256, 256, 512, 512, 1280]


def decode(m):
    embeds = mx.random.normal((2, PROMPT, DIM), key=mx.random.key(3))
    return fast_decode(m, embeds, max_new_tokens=12, temperature=0.8, top_p=1.0, min_p=0.05,
                       repetition_penalty=1.2, cfg_weight=0.5, draw=GreedyDraw())


def test_fast_decode_holds_nothing_after_it_returns(no_cyclic_gc):
    m = graph_t3()
    first = decode(m)  # kernels, RoPE tables and the like made once
    held = mx.get_active_memory()
    for _ in range(3):
        assert (decode(m) == first).all()
    attn = m.tfmr.layers[0].self_attn
    one_buffer = len(m.tfmr.layers) * 2 * attn.n_heads * GraphStep.GROW * (DIM // attn.n_heads) * 4
    assert mx.get_active_memory() - held < one_buffer, "a decode's KV buffers are still held"
