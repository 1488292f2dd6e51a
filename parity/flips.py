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
    [C(<token), C(<=token)) of cdf = cumsum(float64(probs)). With the kept set fixed, the pick changes
    where the mass of the tokens before it rises above u, or the mass up to it falls below u: the
    smaller of the two fixed-set distances (`_half_logit_distance`)."""
    p = np.asarray(probs, dtype=np.float32).reshape(-1).astype(np.float64)
    cdf = np.cumsum(p)
    total = float(cdf[-1])
    below = float(cdf[token - 1]) if token > 0 else 0.0
    upto = float(cdf[token])
    return min(_half_logit_distance(below, total - below, u), _half_logit_distance(upto, total - upto, u))


def _edge_crosses(zp: np.ndarray, num: np.ndarray, u: float, lo_t: float, hi_t: float, lower: bool) -> bool:
    """Whether, for some min-p threshold T in [lo_t, hi_t] (kept: zp >= T), the kept mass of the
    tokens `num` over the kept total is > u (lower: the pick moves to a lower index) or <= u (higher)."""
    order = np.argsort(-zp, kind="stable")
    zs = zp[order]
    w = np.exp(zs - zs[0])
    cum_num, cum_all = np.cumsum(w * num[order]), np.cumsum(w)
    inside = zs[(zs >= lo_t) & (zs <= hi_t)]
    t = np.concatenate([[lo_t, hi_t], inside, np.nextafter(inside, np.inf)])
    n = np.searchsorted(-zs, -t, side="right")  # tokens kept at each threshold
    n = n[n > 0]
    frac_num, frac_all = cum_num[n - 1], cum_all[n - 1]
    return bool(np.any(frac_num > u * frac_all)) if lower else bool(np.any(frac_num <= u * frac_all))


def _pick_moves(zp: np.ndarray, num: np.ndarray, u: float, t: float, lower: bool) -> bool:
    """With the perturbed logits zp and min-p (kept: zp >= max(zp) + t): is the kept mass of `num` over
    the kept total > u (lower pick) or <= u (higher pick)?"""
    top = float(np.max(zp))
    w = np.where(zp >= top + t, np.exp(zp - top), 0.0)
    frac_num, frac_all = float(w[num].sum()), float(w.sum())
    return frac_num > u * frac_all if lower else frac_num <= u * frac_all


def pick_changes(z: np.ndarray, u: float, token: int, min_p: float, delta: float) -> bool:
    """Whether some perturbation of the scaled logits z with |dz|_inf <= delta could change the pick of
    the replayed draw (min-p, then the inverse CDF on u; top-p = 1). A lower pick needs the mass
    before the pick above u: every token before it shifted up, every other down; a higher pick the
    reverse. These signs are the worst case for every token but the one that sets the maximum (and
    with it the min-p threshold, ln(min_p) below it): its own shift is tried both ways. That is
    exact while no other token is within 2 delta of the top one; otherwise every threshold within
    delta of its place is tried with the other signs as above, which never misses a change (the
    margin is then a lower bound). The tests check both against brute force."""
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    top = int(np.argmax(z))
    t = math.log(min_p) if min_p > 0.0 else -math.inf
    idx = np.arange(z.size)
    crowded = np.count_nonzero(z > z[top] - 2 * delta) > 1
    for num, lower in ((idx < token, True), (idx <= token, False)):
        zp = z + np.where(num == lower, delta, -delta)  # lower: `num` up, the rest down; higher: the reverse
        if crowded:
            if _edge_crosses(zp, num, u, z[top] + t - delta, z[top] + t + delta, lower) or (
                    token != top and z[token] - delta < z[top] + t + delta):
                return True
            continue
        for s in (-1.0, 1.0):
            zs = zp.copy()
            zs[top] = z[top] + s * delta
            if zs[token] < zs[top] + t or _pick_moves(zs, num, u, t, lower):
                return True
    return False


def token_margin(z: np.ndarray, u: float, token: int, min_p: float) -> float:
    """The smallest L-inf perturbation of the scaled logits that could change the replayed pick
    (`pick_changes`, monotone in delta: bisection). Tokens crossing the min-p threshold count only
    where they move the pick: with random weights thousands of tokens sit near the threshold at
    every step, and most such crossings move the CDF by far less than the draw's distance to an edge."""
    if pick_changes(z, u, token, min_p, 0.0):
        return 0.0
    hi = 1.0
    while not pick_changes(z, u, token, min_p, hi):
        hi *= 2
        if hi > 1e3:
            return math.inf
    lo = 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if not lo < mid < hi:
            break
        if pick_changes(z, u, token, min_p, mid):
            hi = mid
        else:
            lo = mid
    return hi


