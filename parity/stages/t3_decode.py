"""Stage "t3_decode": T3 sampled decoding, isolated (from the reference's t3.input_embeds).

Teacher-forced: the reference's t3.speech_tokens are fed back as the decoded sequence, so the
per-step logits after each processor compare step by step even where a free run would diverge.
At every step the recorded uniform (t3.uniform_draws) is replayed through the reference's
inverse-CDF sampler on MLX's own probabilities: t3.speech_tokens is that pick per step, each one
made from the reference's history. Where it equals the forced token at every step a free-running
decode is that same sequence (same deterministic computation); where a step picks otherwise, the
verdict (parity/flips.py) excuses it only as a flip: the reference's own margin at that step within
the registry's flip bound. Every step is judged, not just the first.
`explain_divergence` decodes free-running and localises the first differing step.

Run `python -m parity.stages.explain_tokens <fixture_dir> <checkpoint_dir>` to print the divergence report.
"""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np

STAGE = "t3_decode"
PROVIDES = [
    "t3.logits_raw", "t3.logits_cfg", "t3.logits_rep", "t3.logits_temp", "t3.logits_min_p", "t3.logits_top_p",
    "t3.speech_tokens",
]
STEP_KEYS = ("logits_raw", "logits_cfg", "logits_rep", "logits_temp", "logits_min_p", "logits_top_p")


def decode_params(fx) -> dict:
    p = fx.params
    return dict(
        temperature=float(p["temperature"]), cfg_weight=float(p["cfg_weight"]), min_p=float(p["min_p"]),
        top_p=float(p["top_p"]), repetition_penalty=float(p["repetition_penalty"]),
    )


class StepRecorder:
    """on_step hook collecting the per-step tensors as numpy: logits_raw (2, V), the others (V,)."""

    def __init__(self, keys=STEP_KEYS + ("probs",)):
        self.keys = keys
        self.steps = {k: [] for k in keys}
        self.tokens = []

    def __call__(self, step: int, outputs: dict) -> None:
        for k in self.keys:
            a = np.array(outputs[k])
            self.steps[k].append(a if k == "logits_raw" else a.reshape(-1))
        self.tokens.append(int(outputs["token"]))

    def stacked(self, key: str) -> np.ndarray:
        return np.stack(self.steps[key]).astype(np.float32)


def decode(fx, ckpt, *, draw=None, forced_tokens=None, max_new_tokens: Optional[int] = None,
           record: bool = True):
    """Decode from the reference's t3.input_embeds; returns (tokens (1, n), StepRecorder or None)."""
    import mlx.core as mx

    from .t3_cond import load_t3_model

    model = load_t3_model(ckpt)
    recorder = StepRecorder() if record else None
    if max_new_tokens is None:
        max_new_tokens = int(fx.params["max_new_tokens"])
    tokens = model.inference_from_embeds(
        mx.array(fx.tensor("t3.input_embeds").astype(np.float32)), max_new_tokens=max_new_tokens, draw=draw,
        forced_tokens=forced_tokens, on_step=recorder, **decode_params(fx),
    )
    return tokens, recorder


def replay_draw(fx):
    from mlx_impl.t3.inference import ReplayDraw

    uniforms = fx.tensor("t3.uniform_draws")
    return ReplayDraw(uniforms), int(uniforms.size)


