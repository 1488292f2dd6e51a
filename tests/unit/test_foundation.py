"""Registry, cases, metrics and the fixture format (no model needed)."""
import json
import math

import numpy as np
import pytest

from parity import registry
from parity.cases import load_cases
from parity.errors import ParityError
from parity.fixtures import Fixture, FixtureWriter, RenamedFixture, diff_fixtures
from parity.metrics import check, compare


def test_registry_is_consistent():
    reg = registry.load()
    assert len(reg.checkpoints) >= 50
    for cp in reg.checkpoints.values():
        assert cp.stage in reg.models[cp.model] and cp.source and cp.layout
        for prec in registry.PRECISIONS:
            tol = cp.tolerance(prec)
            if cp.kind == "int":
                assert tol.exact is not None
            else:
                assert tol.snr_db is not None or tol.cosine is not None or tol.max_abs is not None
    # the fp32 goals of the issues
    assert reg["flow.mu"].tolerance("fp32").snr_db >= 100
    assert reg["t3.speech_tokens"].tolerance("fp32").exact == 1.0
    # the defaults the unit tests read (registry.default) are the ones checkpoints without an entry take
    assert reg.default("float").snr_db == reg["flow.mu"].tolerance("fp32").snr_db == 100.0
    assert reg.default("int", "bf16").exact == reg["s3tok.prompt_tokens"].tolerance("bf16").exact


def test_tolerance_override_needs_reason(tmp_path):
    src = registry.REGISTRY_FILE.read_text()
    bad = src + '\n[tolerances.fp32."flow.mu"]\nsnr_db = 60.0\n'
    p = tmp_path / "c.toml"
    p.write_text(bad)
    with pytest.raises(ValueError, match="measured.*reason"):
        registry.load.__wrapped__(p)


def test_cases_exist_and_cover_inputs():
    cases = load_cases()
    assert len(cases) >= 3
    for c in cases.values():
        assert c.audio_path.is_file(), c.audio_path
        assert c.text.strip()
        assert c.params["max_new_tokens"] >= 200


def test_metrics_float():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(10000)
    m = compare(a, a + 1e-5 * rng.standard_normal(10000))
    assert 95 < m.snr_db < 105 and m.cosine > 0.999999
    assert compare(a, a).snr_db == math.inf
    # -inf at the same places (filtered logits) match; a differing one is counted
    b = a.copy(); b[:5] = -np.inf
    assert compare(b, b).nonfinite_mismatch == 0
    c = b.copy(); c[7] = -np.inf
    m = compare(b, c)
    assert m.nonfinite_mismatch == 1
    assert check(m, registry.Tolerance(snr_db=100), "float")


def test_metrics_int_and_shapes():
    m = compare(np.array([1, 2, 3, 4]), np.array([1, 2, 9, 4]), "int")
    assert m.exact == 0.75 and m.first_mismatch == 2
    assert check(m, registry.Tolerance(exact=1.0), "int")
    m = compare(np.array([1, 2, 3]), np.array([1, 2, 3, 4]), "int")
    assert m.length_mismatch and m.first_mismatch == 3
    assert check(m, registry.Tolerance(exact=1.0), "int")
    m = compare(np.zeros((2, 3)), np.zeros((3, 2)))
    assert m.length_mismatch and check(m, registry.Tolerance(snr_db=100), "float")


def _writer():
    w = FixtureWriter()
    w.add("flow.mu", np.arange(12, dtype=np.float32).reshape(1, 3, 4))
    w.add("t3.speech_tokens", np.array([[1, 2, 3]], dtype=np.int64))
    return w


def test_fixture_roundtrip_and_determinism(tmp_path):
    a = _writer().write(tmp_path / "a" / "case", {"case": {"name": "case"}})
    b = _writer().write(tmp_path / "b" / "case", {"case": {"name": "case"}})
    for f in sorted(p.name for p in a.iterdir()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    fx = Fixture.open(a)
    assert fx.tensor("t3.speech_tokens").dtype == np.int32  # int64 stored as int32
    entry = fx.manifest["tensors"]["flow.mu"]
    assert entry["shape"] == [1, 3, 4] and entry["file"] == "flow.safetensors" and entry["max"] == 11.0
    # MLX (and so MLX Swift's loadArrays) reads the stage files
    import mlx.core as mx

    arrays = mx.load(str(a / "flow.safetensors"))
    assert np.array_equal(np.array(arrays["flow.mu"]), fx.tensor("flow.mu"))
    assert diff_fixtures(fx, Fixture.open(b))[-1] == "2 of 2 tensors bit-identical"


def test_renamed_fixture_reads_the_other_models_names(tmp_path):
    w = FixtureWriter()
    w.add("turbo.t3.logits_raw", np.arange(3, dtype=np.float32))
    inner = Fixture.open(w.write(tmp_path / "case", {"case": {"name": "case"}}))
    fx = RenamedFixture(inner, lambda name: "turbo." + name)
    assert fx.has("t3.logits_raw") and not fx.has("turbo.t3.logits_raw")
    np.testing.assert_array_equal(fx.tensor("t3.logits_raw"), np.arange(3, dtype=np.float32))
    assert fx.manifest is inner.manifest  # everything but the tensors as the fixture has it


def test_fixture_write_is_atomic(tmp_path):
    w = _writer()
    w.tensors["flow.mu"] = object()  # makes the write fail half-way
    with pytest.raises(Exception):
        w.write(tmp_path / "case", {})
    assert list(tmp_path.iterdir()) == []  # no partial folder, no temporary left behind


def test_unknown_checkpoint_rejected():
    with pytest.raises(KeyError, match="not a registered checkpoint"):
        FixtureWriter().add("nope.tensor", np.zeros(1))


def test_fixture_open_errors(tmp_path):
    with pytest.raises(ParityError, match="manifest missing"):
        Fixture.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ParityError, match="malformed"):
        Fixture.open(tmp_path)


def test_flow_token_positions_map_to_decoding_steps():
    """flow.speech_tokens is T3's row 0 cut after SOS / before EOS, then the ids < 6561: a mismatch
    at its position k happened at the decoding step of the k-th kept token (the flip rule judges
    steps, not positions)."""
    import numpy as np

    from mlx_impl.tts import drop_invalid_tokens, s3gen_speech_tokens, s3gen_token_positions
    from parity.flips import flow_position_step

    t3 = np.array([[5, 7000, 9, 6561 + 1500, 3, 6562, 8]])  # 6562: EOS, 7000 / 8061: not speech
    np.testing.assert_array_equal(s3gen_token_positions(t3[0]), [0, 2, 4])
    kept = drop_invalid_tokens(t3[0])
    np.testing.assert_array_equal(s3gen_speech_tokens(t3[0]), kept[kept < 6561])  # as generate() picks them
    np.testing.assert_array_equal(s3gen_token_positions(np.array([7, 6561, 4, 8000, 2])), [2, 4])  # after SOS

    assert flow_position_step(t3, 2) == 4
    assert flow_position_step(t3, 3) == 5  # past the end: one after the last kept