def sampling_margin(z: np.ndarray, u: float, token: int, *, min_p: float, top_p: float) -> float:
    """The step's margin for a sampled draw: the smallest L-inf perturbation of the temperature-scaled
    logits z that could change the replayed pick (`token_margin`) of the uniform `u` (the reference
    picked `token`). With top_p < 1 any change of the kept sets counts too (min-p's, then top-p's: a
    conservative, smaller margin). Computed in float64 from z: where the reference's float32
    probabilities put u within their rounding of an edge, the margin comes out ~0."""
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    if top_p >= 1.0:
        return token_margin(z, u, token, min_p)
    kept = z - z.max() >= math.log(min_p) if min_p > 0.0 else np.isfinite(z)
    order = np.argsort(np.where(kept, z, -np.inf), kind="stable")  # TopPLogitsWarper: ascending, cut <= 1 - top_p
    w = np.where(kept, np.exp(z - z.max()), 0.0)[order]
    removed = np.cumsum(w) / w.sum() <= 1.0 - top_p
    removed[-1] = False
    final = kept.copy()
    final[order[removed]] = False
    probs = np.where(final, np.exp(z - z.max()), 0.0)
    return min(min_p_margin(z, min_p), top_p_margin(z, kept, top_p), draw_margin(probs / probs.sum(), u, token))


def greedy_margin(z: np.ndarray) -> float:
    """The argmax changes where the runner-up's scaled logit overtakes the top one's: (z_1 - z_2) / 2
    (the filters keep the top token, so they cannot change the argmax)."""
    z = np.sort(np.asarray(z, dtype=np.float64).reshape(-1))
    return float(z[-1] - z[-2]) / 2.0 if z.size > 1 else math.inf


# ---------------------------------------------------------------------------- Chatterbox Turbo
# T3.inference_turbo processes the logits in another order: temperature (z: the scaled logits), top-k, top-p,
# then the repetition penalty on the filtered logits (w), softmax and the draw. Its margins are in units of z.


def top_k_margin(z: np.ndarray, top_k: int) -> float:
    """TopKLogitsWarper keeps the tokens >= the k-th largest z: the kept set changes where the k-th and the
    (k+1)-th largest swap places, (z_(k) - z_(k+1)) / 2 (inf when top-k keeps every token)."""
    z = np.sort(np.asarray(z, dtype=np.float64).reshape(-1))[::-1]
    if top_k <= 0 or top_k >= z.size:
        return math.inf
    return float(z[top_k - 1] - z[top_k]) / 2.0


def penalty_lipschitz(penalty: float) -> float:
    """The repetition penalty maps a penalised token's logit x to x / penalty (x >= 0) or x * penalty (x < 0):
    an L-inf change delta of z moves w by at most max(penalty, 1 / penalty) * delta."""
    return max(penalty, 1.0 / penalty) if penalty > 0 else 1.0


def turbo_sampling_margin(z: np.ndarray, w: np.ndarray, u: float, token: int, *, top_k: int, top_p: float,
                          penalty: float) -> float:
    """The step's margin for a sampled draw of inference_turbo: the smallest L-inf perturbation of the scaled
    logits z that could change the top-p set (`top_p_margin`, on the top-k set), the top-k set where that
    matters, or, with the sets fixed, the replayed pick of `u` on softmax(w) (`draw_margin` in units of w, over
    the penalty's Lipschitz bound: a lower bound in units of z). Any change of the top-p set counts (a
    conservative, smaller margin, as `sampling_margin` with top_p < 1). A swap at the top-k boundary
    (`top_k_margin`) counts where the k-th token survives top-p: where top-p removes it (with top_p < 1 it
    removes the lowest tokens of the set), the token swapped in, within 2 delta of it, is the lowest and
    removed too, and the cumulative sums move by the change of its mass, far less than the moves
    `top_p_margin` measures."""
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    fin = np.isfinite(w)
    k_margin = math.inf
    if 0 < top_k < z.size:
        kept = z >= np.sort(z)[-top_k]
        if fin[np.argsort(-z, kind="stable")[top_k - 1]]:
            k_margin = top_k_margin(z, top_k)
    else:
        kept = np.isfinite(z)
    probs = np.where(fin, np.exp(np.where(fin, w, 0.0) - w[fin].max()), 0.0)
    return min(k_margin, top_p_margin(z, kept, top_p),
               draw_margin(probs / probs.sum(), u, token) / penalty_lipschitz(penalty))


