"""HiFT vocoder stage (S3Token2Wav.mel2wav, then S3Token2Wav's trim-fade).

Isolated mode: every sub-stage is fed the reference's own inputs from the fixture:
  hift.f0            ConvRNNF0Predictor(flow.output_mel)
  hift.source        SourceModuleHnNSF(upsampled reference hift.f0), replaying the recorded
                     hift.sine_phase and hift.sine_noise
  hift.magnitude,    decode(flow.output_mel, reference hift.source) up to the iSTFT
  hift.phase
  hift.wav_pre_fade  iSTFT(reference magnitude, phase), clamped to +-0.99
  hift.wav           hift.wav_pre_fade (ours) with the trim-fade on its first 2 * 480 samples
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ..checkpoint_dir import CheckpointDir
from ..fixtures import Fixture

STAGE = "hift"
PROVIDES = ["hift.f0", "hift.source", "hift.magnitude", "hift.phase", "hift.wav_pre_fade", "hift.wav"]

S3GEN_SR = 24000
_MODELS: Dict[str, object] = {}


def model(ckpt: CheckpointDir):
    """The MLX HiFTGenerator of this checkpoint (built once per checkpoint path)."""
    from mlx_impl.convert.hift import build_hift, strip_prefix

    key = str(ckpt.path.resolve())
    if key not in _MODELS:
        _MODELS[key] = build_hift(strip_prefix(ckpt.state("s3gen"), "mel2wav."))
    return _MODELS[key]


def trim_fade(n_trim: int = S3GEN_SR // 50) -> np.ndarray:
    """S3Token2Wav.trim_fade: n_trim zeros, then (cos(linspace(pi, 0, n_trim)) + 1) / 2, float32
    (linspace as torch's CPU kernel computes it in float32: from the start for the first half,
    from the end for the second)."""
    start, end = np.float32(np.pi), np.float32(0.0)
    step = np.float32((end - start) / np.float32(n_trim - 1))
    i = np.arange(n_trim)
    half = n_trim // 2
    ramp = np.where(
        i < half,
        start + step * i.astype(np.float32),
        end - step * (n_trim - 1 - i).astype(np.float32),
    ).astype(np.float32)
    fade = np.zeros(2 * n_trim, dtype=np.float32)
    fade[n_trim:] = (np.cos(ramp) + np.float32(1.0)) / np.float32(2.0)
    return fade


def apply_trim_fade(wav: np.ndarray) -> np.ndarray:
    fade = trim_fade()
    out = np.array(wav, dtype=np.float32, copy=True)
    n = min(out.shape[-1], fade.shape[0])
    out[..., :n] *= fade[:n]
    return out


def run(fx: Fixture, ckpt: CheckpointDir) -> Dict[str, np.ndarray]:
    import mlx.core as mx

    m = model(ckpt)
    mel = mx.array(fx.tensor("flow.output_mel"))
    out: Dict[str, mx.array] = {}

    out["hift.f0"] = m.f0_predictor(mel)
    out["hift.source"] = m.f0_to_source(
        mx.array(fx.tensor("hift.f0")),
        phase_vec=mx.array(fx.tensor("hift.sine_phase")),
        noise=mx.array(fx.tensor("hift.sine_noise")),
    )
    magnitude, phase = m.decode_spectrum(mel, mx.array(fx.tensor("hift.source")))
    out["hift.magnitude"], out["hift.phase"] = magnitude, phase
    out["hift.wav_pre_fade"] = m.spectrum_to_wav(
        mx.array(fx.tensor("hift.magnitude")), mx.array(fx.tensor("hift.phase"))
    )
    mx.eval(list(out.values()))
    res = {k: np.array(v) for k, v in out.items()}
    res["hift.wav"] = apply_trim_fade(res["hift.wav_pre_fade"])
    return res
