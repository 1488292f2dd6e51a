"""MLX port of chatterbox/models/s3tokenizer/s3tokenizer.py: Chatterbox's subclass of S3TokenizerV2
with its own log-mel (librosa mel filters and a hann window made at init) and a `forward` that takes
16 kHz waveforms."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import mlx.core as mx
import numpy as np

from .model_v2 import ModelConfig, S3TokenizerV2
from .utils import hann_window, log_mel_from_filters, mel_filters, padding

# Sampling rate of the inputs to S3TokenizerV2
S3_SR = 16_000
S3_HOP = 160  # 100 frames/sec
S3_TOKEN_HOP = 640  # 25 tokens/sec
S3_TOKEN_RATE = 25
SPEECH_VOCAB_SIZE = 6561

Wav = Union[np.ndarray, mx.array]


class S3Tokenizer(S3TokenizerV2):
    """S3TokenizerV2 with Chatterbox's `forward(wavs, max_len)` and `log_mel_spectrogram`.

    `_mel_filters` = librosa.filters.mel(sr=16000, n_fft=400, n_mels=128), `_window` =
    torch.hann_window(400) (the original's `window` buffer): neither is a stored weight.
    Difference: the original passes only `name` to S3TokenizerV2, so its network always has the
    default size whatever `config` says; here `config` sizes the network too (same result for the
    default config, smaller models for tests)."""

    ignore_state_dict_missing = ("_mel_filters", "window")

    def __init__(self, name: str = "speech_tokenizer_v2_25hz", config: Optional[ModelConfig] = None):
        config = config if config is not None else ModelConfig()
        super().__init__(name, config)
        self.n_fft = 400
        self._mel_filters = mx.array(mel_filters(sr=S3_SR, n_fft=self.n_fft, n_mels=config.n_mels))
        self._window = mx.array(hann_window(self.n_fft))

    def pad(self, wavs: Sequence[Wav], sr: int) -> List[mx.array]:
        """Right-pad each wav with zeros to a whole number of 40 ms token hops; each (1, L')."""
        processed_wavs = []
        for wav in wavs:
            wav = mx.array(wav)
            if wav.ndim == 1:
                wav = wav[None]
            n_tokens = (wav.shape[1] / sr) * S3_TOKEN_RATE
            n_tokens = np.ceil(n_tokens)
            intended_wav_len = int(n_tokens * (sr / S3_TOKEN_RATE))
            wav = mx.pad(wav, [(0, 0), (0, intended_wav_len - wav.shape[-1])])
            processed_wavs.append(wav)
        return processed_wavs

    def _prepare_audio(self, wavs) -> List[mx.array]:
        """A list of wavs (1-D or (1, L)), or a (B, L) array read row by row (as iterating a torch
        tensor does in the original) -> list of (1, L) float32 arrays."""
        if isinstance(wavs, (np.ndarray, mx.array)):
            if wavs.ndim != 2:
                raise ValueError(f"expected a list of wavs or a (B, L) array, got shape {tuple(wavs.shape)}")
            wavs = [wavs[i] for i in range(wavs.shape[0])]
        processed_wavs = []
        for wav in wavs:
            wav = mx.array(wav)
            if wav.ndim == 1:
                wav = wav[None]
            processed_wavs.append(wav)
        return processed_wavs

    def forward(self, wavs, accelerator=None, max_len: Optional[int] = None) -> Tuple[mx.array, mx.array]:
        """16 kHz wavs -> (speech tokens (B, T') int32, lengths (B,) int32). `max_len` truncates the
        mel to max_len * 4 frames before the encoder (25 tokens/s, 100 mel frames/s)."""
        mels = []
        for wav in self._prepare_audio(wavs):
            mel = self.log_mel_spectrogram(wav)  # (1, F, T)
            if max_len is not None:
                mel = mel[..., :max_len * 4]
            mels.append(mel[0])
        mels, mel_lens = padding(mels)
        return self.quantize(mels, mel_lens)

    def __call__(self, wavs, accelerator=None, max_len: Optional[int] = None):
        return self.forward(wavs, accelerator=accelerator, max_len=max_len)

    def log_mel_spectrogram(self, audio: Wav, padding: int = 0) -> mx.array:
        """16 kHz samples (..., L) -> log-mel (..., 128, L // 160); the last STFT frame is dropped."""
        return log_mel_from_filters(mx.array(audio), self._mel_filters, self._window, padding)
