"""The precision matrix's bookkeeping: a run for some cases/precisions updates only those rows."""
from parity.precision import merge_rows


def row(case, prec, snr):
    return {"case": case, "precision": prec, "mel_snr_db": snr}


def _stand_in_session(monkeypatch, tmp_path, fixture=lambda case: f"fx:{case}", ckpt_for=lambda model: f"ckpt:{model}"):
    """cmd_precision with nothing loaded: ParitySession.create gives a session whose fixtures and checkpoints
    are what `fixture` / `ckpt_for` name, the VoiceEncoder is a name too, and the records go to tmp_path."""
    from types import SimpleNamespace

    import mlx_impl.convert.voice_encoder as ve_conv
    import parity.session
    from parity import precision

    session = SimpleNamespace(ckpt=SimpleNamespace(state=lambda c: {}), fixture=fixture, ckpt_for=ckpt_for)
    monkeypatch.setattr(parity.session.ParitySession, "create", staticmethod(lambda: session))
    monkeypatch.setattr(ve_conv, "load_voice_encoder", lambda state: "ve")
    monkeypatch.setattr(precision, "OUT", tmp_path)


def test_new_rows_replace_same_case_and_precision_only():
    old = [row("a", "fp32", 1), row("a", "fp16", 2), row("b", "fp32", 3)]
    merged = merge_rows(old, [row("a", "fp16", 20), row("c", "q4", 5)])
    assert [(r["case"], r["precision"], r["mel_snr_db"]) for r in merged] == [
        ("a", "fp32", 1), ("a", "fp16", 20), ("b", "fp32", 3), ("c", "q4", 5)]


def test_vc_rows_have_no_token_agreement_and_the_other_bounds_apply():
    """A voice-conversion row (no T3): token agreement must be n/a (None), the mel / waveform / speaker
    bounds are checked as for the English rows; a missing value fails rather than passes."""
    from parity.precision import NOT_APPLICABLE, check_row

    tol = {"token_agreement": 1.0, "mel_snr_db": 100.0, "wav_snr_db": 60.0, "speaker_cosine": 0.9999,
           "measured": "x"}
    vc = {"token_agreement": None, "mel_snr_db": 120.0, "wav_snr_db": 70.0, "speaker_cosine": 1.0}
    assert check_row(vc, tol, NOT_APPLICABLE["vc"]) == []
    assert check_row({**vc, "wav_snr_db": 59.0}, tol, NOT_APPLICABLE["vc"]) == ["wav_snr_db 59 < 60.0"]
    assert check_row({**vc, "token_agreement": 1.0}, tol, NOT_APPLICABLE["vc"]) == [
        "token_agreement 1.0 measured, but it does not apply to this model"]
    assert check_row(vc, tol) == ["token_agreement n/a < 1.0"]  # an English row must have it


def test_vc_cases_skip_q4_and_unknown_cases_are_named(capsys):
    import pytest

    from parity.errors import ParityError
    from parity.precision import PRECISIONS, plan

    assert plan(["espeak_22k", "vc_stereo_to_espeak"], list(PRECISIONS)) == [
        ("espeak_22k", "tts", list(PRECISIONS)), ("vc_stereo_to_espeak", "vc", ["fp32", "fp16", "bf16"])]
    assert "[vc_stereo_to_espeak] q4 not measured: vc has no T3" in capsys.readouterr().out
    with pytest.raises(ParityError, match="--cases no_such_case: unknown case"):
        plan(["no_such_case"], ["fp32"])


