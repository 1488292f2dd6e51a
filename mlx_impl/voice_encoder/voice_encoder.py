"""VoiceEncoder (chatterbox/models/voice_encoder/voice_encoder.py) in MLX.

3-layer LSTM (PyTorch gate order i, f, g, o) over 160-frame partial windows of a 40-bin mel, the
last hidden state projected, ReLU, L2-normalised; the partial embeddings of an utterance are
averaged and normalised again. `embeds_from_wavs` trims silence first exactly as the original does
with `librosa.effects.trim(top_db=20)` (see `trim`).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import backend
from ..s3gen.utils.mel import frame
from .config import VoiceEncConfig
from .melspec import melspectrogram

ArrayLike = Union[mx.array, np.ndarray]


# ---------------------------------------------------------------- librosa.effects.trim

def trim(y: ArrayLike, top_db: float = 60, frame_length: int = 2048, hop_length: int = 512) -> Tuple[mx.array, Tuple[int, int]]:
    """librosa.effects.trim for a mono signal (ref = the maximum frame RMS, aggregate unused).

    Frame RMS with centre padding (zeros, frame_length // 2 each side), converted to dB against
    the loudest frame (power_to_db with amin 1e-10 on the squared RMS); the non-silent frames are
    those above -top_db. Returns the trimmed signal and (start, end) in samples: the first
    non-silent frame * hop to (last non-silent frame + 1) * hop, capped at the signal length;
    (0, 0) when every frame is silent.
    """
    y = mx.array(np.asarray(y, dtype=np.float32)) if not isinstance(y, mx.array) else y
    n = y.shape[-1]
    padded = mx.pad(y, [(frame_length // 2, frame_length // 2)])
    frames = frame(padded, frame_length, hop_length)  # (n_frames, frame_length)
    rms = mx.sqrt(mx.mean(frames * frames, axis=-1))
    power = rms * rms
    amin = 1e-10
    ref = mx.max(power)
    db = 10.0 * mx.log10(mx.maximum(amin, power)) - 10.0 * mx.log10(mx.maximum(amin, ref))
    nonzero = np.flatnonzero(np.array(db > -top_db))
    if nonzero.size == 0:
        start, end = 0, 0
    else:
        start = int(nonzero[0]) * hop_length
        end = min(n, (int(nonzero[-1]) + 1) * hop_length)
    return y[start:end], (start, end)


# ---------------------------------------------------------------- partial windows

def get_num_wins(n_frames: int, step: int, min_coverage: float, hp: VoiceEncConfig):
    assert n_frames > 0
    win_size = hp.ve_partial_frames
    n_wins, remainder = divmod(max(n_frames - win_size + step, 0), step)
    if n_wins == 0 or (remainder + (win_size - step)) / win_size >= min_coverage:
        n_wins += 1
    target_n = win_size + step * (n_wins - 1)
    return n_wins, target_n


def get_frame_step(overlap: float, rate: Optional[float], hp: VoiceEncConfig) -> int:
    """Frames between two partial windows: from the overlap, or from `rate` partials per second."""
    assert 0 <= overlap < 1
    if rate is None:
        frame_step = int(np.round(hp.ve_partial_frames * (1 - overlap)))
    else:
        frame_step = int(np.round((hp.sample_rate / rate) / hp.ve_partial_frames))
    assert 0 < frame_step <= hp.ve_partial_frames
    return frame_step


def _fit_length(mel: mx.array, target_len: int) -> mx.array:
    """Zero-pad or cut a (T, M) mel to target_len frames."""
    if target_len > mel.shape[0]:
        mel = mx.concatenate([mel, mx.zeros((target_len - mel.shape[0], mel.shape[1]), dtype=mel.dtype)])
    return mel[:target_len]


def _windows(mel: mx.array, n_partials: int, frame_step: int, win: int) -> mx.array:
    """(T, M) -> (n_partials, win, M): mel[i * frame_step : i * frame_step + win]."""
    idx = np.arange(n_partials)[:, None] * frame_step + np.arange(win)[None, :]
    return mx.take(mel, mx.array(idx.astype(np.int32)), axis=0)


def stride_as_partials(mel: ArrayLike, hp: VoiceEncConfig = VoiceEncConfig(), overlap=0.5, rate: float = None,
                       min_coverage=0.8) -> mx.array:
    """Unscaled (T, M) mel -> (N, P, M) overlapping partial windows (padded with zeros or cut)."""
    assert 0 < min_coverage <= 1
    frame_step = get_frame_step(overlap, rate, hp)
    mel = mx.array(np.asarray(mel, dtype=np.float32)) if not isinstance(mel, mx.array) else mel.astype(mx.float32)
    n_partials, target_len = get_num_wins(mel.shape[0], frame_step, min_coverage, hp)
    mel = _fit_length(mel, target_len)
    return _windows(mel, n_partials, frame_step, hp.ve_partial_frames)


# ---------------------------------------------------------------- the network

class LSTM(nn.Module):
    """torch.nn.LSTM(input_size, hidden_size, num_layers, batch_first=True), returning the last
    layer's final hidden state. MLX's LSTM cell uses PyTorch's gate order (i, f, g, o); its single
    bias is PyTorch's bias_ih + bias_hh (summed by the converter). backend.LSTM is nn.LSTM with its
    time step compiled on the CPU (same bits)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.layers = [backend.LSTM(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers)]

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x, _ = layer(x)
        return x[:, -1]


class VoiceEncoder(nn.Module):
    def __init__(self, hp: VoiceEncConfig = VoiceEncConfig()):
        super().__init__()
        self.hp = hp
        self.lstm = LSTM(hp.num_mels, hp.ve_hidden_size, num_layers=3)
        self.proj = nn.Linear(hp.ve_hidden_size, hp.speaker_embed_size)
        # Cosine similarity scaling (training only; kept so that the weights round-trip)
        self.similarity_weight = mx.array([10.0])
        self.similarity_bias = mx.array([-5.0])

    def __call__(self, mels: mx.array) -> mx.array:
        """(B, P, M) unscaled mel partials -> (B, E) L2-normalised embeddings."""
        if self.hp.normalized_mels and (mels.min().item() < 0 or mels.max().item() > 1):
            raise Exception(f"Mels outside [0, 1]. Min={mels.min().item()}, Max={mels.max().item()}")
        raw_embeds = self.proj(self.lstm(mels))
        if self.hp.ve_final_relu:
            raw_embeds = nn.relu(raw_embeds)
        return raw_embeds / mx.linalg.norm(raw_embeds, axis=1, keepdims=True)

    def make_partials(self, mels: mx.array, mel_lens: Sequence[int], overlap=0.5, rate: float = None,
                      min_coverage=0.8) -> Tuple[mx.array, List[int]]:
        """(B, T, M) padded mels -> all utterances' partial windows stacked (N, P, M), and the
        number of partials per utterance (the first half of the original's `inference`)."""
        frame_step = get_frame_step(overlap, rate, self.hp)
        n_partials, target_lens = zip(*(get_num_wins(l, frame_step, min_coverage, self.hp) for l in mel_lens))
        len_diff = max(target_lens) - mels.shape[1]
        if len_diff > 0:
            pad = mx.zeros((mels.shape[0], len_diff, self.hp.num_mels), dtype=mx.float32)
            mels = mx.concatenate([mels, pad], axis=1)
        partials = mx.concatenate(
            [_windows(mels[b], n, frame_step, self.hp.ve_partial_frames) for b, n in enumerate(n_partials)], axis=0
        )
        return partials, list(n_partials)

    def embed_partials(self, partials: mx.array, batch_size: Optional[int] = None) -> mx.array:
        """Forward the partials in chunks, as torch.Tensor.chunk(ceil(N / batch_size)) splits them."""
        n = partials.shape[0]
        n_chunks = int(np.ceil(n / (batch_size or n)))
        chunk = math.ceil(n / n_chunks)
        out = []
        for start in range(0, n, chunk):
            out.append(self(partials[start : start + chunk]))
            mx.eval(out[-1])
        return mx.concatenate(out, axis=0)

    @staticmethod
    def reduce_partials(partial_embeds: mx.array, n_partials: Sequence[int]) -> mx.array:
        """Mean of each utterance's partial embeddings, L2-normalised: (B, E)."""
        slices = np.concatenate(([0], np.cumsum(n_partials)))
        raw = mx.stack([mx.mean(partial_embeds[int(s) : int(e)], axis=0) for s, e in zip(slices[:-1], slices[1:])])
        return raw / mx.linalg.norm(raw, axis=1, keepdims=True)

    def inference(self, mels: mx.array, mel_lens, overlap=0.5, rate: float = None, min_coverage=0.8,
                  batch_size=None) -> mx.array:
        """(B, T, M) unscaled mels (right-padded), their lengths -> (B, E) utterance embeddings."""
        mel_lens = [int(l) for l in (mel_lens.tolist() if hasattr(mel_lens, "tolist") else mel_lens)]
        partials, n_partials = self.make_partials(mels, mel_lens, overlap, rate, min_coverage)
        partial_embeds = self.embed_partials(partials, batch_size)
        return self.reduce_partials(partial_embeds, n_partials)

    @staticmethod
    def utt_to_spk_embed(utt_embeds: ArrayLike) -> mx.array:
        """(B, E) L2-normalised utterance embeddings -> (E,) speaker embedding (mean, L2-normalised)."""
        utt_embeds = mx.array(utt_embeds) if not isinstance(utt_embeds, mx.array) else utt_embeds
        assert utt_embeds.ndim == 2
        utt_embeds = mx.mean(utt_embeds, axis=0)
        return utt_embeds / mx.linalg.norm(utt_embeds)

    @staticmethod
    def voice_similarity(embeds_x: ArrayLike, embeds_y: ArrayLike) -> mx.array:
        """Cosine similarity of L2-normalised utterance embeddings (B, E) or speaker embeddings (E,)."""
        embeds_x = mx.array(embeds_x) if not isinstance(embeds_x, mx.array) else embeds_x
        embeds_y = mx.array(embeds_y) if not isinstance(embeds_y, mx.array) else embeds_y
        embeds_x = embeds_x if embeds_x.ndim == 1 else VoiceEncoder.utt_to_spk_embed(embeds_x)
        embeds_y = embeds_y if embeds_y.ndim == 1 else VoiceEncoder.utt_to_spk_embed(embeds_y)
        return embeds_x @ embeds_y

    def embeds_from_mels(self, mels: Union[mx.array, List[ArrayLike]], mel_lens=None, as_spk=False, batch_size=32,
                         **kwargs) -> mx.array:
        """Utterance embeddings (B, E), or one speaker embedding (E,) if as_spk, from unscaled mels:
        a (B, T, M) array with `mel_lens`, or a list of (Ti, M) arrays."""
        if isinstance(mels, list):
            mels = [mx.array(np.asarray(m, dtype=np.float32)) if not isinstance(m, mx.array) else m for m in mels]
            assert all(m.shape[1] == mels[0].shape[1] for m in mels), "Mels aren't in (B, T, M) format"
            mel_lens = [m.shape[0] for m in mels]
            mels = mx.stack([_fit_length(m, max(mel_lens)) for m in mels])  # pack: right-pad with 0
        utt_embeds = self.inference(mels, mel_lens, batch_size=batch_size, **kwargs)
        return self.utt_to_spk_embed(utt_embeds) if as_spk else utt_embeds

    def embeds_from_wavs(self, wavs: List[ArrayLike], sample_rate, as_spk=False, batch_size=32,
                         trim_top_db: Optional[float] = 20, **kwargs) -> mx.array:
        """Trim silence (librosa.effects.trim(top_db)), 40-bin mel, embeddings (partials at rate=1.3
        per second unless given)."""
        if sample_rate != self.hp.sample_rate:
            # The original resamples with librosa.resample(res_type="kaiser_fast") here; Chatterbox
            # always passes 16 kHz audio (resampled with soxr before), so this path is not ported.
            raise NotImplementedError(f"resample to {self.hp.sample_rate} Hz before calling (got {sample_rate})")
        if trim_top_db:
            wavs = [trim(wav, top_db=trim_top_db)[0] for wav in wavs]
        if "rate" not in kwargs:
            kwargs["rate"] = 1.3  # Resemble's default value.
        mels = [melspectrogram(w, self.hp).T for w in wavs]
        return self.embeds_from_mels(mels, as_spk=as_spk, batch_size=batch_size, **kwargs)
