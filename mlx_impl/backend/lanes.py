"""Running independent work on both CPU cores.

MLX's CPU backend runs each stream's work on one thread, so on the CPU independent pieces of work
run on two streams at once: the two halves of a large elementwise operation (`split_elementwise`),
the heads of an attention (attention.py), and whole jobs, e.g. the flow's two CFG halves or HiFT's
resblocks (`parallel_lanes`, `parallel_batch`). On a GPU everything runs as written, in order.
"""
from __future__ import annotations

from contextlib import contextmanager
from itertools import zip_longest
from typing import Callable, List, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .device import on_gpu
from .native import available, kernels

_SPLIT_MIN_ELEMENTS = 1 << 19

_side_stream = None
_may_split = True  # off while parallel_lanes builds a lane: both streams are already busy
_interleave_points: Optional[list] = None  # the points of the job parallel_lanes is building


def side_stream():
    """The second CPU stream (the first is MLX's default one)."""
    global _side_stream
    if _side_stream is None:
        _side_stream = mx.new_stream(mx.cpu)
    return _side_stream


def may_split(n_elements: int) -> bool:
    """Whether work of this size is worth splitting over the two streams (and they are free)."""
    return _may_split and n_elements >= _SPLIT_MIN_ELEMENTS


@contextmanager
def whole_on_stream(stream):
    """Build the operations inside on `stream`, none of them split over the side stream."""
    global _may_split
    before, _may_split = _may_split, False
    try:
        with mx.stream(stream):
            yield
    finally:
        _may_split = before


def on_both_streams(first: Callable, second: Callable):
    """(first(), second()), second's operations on the side stream."""
    a = first()
    with mx.stream(side_stream()):
        b = second()
    return a, b


def split_elementwise(fn: Callable[[mx.array], mx.array], x: mx.array) -> mx.array:
    """fn (elementwise) over x; for large x the two halves of its first axis longer than 1 on the
    two streams (the machines this targets have 2+ cores)."""
    if not may_split(x.size):
        return fn(x)
    axis = next((i for i, n in enumerate(x.shape) if n > 1), None)
    if axis is None:
        return fn(x)
    half = x.shape[axis] // 2
    lo, hi = on_both_streams(lambda: fn(mx.split(x, [half], axis=axis)[0]),
                             lambda: fn(mx.split(x, [half], axis=axis)[1]))
    return mx.concatenate([lo, hi], axis=axis)


@contextmanager
def one_blas_thread(streams):
    """BLAS products and kernels queued on each of `streams` (CPU streams that will run at the same
    time) while inside use one thread each (the BLAS setting is Intel MKL's: other BLAS libraries
    keep theirs; a no-op without the kernels). The settings take effect in each stream's queue
    order, and MLX queues work when it is evaluated: arrays built inside must be evaluated
    (`mx.eval` / `mx.async_eval`) inside too; a lazy graph evaluated after the block runs with the
    default threads (`stream_blas_threads()` reads the setting in queue order)."""
    if not available():
        yield
        return

    def set_all(n):
        for s in streams:
            with mx.stream(s):
                kernels().set_stream_blas_threads(n)

    set_all(1)
    try:
        yield
    finally:
        set_all(0)


def interleave_point(x):
    """Marks x (a block's output) as a point where the job that parallel_lanes is building may start
    to be evaluated, in turn with the other lane's points; on a GPU, where the work is queued
    (`gpu_block_queued`); x unchanged (elsewhere a no-op)."""
    if _interleave_points is not None:
        _interleave_points.append(x)
    elif on_gpu():
        gpu_block_queued(x)
    return x


_gpu_previous_block: Optional[mx.array] = None


def gpu_block_queued(x) -> None:
    """On a GPU: x's graph is queued (`mx.async_eval`), then the host waits for the block queued
    before it, so that at most two blocks' work is in flight. MLX's GPU backends keep the buffers of
    queued work until it has run: a flow-estimator pass queued whole held ~2.8 GB of temporaries
    (H100, float32, 300 tokens) where the CPU, which frees them as it goes, held 0.08 GB. The GPU
    stays busy (one block is always queued behind the running one)."""
    global _gpu_previous_block
    mx.async_eval(x)
    if _gpu_previous_block is not None:
        mx.eval(_gpu_previous_block)
    _gpu_previous_block = x


def parallel_lanes(jobs: Sequence[Callable[[], mx.array]], costs: Optional[Sequence[float]] = None) -> List:
    """The outputs of independent jobs (callables without arguments), in their order.

    On the CPU the jobs run as two lanes at once, lane 0 on the default stream and lane 1 on the
    side stream, with one BLAS thread each: each job goes to the less loaded lane, longest first
    (`costs`, e.g. multiply counts; equal by default). The lanes' graphs are queued in turn
    (`mx.async_eval`), job by job, and inside a job at each of its `interleave_point`s: MLX's CPU
    scheduler holds a bounded number of tasks, so one lane's graph queued whole would leave the
    other stream idle until its end. On a GPU: the jobs one after the other, each a block
    (`interleave_point`)."""
    if on_gpu():
        return [interleave_point(job()) for job in jobs]
    lanes = _balance(costs if costs is not None else [1] * len(jobs))
    streams = (mx.default_stream(mx.cpu), side_stream())
    outs = [None] * len(jobs)
    with one_blas_thread(streams):
        for turn in zip_longest(*lanes):
            points = []
            for lane, k in enumerate(turn):
                if k is not None:
                    outs[k], job_points = _build(jobs[k], streams[lane])
                    points.append(job_points)
            for group in _in_turn(points):
                mx.async_eval(group)
    return outs


def parallel_batch(fn: Callable[..., mx.array], *inputs: mx.array) -> mx.array:
    """fn(*inputs) for inputs batched on their first axis. On the CPU as the two halves of the
    batch on two lanes (`parallel_lanes`), concatenated: the same rows, computed in two batches of
    B / 2 instead of one of B. On a GPU one call on the whole batch."""
    if on_gpu():
        return fn(*inputs)
    b = inputs[0].shape[0] // 2

    def half(rows):
        return lambda: fn(*(a[rows] for a in inputs))

    return mx.concatenate(parallel_lanes([half(slice(0, b)), half(slice(b, 2 * b))]), axis=0)


def multiply_count(frames: int, *modules: nn.Module) -> int:
    """frames x the weights of `modules` (convolutions applied to `frames` rows): a job's cost for
    `parallel_lanes`."""
    return frames * sum(v.size for m in modules for k, v in tree_flatten(m.parameters()) if k.endswith("weight"))


def _balance(costs: Sequence[float]) -> tuple:
    """Job indices per lane: longest first onto the less loaded of two lanes."""
    lanes, load = ([], []), [0, 0]
    for k in sorted(range(len(costs)), key=lambda k: -costs[k]):
        lane = 0 if load[0] <= load[1] else 1
        lanes[lane].append(k)
        load[lane] += costs[k]
    return lanes


def _in_turn(point_lists):
    """The lanes' points in turn, one group per turn; each list drops its points as they are queued
    (so that MLX may reuse their buffers once nothing else needs them)."""
    while any(point_lists):
        yield [points.pop(0) for points in point_lists if points]


def _build(job, stream):
    """job()'s lazy output built on `stream`, and its interleave points (the output last)."""
    global _interleave_points
    before, _interleave_points = _interleave_points, []
    try:
        with whole_on_stream(stream):
            out = job()
        return out, _interleave_points + [out]
    finally:
        _interleave_points = before
