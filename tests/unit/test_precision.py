"""The precision matrix's bookkeeping: a run for some cases/precisions updates only those rows."""
from parity.precision import merge_rows


def row(case, prec, snr):
    return {"case": case, "precision": prec, "mel_snr_db": snr}


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

    import mlx_impl.convert.voice_encoder as ve_conv
    import parity.session
    from parity import precision

    assert precision.plan(["turbo_espeak"], list(precision.PRECISIONS)) == [
        ("turbo_espeak", "turbo", list(precision.PRECISIONS))]
    calls = []

    def fake_turbo(fx, ckpt, prec, n_tokens, ve):
        calls.append((fx, ckpt, prec, n_tokens))
        return {"token_agreement": 1.0 if prec == "fp32" else 0.5, "first_token_mismatch": None, "tokens": n_tokens,
                "mel_snr_db": 120.0, "wav_snr_db": 70.0, "speaker_cosine": 1.0, "seconds": 0.0, "drawn": [1, 2]}

    session = SimpleNamespace(ckpt=SimpleNamespace(state=lambda c: {}), fixture=lambda case: f"fx:{case}",
                              ckpt_for=lambda model: f"ckpt:{model}")
    monkeypatch.setattr(parity.session.ParitySession, "create", staticmethod(lambda: session))
    monkeypatch.setattr(ve_conv, "load_voice_encoder", lambda state: "ve")
    monkeypatch.setattr(precision, "measure_turbo", fake_turbo)
    monkeypatch.setattr(precision, "OUT", tmp_path)
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
