"""Stage "vc_source": the source clip's speech tokens in ChatterboxVC.generate, isolated.

  vc.source_wav_16k   <- the source file: librosa.load(sr=16000) port (straight to 16 kHz)
  vc.source_log_mel   <- the reference vc.source_wav_16k (S3Tokenizer.log_mel_spectrogram)
  vc.source_tokens    <- the reference vc.source_log_mel through the S3TokenizerV2 network (no
                         max_len; > 30 s: the long-audio path)
"""
from __future__ import annotations

import numpy as np

from .s3tok import load_tokenizer, tokens_from_log_mel
from .vc_common import case_file

STAGE = "vc_source"
PROVIDES = ["vc.source_wav_16k", "vc.source_log_mel", "vc.source_tokens"]


def run(fx, ckpt) -> dict:
    from mlx_impl.audio import load_like_librosa

    model = load_tokenizer(ckpt)
    wav_16k, _ = load_like_librosa(case_file(fx, "source"), sr=16000)
    ref_wav = fx.tensor("vc.source_wav_16k").astype(np.float32)
    log_mel = model.log_mel_spectrogram(ref_wav[None])  # (1, 128, T)
    tokens = tokens_from_log_mel(model, fx.tensor("vc.source_log_mel"))
    return {"vc.source_wav_16k": np.asarray(wav_16k), "vc.source_log_mel": np.array(log_mel), "vc.source_tokens": tokens}