def test_turbo_cases_get_all_four_rows_on_the_turbo_checkpoint(tmp_path, monkeypatch, capsys):
    """A Turbo case (turbo_*): fp32, fp16, bf16 and q4 rows (its GPT-2 T3 quantizes), measured by
    measure_turbo on the Turbo checkpoint (ParitySession.ckpt_for("turbo")), written with model "turbo"
    and checked against [precision_matrix.<precision>]; the drawn tokens stay out of the record."""
    import json
    from types import SimpleNamespace

    from parity import precision

    assert precision.plan(["turbo_espeak"], list(precision.PRECISIONS)) == [
        ("turbo_espeak", "turbo", list(precision.PRECISIONS))]
    calls = []

    def fake_turbo(fx, ckpt, prec, n_tokens, ve):
        calls.append((fx, ckpt, prec, n_tokens))
        return {"token_agreement": 1.0 if prec == "fp32" else 0.5, "first_token_mismatch": None, "tokens": n_tokens,
                "mel_snr_db": 120.0, "wav_snr_db": 70.0, "speaker_cosine": 1.0, "seconds": 0.0, "drawn": [1, 2]}

    _stand_in_session(monkeypatch, tmp_path)
    monkeypatch.setattr(precision, "measure_turbo", fake_turbo)
    precision.cmd_precision(SimpleNamespace(cases=["turbo_espeak"], precisions=list(precision.PRECISIONS), tokens=7))
    assert calls == [("fx:turbo_espeak", "ckpt:turbo", p, 7) for p in precision.PRECISIONS]
    rows = json.loads((tmp_path / "precision.json").read_text())
    assert [(r["case"], r["model"], r["precision"]) for r in rows] == [
        ("turbo_espeak", "turbo", p) for p in precision.PRECISIONS]
    assert all("drawn" not in r and r["failures"] == [] for r in rows)
    assert "| turbo_espeak | q4 | 0.500 | 120.0 | 70.0 |" in (tmp_path / "precision.md").read_text()


def test_turbo_half_precision_waveform_bound_is_its_own_and_documented():
    """Turbo's fp16 / bf16 rows take their own measured waveform bound ([precision_matrix.turbo.*]: the
    SineGen phase drift over its 8.2 s case), with the value and reason beside it; every other bound, and
    the English rows' bounds, stay the shared ones."""
    from parity.precision import _tolerances, row_tolerance

    tols = _tolerances()
    for prec in ("fp16", "bf16"):
        turbo, shared = row_tolerance(tols, "turbo", prec), row_tolerance(tols, "tts", prec)
        assert turbo["wav_snr_db"] == 9.0 and shared["wav_snr_db"] == 10.0
        assert turbo["measured"] and turbo["reason"] and "measured" not in shared
        assert {k: v for k, v in turbo.items() if k not in ("wav_snr_db", "measured", "reason")} == {
            k: v for k, v in shared.items() if k != "wav_snr_db"}
    assert row_tolerance(tols, "turbo", "q4") == row_tolerance(tols, "tts", "q4")
    assert "turbo" not in row_tolerance(tols, "tts", "fp32")


def test_mtl_cases_get_all_four_rows_on_the_mtl_checkpoint(tmp_path, monkeypatch):
    """A multilingual case (mtl_*): fp32, fp16, bf16 and q4 rows, measured by measure_mtl on the multilingual
    checkpoint (ParitySession.ckpt_for("mtl")), written with model "mtl" and checked against the shared
    [precision_matrix.<precision>] bounds; the default --cases measure one multilingual case."""
    import argparse
    import json

    import pytest
    from types import SimpleNamespace

    from parity import precision

    assert precision.plan(["mtl_de"], list(precision.PRECISIONS)) == [("mtl_de", "mtl", list(precision.PRECISIONS))]
    parser = argparse.ArgumentParser()
    precision.register(parser.add_subparsers())
    assert "mtl_de" in parser.parse_args(["precision"]).cases
    calls = []

    def fake_mtl(fx, ckpt, prec, n_tokens, ve):
        calls.append((fx, ckpt, prec, n_tokens))
        return {"token_agreement": 1.0 if prec == "fp32" else 0.5, "first_token_mismatch": None, "tokens": n_tokens,
                "mel_snr_db": 20.0 if prec == "bf16" else 120.0, "wav_snr_db": 70.0, "speaker_cosine": 1.0,
                "seconds": 0.0}

    _stand_in_session(monkeypatch, tmp_path)
    monkeypatch.setattr(precision, "measure_mtl", fake_mtl)
    with pytest.raises(SystemExit, match="1"):  # the bf16 row's mel is under its bound
        precision.cmd_precision(SimpleNamespace(cases=["mtl_de"], precisions=list(precision.PRECISIONS), tokens=7))
    assert calls == [("fx:mtl_de", "ckpt:mtl", p, 7) for p in precision.PRECISIONS]
    rows = json.loads((tmp_path / "precision.json").read_text())
    assert [(r["case"], r["model"], r["precision"]) for r in rows] == [("mtl_de", "mtl", p) for p in precision.PRECISIONS]
    shared_bf16 = precision.row_tolerance(precision._tolerances(), "tts", "bf16")["mel_snr_db"]
    assert [r["failures"] for r in rows] == [[], [], [f"mel_snr_db 20 < {shared_bf16}"], []]