def turbo_greedy_margin(w: np.ndarray, penalty: float) -> float:
    """The argmax of inference_turbo's processed logits w changes where the runner-up overtakes the top one:
    (w_1 - w_2) / 2 in units of w, over the penalty's Lipschitz bound (units of z). The filters keep the top
    token of z; the argmax of w sits far above their cuts, so their changes are not counted."""
    return greedy_margin(np.asarray(w, dtype=np.float64)) / penalty_lipschitz(penalty)


# ---------------------------------------------------------------------------- verdict

TEACHER_FORCED = "_teacher_forced"  # a runner's output key: its tokens are per-step picks under teacher forcing
NOTES = "_notes"  # a runner's output key: {checkpoint: a note for its result message}

# token checkpoint -> (the T3 run's token checkpoint, its margins, its scaled logits)
TOKEN_RUNS = {
    "t3.speech_tokens": ("t3.speech_tokens", "t3.sampling_margin", "t3.logits_temp"),
    "flow.speech_tokens": ("t3.speech_tokens", "t3.sampling_margin", "t3.logits_temp"),
    "t3_greedy.speech_tokens": ("t3_greedy.speech_tokens", "t3_greedy.sampling_margin", "t3_greedy.logits_temp"),
    "turbo.t3.speech_tokens": ("turbo.t3.speech_tokens", "turbo.t3.sampling_margin", "turbo.t3.logits_temp"),
    "turbo.flow.speech_tokens": ("turbo.t3.speech_tokens", "turbo.t3.sampling_margin", "turbo.t3.logits_temp"),
    "turbo.t3_greedy.speech_tokens": ("turbo.t3_greedy.speech_tokens", "turbo.t3_greedy.sampling_margin",
                                      "turbo.t3_greedy.logits_temp"),
}


@dataclass(frozen=True)
class Mismatch:
    """A decoding step whose token differs from the reference's."""
    step: int
    ref: Optional[int]  # None: that side had stopped
    out: Optional[int]
    margin: float  # the reference's sampling margin at the step (inf where it has no such step)
    logit_err: Optional[float] = None  # max |z_mlx - z_ref| of the step's scaled logits, where known

    def describe(self) -> str:
        err = "" if self.logit_err is None else f", MLX's scaled logits off by {self.logit_err:.3g}"
        return f"step {self.step} (reference {self.ref}, MLX {self.out}; reference margin {self.margin:.3g}{err})"


@dataclass
class Verdict:
    fails: List[str]
    flips: List[Mismatch]
    note: str = ""


def _logit_err(step: int, ref_z, out_z) -> Optional[float]:
    if ref_z is None or out_z is None or step >= len(ref_z) or step >= len(out_z):
        return None
    r = np.asarray(ref_z[step], dtype=np.float64).reshape(-1)
    o = np.asarray(out_z[step], dtype=np.float64).reshape(-1)
    both = np.isfinite(r) & np.isfinite(o)
    if r.shape != o.shape or not both.all():
        return math.inf
    return float(np.max(np.abs(o - r)))


def token_mismatches(ref_tokens, out_tokens, margins, *, teacher_forced: bool, ref_z=None, out_z=None) -> List[Mismatch]:
    """The steps to judge. Teacher-forced (every step fed the reference's history): every step whose
    pick differs. Free-running: only the first differing step (or the shorter length when one is a
    prefix of the other): after it the two runs decode different histories."""
    a, b = np.asarray(ref_tokens).reshape(-1), np.asarray(out_tokens).reshape(-1)
    margins = np.asarray(margins, dtype=np.float64).reshape(-1)
    n = min(a.size, b.size)
    steps = [int(s) for s in np.nonzero(a[:n] != b[:n])[0]]
    if a.size != b.size and (teacher_forced or not steps):
        steps.append(n)
    if not teacher_forced:
        steps = steps[:1]
    return [Mismatch(step=s, ref=int(a[s]) if s < a.size else None, out=int(b[s]) if s < b.size else None,
                     margin=float(margins[s]) if s < margins.size else math.inf,
                     logit_err=_logit_err(s, ref_z, out_z)) for s in steps]


