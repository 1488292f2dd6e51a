"""HiFTGenerator (chatterbox/models/s3gen/hifigan.py) in MLX: neural source filter + iSTFTNet.

Layouts: the convolution stack runs channels-last (B, T, C). The module boundaries that are parity
checkpoints keep the original's layout: mel (B, 80, T), f0 (B, T), source (B, 1, n_samples),
magnitude / phase (B, n_fft // 2 + 1, n_frames), waveform (B, n_samples).

The original's random draws (SineGen's phase per harmonic and its noise) are arguments: pass the
recorded draws to replay a reference run; by default they are drawn with mx.random.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import List, Optional, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import backend
from ..ops import Conv1d, ConvTranspose1d


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return int((kernel_size * dilation - dilation) / 2)


def leaky_relu(x: mx.array, negative_slope: float = 0.01) -> mx.array:
    return mx.where(x > 0, x, x * negative_slope)


class Snake(nn.Module):
    """x + 1/(alpha + 1e-9) * sin(alpha * x)^2, alpha per channel (linear scale), x (B, T, C)."""

    def __init__(self, in_features: int, alpha: float = 1.0, alpha_logscale: bool = False):
        super().__init__()
        self.alpha_logscale = alpha_logscale
        self.alpha = (mx.zeros if alpha_logscale else mx.ones)((in_features,)) * alpha
        self.no_div_by_zero = 0.000000001

    def __call__(self, x: mx.array) -> mx.array:
        alpha = mx.exp(self.alpha) if self.alpha_logscale else self.alpha
        return backend.snake(x, alpha, self.no_div_by_zero)


class ResBlock(nn.Module):
    """HiFi-GAN residual block with Snake activations (weight-norm folded into the weights)."""

    def __init__(self, channels: int = 512, kernel_size: int = 3, dilations: List[int] = (1, 3, 5)):
        super().__init__()
        self.convs1 = [
            Conv1d(channels, channels, kernel_size, 1, padding=get_padding(kernel_size, d), dilation=d)
            for d in dilations
        ]
        self.convs2 = [
            Conv1d(channels, channels, kernel_size, 1, padding=get_padding(kernel_size, 1)) for _ in dilations
        ]
        self.activations1 = [Snake(channels) for _ in dilations]
        self.activations2 = [Snake(channels) for _ in dilations]

    def __call__(self, x: mx.array) -> mx.array:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = c2(a2(c1(a1(x)))) + x
        return x


class SineGen(nn.Module):
    """Harmonic sine source. f0 (B, 1, L) in Hz, one value per output sample.

    phase_vec: (B, harmonic_num + 1, 1), the original's Uniform(-pi, pi) draw (harmonic 0 is
    zeroed here, as the original does after drawing). noise: (B, harmonic_num + 1, L), the
    ALREADY-SCALED noise (noise_amp * randn), the original's third output.
    """

    def __init__(self, samp_rate, harmonic_num=0, sine_amp=0.1, noise_std=0.003, voiced_threshold=0):
        super().__init__()
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.harmonic_num = harmonic_num
        self.sampling_rate = samp_rate
        self.voiced_threshold = voiced_threshold

    def _f02uv(self, f0: mx.array) -> mx.array:
        return (f0 > self.voiced_threshold).astype(mx.float32)

    def __call__(
        self, f0: mx.array, phase_vec: Optional[mx.array] = None, noise: Optional[mx.array] = None
    ) -> Tuple[mx.array, mx.array, mx.array]:
        B, _, L = f0.shape
        n_harm = self.harmonic_num + 1
        harmonics = mx.arange(1, n_harm + 1, dtype=mx.float32).reshape(1, n_harm, 1)
        F_mat = f0 * harmonics / self.sampling_rate  # (B, n_harm, L), float32 like the original

        # torch's CPU cumsum accumulates float32 in double and rounds each output to float32;
        # doing the same reproduces its phase bit for bit (a float32 running sum drifts by whole
        # cycles over long clips). float64 runs on the CPU stream (GPUs lack it).
        cums = mx.cumsum(F_mat.astype(mx.float64, stream=mx.cpu), axis=-1, stream=mx.cpu)
        cums = cums.astype(mx.float32, stream=mx.cpu)
        # torch's `% 1` (remainder, sign of the divisor) is exactly x - floor(x) in float32; MLX's
        # remainder is a slow scalar fmod on the CPU
        theta_mat = mx.array(2 * np.pi, dtype=mx.float32) * (cums - mx.floor(cums))

        if phase_vec is None:
            phase_vec = mx.random.uniform(-np.pi, np.pi, shape=(B, n_harm, 1))
        phase_vec = mx.concatenate([mx.zeros_like(phase_vec[:, :1]), phase_vec[:, 1:]], axis=1)

        sine_waves = self.sine_amp * mx.sin(theta_mat + phase_vec)
        uv = self._f02uv(f0)
        if noise is None:
            noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
            noise = noise_amp * mx.random.normal(sine_waves.shape)
        sine_waves = sine_waves * uv + noise
        return sine_waves, uv, noise


class SourceModuleHnNSF(nn.Module):
    """Merges SineGen's harmonics into one excitation: tanh(Linear(harmonics)). x: f0 (B, L, 1)."""

    def __init__(self, sampling_rate, upsample_scale, harmonic_num=0, sine_amp=0.1, add_noise_std=0.003,
                 voiced_threshod=0):
        super().__init__()
        self.sine_amp = sine_amp
        self.noise_std = add_noise_std
        self.l_sin_gen = SineGen(sampling_rate, harmonic_num, sine_amp, add_noise_std, voiced_threshod)
        self.l_linear = nn.Linear(harmonic_num + 1, 1)

    def __call__(self, x: mx.array, phase_vec: Optional[mx.array] = None, noise: Optional[mx.array] = None):
        """-> sine_merge (B, L, 1), noise (B, L, 1) (the noise branch, unused by the vocoder), uv (B, L, 1)."""
        sine_wavs, uv, _ = self.l_sin_gen(x.transpose(0, 2, 1), phase_vec=phase_vec, noise=noise)
        sine_wavs = sine_wavs.transpose(0, 2, 1)
        uv = uv.transpose(0, 2, 1)
        sine_merge = mx.tanh(self.l_linear(sine_wavs))
        noise_branch = mx.random.normal(uv.shape) * self.sine_amp / 3  # lazy: never computed if unused
        return sine_merge, noise_branch, uv


