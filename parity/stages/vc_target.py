"""Stage "vc_target": ChatterboxVC.set_target_voice, isolated.

  vc.target_wav_24k           <- the target file: librosa.load(sr=24000) port (audio.load_like_librosa)
  vc.embed_ref.*, vc.ref_dict.* <- the English embed_ref runners (embed_ref_tokens.py,
                                 embed_ref_speaker.py) on the reference's target clip: the same
                                 S3Token2Mel.embed_ref on the first 10 s at 24 kHz
"""
from __future__ import annotations

import numpy as np

from . import embed_ref_speaker, embed_ref_tokens
from .vc_common import case_file, run_english, vc_names

STAGE = "vc_target"
PROVIDES = ["vc.target_wav_24k"] + vc_names(embed_ref_tokens.PROVIDES) + vc_names(embed_ref_speaker.PROVIDES)


def run(fx, ckpt) -> dict:
    from mlx_impl.audio import load_like_librosa

    wav_24k, _ = load_like_librosa(case_file(fx, "target_voice"), sr=24000)
    out = {"vc.target_wav_24k": np.asarray(wav_24k)}
    out.update(run_english(embed_ref_tokens, fx, ckpt))
    out.update(run_english(embed_ref_speaker, fx, ckpt))
    return out
