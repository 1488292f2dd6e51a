"""The precision matrix's bookkeeping: a run for some cases/precisions updates only those rows."""
from parity.precision import merge_rows


def row(case, prec, snr):
    return {"case": case, "precision": prec, "mel_snr_db": snr}


def test_new_rows_replace_same_case_and_precision_only():
    old = [row("a", "fp32", 1), row("a", "fp16", 2), row("b", "fp32", 3)]
    merged = merge_rows(old, [row("a", "fp16", 20), row("c", "q4", 5)])
    assert [(r["case"], r["precision"], r["mel_snr_db"]) for r in merged] == [
        ("a", "fp32", 1), ("a", "fp16", 20), ("b", "fp32", 3), ("c", "q4", 5)]
