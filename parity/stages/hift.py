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
        state = strip_prefix(ckpt.state("s3gen"), "mel2wav.")
        _MODELS[key] = build_hift(state)
        print(f"hift weights: {len(state)} source tensors, all consumed, none ignored "
              f"({sum(k.endswith('original0') for k in state)} weight-norm pairs folded)")
    return _MODELS[key]


def apply_trim_fade(wav: np.ndarray) -> np.ndarray:
    """S3Token2Wav's trim-fade (the MLX S3Token2Wav's make_trim_fade) on the first samples."""
    from mlx_impl.s3gen.s3gen import make_trim_fade

    fade = np.array(make_trim_fade(S3GEN_SR))
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
