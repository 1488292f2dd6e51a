"""Chatterbox Turbo's reference export (reference/export_turbo.py): deterministic, complete (every
registered turbo.* checkpoint, the activation checks), stale when its case or checkpoint changes, and
one clear error on bad input with nothing half-written. The parity tests themselves are the turbo_*
cases of tests/parity (test_parity.py: isolated, test_cumulative.py: mode turbo); select them with
`-k turbo`."""
import numpy as np
import pytest

from tests.export_checks import (CLI, assert_one_error_line_and_no_fixture, assert_one_file_per_stage_and_same_bytes,
                                 export_twice, linked_checkpoint, run_without_warnings)

pytestmark = pytest.mark.reference
SHORT_STEPS = 4  # the short case's T3 bound: time (the registered cases run 200)


@pytest.fixture(scope="module")
def turbo_ckpt():
    from parity.turbo_checkpoint import resolve_turbo_checkpoint

    return resolve_turbo_checkpoint()


@pytest.fixture(scope="module")
def short_case():
    """turbo_espeak bounded to SHORT_STEPS T3 steps after the first draw."""
    import dataclasses

    from parity.cases import load_turbo_cases

    base = load_turbo_cases()["turbo_espeak"]
    return dataclasses.replace(base, name="turbo_short", params={**base.params, "max_gen_len": SHORT_STEPS})


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory, turbo_ckpt, short_case):
    """The short case exported twice with one original ChatterboxTurboTTS (then released)."""
    from reference.export_turbo import export_turbo_case, load_original_turbo

    return export_twice(load_original_turbo, export_turbo_case, turbo_ckpt, short_case, tmp_path_factory,
                        "turbo_fx")


def test_turbo_export_twice_is_bit_identical(two_exports):
    assert_one_file_per_stage_and_same_bytes(*two_exports, "turbo")


def test_turbo_export_is_complete_and_sane(two_exports):
    """Every registered turbo.* checkpoint, the T3 runs of max_gen_len + 1 draws, generate()'s hand-over to
    S3Gen (tokens < 6561, three S3GEN_SIL), the output length 2 mel frames and 960 samples a token, SineGen's
    sine branch exercised."""
    from parity import registry
    from parity.fixtures import Fixture

    fx = Fixture.open(two_exports[0])
    assert fx.manifest["sanity"]["ok"], fx.manifest["sanity"]
    assert sorted(fx.manifest["tensors"]) == sorted(c.name for c in registry.load().of_model("turbo"))
    tokens = fx.tensor("turbo.t3.speech_tokens").reshape(-1)
    assert tokens.size == fx.tensor("turbo.t3_greedy.speech_tokens").size == SHORT_STEPS + 1  # no stop token drawn
    assert fx.tensor("turbo.t3.uniform_draws").size == fx.tensor("turbo.t3.sampling_margin").size == tokens.size
    assert fx.tensor("turbo.t3.logits_rep").shape == (tokens.size, 6563)
    s3gen_tokens = fx.tensor("turbo.flow.speech_tokens").reshape(-1)
    assert s3gen_tokens.tolist() == [t for t in tokens.tolist() if t < 6561] + [4299] * 3
    assert fx.tensor("turbo.hift.wav").shape[-1] == 960 * s3gen_tokens.size
    assert fx.tensor("turbo.flow.output_mel").shape[-1] == 2 * s3gen_tokens.size
    # the greedy run's picks are the argmax of its processed logits: its margins are positive
    assert np.all(fx.tensor("turbo.t3_greedy.sampling_margin") > 0)


def test_turbo_fixture_goes_stale(two_exports, turbo_ckpt, short_case):
    import dataclasses

    from parity.session import staleness

    root = two_exports[0].parent
    assert staleness(root, short_case, turbo_ckpt) is None
    assert staleness(root, dataclasses.replace(short_case, seed=short_case.seed + 1), turbo_ckpt) == "case seed changed"
    changed = dataclasses.replace(short_case, params={**short_case.params, "top_p": 0.9})
    assert staleness(root, changed, turbo_ckpt) == "case params changed"


@pytest.mark.parametrize("problem", ["missing_meanflow", "english_folder", "short_voice"])
def test_turbo_export_bad_input_one_clear_error_no_fixture(tmp_path, turbo_ckpt, problem):
    import soundfile as sf

    from parity.synthetic import DEFAULT_CKPT

    out = tmp_path / "fx"
    args = CLI + ["export", "--case", "turbo_espeak", "--out", str(out)]
    if problem == "missing_meanflow":
        args += ["--checkpoint", str(linked_checkpoint(turbo_ckpt.path, tmp_path, drop="s3gen_meanflow.safetensors"))]
        expect = "s3gen_meanflow.safetensors"
    elif problem == "english_folder":
        args += ["--checkpoint", str(DEFAULT_CKPT)]
        expect = "t3_cfg.safetensors"
    else:
        short = tmp_path / "short.wav"
        sf.write(short, (0.1 * np.sin(np.arange(16000 * 4) / 10.0)).astype(np.float32), 16000)
        args += ["--audio", str(short)]
        expect = "longer than 5 seconds"
    r = run_without_warnings(args, tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert_one_error_line_and_no_fixture(r, expect, out)