def run(fx, ckpt) -> dict:
    import mlx.core as mx

    from ..flips import TEACHER_FORCED
    from .t3_cond import load_t3_model

    ref_tokens = fx.tensor("t3.speech_tokens").reshape(-1)
    draw, n_draws = replay_draw(fx)
    if n_draws != ref_tokens.size:
        raise ValueError(f"{n_draws} recorded uniforms for {ref_tokens.size} reference tokens")
    recorder = StepRecorder()
    picks = []  # the token the replayed draw picks from MLX's own probabilities at each forced step

    def on_step(step: int, outputs: dict) -> None:
        recorder(step, outputs)
        picks.append(draw(outputs["probs"], step))

    model = load_t3_model(ckpt)
    model.inference_from_embeds(
        mx.array(fx.tensor("t3.input_embeds").astype(np.float32)), max_new_tokens=ref_tokens.size,
        forced_tokens=ref_tokens, on_step=on_step, **decode_params(fx),
    )
    out = {f"t3.{k}": recorder.stacked(k) for k in STEP_KEYS}
    out["t3.speech_tokens"] = np.asarray(picks, dtype=np.int32)[None]
    out[TEACHER_FORCED] = True
    return out


# ---------------------------------------------------------------- divergence report


def _softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    finite = np.isfinite(x)
    m = x[finite].max()
    e = np.where(finite, np.exp(np.where(finite, x, m) - m), 0.0)
    return e / e.sum()


def top_k_table(probs: np.ndarray, k: int = 5) -> list:
    idx = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), float(probs[i])) for i in idx]


def first_divergence(ref_tokens, out_tokens) -> Optional[int]:
    """Index of the first differing token (or the shorter length when one is a prefix); None if equal."""
    a, b = np.asarray(ref_tokens).reshape(-1), np.asarray(out_tokens).reshape(-1)
    n = min(a.size, b.size)
    diff = np.nonzero(a[:n] != b[:n])[0]
    if diff.size:
        return int(diff[0])
    return None if a.size == b.size else n


def print_divergence(step: Optional[int], ref_tokens, out_tokens, ref_logits: np.ndarray, out_logits: np.ndarray,
                     label: str = "", draws: Optional[np.ndarray] = None, file=sys.stdout) -> None:
    """Print the first differing step and the top-5 of both distributions there (softmax of the
    given per-step logits)."""
    ref_tokens, out_tokens = np.asarray(ref_tokens).reshape(-1), np.asarray(out_tokens).reshape(-1)
    if step is None:
        print(f"{label}: identical, {ref_tokens.size} tokens", file=file)
        return
    rt = ref_tokens[step] if step < ref_tokens.size else None
    ot = out_tokens[step] if step < out_tokens.size else None
    print(f"{label}: first difference at step {step}: reference {rt}, MLX {ot} "
          f"(lengths {ref_tokens.size} / {out_tokens.size})", file=file)
    if draws is not None and step < draws.size:
        print(f"  recorded uniform u = {draws[step]!r}", file=file)
    for name, logits in (("reference", ref_logits), ("MLX", out_logits)):
        if step < len(logits):
            p = _softmax(logits[step])
            cdf_note = ""
            if draws is not None and step < draws.size:
                cdf = np.cumsum(p)
                cdf_note = f" (u*total falls at cdf index {int(np.searchsorted(cdf, draws[step] * cdf[-1], 'right'))})"
            print(f"  {name:9s} top-5: " + ", ".join(f"{t}:{q:.6f}" for t, q in top_k_table(p)) + cdf_note, file=file)
        else:
            print(f"  {name:9s}: no step {step}", file=file)


def explain_divergence(fx, ckpt, file=sys.stdout) -> Optional[int]:
    """Free-running replayed decode, compared with the reference; prints the first differing step
    with both distributions (the reference's t3.logits_top_p, MLX's own at that step)."""
    ref_tokens = fx.tensor("t3.speech_tokens").reshape(-1)
    draw, n_draws = replay_draw(fx)
    tokens, rec = decode(fx, ckpt, draw=draw, max_new_tokens=min(int(fx.params["max_new_tokens"]), n_draws))
    step = first_divergence(ref_tokens, tokens)
    print_divergence(step, ref_tokens, tokens, fx.tensor("t3.logits_top_p"), rec.stacked("logits_top_p"),
                     label=f"{fx.name} t3.speech_tokens (replayed draws)", draws=fx.tensor("t3.uniform_draws"),
                     file=file)
    return step