def test_mtl_measure_reads_the_mtl_fixture_names_and_runs_s3gen_at_generates_steps(monkeypatch):
    """measure_mtl loads the multilingual folder's modules at the precision and measures through MtlFixture
    (mtl.* tensors under the English names) with the multilingual VoiceEncoder and 10 Euler steps."""
    from types import SimpleNamespace

    from parity import precision
    from parity.stages.mtl_common import MtlFixture

    seen = {}
    monkeypatch.setattr(precision, "_mtl_models", lambda ckpt, prec: (f"ve:{ckpt.path}", f"t3:{prec}", "s3gen"))
    monkeypatch.setattr(precision, "measure_modules",
                        lambda fx, t3, s3gen, n, ve, n_cfm_timesteps=None: seen.update(
                            fx=fx, t3=t3, ve=ve, n=n, steps=n_cfm_timesteps) or {})
    precision.measure_mtl("fx", SimpleNamespace(path="mtl-folder"), "fp16", 9)
    assert isinstance(seen["fx"], MtlFixture) and seen["fx"].fx == "fx"
    assert (seen["t3"], seen["ve"], seen["n"], seen["steps"]) == ("t3:fp16", "ve:mtl-folder", 9, 10)


def test_mtl_run_rechecks_the_kept_rows_against_todays_bounds(tmp_path, monkeypatch):
    """A new mtl run keeps the other cases' rows of precision.json and checks them again against today's
    bounds (a stale failure recorded before a model's own measured bound does not fail the run)."""
    import json
    from types import SimpleNamespace

    from parity import precision

    kept = {"case": "turbo_espeak", "model": "turbo", "precision": "fp16", "token_agreement": 0.1, "tokens": 7,
            "mel_snr_db": 63.6, "wav_snr_db": 9.86, "speaker_cosine": 1.0, "failures": ["wav_snr_db 9.86 < 10.0"]}
    (tmp_path / "precision.json").write_text(json.dumps([kept]))
    _stand_in_session(monkeypatch, tmp_path, fixture=lambda case: case, ckpt_for=lambda model: model)
    monkeypatch.setattr(precision, "measure_mtl", lambda fx, ckpt, prec, n, ve: {
        "token_agreement": 1.0, "first_token_mismatch": None, "tokens": n, "mel_snr_db": 122.0,
        "wav_snr_db": 75.0, "speaker_cosine": 1.0, "seconds": 0.0})
    precision.cmd_precision(SimpleNamespace(cases=["mtl_de"], precisions=["fp32"], tokens=7))  # no SystemExit
    rows = json.loads((tmp_path / "precision.json").read_text())
    assert [(r["case"], r["precision"], r["failures"]) for r in rows] == [
        ("mtl_de", "fp32", []), ("turbo_espeak", "fp16", [])]


def test_mtl_rows_take_the_shared_bounds():
    """The multilingual rows have no bound of their own: measured on mtl_de (60 steps, Intel CPU) every precision
    is inside the shared [precision_matrix.<precision>] bounds (docs/MULTILINGUAL.md: fp32 1.000 / 122.2 / 75.0 dB,
    fp16 0.983 / 56.2 / 12.7, bf16 0.117 / 41.7 / 13.1 / 0.999745, q4 0.000 / 122.2 / 75.0), so a
    [precision_matrix.mtl.*] table would only loosen them."""
    from parity.precision import PRECISIONS, _tolerances, check_row, row_tolerance

    tols = _tolerances()
    assert "mtl" not in tols
    measured = {"fp32": (1.0, 122.2, 75.0, 1.0), "fp16": (0.983, 56.2, 12.7, 0.99998),
                "bf16": (0.117, 41.7, 13.1, 0.999745), "q4": (0.0, 122.2, 75.0, 0.9999998)}
    for prec in PRECISIONS:
        assert row_tolerance(tols, "mtl", prec) == row_tolerance(tols, "tts", prec)
        row = dict(zip(("token_agreement", "mel_snr_db", "wav_snr_db", "speaker_cosine"), measured[prec]))
        assert check_row(row, row_tolerance(tols, "mtl", prec)) == [], prec
