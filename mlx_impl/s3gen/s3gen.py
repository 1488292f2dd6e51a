"""S3Gen in MLX: speech tokens -> mel (S3Token2Mel) -> waveform (S3Token2Wav).

Mirrors chatterbox/models/s3gen/s3gen.py. Every random draw of the original (the flow-matching
start noise, SineGen's phase and noise) can be passed in to replay a reference run.
"""
from __future__ import annotations

import logging
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..audio import embed_ref_resample_16k
from ..s3tokenizer import S3_SR, SPEECH_VOCAB_SIZE
from ..s3tokenizer.s3tokenizer import S3Tokenizer
from .const import S3GEN_SR
from .f0_predictor import ConvRNNF0Predictor
from .flow import build_causal_flow
from .hifigan import HiFTConfig, HiFTGenerator
from .utils.mel import mel_spectrogram
from .xvector import CAMPPlus

logger = logging.getLogger(__name__)


def drop_invalid_tokens(x):
    """Speech tokens below SPEECH_VOCAB_SIZE (batch of one)."""
    x = np.asarray(x)
    assert x.ndim <= 2 and x.shape[0] == 1, "only batch size of one allowed for now"
    return x[x < SPEECH_VOCAB_SIZE]


def make_trim_fade(sr: int = S3GEN_SR) -> mx.array:
    """20 ms of silence, then a 20 ms raised-cosine fade-in (S3Token2Wav.trim_fade)."""
    n_trim = sr // 50
    fade = np.zeros(2 * n_trim, dtype=np.float32)
    # torch.linspace(pi, 0, n) in float32, then (cos + 1) / 2, as the original
    ramp = np.linspace(np.float32(np.pi), np.float32(0.0), n_trim, dtype=np.float32)
    fade[n_trim:] = (np.cos(ramp) + np.float32(1.0)) / np.float32(2.0)
    return mx.array(fade)


class S3Token2Mel(nn.Module):
    """S3Gen's CFM decoder: S3 speech tokens -> mel, conditioned on a reference clip."""

    def __init__(self, meanflow: bool = False):
        super().__init__()
        self.tokenizer = S3Tokenizer("speech_tokenizer_v2_25hz")
        self.mel_extractor = mel_spectrogram
        self.speaker_encoder = CAMPPlus()
        self.meanflow = meanflow
        self.flow = build_causal_flow(meanflow=meanflow)

    def embed_ref(self, ref_wav, ref_sr: int, trace: Optional[dict] = None) -> dict:
        """Reference clip -> the conditioning dict of flow.inference (prompt tokens, mel, x-vector)."""
        ref_wav = np.asarray(ref_wav, dtype=np.float32)
        if ref_wav.ndim == 1:
            ref_wav = ref_wav[None]
        if ref_wav.shape[1] > 10 * ref_sr:
            print("WARNING: s3gen received ref longer than 10s")
        if ref_sr != S3GEN_SR:
            raise NotImplementedError("embed_ref takes a 24 kHz reference (what ChatterboxTTS passes)")
        ref_mels_24 = self.mel_extractor(mx.array(ref_wav)).transpose(0, 2, 1)  # (1, T, 80)
        ref_wav_16 = embed_ref_resample_16k(ref_wav, S3GEN_SR, S3_SR)
        ref_x_vector = self.speaker_encoder.inference(mx.array(ref_wav_16))
        ref_speech_tokens, ref_speech_token_lens = self.tokenizer(mx.array(ref_wav_16))
        if ref_mels_24.shape[1] != 2 * ref_speech_tokens.shape[1]:
            logger.warning("Reference mel length is not equal to 2 * reference token length.\n")
            ref_speech_tokens = ref_speech_tokens[:, : ref_mels_24.shape[1] // 2]
            ref_speech_token_lens = mx.array([ref_speech_tokens.shape[1]], dtype=mx.int32)
        if trace is not None:
            trace.update(wav_16k=ref_wav_16)
        return dict(prompt_token=ref_speech_tokens, prompt_token_len=ref_speech_token_lens,
                    prompt_feat=ref_mels_24, prompt_feat_len=None, embedding=ref_x_vector)

    def flow_inference(self, speech_tokens, ref_dict: dict, n_cfm_timesteps: Optional[int] = None,
                       finalize: bool = True, noise: Optional[mx.array] = None,
                       trace: Optional[dict] = None) -> mx.array:
        """(1, T) tokens -> (1, 80, 2T) mel. `noise`: the CFM start noise to replay (with MeanFlow: the
        whole start the Euler steps get, the original's second draw, noised_mels, already in it)."""
        n_cfm_timesteps = n_cfm_timesteps or (2 if self.meanflow else 10)
        speech_tokens = mx.array(np.atleast_2d(np.asarray(speech_tokens)).astype(np.int32))
        token_lens = mx.array([speech_tokens.shape[1]], dtype=mx.int32)
        noised_mels = None
        if self.meanflow and noise is None:  # the original draws the generated frames' start apart
            noised_mels = mx.random.normal((1, 80, speech_tokens.shape[-1] * 2))
        mels, _ = self.flow.inference(
            token=speech_tokens, token_len=token_lens, finalize=finalize, n_timesteps=n_cfm_timesteps,
            noised_mels=noised_mels, meanflow=self.meanflow, noise=noise, trace=trace, **ref_dict)
        return mels


class S3Token2Wav(S3Token2Mel):
    """S3Token2Mel + the HiFT vocoder."""

    def __init__(self, meanflow: bool = False):
        super().__init__(meanflow)
        self.mel2wav = HiFTGenerator(HiFTConfig.s3gen(), f0_predictor=ConvRNNF0Predictor())
        self._trim_fade = make_trim_fade()  # not a parameter (underscore: skipped by MLX's tree)

    @property
    def trim_fade(self) -> mx.array:
        return self._trim_fade

    def apply_trim_fade(self, wav: mx.array) -> mx.array:
        n = self._trim_fade.shape[0]
        return mx.concatenate([wav[:, :n] * self._trim_fade, wav[:, n:]], axis=1)

    def hift_inference(self, speech_feat: mx.array, cache_source: Optional[mx.array] = None,
                       phase_vec: Optional[mx.array] = None, noise: Optional[mx.array] = None):
        return self.mel2wav.inference(speech_feat, cache_source=cache_source, phase_vec=phase_vec, noise=noise)

    def inference(self, speech_tokens, ref_dict: dict, n_cfm_timesteps: Optional[int] = None,
                  flow_noise: Optional[mx.array] = None, sine_phase: Optional[mx.array] = None,
                  sine_noise: Optional[mx.array] = None, trace: Optional[dict] = None):
        """tokens -> (waveform (1, L) after the trim-fade, source (1, 1, L))."""
        mels = self.flow_inference(speech_tokens, ref_dict, n_cfm_timesteps, finalize=True,
                                   noise=flow_noise, trace=trace)
        wavs, sources = self.hift_inference(mels, phase_vec=sine_phase, noise=sine_noise)
        if trace is not None:
            trace.update(output_mel=mels, wav_pre_fade=wavs)
        return self.apply_trim_fade(wavs), sources

    def __call__(self, speech_tokens, ref_dict: dict, **kw):
        return self.inference(speech_tokens, ref_dict, **kw)
