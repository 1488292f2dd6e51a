"""mlx_impl.backend: the one device decision, MLX's settings applied only on request, the lanes that
run independent work on both CPU cores, and the layering (model files reach the CPU forms through
the backend only)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_impl import backend
from mlx_impl.backend import device, lanes, native

ROOT = Path(__file__).resolve().parents[2]
MLX_IMPL = ROOT / "mlx_impl"


def test_importing_mlx_impl_changes_no_environment_variable():
    """Importing the package and its backend changes nothing; importing the pipeline sets none of
    MLX's settings (third-party libraries it imports may set their own)."""
    code = ("import os; before = dict(os.environ); import mlx_impl, mlx_impl.backend; "
            "print(sorted(set(os.environ.items()) ^ set(before.items()))); import mlx_impl.tts; "
            "print(sorted(name for name in os.environ if name.startswith('MLX_')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout


def test_apply_mlx_defaults_keeps_what_the_user_set(monkeypatch):
    monkeypatch.delenv("MLX_MAX_OPS_PER_BUFFER", raising=False)
    monkeypatch.setenv("MLX_ENABLE_TF32", "1")
    backend.apply_mlx_defaults()
    assert os.environ["MLX_MAX_OPS_PER_BUFFER"] == device.MLX_DEFAULTS["MLX_MAX_OPS_PER_BUFFER"]
    assert os.environ["MLX_ENABLE_TF32"] == "1"


def test_the_device_decision_and_the_forms():
    assert backend.on_gpu() == (mx.default_device().type == mx.DeviceType.gpu)
    assert device.resolve_form(None) == (backend.NATIVE if backend.on_gpu() else backend.FAST)
    with pytest.raises(ValueError, match="impl must be"):
        device.resolve_form("naive")


def test_balance_puts_the_longest_job_first_onto_the_less_loaded_lane():
    assert lanes._balance([1, 1]) == ([0], [1])
    assert lanes._balance([5, 7, 11, 9]) == ([2, 0], [3, 1])
    assert lanes._balance([3]) == ([0], [])


def test_parallel_lanes_returns_each_jobs_output_in_order_bit_identical_to_one_stream():
    rng = np.random.default_rng(0)
    xs = [mx.array(rng.standard_normal((300, 256)).astype(np.float32)) for _ in range(5)]
    w = mx.array(rng.standard_normal((256, 256)).astype(np.float32))
    jobs = [lambda x=x: backend.gelu(x @ w) + x for x in xs]
    seq = [job() for job in jobs]
    par = backend.parallel_lanes(jobs, costs=[1, 5, 2, 4, 3])
    assert all(np.array_equal(np.array(a), np.array(b)) for a, b in zip(par, seq))


def test_interleave_points_are_recorded_only_while_a_lane_is_built():
    x = mx.ones((3,))
    assert backend.interleave_point(x) is x and lanes._interleave_points is None
    seen = []

    def job():
        h = backend.interleave_point(x + 1)
        seen.append(list(lanes._interleave_points))
        return backend.interleave_point(h * 2)

    out, points = lanes._build(job, mx.default_stream(mx.cpu))
    assert len(seen[0]) == 1 and len(points) == 3 and points[-1] is out
    assert lanes._interleave_points is None


def test_parallel_batch_equals_the_call_on_the_whole_batch():
    rng = np.random.default_rng(1)
    a, b = (mx.array(rng.standard_normal((4, 50, 64)).astype(np.float32)) for _ in range(2))
    fn = lambda x, y: backend.softmax(x @ y.swapaxes(1, 2)) @ y  # rows independent
    assert np.array_equal(np.array(backend.parallel_batch(fn, a, b)), np.array(fn(a, b)))


def _lstm_pair(input_size, hidden_size, weight_scale, seed):
    """nn.LSTM and backend.LSTM with the same seeded weights (scaled: gates reach exp's clip)."""
    import mlx.nn as nn

    rng = np.random.default_rng(seed)
    plain = nn.LSTM(input_size, hidden_size)
    plain.update({name: mx.array(rng.standard_normal(p.shape).astype(np.float32) * weight_scale)
                  for name, p in plain.parameters().items()})
    fast = backend.LSTM(input_size, hidden_size)
    fast.update(plain.parameters())
    return plain, fast, rng


@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_gives_nn_lstms_bits(with_state):
    """The VoiceEncoder's LSTM (backend.LSTM: the recurrence kernel where built): every hidden and
    cell state bit-identical to nn.LSTM's, first layer (40 -> 256, first step without a state) and
    with a given state."""
    import mlx.nn as nn

    mx.random.seed(3)
    plain = nn.LSTM(40, 256)
    fast = backend.LSTM(40, 256)
    fast.update(plain.parameters())
    x = mx.random.uniform(shape=(6, 160, 40))
    state = (mx.random.normal((6, 256)), mx.random.normal((6, 256))) if with_state else (None, None)
    for a, b in zip(plain(x, *state), fast(x, *state)):
        assert a.shape == (6, 160, 256) and np.array_equal(np.array(a), np.array(b))


@pytest.mark.parametrize("shape,weight_scale", [((6, 160, 256, 256), 0.2), ((3, 17, 8, 16), 30.0),
                                                 ((1, 1, 4, 8), 1.0), ((2, 3, 5, 40, 32), 1.0)])
def test_lstm_kernel_and_compiled_steps_give_nn_lstms_bits(shape, weight_scale):
    """Both CPU forms of backend.LSTM (the recurrence kernel, one compiled graph a step) against
    nn.LSTM, bit for bit: gates far into the sigmoid's and tanh's saturation (scale 30: exp's
    argument past its +-88 clip), one step, extra leading axes."""
    from mlx_impl.backend import recurrent

    *lead, length, input_size, hidden_size = shape
    plain, fast, rng = _lstm_pair(input_size, hidden_size, weight_scale, seed=sum(shape))
    x = mx.array(rng.standard_normal((*lead, length, input_size)).astype(np.float32))
    want = [np.array(a) for a in plain(x)]
    xw = mx.addmm(fast.bias, x, fast.Wx.T)
    forms = {"compiled steps": recurrent._compiled_steps(xw, fast.Wh.T), "backend.LSTM": fast(x)}
    if backend.native.available():
        forms["kernel"] = recurrent._kernel_layer(xw, fast.Wh)
    for form, got in forms.items():
        for a, b in zip(want, got):
            assert a.shape == (*lead, length, hidden_size) and np.array_equal(a, np.array(b)), form


def test_lstm_kernel_gives_nn_lstms_bits_for_every_partial_count():
    """The kernel splits the rows (partials) over the stream's threads only where the BLAS gives a
    block's rows the whole product's bits (MKL's kernel depends on the row count here): 1 to 12
    rows at the VoiceEncoder's width, against nn.LSTM bit for bit."""
    if not backend.native.available():
        pytest.skip(backend.native.why_unavailable())
    plain, fast, rng = _lstm_pair(40, 256, 0.2, seed=7)
    for rows in range(1, 13):
        x = mx.array(rng.standard_normal((rows, 5, 40)).astype(np.float32))
        for a, b in zip(plain(x), fast(x)):
            assert np.array_equal(np.array(a), np.array(b)), rows


def test_mlx_sigmoid_gives_mx_sigmoids_bits():
    """backend.mlx_sigmoid (kernels/mlx_bits.h: MLX's exp with a vectorisable floor) against
    mx.sigmoid on 2^24 float32 bit patterns of every exponent, the exp clips (+-88 / log2 e) and
    the specials; NaN stays NaN."""
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2 ** 32, 2 ** 24, dtype=np.uint64).astype(np.uint32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 88.0, -88.0, 87.99999, -87.99999, 88.00001, 1e-45,
                        np.nextafter(np.float32(88.0), np.float32(0)), 127.0, -128.5], dtype=np.float32)
    x = mx.array(np.concatenate([bits.view(np.float32), special]))
    want, got = np.array(mx.sigmoid(x)), np.array(backend.mlx_sigmoid(x))
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan) and np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_lstm_kernel_rejects_bad_shapes():
    """The kernel's own check: one clear error for a w_hh that is not (4H, H) or an empty sequence."""
    if not backend.native.available():
        pytest.skip(backend.native.why_unavailable())
    k = backend.native.kernels()
    with pytest.raises(ValueError, match="lstm: xw"):
        k.lstm(mx.zeros((2, 3, 12)), mx.zeros((12, 4)))
    with pytest.raises(ValueError, match="lstm: xw"):
        k.lstm(mx.zeros((2, 0, 16)), mx.zeros((16, 4)))


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")


def test_layering():
    """The backend imports nothing above it (only mlx, numpy and itself); the model packages import
    no parity / reference / tests; none imports the old mlx_impl.cpu_kernels; only backend/device.py
    asks for the device (the rest, T3's fast decode included, asks backend.on_gpu / on_cuda)."""
    outside = {"__future__", "contextlib", "itertools", "math", "mlx", "numpy", "os", "typing"}
    for path in (MLX_IMPL / "backend").rglob("*.py"):
        for name in _imports(path):
            inside = name.startswith(".") and not name.startswith("..")
            assert inside or name.split(".")[0] in outside, (path.name, name)
    for package in ("s3gen", "s3tokenizer", "t3", "voice_encoder", "tokenizers"):
        for path in (MLX_IMPL / package).rglob("*.py"):
            rel = path.relative_to(MLX_IMPL).as_posix()
            for name in _imports(path):
                assert name.split(".")[0] not in ("parity", "reference", "tests"), (rel, name)
                assert "cpu_kernels" not in name, (rel, name)
    for path in MLX_IMPL.rglob("*.py"):
        rel = path.relative_to(MLX_IMPL).as_posix()
        if "default_device()" in path.read_text():
            assert rel == "backend/device.py", rel
