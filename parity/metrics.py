"""Comparison metrics between a reference tensor and a candidate (MLX) tensor."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from .registry import Tolerance


@dataclass
class Metrics:
    shape_ref: tuple
    shape_out: tuple
    length_mismatch: bool
    # float metrics (over the finite entries shared by both)
    max_abs: Optional[float] = None
    max_rel: Optional[float] = None
    nmse: Optional[float] = None
    snr_db: Optional[float] = None
    cosine: Optional[float] = None
    nonfinite_mismatch: int = 0  # entries where exactly one side is +-inf/nan, or the two differ
    # integer metrics
    exact: Optional[float] = None
    first_mismatch: Optional[int] = None
    n: int = 0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape_ref"] = list(self.shape_ref)
        d["shape_out"] = list(self.shape_out)
        return d

    def headline(self, kind: str) -> str:
        if self.length_mismatch:
            return f"shape {list(self.shape_out)} != ref {list(self.shape_ref)}"
        if kind == "int":
            fm = "" if self.first_mismatch is None else f" first@{self.first_mismatch}"
            return f"exact={self.exact:.4f}{fm}"
        snr = "inf" if self.snr_db == math.inf else f"{self.snr_db:.1f}"
        extra = f" nonfinite_mismatch={self.nonfinite_mismatch}" if self.nonfinite_mismatch else ""
        return f"SNR={snr}dB maxabs={self.max_abs:.3g} cos={self.cosine:.9f}{extra}"


def compare(ref, out, kind: str = "float") -> Metrics:
    ref = np.asarray(ref)
    out = np.asarray(out)
    m = Metrics(shape_ref=tuple(ref.shape), shape_out=tuple(out.shape), length_mismatch=ref.shape != out.shape)
    if m.length_mismatch:
        if kind == "int" and ref.ndim == out.ndim == 1 or (kind == "int" and ref.size and out.size):
            a, b = ref.reshape(-1), out.reshape(-1)
            n = min(a.size, b.size)
            diff = np.nonzero(a[:n] != b[:n])[0]
            m.first_mismatch = int(diff[0]) if diff.size else n
            m.exact = float((a[:n] == b[:n]).sum()) / max(a.size, b.size)
        return m
    m.n = int(ref.size)
    if kind == "int":
        eq = ref.reshape(-1) == out.reshape(-1)
        m.exact = float(eq.mean()) if eq.size else 1.0
        bad = np.nonzero(~eq)[0]
        m.first_mismatch = int(bad[0]) if bad.size else None
        return m
    r = ref.astype(np.float64).reshape(-1)
    o = out.astype(np.float64).reshape(-1)
    fin_r, fin_o = np.isfinite(r), np.isfinite(o)
    both = fin_r & fin_o
    # +-inf at the same place with the same sign is a match (filtered logits are -inf)
    same_nonfinite = (~fin_r) & (~fin_o) & (r == o)
    m.nonfinite_mismatch = int(((~both) & (~same_nonfinite)).sum())
    r, o = r[both], o[both]
    err = o - r
    sig = float(np.sum(r * r))
    noise = float(np.sum(err * err))
    m.max_abs = float(np.max(np.abs(err))) if err.size else 0.0
    m.max_rel = float(np.max(np.abs(err) / np.maximum(np.abs(r), 1e-12))) if err.size else 0.0
    if sig == 0.0:
        m.nmse = 0.0 if noise == 0.0 else math.inf
    else:
        m.nmse = noise / sig
    m.snr_db = math.inf if m.nmse == 0.0 else (-math.inf if m.nmse == math.inf else -10.0 * math.log10(m.nmse))
    nr, no = math.sqrt(sig), math.sqrt(float(np.sum(o * o)))
    m.cosine = float(np.dot(r, o) / (nr * no)) if nr > 0 and no > 0 else (1.0 if nr == no else 0.0)
    return m


def check(metrics: Metrics, tol: Tolerance, kind: str) -> list:
    """The list of tolerance violations (empty when it passes)."""
    fails = []
    if metrics.length_mismatch:
        return [f"shape {list(metrics.shape_out)} != reference {list(metrics.shape_ref)}"]
    if kind == "int":
        if tol.exact is not None and metrics.exact < tol.exact:
            fails.append(f"exact {metrics.exact:.4f} < {tol.exact} (first mismatch at {metrics.first_mismatch})")
        return fails
    if metrics.nonfinite_mismatch > tol.max_nonfinite_mismatch:
        fails.append(f"{metrics.nonfinite_mismatch} non-finite entries differ (allowed {tol.max_nonfinite_mismatch})")
    if tol.snr_db is not None and metrics.snr_db < tol.snr_db:
        fails.append(f"SNR {metrics.snr_db:.2f} dB < {tol.snr_db} dB")
    if tol.cosine is not None and metrics.cosine < tol.cosine:
        fails.append(f"cosine {metrics.cosine:.9f} < {tol.cosine}")
    if tol.max_abs is not None and metrics.max_abs > tol.max_abs:
        fails.append(f"max abs {metrics.max_abs:.3g} > {tol.max_abs}")
    return fails


def snr_db(ref, out) -> float:
    return compare(ref, out).snr_db
