"""The flip rule of the token checkpoints (parity/flips.py, the verdict in parity/session.py) on
synthetic fixtures, and the sampling margins on hand-made distributions. No model is loaded."""
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from parity import flips, registry
from parity.session import ParitySession

V, N = 8, 12  # vocabulary, decoding steps of the synthetic runs


class FakeFixture:
    def __init__(self, tensors: dict):
        self.tensors = tensors

    def has(self, name: str) -> bool:
        return name in self.tensors

    def tensor(self, name: str) -> np.ndarray:
        return np.asarray(self.tensors[name])


def tol_of(name="t3.speech_tokens", mode=None):
    reg = registry.load()
    return reg.cumulative[mode][name] if mode else reg[name].tolerance("fp32")


def evaluate(fx, out, name="t3.speech_tokens", mode=None):
    """The session's verdict on `out` as a runner's output (no export, no model)."""
    session = ParitySession(ckpt=None, fx_root=Path("."), log=lambda m: None)
    session.fixtures["c"] = fx
    label = f"{mode}:{name}" if mode else name
    return session._evaluate("c", name, tol_of(name, mode), label=label, key="k", run=lambda fx: out, missing="missing")


def reference(margins=None, name_prefix="t3"):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 100, size=(1, N)).astype(np.int32)
    z = rng.normal(size=(N, V)).astype(np.float32)
    top_p = np.where(z - z.max(axis=1, keepdims=True) < math.log(0.05), -np.inf, z).astype(np.float32)
    m = np.full(N, 1.0) if margins is None else np.asarray(margins, dtype=np.float64)
    return {f"{name_prefix}.speech_tokens": tokens, f"{name_prefix}.logits_temp": z, f"{name_prefix}.logits_top_p": top_p,
            f"{name_prefix}.sampling_margin": m}


def run_output(ref, mismatch_steps, *, teacher_forced, logit_err=0.0, prefix="t3"):
    tokens = ref[f"{prefix}.speech_tokens"].copy()
    z = ref[f"{prefix}.logits_temp"].copy()
    for s in mismatch_steps:
        tokens[0, s] += 1
        z[s, 0] += np.float32(logit_err)
    if not teacher_forced and mismatch_steps:  # a free run decodes other tokens after its first difference
        tokens[0, mismatch_steps[0] + 1:] += 7
    out = {f"{prefix}.speech_tokens": tokens, f"{prefix}.logits_temp": z, f"{prefix}.logits_top_p": ref[f"{prefix}.logits_top_p"].copy()}
    if teacher_forced:
        out[flips.TEACHER_FORCED] = True
    return out


def small():
    return tol_of().flip_margin / 10


# ---------------------------------------------------------------------------- the verdict


def test_registry_bounds_the_flips_with_measured_reasons():
    for t in (tol_of(), tol_of("t3.speech_tokens", "e2e"), tol_of("flow.speech_tokens", "e2e")):
        assert t.exact == 1.0 and t.flip_margin is not None and 0 < t.flip_margin < 1e-2 and t.max_flips >= 1
    own = tol_of()
    assert own.measured and own.reason and "PROVISIONAL" not in own.measured
    assert tol_of("t3_greedy.speech_tokens").flip_margin is None  # greedy: exact, no flips
    assert not hasattr(own, "exact_until_filter_flip")


def test_large_margin_mismatch_after_a_filter_flip_fails():
    """Yesterday's rule exempted any mismatch after the first min-p/top-p boundary flip of the run's
    filtered logits, however far the reference was from a decision boundary."""
    ref = reference()
    assert ref["t3.sampling_margin"][6] > tol_of().flip_margin
    for teacher_forced, mode in ((True, None), (False, "e2e")):
        out = run_output(ref, [6], teacher_forced=teacher_forced)
        flipped = out["t3.logits_top_p"]  # a min-p filter flip at step 2, before it: token 0 filtered on one side only
        flipped[2, 0] = -np.inf if np.isfinite(ref["t3.logits_top_p"][2, 0]) else 0.0
        res = evaluate(FakeFixture(ref), out, mode=mode)
        assert res.status == "failed", res.message
        assert "step 6" in res.message and "above the flip bound" in res.message