def judge(mismatches: Sequence[Mismatch], *, flip_margin: Optional[float], max_flips: int) -> Verdict:
    """A mismatch is a justified flip only where the reference's margin at its step is <= flip_margin
    (the reference's own decision sat within the measured logit error of a boundary) and MLX's scaled
    logits at that step, where known, are within flip_margin of the reference's. Every mismatch
    `token_mismatches` returns must be justified (none may come before a justified one), and there may
    be at most max_flips of them."""
    fails, flips = [], []
    for m in mismatches:
        if flip_margin is None:
            fails.append(f"tokens differ at {m.describe()}: no flips allowed")
        elif not m.margin <= flip_margin:
            fails.append(f"tokens differ at {m.describe()}: the reference's margin is above the flip bound "
                         f"{flip_margin:g}, so this is no float32-rounding flip")
        elif m.logit_err is not None and not m.logit_err <= flip_margin:
            fails.append(f"tokens differ at {m.describe()}: MLX's logits are further than the flip bound {flip_margin:g} "
                         "from the reference's")
        else:
            flips.append(m)
            continue
        break  # the first unjustified mismatch decides; later steps are not judged
    if len(flips) > max_flips:
        fails.append(f"{len(flips)} flips, more than the {max_flips} allowed: "
                     + "; ".join(f.describe() for f in flips))
    note = ""
    if flips and not fails:
        note = (f"{len(flips)} flip(s) (allowed {max_flips}), each where the reference's margin is within the "
                f"flip bound {flip_margin:g}: " + "; ".join(f.describe() for f in flips) + "; identical elsewhere")
    return Verdict(fails=fails, flips=flips, note=note)


def flow_position_step(t3_row, position: int, turbo: bool = False) -> int:
    """The decoding step of position `position` of the S3Gen tokens taken from T3's row: they run behind
    the steps by the tokens dropped before them; one past their end is the step after the last one.
    `turbo`: Chatterbox Turbo's rule (`turbo_s3gen_token_steps`; the three S3GEN_SIL come after the end)."""
    row = np.asarray(t3_row).reshape(-1)
    steps = turbo_s3gen_token_steps(row) if turbo else s3gen_token_steps(row)
    if position < steps.size:
        return int(steps[position])
    return int(steps[-1]) + 1 if steps.size else 0


SPEECH_VOCAB = 6561  # speech token ids below it; then start (6561) and stop (6562) of speech


def s3gen_token_steps(row: np.ndarray) -> np.ndarray:
    """The decoding steps, in a 1-D T3 row, of the tokens the original's generate() hands to S3Gen:
    after the start-of-speech token, before the stop token (drop_invalid_tokens), speech ids only.
    The harness's own statement of the original's rule, kept apart from the port under test
    (mlx_impl.tts.s3gen_token_positions; tests/unit/test_layers.py checks that they agree)."""
    start = int(np.argmax(row == SPEECH_VOCAB)) + 1 if (row == SPEECH_VOCAB).any() else 0
    end = int(np.argmax(row == SPEECH_VOCAB + 1)) if (row == SPEECH_VOCAB + 1).any() else row.size
    steps = np.arange(start, max(start, end))
    return steps[row[steps] < SPEECH_VOCAB]


def turbo_s3gen_token_steps(row: np.ndarray) -> np.ndarray:
    """ChatterboxTurboTTS.generate's rule: every token of inference_turbo's row below SPEECH_VOCAB (the
    start-of-speech token is never in the row; the loop ends at the stop token)."""
    return np.nonzero(np.asarray(row).reshape(-1) < SPEECH_VOCAB)[0]


def session_verdict(fx, out: dict, name: str, metrics, tol, fails: List[str]):
    """(fails, note) for a token checkpoint that differs from the reference (parity/session.py)."""
    run_tokens, margin_name, logits_name = TOKEN_RUNS[name]
    if not fx.has(margin_name):
        return fails + [f"the fixture has no '{margin_name}' to judge the mismatch by: re-export it"], ""
    if run_tokens not in out:
        return fails + [f"the run did not return '{run_tokens}', so the mismatch cannot be placed on a decoding step"], ""
    ref_row, out_row = fx.tensor(run_tokens).reshape(-1), np.asarray(out[run_tokens]).reshape(-1)
    ref_z = fx.tensor(logits_name) if fx.has(logits_name) else None
    mism = token_mismatches(ref_row, out_row, fx.tensor(margin_name), teacher_forced=bool(out.get(TEACHER_FORCED)),
                            ref_z=ref_z, out_z=out.get(logits_name))
    if not mism:  # the T3 run matches, yet this checkpoint differs: no flip explains it
        return fails + [f"'{run_tokens}' of the same run matches the reference: no flip explains the difference"], ""
    if name != run_tokens and metrics.first_mismatch is not None:
        step = flow_position_step(ref_row, metrics.first_mismatch, turbo=name.startswith("turbo."))
        if step < mism[0].step:
            return fails + [f"'{name}' differs at step {step}, before T3's first differing token (step {mism[0].step})"], ""
    v = judge(mism, flip_margin=tol.flip_margin, max_flips=tol.max_flips)
    return v.fails, v.note
