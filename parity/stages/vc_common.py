"""Voice conversion's stage runners reuse the English ones: ChatterboxVC runs the same S3Gen
(embed_ref, flow, HiFT) as ChatterboxTTS, so each vc_* stage is an English stage's runner on the VC
fixture, read through `VCFixture` (the English names -> the vc.* ones), its outputs renamed back.
Isolated exactly as the English stages: every sub-stage gets the reference's own inputs."""
from __future__ import annotations

from typing import Dict

from .. import ROOT
from ..fixtures import RenamedFixture

# English checkpoint -> the VC checkpoint that holds the same tensor of ChatterboxVC's run
VC_NAMES: Dict[str, str] = {
    "audio.wav_24k": "vc.target_wav_24k",
    "embed_ref.wav_16k": "vc.embed_ref.wav_16k", "embed_ref.log_mel": "vc.embed_ref.log_mel",
    "embed_ref.fbank": "vc.embed_ref.fbank", "embed_ref.prompt_feat": "vc.ref_dict.prompt_feat",
    "embed_ref.prompt_token": "vc.ref_dict.prompt_token", "embed_ref.xvector": "vc.ref_dict.embedding",
    "flow.speech_tokens": "vc.source_tokens", "flow.output_mel": "vc.output_mel", "hift.wav": "vc.wav",
    **{f"flow.{k}": f"vc.flow.{k}" for k in ("spk_embedding", "input_embedding", "encoder_out", "mu", "cond",
                                               "start_noise", "estimator_first", "estimator_last")},
    **{f"hift.{k}": f"vc.hift.{k}" for k in ("f0", "sine_phase", "sine_noise", "source", "magnitude", "phase",
                                               "wav_pre_fade")},
}


class VCFixture(RenamedFixture):
    """A VC fixture read under the English checkpoint names (VC_NAMES)."""

    def __init__(self, fx):
        super().__init__(fx, lambda name: VC_NAMES.get(name, name))


def vc_names(names) -> list:
    return [VC_NAMES[n] for n in names]


def run_english(runner, fx, ckpt) -> dict:
    """An English stage runner on a VC fixture, its outputs under their vc.* names."""
    return {VC_NAMES[k]: v for k, v in runner.run(VCFixture(fx), ckpt).items()}


def case_file(fx, key: str):
    """A VC case's audio file (`source` or `target_voice`) as its manifest names it."""
    return ROOT / fx.case[key]
