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
