"""CAMPPlus x-vector speaker encoder (chatterbox/models/s3gen/xvector.py) and its Kaldi fbank, in MLX.

Layout: channels-last inside ((B, T, C) for 1-D, (B, H=freq, W=time, C) for the 2-D head); the
original is channels-first. Module and parameter names are the original's, so the converted state
dict keeps its keys. BatchNorm runs in inference mode (running statistics): the model is put in
eval mode when built.

On the CPU, MLX's convolutions with a dilation or a 3x3 kernel are slow (dilated ones fall back to a
naive loop), so `Conv1d`/`Conv2d` run as im2col + matmul there; native convolutions elsewhere.
BatchNorm is `backend.BatchNorm` (one pass on the CPU, the module's own bits).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import backend
from ..backend import conv1d_im2col, conv2d_im2col
from .utils.mel import frame, power_spectrum, torch_hann_window

# ---------------------------------------------------------------- torchaudio.compliance.kaldi.fbank

EPSILON = float(np.finfo(np.float32).eps)  # torch.finfo(torch.float).eps, the floor before log


def _next_power_of_2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


def mel_scale(freq):
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


@lru_cache(maxsize=None)
def povey_window(window_size: int) -> np.ndarray:
    """torch.hann_window(window_size, periodic=False).pow(0.85): like Hann but zero at both edges."""
    hann = torch_hann_window(window_size, periodic=False)
    w = (hann.astype(np.float64) ** 0.85).astype(np.float32)
    w.setflags(write=False)
    return w


@lru_cache(maxsize=None)
def get_mel_banks(num_bins: int, window_length_padded: int, sample_freq: float, low_freq: float,
                  high_freq: float) -> np.ndarray:
    """Kaldi's triangular mel banks (mel = 1127 ln(1 + f / 700)), no VTLN warp, with the zero column
    for the Nyquist bin appended: (num_bins, window_length_padded // 2 + 1) float32.

    Rounded as torchaudio computes them, in float32 from the frequency grid on (its float32 log
    is matched by a float64 log rounded to float32); the result is then bit-identical."""
    f32 = np.float32
    assert num_bins > 3 and window_length_padded % 2 == 0
    num_fft_bins = window_length_padded // 2
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    assert 0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq
    fft_bin_width = sample_freq / window_length_padded
    mel_low, mel_high = float(mel_scale(low_freq)), float(mel_scale(high_freq))
    delta = f32((mel_high - mel_low) / (num_bins + 1))
    b = np.arange(num_bins, dtype=f32)[:, None]
    left = f32(mel_low) + b * delta
    center = f32(mel_low) + (b + f32(1.0)) * delta
    right = f32(mel_low) + (b + f32(2.0)) * delta
    grid = f32(1.0) + (f32(fft_bin_width) * np.arange(num_fft_bins, dtype=f32)) / f32(700.0)
    mel = (f32(1127.0) * np.log(grid.astype(np.float64)).astype(f32))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(f32(0.0), np.minimum(up, down))
    banks = np.pad(banks, ((0, 0), (0, 1))).astype(f32)
    banks.setflags(write=False)
    return banks


def fbank(waveform: mx.array, num_mel_bins: int = 23, frame_length: float = 25.0, frame_shift: float = 10.0,
          sample_frequency: float = 16000.0, preemphasis_coefficient: float = 0.97, low_freq: float = 20.0,
          high_freq: float = 0.0) -> mx.array:
    """torchaudio.compliance.kaldi.fbank with its other defaults: (m, num_mel_bins) log mel energies.

    Fixed as in the defaults: dither 0, snip_edges (frames that fit entirely, no padding),
    per-frame DC removal, pre-emphasis x[j] - p * x[max(0, j - 1)] within each frame, Povey window,
    zero-padding to the next power of two for the FFT, power spectrum, log(max(., float eps)),
    no energy column, no mean subtraction. `waveform`: (n,) or (channels, n) (channel 0 is used).
    """
    waveform = waveform if isinstance(waveform, mx.array) else mx.array(np.asarray(waveform, dtype=np.float32))
    if waveform.ndim == 2:
        waveform = waveform[0]
    window_shift = int(sample_frequency * frame_shift * 0.001)
    window_size = int(sample_frequency * frame_length * 0.001)
    padded_window_size = _next_power_of_2(window_size)
    assert 2 <= window_size <= waveform.shape[0], f"choose a window size {window_size} that is [2, {waveform.shape[0]}]"

    frames = frame(waveform, window_size, window_shift)  # (m, window_size)
    frames = frames - mx.mean(frames, axis=1, keepdims=True)
    previous = mx.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - preemphasis_coefficient * previous
    frames = frames * mx.array(povey_window(window_size))
    spectrum = power_spectrum(frames, padded_window_size)  # (m, padded // 2 + 1)
    banks = get_mel_banks(num_mel_bins, padded_window_size, sample_frequency, low_freq, high_freq)
    mel_energies = spectrum @ mx.array(banks).T
    return mx.log(mx.maximum(mel_energies, EPSILON))


def pad_list(xs: Sequence[mx.array], pad_value: float) -> mx.array:
    """[(T_i, ...)] -> (B, T_max, ...) right-padded with pad_value."""
    max_len = max(x.shape[0] for x in xs)
    return mx.stack([
        mx.concatenate([x, mx.full((max_len - x.shape[0], *x.shape[1:]), pad_value, dtype=x.dtype)]) if x.shape[0] < max_len else x
        for x in xs
    ])


def extract_feature(audio) -> Tuple[mx.array, List[int], List[int]]:
    """Batch of waveforms ((B, n) array or list of (n,)) -> 80-bin Kaldi fbank minus its time mean,
    right-padded with zeros: (B, T, 80), frame counts, sample counts."""
    features, feature_times, feature_lengths = [], [], []
    for au in audio:
        feature = fbank(au, num_mel_bins=80)
        feature = feature - mx.mean(feature, axis=0, keepdims=True)
        features.append(feature)
        feature_times.append(au.shape[0])
        feature_lengths.append(feature.shape[0])
    return pad_list(features, pad_value=0), feature_lengths, feature_times


# ---------------------------------------------------------------- convolutions (im2col on the CPU)

class Conv1d(nn.Conv1d):
    def __call__(self, x):
        if not backend.on_gpu() and self.groups == 1 and self.weight.shape[1] > 1:
            y = conv1d_im2col(x, self.weight, self.stride, self.padding, self.dilation)
            return y + self.bias if "bias" in self else y
        return super().__call__(x)


class Conv2d(nn.Conv2d):
    def __call__(self, x):
        if not backend.on_gpu() and self.groups == 1 and self.dilation in (1, (1, 1)) and self.weight.shape[1:3] != (1, 1):
            y = conv2d_im2col(x, self.weight, self.stride, self.padding)
            return y + self.bias if "bias" in self else y
        return super().__call__(x)


# ---------------------------------------------------------------- the FCM head

class BasicResBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, kernel_size=3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = backend.BatchNorm(planes)
        self.conv2 = Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = backend.BatchNorm(planes)
        self.shortcut = []
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = [
                Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=(stride, 1), bias=False),
                backend.BatchNorm(self.expansion * planes),
            ]

    def __call__(self, x):
        out = nn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        for layer in self.shortcut:
            shortcut = layer(shortcut)
        return nn.relu(out + shortcut)


class FCM(nn.Module):
    def __init__(self, block=BasicResBlock, num_blocks=(2, 2), m_channels=32, feat_dim=80):
        super().__init__()
        self.in_planes = m_channels
        self.conv1 = Conv2d(1, m_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = backend.BatchNorm(m_channels)
        self.layer1 = self._make_layer(block, m_channels, num_blocks[0], stride=2)
        self.layer2 = self._make_layer(block, m_channels, num_blocks[0], stride=2)
        self.conv2 = Conv2d(m_channels, m_channels, kernel_size=3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = backend.BatchNorm(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return layers

    def __call__(self, x):
        """(B, T, F) -> (B, T, C * F / 8), channels ordered c * (F / 8) + f as the original's reshape."""
        out = x.transpose(0, 2, 1)[..., None]  # (B, H=F, W=T, 1)
        out = nn.relu(self.bn1(self.conv1(out)))
        for layer in self.layer1 + self.layer2:
            out = layer(out)
        out = nn.relu(self.bn2(self.conv2(out)))  # (B, F', T, C)
        b, f, t, c = out.shape
        return out.transpose(0, 2, 3, 1).reshape(b, t, c * f)


# ---------------------------------------------------------------- the TDNN trunk

class NonLinear(nn.Module):
    """get_nonlinear's Sequential: the '-'-separated modules in order (batchnorm, batchnorm_ (no
    affine), relu, prelu), keeping the original's child names."""

    def __init__(self, config_str: str, channels: int):
        super().__init__()
        self.config_str = config_str
        for name in config_str.split("-"):
            if name == "relu":
                pass
            elif name == "prelu":
                self.prelu = nn.PReLU(channels)
            elif name == "batchnorm":
                self.batchnorm = backend.BatchNorm(channels)
            elif name == "batchnorm_":
                self.batchnorm = backend.BatchNorm(channels, affine=False)
            else:
                raise ValueError("Unexpected module ({}).".format(name))

    def __call__(self, x):
        for name in self.config_str.split("-"):
            if name == "relu":
                x = nn.relu(x)
            elif name == "prelu":
                x = self.prelu(x)
            else:
                x = self.batchnorm(x)
        return x


def get_nonlinear(config_str: str, channels: int) -> NonLinear:
    return NonLinear(config_str, channels)


def statistics_pooling(x: mx.array, axis: int = 1, keepdims: bool = False, unbiased: bool = True) -> mx.array:
    """[mean, std] over time, concatenated on channels. The original's `eps` argument is unused:
    the unbiased standard deviation is taken with no epsilon."""
    mean = mx.mean(x, axis=axis)
    std = mx.sqrt(mx.var(x, axis=axis, ddof=1 if unbiased else 0))
    stats = mx.concatenate([mean, std], axis=-1)
    return mx.expand_dims(stats, axis) if keepdims else stats


class StatsPool(nn.Module):
    def __call__(self, x):
        return statistics_pooling(x)


class TDNNLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=False,
                 config_str="batchnorm-relu"):
        super().__init__()
        if padding < 0:
            assert kernel_size % 2 == 1, "Expect equal paddings, but got even kernel size ({})".format(kernel_size)
            padding = (kernel_size - 1) // 2 * dilation
        self.linear = Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                             dilation=dilation, bias=bias)
        self.nonlinear = get_nonlinear(config_str, out_channels)

    def __call__(self, x):
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    def __init__(self, bn_channels, out_channels, kernel_size, stride, padding, dilation, bias, reduction=2):
        super().__init__()
        self.linear_local = Conv1d(bn_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                   dilation=dilation, bias=bias)
        self.linear1 = Conv1d(bn_channels, bn_channels // reduction, 1)
        self.linear2 = Conv1d(bn_channels // reduction, out_channels, 1)

    def __call__(self, x):
        y = self.linear_local(x)
        context = mx.mean(x, axis=1, keepdims=True) + self.seg_pooling(x)
        context = nn.relu(self.linear1(context))
        m = backend.mlx_sigmoid(self.linear2(context))  # mx.sigmoid's bits, vectorised on the CPU
        return y * m

    def seg_pooling(self, x, seg_len: int = 100, stype: str = "avg"):
        """Pool over segments of seg_len frames (the last one shorter, as avg_pool1d with
        ceil_mode=True averages only the frames it covers) and repeat each back over its frames."""
        b, t, c = x.shape
        n_seg = math.ceil(t / seg_len)
        pad = n_seg * seg_len - t
        if stype == "avg":
            xp = mx.pad(x, [(0, 0), (0, pad), (0, 0)]) if pad else x
            counts = np.full((n_seg, 1), seg_len, dtype=np.float32)
            counts[-1] = t - (n_seg - 1) * seg_len
            seg = xp.reshape(b, n_seg, seg_len, c).sum(axis=2) / mx.array(counts)
        elif stype == "max":
            xp = mx.pad(x, [(0, 0), (0, pad), (0, 0)], constant_values=-float("inf")) if pad else x
            seg = xp.reshape(b, n_seg, seg_len, c).max(axis=2)
        else:
            raise ValueError("Wrong segment pooling type.")
        return mx.repeat(seg, seg_len, axis=1)[:, :t]


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_channels, out_channels, bn_channels, kernel_size, stride=1, dilation=1, bias=False,
                 config_str="batchnorm-relu", memory_efficient=False):
        super().__init__()
        assert kernel_size % 2 == 1, "Expect equal paddings, but got even kernel size ({})".format(kernel_size)
        padding = (kernel_size - 1) // 2 * dilation
        self.nonlinear1 = get_nonlinear(config_str, in_channels)
        self.linear1 = Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = get_nonlinear(config_str, bn_channels)
        self.cam_layer = CAMLayer(bn_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, bias=bias)

    def bn_function(self, x):
        return self.linear1(self.nonlinear1(x))

    def __call__(self, x):
        return self.cam_layer(self.nonlinear2(self.bn_function(x)))


class CAMDenseTDNNBlock(nn.Module):
    """Dense block: each layer's output is concatenated to its input (children tdnnd1..tdnndN)."""

    def __init__(self, num_layers, in_channels, out_channels, bn_channels, kernel_size, stride=1, dilation=1,
                 bias=False, config_str="batchnorm-relu", memory_efficient=False):
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            layer = CAMDenseTDNNLayer(in_channels=in_channels + i * out_channels, out_channels=out_channels,
                                      bn_channels=bn_channels, kernel_size=kernel_size, stride=stride,
                                      dilation=dilation, bias=bias, config_str=config_str)
            setattr(self, "tdnnd%d" % (i + 1), layer)

    def __call__(self, x):
        for i in range(self.num_layers):
            x = mx.concatenate([x, getattr(self, "tdnnd%d" % (i + 1))(x)], axis=-1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_channels, out_channels, bias=True, config_str="batchnorm-relu"):
        super().__init__()
        self.nonlinear = get_nonlinear(config_str, in_channels)
        self.linear = Conv1d(in_channels, out_channels, 1, bias=bias)

    def __call__(self, x):
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    def __init__(self, in_channels, out_channels, bias=False, config_str="batchnorm-relu"):
        super().__init__()
        self.linear = Conv1d(in_channels, out_channels, 1, bias=bias)
        self.nonlinear = get_nonlinear(config_str, out_channels)

    def __call__(self, x):
        if x.ndim == 2:
            x = self.linear(x[:, None, :])[:, 0, :]
        else:
            x = self.linear(x)
        return self.nonlinear(x)


class XVector(nn.Module):
    """The original's `xvector` Sequential: tdnn, block1..3 with transit1..3, out_nonlinear, then
    (segment level) stats pooling and the dense embedding layer."""

    def __init__(self, channels, init_channels, growth_rate, bn_size, embedding_size, config_str, output_level):
        super().__init__()
        self.output_level = output_level
        self.tdnn = TDNNLayer(channels, init_channels, 5, stride=2, dilation=1, padding=-1, config_str=config_str)
        channels = init_channels
        self.n_blocks = 3
        for i, (num_layers, kernel_size, dilation) in enumerate(zip((12, 24, 16), (3, 3, 3), (1, 2, 2))):
            block = CAMDenseTDNNBlock(num_layers=num_layers, in_channels=channels, out_channels=growth_rate,
                                      bn_channels=bn_size * growth_rate, kernel_size=kernel_size, dilation=dilation,
                                      config_str=config_str)
            setattr(self, "block%d" % (i + 1), block)
            channels = channels + num_layers * growth_rate
            setattr(self, "transit%d" % (i + 1),
                    TransitLayer(channels, channels // 2, bias=False, config_str=config_str))
            channels //= 2
        self.out_nonlinear = get_nonlinear(config_str, channels)
        if output_level == "segment":
            self.stats = StatsPool()
            self.dense = DenseLayer(channels * 2, embedding_size, config_str="batchnorm_")
        else:
            assert output_level == "frame", "`output_level` should be set to 'segment' or 'frame'. "

    def __call__(self, x):
        x = self.tdnn(x)
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, "transit%d" % i)(getattr(self, "block%d" % i)(x))
        x = self.out_nonlinear(x)
        if self.output_level == "segment":
            x = self.dense(self.stats(x))
        return x


class CAMPPlus(nn.Module):
    def __init__(self, feat_dim=80, embedding_size=192, growth_rate=32, bn_size=4, init_channels=128,
                 config_str="batchnorm-relu", memory_efficient=True, output_level="segment", **kwargs):
        super().__init__()
        self.head = FCM(feat_dim=feat_dim)
        self.output_level = output_level
        self.xvector = XVector(self.head.out_channels, init_channels, growth_rate, bn_size, embedding_size,
                               config_str, output_level)
        # Inference only: BatchNorm must use its running statistics (training mode would normalise
        # with the batch's own and collapse the x-vector).
        self.eval()

    def __call__(self, x):
        """(B, T, F) fbank -> (B, embedding_size) x-vector (segment level) or (B, T', C) (frame level)."""
        return self.xvector(self.head(x))

    def inference(self, audio_list) -> mx.array:
        """(B, n) 16 kHz waveforms (or a list of them) -> (B, embedding_size)."""
        speech, speech_lengths, speech_times = extract_feature(audio_list)
        return self(speech.astype(mx.float32))
