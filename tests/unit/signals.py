"""Test signals shared by the unit tests: a speech-like waveform whose pitch glides, with
syllable-like bursts, pauses and a low noise floor (exercises trimming, mels, fbanks, pitch)."""
from __future__ import annotations

import numpy as np


def speech_like(seconds: float, sr: int, seed: int = 0, *, f0=None, env_rate=None, lead: float = 0.0,
                lead_gain: float = 0.001, tail: float = 0.0, dc: float = 0.0) -> np.ndarray:
    """float32 samples at `sr`. Pitch f0 = (base, depth, rate): base + depth * sin(2 pi rate t) Hz
    (default (110, 50, 0.5 + 0.1 seed)); 11 harmonics; loudness bursts at `env_rate` Hz (default
    0.8 + 0.05 seed); the first `lead` and last `tail` seconds scaled by `lead_gain`; `dc` added."""
    rng = np.random.default_rng(seed)
    base, depth, rate = f0 if f0 is not None else (110, 50, 0.5 + 0.1 * seed)
    env_rate = env_rate if env_rate is not None else 0.8 + 0.05 * seed
    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(base + depth * np.sin(2 * np.pi * rate * t)) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * env_rate * t) * 2, 0, 1) ** 2
    x = 0.2 * voice * env + 1e-3 * rng.standard_normal(t.size)
    if dc:
        x = x + dc
    if lead:
        x[: int(lead * sr)] *= lead_gain
    if tail:
        x[-int(tail * sr):] *= lead_gain
    return x.astype(np.float32)
