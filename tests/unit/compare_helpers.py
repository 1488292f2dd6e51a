"""The SNR check the unit tests share: same shape, the same non-finite entries, then the SNR."""
import numpy as np

from parity.metrics import compare


def snr(ref, out) -> float:
    ref, out = np.asarray(ref), np.asarray(out)
    m = compare(ref, out)
    assert not m.length_mismatch, f"shape {m.shape_out} != {m.shape_ref}"
    assert m.nonfinite_mismatch == 0, f"{m.nonfinite_mismatch} non-finite entries differ"
    return m.snr_db
