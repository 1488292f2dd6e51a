"""Chatterbox Turbo's stage runners (turbo_*.py) and its cumulative mode share this: the MLX
ChatterboxTurboTTS as users load it (mlx_impl.tts_turbo.load_turbo: the hub's Turbo files, converted
strictly), one held at a time; the Turbo fixture read under the English checkpoint names (each
Turbo checkpoint is "turbo." + its English counterpart), so that an English runner whose model loads
from the Turbo folder as well (hift.py) runs on it unchanged; and MLX's own T3.inference_turbo with
recording wrappers, as the reference export records the original's (reference/export_turbo.py).
Isolated as the English stages: every sub-stage gets the reference's own inputs."""
from __future__ import annotations

import contextlib
from typing import Dict, Optional

import numpy as np

from ..fixtures import RenamedFixture

PREFIX = "turbo."
# the output each of inference_turbo's processors is recorded under, by the processor's type (MLX's
# temperature step is a plain function: mlx_impl.t3.inference.sampling.turbo_logits_processors)
PROCESSOR_NAMES = {"function": "logits_temp", "TopKLogitsWarper": "logits_top_k",
                   "TopPLogitsWarper": "logits_top_p", "RepetitionPenaltyLogitsProcessor": "logits_rep"}
STEP_KEYS = ("logits_raw", "logits_temp", "logits_top_k", "logits_top_p", "logits_rep")
N_CFM_TIMESTEPS = 2  # ChatterboxTurboTTS.generate's s3gen.inference(n_cfm_timesteps=2)

_MODELS: Dict[str, object] = {}


def pipeline(ckpt):
    """The MLX ChatterboxTurboTTS of a Turbo checkpoint folder (one held at a time: memory)."""
    key = str(ckpt.path)
    if key not in _MODELS:
        from mlx_impl.tts_turbo import ChatterboxTurboTTS, load_turbo

        _MODELS.clear()
        _MODELS[key] = load_turbo(ckpt.path, ChatterboxTurboTTS)
    return _MODELS[key]


class TurboFixture(RenamedFixture):
    """A Turbo fixture read under the English checkpoint names ("turbo." + name)."""

    def __init__(self, fx):
        super().__init__(fx, lambda name: PREFIX + name)


def turbo_names(names) -> list:
    return [PREFIX + n for n in names]


def run_english(runner, fx, ckpt) -> dict:
    """An English stage runner on a Turbo fixture, its outputs under their turbo.* names."""
    return {PREFIX + k: v for k, v in runner.run(TurboFixture(fx), ckpt).items()}


def f32(fx, name: str) -> np.ndarray:
    return np.asarray(fx.tensor(name), np.float32)


def decode_params(fx) -> dict:
    p = fx.params
    return dict(temperature=float(p["temperature"]), top_k=int(p["top_k"]), top_p=float(p["top_p"]),
                repetition_penalty=float(p["repetition_penalty"]))


@contextlib.contextmanager
def recording_t3(t3, record: Dict[str, list], embeds: Optional[np.ndarray] = None):
    """MLX's T3.inference_turbo, unchanged, with recording wrappers: per step the speech head's logits
    (speech_logits) and each processor's output (turbo_logits_processors' list, each processor wrapped)
    appended to `record`; `embeds` (the reference's turbo.t3.input_embeds) in place of what
    prepare_input_embeds computes (isolation)."""
    import mlx.core as mx
    import mlx_impl.t3.t3 as t3_mod

    real_processors, real_logits = t3_mod.turbo_logits_processors, t3.speech_logits

    def wrap(p):
        name = PROCESSOR_NAMES.get(type(p).__name__)
        if name is None:
            raise TypeError(f"unknown Turbo logits processor {p!r}")

        def recorded(ids, scores):
            out = p(ids, scores)
            record.setdefault(name, []).append(np.array(out).reshape(-1))
            return out

        return recorded

    def processors(*a, **k):
        return [wrap(p) for p in real_processors(*a, **k)]

    def speech_logits(*a, **k):
        out = real_logits(*a, **k)
        record.setdefault("logits_raw", []).append(np.array(out).reshape(-1))
        return out

    t3_mod.turbo_logits_processors = processors
    t3.speech_logits = speech_logits
    if embeds is not None:
        ref = mx.array(np.asarray(embeds, np.float32))
        t3.prepare_input_embeds = lambda **k: (ref, ref.shape[1] - k["text_tokens"].shape[1] - 1)
    try:
        yield
    finally:
        t3_mod.turbo_logits_processors = real_processors
        del t3.speech_logits
        if embeds is not None:
            del t3.prepare_input_embeds


def stacked(record: Dict[str, list], n: int) -> Dict[str, np.ndarray]:
    """The per-step recordings as (n, V) float32; a processor the arguments switch off passes its input
    on (as the reference export fills it)."""
    out, last = {}, None
    for key in STEP_KEYS:
        items = record.get(key, [])
        if items and len(items) != n:
            raise RuntimeError(f"{key}: {len(items)} steps recorded for {n} draws")
        out[key] = np.stack(items).astype(np.float32) if items else last
        last = out[key]
    return out


class ForcedDraw:
    """Teacher forcing: the step's token is the reference's; what `pick` (the replayed or greedy draw on
    MLX's own probabilities) would have chosen is kept in `picks`."""

    def __init__(self, forced: np.ndarray, pick):
        self.forced, self.pick, self.picks = np.asarray(forced).reshape(-1), pick, []

    def __call__(self, probs, step: int) -> int:
        self.picks.append(int(self.pick(probs, step)))
        return int(self.forced[step])