def test_justified_flip_passes_and_is_reported():
    margins = np.full(N, 1.0)
    margins[5] = small()
    ref = reference(margins)
    for teacher_forced, mode in ((True, None), (False, "e2e")):
        res = evaluate(FakeFixture(ref), run_output(ref, [5], teacher_forced=teacher_forced, logit_err=small()), mode=mode)
        assert res.status == "passed", res.message
        assert res.message.startswith("1 flip(s)") and "step 5" in res.message


def test_flow_tokens_follow_the_t3_verdict():
    margins = np.full(N, 1.0)
    margins[5] = small()
    ref = reference(margins)
    ref["flow.speech_tokens"] = ref["t3.speech_tokens"].copy()  # no SOS/EOS/out-of-vocabulary: positions are steps
    out = run_output(ref, [5], teacher_forced=False)
    out["flow.speech_tokens"] = out["t3.speech_tokens"].copy()
    assert evaluate(FakeFixture(ref), out, name="flow.speech_tokens", mode="e2e").status == "passed"
    out["flow.speech_tokens"][0, 3] += 1  # differs before T3's first differing token
    res = evaluate(FakeFixture(ref), out, name="flow.speech_tokens", mode="e2e")
    assert res.status == "failed" and "before T3's first differing token" in res.message
    ref["t3.sampling_margin"][5] = 1.0
    out = run_output(ref, [5], teacher_forced=False)
    out["flow.speech_tokens"] = out["t3.speech_tokens"].copy()
    assert evaluate(FakeFixture(ref), out, name="flow.speech_tokens", mode="e2e").status == "failed"


def test_mismatch_before_the_first_justified_flip_fails():
    margins = np.full(N, 1.0)
    margins[7] = small()
    ref = reference(margins)
    for teacher_forced, mode in ((True, None), (False, "e2e")):
        res = evaluate(FakeFixture(ref), run_output(ref, [3, 7], teacher_forced=teacher_forced), mode=mode)
        assert res.status == "failed" and "step 3" in res.message, res.message


def test_teacher_forced_judges_every_step():
    margins = np.full(N, 1.0)
    margins[2] = small()
    ref = reference(margins)
    res = evaluate(FakeFixture(ref), run_output(ref, [2, 9], teacher_forced=True))
    assert res.status == "failed" and "step 9" in res.message, res.message


def test_too_many_flips_fail():
    n = tol_of().max_flips + 1
    steps = list(range(1, 1 + 2 * n, 2))
    margins = np.full(N, 1.0)
    margins[steps] = small()
    ref = reference(margins)
    res = evaluate(FakeFixture(ref), run_output(ref, steps, teacher_forced=True))
    assert res.status == "failed" and f"{n} flips, more than the {n - 1} allowed" in res.message, res.message
    res = evaluate(FakeFixture(ref), run_output(ref, steps[:-1], teacher_forced=True))
    assert res.status == "passed", res.message


def test_flip_needs_the_logits_within_the_bound():
    margins = np.full(N, 1.0)
    margins[5] = small()
    ref = reference(margins)
    out = run_output(ref, [5], teacher_forced=True, logit_err=10 * tol_of().flip_margin)
    res = evaluate(FakeFixture(ref), out)
    assert res.status == "failed" and "MLX's logits are further" in res.message, res.message


def test_a_fixture_without_margins_fails():
    ref = reference()
    del ref["t3.sampling_margin"]
    res = evaluate(FakeFixture(ref), run_output(ref, [5], teacher_forced=True))
    assert res.status == "failed" and "re-export" in res.message


def test_greedy_allows_no_flip():
    margins = np.full(N, 1.0)
    margins[5] = 0.0
    ref = reference(margins, "t3_greedy")
    res = evaluate(FakeFixture(ref), run_output(ref, [5], teacher_forced=False, prefix="t3_greedy"),
                   name="t3_greedy.speech_tokens")
    assert res.status == "failed" and "no flips allowed" in res.message and "margin 0" in res.message


