"""Decision flips of T3's token draws: when a token that differs from the reference's is excused.

T3 picks each token from float32 logits. MLX's logits differ from the original's in the last bits
(float32 accumulation order; ~116 dB teacher-forced), so where the reference's own decision at a
step sat within that rounding of a boundary (a min-p / top-p filter threshold, an edge of the drawn
token's CDF interval, a near-tie of the greedy top two), MLX may legitimately decide otherwise: a
"flip". Anywhere else a differing token is a port error.

Measurement (at export, from the reference's own recorded tensors, reference/export.py):
  `sampling_margin` / `greedy_margin` give, per decoding step, the smallest perturbation of the
  step's temperature-scaled logits z (input of MinPLogitsWarper), in logit units and L-inf, that
  could change the step's outcome. Stored as `t3.sampling_margin` and `t3_greedy.sampling_margin`.

Verdict (`judge`): a token mismatch at step s is a justified flip only where the reference's
margin at s is <= the tolerance's `flip_margin` (set from the measured logit error, see
parity/checkpoints.toml) and, where MLX's own logits of that step are known, they are within
`flip_margin` of the reference's; at most `max_flips` flips; no mismatch before the first justified
one. Teacher-forced runs (every step fed the reference's history) judge every mismatching step;
free-running runs diverge after the first one, which is the only one judged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

# ---------------------------------------------------------------------------- margins


def _half_logit_distance(mass_in: float, mass_out: float, u: float) -> float:
    """L-inf logit perturbation that moves the probability mass of a fixed token set, P = in/(in+out),
    to u: a uniform shift of delta on the set's logits against -delta on the others scales the odds
    P/(1-P) by exp(2 delta), so the distance is |logit(P) - logit(u)| / 2 (inf when the set is empty
    or holds all the mass: no perturbation of finite logits moves it)."""
    if mass_in <= 0.0 or mass_out <= 0.0:
        return math.inf
    return abs((math.log(mass_in) - math.log(mass_out)) - (math.log(u) - math.log1p(-u))) / 2.0


def min_p_margin(z: np.ndarray, min_p: float) -> float:
    """MinPLogitsWarper keeps token i iff p_i >= min_p * p_max, i.e. z_i - z_max >= ln(min_p). Under an
    L-inf perturbation delta, z_i - z_max moves by at most 2 delta: the margin is
    min_i |z_i - z_max - ln(min_p)| / 2 over the tokens other than the top one (always kept)."""
    if min_p <= 0.0:
        return math.inf
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    top = int(np.argmax(z))
    d = np.delete(z - z[top], top)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.inf
    return float(np.min(np.abs(d - math.log(min_p)))) / 2.0


def top_p_margin(z: np.ndarray, kept: np.ndarray, top_p: float) -> float:
    """TopPLogitsWarper (on min-p's output) sorts the kept tokens by probability ascending and drops
    those whose cumulative probability is <= 1 - top_p (the last one always stays). The kept set
    changes where a cumulative sum C_k crosses 1 - top_p (distance |logit(C_k) - logit(1 - top_p)| / 2,
    the mass of a fixed set of tokens) or where the two tokens either side of the cut swap places
    (|z_a - z_b| / 2). inf for top_p >= 1: then only zero-probability (already filtered) tokens go."""
    if top_p >= 1.0:
        return math.inf
    z = np.asarray(z, dtype=np.float64).reshape(-1)[np.asarray(kept, dtype=bool).reshape(-1)]
    if z.size < 2:
        return math.inf
    zs = np.sort(z)
    e = np.exp(zs - zs[-1])
    c = np.cumsum(e)
    total = c[-1]
    thr = 1.0 - top_p
    best = math.inf
    for k in range(zs.size - 1):  # the last (largest) is never removed
        best = min(best, _half_logit_distance(float(c[k]), float(total - c[k]), thr))
    removed = int(np.sum(c[:-1] / total <= thr))
    if 0 < removed < zs.size:  # the pair straddling the cut
        best = min(best, float(zs[removed] - zs[removed - 1]) / 2.0)
    return best


def draw_margin(probs: np.ndarray, u: float, token: int) -> float:
    """The replayed inverse-CDF draw picks `token` because u * S falls in its CDF interval
    [C(<token), C(<=token)) of cdf = cumsum(float64(probs)). The pick changes where the mass of the
    tokens before it rises above u, or the mass up to it falls below u: the smaller of the two
    fixed-set distances (`_half_logit_distance`)."""
    p = np.asarray(probs, dtype=np.float32).reshape(-1).astype(np.float64)
    cdf = np.cumsum(p)
    total = float(cdf[-1])
    below = float(cdf[token - 1]) if token > 0 else 0.0
    upto = float(cdf[token])
    return min(_half_logit_distance(below, total - below, u), _half_logit_distance(upto, total - upto, u))


def sampling_margin(z: np.ndarray, probs: np.ndarray, u: float, token: int, *, min_p: float, top_p: float) -> float:
    """The step's margin for a sampled draw: the smallest L-inf perturbation of the temperature-scaled
    logits z that changes the min-p kept set, the top-p kept set or the replayed draw's pick. Until the
    kept sets change the draw sees the same tokens, so the first boundary crossed is at least the
    smallest of the three distances: their minimum is the margin. `probs` are the probabilities the
    draw used (softmax of the filtered logits), `u` its uniform, `token` its pick."""
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    kept = z - z.max() >= math.log(min_p) if min_p > 0.0 else np.isfinite(z)  # min-p's kept set (top-p's input)
    return min(min_p_margin(z, min_p), top_p_margin(z, kept, top_p), draw_margin(probs, u, token))


def greedy_margin(z: np.ndarray) -> float:
    """The argmax changes where the runner-up's scaled logit overtakes the top one's: (z_1 - z_2) / 2
    (the filters keep the top token, so they cannot change the argmax)."""
    z = np.sort(np.asarray(z, dtype=np.float64).reshape(-1))
    return float(z[-1] - z[-2]) / 2.0 if z.size > 1 else math.inf
