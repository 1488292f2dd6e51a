"""Non-text conditioning of T3 (mirrors chatterbox/models/t3/modules/cond_enc.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import mlx.core as mx
import mlx.nn as nn

from .perceiver import Perceiver
from .t3_config import T3Config


@dataclass
class T3Cond:
    """Conditioning inputs: speaker embedding (B, 256), prompt speech tokens (B, <=150),
    their embedding (filled by T3.prepare_conditioning) and the emotion exaggeration (B, 1, 1)."""

    speaker_emb: mx.array
    clap_emb: Optional[mx.array] = None
    cond_prompt_speech_tokens: Optional[mx.array] = None
    cond_prompt_speech_emb: Optional[mx.array] = None
    emotion_adv: Optional[Union[mx.array, float]] = 0.5


class T3CondEnc(nn.Module):
    """Speaker embedding projection, Perceiver-resampled speech prompt, emotion exaggeration."""

    def __init__(self, hp: T3Config):
        super().__init__()
        self.hp = hp
        if hp.encoder_type == "voice_encoder":
            self.spkr_enc = nn.Linear(hp.speaker_embed_size, hp.n_channels)
        else:
            raise NotImplementedError(str(hp.encoder_type))
        self.emotion_adv_fc = nn.Linear(1, hp.n_channels, bias=False) if hp.emotion_adv else None
        # The original builds Perceiver() with its 1024-wide defaults, which equal n_channels of the
        # real config; taking n_channels lets a small test config work too.
        self.perceiver = (
            Perceiver(pre_attention_query_size=hp.n_channels, embedding_dim=hp.n_channels)
            if hp.use_perceiver_resampler else None
        )

    def __call__(self, cond: T3Cond, outputs: Optional[dict] = None) -> mx.array:
        """(B, len_cond, dim). `outputs`, when given, receives the intermediate tensors."""
        assert (cond.cond_prompt_speech_tokens is None) == (cond.cond_prompt_speech_emb is None), \
            "no embeddings for cond_prompt_speech_tokens"

        cond_spkr = self.spkr_enc(cond.speaker_emb.reshape(-1, self.hp.speaker_embed_size))[:, None]  # (B, 1, dim)
        empty = mx.zeros_like(cond_spkr[:, :0])  # (B, 0, dim)

        assert cond.clap_emb is None, "clap_embed not implemented"
        cond_clap = empty

        cond_prompt_speech_emb = cond.cond_prompt_speech_emb
        if cond_prompt_speech_emb is None:
            cond_prompt_speech_emb = empty
        elif self.hp.use_perceiver_resampler:
            cond_prompt_speech_emb = self.perceiver(cond_prompt_speech_emb)

        cond_emotion_adv = empty
        if self.hp.emotion_adv:
            assert cond.emotion_adv is not None
            emotion_adv = mx.array(cond.emotion_adv, dtype=mx.float32)
            cond_emotion_adv = self.emotion_adv_fc(emotion_adv.reshape(-1, 1, 1))

        if outputs is not None:
            outputs.update(cond_spkr=cond_spkr, perceiver_out=cond_prompt_speech_emb, cond_emotion=cond_emotion_adv)
        return mx.concatenate([cond_spkr, cond_clap, cond_prompt_speech_emb, cond_emotion_adv], axis=1)