def test_exact_tokens_pass_without_note():
    ref = reference()
    res = evaluate(FakeFixture(ref), run_output(ref, [], teacher_forced=True))
    assert res.status == "passed" and res.message == ""


def test_free_running_length_difference_is_judged_at_the_shorter_end():
    m = flips.token_mismatches([1, 2, 3], [1, 2, 3, 4], [9.0, 9.0, 9.0, 1e-9], teacher_forced=False)
    assert [(x.step, x.ref, x.out, x.margin) for x in m] == [(3, None, 4, 1e-9)]
    assert flips.token_mismatches([1, 2, 3], [1, 2, 3], [1.0] * 3, teacher_forced=False) == []
    m = flips.token_mismatches([1, 2, 3, 4], [1, 5, 6, 7], [1.0] * 4, teacher_forced=False)
    assert [x.step for x in m] == [1]
    m = flips.token_mismatches([1, 2, 3, 4], [1, 5, 3, 7], [1.0] * 4, teacher_forced=True)
    assert [x.step for x in m] == [1, 3]


# ---------------------------------------------------------------------------- the margins


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z[np.isfinite(z)].max())
    return e / e.sum()


def outcome(z, u, min_p, top_p):
    """The original's processing of one step in float64: MinP, TopP (HF semantics), inverse-CDF draw."""
    z = np.asarray(z, dtype=np.float64)
    p = _softmax(z)
    keep = p >= min_p * p.max()
    keep[np.argmax(p)] = True
    zk = np.where(keep, z, -np.inf)
    order = np.argsort(zk, kind="stable")
    c = np.cumsum(_softmax(zk)[order])
    remove = c <= 1 - top_p
    remove[-1] = False
    keep2 = keep.copy()
    keep2[order[remove]] = False
    probs = _softmax(np.where(keep2, z, -np.inf))
    cdf = np.cumsum(probs)
    token = int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), z.size - 1))
    return tuple(keep), tuple(keep2), token, probs


def test_margins_of_a_hand_made_distribution():
    z = np.array([2.0, 1.0, 0.0, -5.0])
    # min-p 0.05: threshold ln(0.05) = -2.996 below the top; token 3 sits at -7 (4.004 away), token 2 at
    # -2 (0.996 away), token 1 at -1: half the nearest distance
    assert flips.min_p_margin(z, 0.05) == pytest.approx(abs(-2.0 - math.log(0.05)) / 2)
    _, _, token, probs = outcome(z, 0.5, 0.05, 1.0)
    assert token == 0  # p = e^2, e, 1 over their sum: token 0 holds 66.5% of the mass
    p0 = math.e ** 2 / (math.e ** 2 + math.e + 1)
    draw = abs(math.log(p0 / (1 - p0))) / 2  # its mass down to u = 0.5
    assert flips.draw_margin(probs, 0.5, 0) == pytest.approx(draw)
    assert flips.sampling_margin(z, 0.5, 0, min_p=0.05, top_p=1.0) == pytest.approx(draw)
    assert flips.greedy_margin(z) == 0.5 and flips.greedy_margin([3.0, 3.0, 1.0]) == 0.0
    assert flips.top_p_margin(z, np.array([1, 1, 1, 0], bool), 1.0) == math.inf
    # top-p 0.9 over the kept three: ascending masses 0.090, 0.245, 0.665; the cut 0.1 sits just above
    # the first cumulative sum 0.0900
    q = _softmax([0.0, 1.0, 2.0])
    expect = abs(math.log(q[0] / (1 - q[0])) - math.log(0.1 / 0.9)) / 2
    assert flips.top_p_margin(z, np.array([1, 1, 1, 0], bool), 0.9) == pytest.approx(min(expect, 0.5))