def upsample_nearest(x: mx.array, scale_factor: int) -> mx.array:
    """torch.nn.Upsample(scale_factor, mode='nearest') on (B, C, T): source index
    floor(dst * float32(1 / scale)) clipped to T - 1, as torch computes it."""
    T = x.shape[-1]
    n_out = int(math.floor(T * float(scale_factor)))
    scale = np.float32(1.0 / float(scale_factor))
    idx = np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), T - 1)
    return mx.take(x, mx.array(idx.astype(np.int32)), axis=-1)


def hann_window(n: int) -> np.ndarray:
    """scipy.signal.get_window('hann', n, fftbins=True) (periodic), float32."""
    k = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)).astype(np.float32)


@dataclass
class HiFTConfig:
    """HiFTGenerator's arguments; the defaults are the original class's."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10
    upsample_rates: List[int] = field(default_factory=lambda: [8, 8])
    upsample_kernel_sizes: List[int] = field(default_factory=lambda: [16, 16])
    istft_params: dict = field(default_factory=lambda: {"n_fft": 16, "hop_len": 4})
    resblock_kernel_sizes: List[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: List[List[int]] = field(default_factory=lambda: [[1, 3, 5]] * 3)
    source_resblock_kernel_sizes: List[int] = field(default_factory=lambda: [7, 11])
    source_resblock_dilation_sizes: List[List[int]] = field(default_factory=lambda: [[1, 3, 5]] * 2)
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99

    @classmethod
    def s3gen(cls) -> "HiFTConfig":
        """As S3Token2Wav builds its mel2wav."""
        return cls(
            sampling_rate=24000,
            upsample_rates=[8, 5, 3],
            upsample_kernel_sizes=[16, 11, 7],
            source_resblock_kernel_sizes=[7, 7, 11],
            source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        )


class HiFTGenerator(nn.Module):
    def __init__(self, config: Optional[HiFTConfig] = None, f0_predictor: Optional[nn.Module] = None):
        super().__init__()
        c = config or HiFTConfig()
        self.config = c
        self.out_channels = 1
        self.nb_harmonics = c.nb_harmonics
        self.sampling_rate = c.sampling_rate
        self.istft_params = dict(c.istft_params)
        self.lrelu_slope = c.lrelu_slope
        self.audio_limit = c.audio_limit
        self.num_kernels = len(c.resblock_kernel_sizes)
        self.num_upsamples = len(c.upsample_rates)
        n_fft, hop = c.istft_params["n_fft"], c.istft_params["hop_len"]
        self.upsample_scale = int(np.prod(c.upsample_rates)) * hop

        self.m_source = SourceModuleHnNSF(
            sampling_rate=c.sampling_rate, upsample_scale=self.upsample_scale, harmonic_num=c.nb_harmonics,
            sine_amp=c.nsf_alpha, add_noise_std=c.nsf_sigma, voiced_threshod=c.nsf_voiced_threshold,
        )
        self.conv_pre = Conv1d(c.in_channels, c.base_channels, 7, 1, padding=3)

        self.ups = [
            ConvTranspose1d(c.base_channels // (2**i), c.base_channels // (2 ** (i + 1)), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes))
        ]

        self.source_downs = []
        self.source_resblocks = []
        downsample_cum_rates = np.cumprod([1] + c.upsample_rates[::-1][:-1])
        for i, (u, k, d) in enumerate(zip(downsample_cum_rates[::-1], c.source_resblock_kernel_sizes,
                                          c.source_resblock_dilation_sizes)):
            u = int(u)
            ch = c.base_channels // (2 ** (i + 1))
            if u == 1:
                self.source_downs.append(Conv1d(n_fft + 2, ch, 1, 1))
            else:
                self.source_downs.append(Conv1d(n_fft + 2, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))

        self.resblocks = []
        for i in range(len(self.ups)):
            ch = c.base_channels // (2 ** (i + 1))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                self.resblocks.append(ResBlock(ch, k, d))

        self.conv_post = Conv1d(ch, n_fft + 2, 7, 1, padding=3)
        self.f0_predictor = f0_predictor

        # constants (underscore: not parameters)
        window = hann_window(n_fft)
        self._stft_window = mx.array(window)
        self._stft_basis = mx.array(_stft_basis(window))
        self._istft_basis = mx.array(_istft_basis(window))

    # ------------------------------------------------------------------ STFT / iSTFT
    def _stft(self, x: mx.array) -> Tuple[mx.array, mx.array]:
        """torch.stft(x, n_fft, hop, n_fft, hann, center=True, reflect padding), x (B, L)
        -> real, imag, each (B, n_fft // 2 + 1, n_frames)."""
        spec = self._stft_channels_last(x)
        n_bins = self.istft_params["n_fft"] // 2 + 1
        spec = spec.transpose(0, 2, 1)
        return spec[:, :n_bins], spec[:, n_bins:]

    def _stft_channels_last(self, x: mx.array) -> mx.array:
        """(B, L) -> (B, n_frames, 2 * n_bins): real parts of the bins, then imaginary parts."""
        n_fft, hop = self.istft_params["n_fft"], self.istft_params["hop_len"]
        half = n_fft // 2
        L = x.shape[-1]
        if L <= half:
            raise ValueError(f"_stft: reflect padding of {half} needs more than {half} samples, got {L}")
        x = mx.concatenate([x[:, 1 : half + 1][:, ::-1], x, x[:, L - half - 1 : L - 1][:, ::-1]], axis=-1)
        n_frames = 1 + L // hop
        idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
        frames = mx.take(x, mx.array(idx.astype(np.int32)), axis=-1)  # (B, n_frames, n_fft)
        return frames @ self._stft_basis

    def _istft(self, magnitude: mx.array, phase: mx.array) -> mx.array:
        """torch.istft(mag * e^{i phase}, n_fft, hop, n_fft, hann, center=True) after the clip of the
        magnitude at 1e2. magnitude, phase (B, n_bins, n_frames) -> (B, hop * (n_frames - 1))."""
        n_fft, hop = self.istft_params["n_fft"], self.istft_params["hop_len"]
        magnitude = mx.minimum(magnitude, 1e2)
        real = magnitude * mx.cos(phase)
        img = magnitude * mx.sin(phase)
        spec = mx.concatenate([real, img], axis=1).transpose(0, 2, 1)  # (B, n_frames, 2 * n_bins)
        frames = spec @ self._istft_basis  # windowed inverse DFT of each frame, (B, n_frames, n_fft)
        B, n_frames, _ = frames.shape
        y = _overlap_add(frames, hop)
        envelope = mx.array(_window_envelope(np.asarray(self._stft_window), hop, n_frames))
        start, end = n_fft // 2, n_fft // 2 + hop * (n_frames - 1)
        return y[:, start:end] / envelope[start:end]

    # ------------------------------------------------------------------ network
    def decode_spectrum(self, x: mx.array, s: mx.array) -> Tuple[mx.array, mx.array]:
        """mel x (B, 80, T) and source s (B, 1, L) -> magnitude, phase (B, n_fft // 2 + 1, n_frames),
        the arguments of the original's _istft.

        The original's order of operations, with independent pieces run as parallel lanes
        (`backend.parallel_lanes`: two CPU streams at once; on a GPU one after the other): stage 0's
        upsampling beside its source branch (source_downs + source_resblocks), then in each stage the
        three resblocks beside the next stage's source branch, which needs only the source's STFT.
        The resblocks' outputs are summed in the original's order."""
        s_stft = self._stft_channels_last(s.squeeze(1))  # (B, n_frames, 2 * n_bins)
        x = self.conv_pre(x.transpose(0, 2, 1))
        x, si = backend.parallel_lanes([partial(self._upsample, 0, x), partial(self._source_branch, 0, s_stft)])
        for i in range(self.num_upsamples):
            if i > 0:
                x = self._upsample(i, x)
            x = x + si
            resblocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            jobs = [partial(block, x) for block in resblocks]
            costs = [backend.multiply_count(x.shape[1], block) for block in resblocks]
            if i + 1 < self.num_upsamples:
                jobs.append(partial(self._source_branch, i + 1, s_stft))
                costs.append(self._source_branch_cost(i + 1, s_stft))
            outs = backend.parallel_lanes(jobs, costs)
            if i + 1 < self.num_upsamples:
                si = outs.pop()
            xs = None
            for r in outs:
                xs = r if xs is None else xs + r
            x = xs / self.num_kernels

        x = leaky_relu(x)  # the default slope 0.01, not lrelu_slope
        x = self.conv_post(x)
        n_bins = self.istft_params["n_fft"] // 2 + 1
        magnitude = mx.exp(x[..., :n_bins]).transpose(0, 2, 1)
        phase = mx.sin(x[..., n_bins:]).transpose(0, 2, 1)  # "actually, sin is redundancy"
        return magnitude, phase

    def _upsample(self, i: int, x: mx.array) -> mx.array:
        x = self.ups[i](leaky_relu(x, self.lrelu_slope))
        if i == self.num_upsamples - 1:
            x = mx.concatenate([x[:, 1:2], x], axis=1)  # ReflectionPad1d((1, 0))
        return x

    def _source_branch(self, i: int, s_stft: mx.array) -> mx.array:
        """Stage i's source signal: source_downs[i] then source_resblocks[i]."""
        return self.source_resblocks[i](self.source_downs[i](s_stft))

    def _source_branch_cost(self, i: int, s_stft: mx.array) -> int:
        frames = s_stft.shape[1] // self.source_downs[i].stride
        return backend.multiply_count(frames, self.source_downs[i], self.source_resblocks[i])

    def decode(self, x: mx.array, s: mx.array) -> mx.array:
        """mel x (B, 80, T), source s (B, 1, L) -> waveform (B, L), clamped to +-audio_limit."""
        magnitude, phase = self.decode_spectrum(x, s)
        return self.spectrum_to_wav(magnitude, phase)

    def spectrum_to_wav(self, magnitude: mx.array, phase: mx.array) -> mx.array:
        x = self._istft(magnitude, phase)
        return mx.clip(x, -self.audio_limit, self.audio_limit)

    def f0_to_source(self, f0: mx.array, phase_vec: Optional[mx.array] = None,
                     noise: Optional[mx.array] = None) -> mx.array:
        """f0 (B, T) -> source s (B, 1, T * upsample_scale)."""
        s = upsample_nearest(f0[:, None], self.upsample_scale).transpose(0, 2, 1)  # (B, L, 1)
        s, _, _ = self.m_source(s, phase_vec=phase_vec, noise=noise)
        return s.transpose(0, 2, 1)

    def inference(
        self,
        speech_feat: mx.array,
        cache_source: Optional[mx.array] = None,
        phase_vec: Optional[mx.array] = None,
        noise: Optional[mx.array] = None,
    ) -> Tuple[mx.array, mx.array]:
        """mel (B, 80, T) -> waveform (B, 480 T), source (B, 1, 480 T).
        phase_vec / noise: SineGen's draws to replay (see SineGen)."""
        f0 = self.f0_predictor(speech_feat)
        s = self.f0_to_source(f0, phase_vec=phase_vec, noise=noise)
        if cache_source is not None and cache_source.shape[2] != 0:
            n = cache_source.shape[2]
            s = mx.concatenate([cache_source.astype(s.dtype), s[:, :, n:]], axis=2)
        return self.decode(speech_feat, s), s


# ---------------------------------------------------------------------- (i)STFT helpers
def _stft_basis(window: np.ndarray) -> np.ndarray:
    """(n_fft, 2 * n_bins): window * [cos | -sin] of the one-sided DFT."""
    n_fft = window.shape[0]
    n = np.arange(n_fft)[:, None]
    k = np.arange(n_fft // 2 + 1)[None, :]
    ang = 2.0 * np.pi * ((n * k) % n_fft) / n_fft
    w = window.astype(np.float64)[:, None]
    return np.concatenate([w * np.cos(ang), -w * np.sin(ang)], axis=1).astype(np.float32)


def _istft_basis(window: np.ndarray) -> np.ndarray:
    """(2 * n_bins, n_fft): [real; imag] -> window * irfft (the imaginary parts of the DC and
    Nyquist bins are ignored, as a c2r FFT does)."""
    n_fft = window.shape[0]
    n_bins = n_fft // 2 + 1
    k = np.arange(n_bins)[:, None]
    n = np.arange(n_fft)[None, :]
    ang = 2.0 * np.pi * ((k * n) % n_fft) / n_fft
    weight = np.full((n_bins, 1), 2.0)
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    re = weight * np.cos(ang) / n_fft
    im = -weight * np.sin(ang) / n_fft
    im[0] = 0.0
    if n_fft % 2 == 0:
        im[-1] = 0.0
    w = window.astype(np.float64)[None, :]
    return np.concatenate([re * w, im * w], axis=0).astype(np.float32)


def _overlap_add(frames: mx.array, hop: int) -> mx.array:
    """(B, n_frames, n_fft) frames at hop `hop` -> (B, hop * (n_frames - 1) + n_fft), n_fft % hop == 0."""
    B, n_frames, n_fft = frames.shape
    if n_fft % hop:
        raise ValueError(f"overlap-add needs n_fft ({n_fft}) to be a multiple of hop ({hop})")
    m = n_fft // hop
    blocks = frames.reshape(B, n_frames, m, hop)
    y = None
    for j in range(m):
        b = mx.pad(blocks[:, :, j], [(0, 0), (j, m - 1 - j), (0, 0)])
        y = b if y is None else y + b
    return y.reshape(B, (n_frames + m - 1) * hop)


def _window_envelope(window: np.ndarray, hop: int, n_frames: int) -> np.ndarray:
    """Overlap-added window^2 (float32), the normaliser of torch.istft."""
    n_fft = window.shape[0]
    m = n_fft // hop
    w2 = (window * window).astype(np.float32).reshape(m, hop)
    env = np.zeros((n_frames + m - 1, hop), dtype=np.float32)
    for j in range(m):
        env[j : j + n_frames] += w2[j]
    env = env.reshape(-1)
    if np.min(env[n_fft // 2 : n_fft // 2 + hop * (n_frames - 1)]) < 1e-11:
        raise ValueError("window overlap-add envelope is ~0 (torch.istft would refuse it)")
    return env
