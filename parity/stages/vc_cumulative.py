"""Cumulative mode "vc": the MLX ChatterboxVC end to end, as a user calls it (mlx_impl/vc.py, loaded
from the checkpoint folder by mlx_impl.load.load_vc): the target and source audio files -> the
waveform, MLX feeding MLX, the recorded flow noise and SineGen draws replayed. Compared against the
[cumulative.vc] tolerances (tests/parity/test_cumulative.py)."""
from __future__ import annotations

import numpy as np

from .vc_common import case_file

_MODELS: dict = {}


def _vc(ckpt):
    """The MLX ChatterboxVC of `ckpt` (one held at a time: memory)."""
    key = str(ckpt.path)
    if key not in _MODELS:
        from mlx_impl.load import load_vc
        from mlx_impl.vc import ChatterboxVC

        _MODELS.clear()
        _MODELS[key] = load_vc(ckpt.path, ChatterboxVC)
    return _MODELS[key]


def run(fx, ckpt) -> dict:
    import mlx.core as mx

    vc = _vc(ckpt)
    trace: dict = {}
    wav = vc.generate(case_file(fx, "source"), target_voice_path=case_file(fx, "target_voice"),
                      flow_noise=mx.array(fx.tensor("vc.flow.start_noise")),
                      sine_phase=mx.array(fx.tensor("vc.hift.sine_phase")),
                      sine_noise=mx.array(fx.tensor("vc.hift.sine_noise")), trace=trace)
    ref = vc.ref_dict
    return {
        "vc.target_wav_24k": np.asarray(trace["target_wav_24k"]), "vc.source_wav_16k": np.asarray(trace["source_wav_16k"]),
        "vc.ref_dict.prompt_feat": np.array(ref["prompt_feat"]), "vc.ref_dict.prompt_token": np.array(ref["prompt_token"]),
        "vc.ref_dict.embedding": np.array(ref["embedding"]), "vc.source_tokens": np.array(trace["source_tokens"]),
        "vc.output_mel": np.array(trace["output_mel"]), "vc.wav": np.array(wav),
    }