def test_a_min_p_crossing_counts_where_it_moves_the_pick():
    """Token 1 sits 0.002 above the min-p threshold, token 2 0.002 below it. With u = 0.95 the pick
    (token 0, mass 0.952) changes when token 2 enters (delta 0.001: the mass after it doubles); with
    u = 0.5 it does not, and only the draw's own distance counts (the mass of token 0 down to 0.5
    with token 2 in: e^(-2 delta) = 0.1)."""
    t = math.log(0.05)
    z = np.array([0.0, t + 0.002, t - 0.002])
    for u, expect in ((0.95, 0.001), (0.5, math.log(10) / 2)):
        _, _, token, probs = outcome(z, u, 0.05, 1.0)
        assert token == 0 and probs[2] == 0.0
        margin = flips.sampling_margin(z, u, token, min_p=0.05, top_p=1.0)
        assert margin == pytest.approx(expect, rel=1e-3), u
        assert flips.min_p_margin(z, 0.05) == pytest.approx(0.001)  # the kept set changes much earlier
        assert flips.draw_margin(probs, u, token) > 0.02  # the draw alone, kept set fixed, is further


def _corner_search(z, u, min_p, top_p, key, corners, hi):
    """The smallest radius (bisection) at which some corner of the L-inf cube changes outcome[key]."""
    base = outcome(z, u, min_p, top_p)[key]
    changes = lambda r: any(outcome(z + r * c, u, min_p, top_p)[key] != base for c in corners)  # noqa: E731
    if not changes(hi):
        return math.inf
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if changes(mid) else (mid, hi)
    return hi


@pytest.mark.parametrize("min_p", [0.05, 0.3])
def test_margin_is_the_smallest_perturbation_that_changes_the_pick(min_p):
    """Brute force over every corner of the L-inf cube (each decision boundary is linear or monotone in
    each logit, so the corners are the cube's extremes): the pick first changes at the margin, exactly
    where no other logit is within twice the margin of the top one; elsewhere the margin is a lower
    bound (it never excuses less than the truth, and stays within a factor 3 here)."""
    rng = np.random.default_rng(7)
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=6)))
    exact_checked = 0
    for _ in range(60):
        z = rng.normal(scale=1.5, size=6)
        u = float(rng.uniform())
        _, _, token, probs = outcome(z, u, min_p, 1.0)
        margin = flips.sampling_margin(z, u, token, min_p=min_p, top_p=1.0)
        if not 1e-3 < margin < 4:  # keep far from rounding
            continue
        exact = _corner_search(z, u, min_p, 1.0, 2, corners, 8.0)
        top2 = np.sort(z)[-2:]
        if top2[1] - top2[0] > 2 * margin:
            assert margin == pytest.approx(exact, rel=1e-6), (z, u)
            exact_checked += 1
        else:
            assert exact / 3 < margin <= exact * (1 + 1e-9), (z, u)
    assert exact_checked >= 30


def test_margin_with_top_p_is_a_lower_bound():
    """With top_p < 1 any change of the kept sets counts: below the margin neither the kept sets nor
    the pick change."""
    rng = np.random.default_rng(11)
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=5)))
    checked = 0
    for _ in range(40):
        z = rng.normal(scale=1.5, size=5)
        u = float(rng.uniform())
        keep, keep2, token, probs = outcome(z, u, 0.05, 0.8)
        margin = flips.sampling_margin(z, u, token, min_p=0.05, top_p=0.8)
        if not 1e-3 < margin < 4:
            continue
        assert all(outcome(z + 0.999 * margin * c, u, 0.05, 0.8)[:3] == (keep, keep2, token) for c in corners)
        assert margin <= flips.min_p_margin(z, 0.05)  # any change of the kept sets counts
        checked += 1
    assert checked >= 25


def test_greedy_margin_is_the_smallest_perturbation_that_moves_the_argmax():
    rng = np.random.default_rng(3)
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=5)))
    for _ in range(30):
        z = rng.normal(size=5)
        m = flips.greedy_margin(z)
        top = int(np.argmax(z))
        assert all(int(np.argmax(z + 0.999 * m * c)) == top for c in corners)
        assert any(int(np.argmax(z + 1.001 * m * c)) != top for c in corners)


# ---------------------------------------------------------------------------- e2e after a flip


class FakeE2EFixture(FakeFixture):
    """A case whose reference decoded N tokens (no SOS/EOS: every token goes to S3Gen)."""
    params = {"exaggeration": 0.5, "max_new_tokens": N, "temperature": 0.8, "cfg_weight": 0.5,
              "repetition_penalty": 1.2, "min_p": 0.05, "top_p": 1.0, "n_cfm_timesteps": 2}
    case = {"text": "hello"}
    name = "fake"

    def audio_path(self):
        return "unused.wav"


class FakePipeline:
    """Stands in for the MLX ChatterboxTTS: T3 decodes `tokens` (reporting `scaled` logits per step),
    S3Gen records the tokens it is given and returns the reference's own mel and waveform."""

    def __init__(self, fx, tokens, scaled):
        import types

        self.fx, self.tokens, self.scaled, self.s3gen_tokens = fx, tokens, scaled, []
        self.t3 = types.SimpleNamespace(inference=self._t3)
        self.s3gen = types.SimpleNamespace(inference=self._s3gen, tokenizer=types.SimpleNamespace(
            forward=lambda wavs: (np.zeros((1, 4), np.int32), None)))

    def prepare_conditionals(self, path, exaggeration, trace):
        import types

        trace.update(wav_24k=np.zeros(8, np.float32), wav_16k=np.zeros(6, np.float32))
        z = np.zeros((1, 4), np.float32)
        return types.SimpleNamespace(t3=types.SimpleNamespace(speaker_emb=z, cond_prompt_speech_tokens=z),
                                     gen={"prompt_feat": z, "prompt_token": z, "embedding": z})

    def text_tokens(self, text):
        return np.zeros((2, 3), np.int32)

    def _t3(self, *, on_step, max_new_tokens, **kw):
        for i in range(min(max_new_tokens, self.tokens.shape[1])):
            on_step(i, {"logits_temp": self.scaled[i]})
        return self.tokens

    def _s3gen(self, speech, ref_dict, n_cfm_timesteps, trace, **replay):
        self.s3gen_tokens.append(np.asarray(speech))
        trace["output_mel"] = self.fx.tensor("flow.output_mel")
        return self.fx.tensor("hift.wav"), None


def test_e2e_after_a_justified_flip_compares_s3gen_on_the_reference_tokens(monkeypatch):
    """Yesterday a flip made flow.output_mel and hift.wav 'not comparable' (S3Gen ran on other tokens,
    or not at all); now S3Gen runs on the reference's tokens and they are compared."""
    from parity.stages import cumulative

    margins = np.full(N, 1.0)
    margins[5] = small()
    ref = reference(margins)
    rng = np.random.default_rng(1)
    ref.update({"flow.speech_tokens": ref["t3.speech_tokens"].copy(), "t3.uniform_draws": rng.uniform(size=N),
                "flow.start_noise": np.zeros((1, 80, 4), np.float32), "hift.sine_phase": np.zeros((1, 9, 1), np.float32),
                "hift.sine_noise": np.zeros((1, 9, 4), np.float32),
                "flow.output_mel": rng.normal(size=(1, 80, 6)).astype(np.float32),
                "hift.wav": rng.normal(size=(1, 100)).astype(np.float32)})
    fx = FakeE2EFixture(ref)
    out_run = run_output(ref, [5], teacher_forced=False, logit_err=small())
    fake = FakePipeline(fx, out_run["t3.speech_tokens"], out_run["t3.logits_temp"])
    monkeypatch.setattr(cumulative, "_pipeline", lambda ckpt: fake)
    out = cumulative.run_e2e(fx, None)
    assert len(fake.s3gen_tokens) == 1
    np.testing.assert_array_equal(fake.s3gen_tokens[0], ref["flow.speech_tokens"])  # the reference's, not MLX's
    results = {name: evaluate(fx, out, name=name, mode="e2e")
               for name in ("t3.speech_tokens", "flow.speech_tokens", "flow.output_mel", "hift.wav")}
    assert all(r.status == "passed" for r in results.values()), {k: (r.status, r.message) for k, r in results.items()}
    assert "step 5" in results["t3.speech_tokens"].message
    assert "S3Gen ran on the reference's tokens" in results["hift.wav"].message
