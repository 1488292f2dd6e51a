"""The mutation catalogue of `chatterbox-parity mutate` (parity/mutate.py): bugs that real ports of
Chatterbox made, each a small patch applied to the MLX implementation at run time and always undone.

A mutation's `patch(ctx)` is a context manager; `ctx` (parity/mutate.py's MutationContext) gives the
loaded MLX model instances that a patch of weights or attributes must reach (`ctx.models(kind)`: the
isolated stage runners' instance and the cumulative pipeline's). Patches replace module globals,
class attributes, instance attributes or weights with the helpers below, never a source file; they
patch above any cache (an lru_cache'd function is replaced as a whole, not its inputs), so that no
mutated value outlives the patch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

DEFAULT_CASE = "espeak_22k"


@dataclass(frozen=True)
class Mutation:
    name: str
    source: str  # which port made the bug, or its class
    stages: Tuple[str, ...]  # the registry stages whose isolated checks it can move
    patch: Callable  # (ctx) -> context manager
    case: str = DEFAULT_CASE  # the case that exercises it
    bisect: Optional[str] = None  # the bisect stage (parity/bisect.py STAGES) that can localise it
    bisect_na: str = ""  # why not, when bisect is None
    bisect_max_len: Optional[int] = None


# ============================================================================ patch helpers
_MISSING = object()


@contextlib.contextmanager
def patched(obj, name: str, value) -> Iterator[None]:
    """obj.name = value for the duration (obj a module, class or instance); restored after."""
    if isinstance(obj, str):
        obj = importlib.import_module(obj)
    old = obj.__dict__.get(name, _MISSING) if hasattr(obj, "__dict__") else getattr(obj, name)
    if old is _MISSING and not hasattr(obj, name):
        raise AttributeError(f"{obj!r} has no attribute '{name}' to patch")
    setattr(obj, name, value)
    try:
        yield
    finally:
        if old is _MISSING:
            delattr(obj, name)
        else:
            setattr(obj, name, old)


@contextlib.contextmanager
def patched_item(mapping: dict, key, value) -> Iterator[None]:
    old = mapping[key]
    mapping[key] = value
    try:
        yield
    finally:
        mapping[key] = old


@contextlib.contextmanager
def wrapped(obj, name: str, make: Callable) -> Iterator[None]:
    """obj.name = make(original) for the duration."""
    if isinstance(obj, str):
        obj = importlib.import_module(obj)
    with patched(obj, name, make(getattr(obj, name))):
        yield


@contextlib.contextmanager
def instance_attrs(instances, predicate: Callable, name: str, value) -> Iterator[None]:
    """Sets `name` on every sub-module m of `instances` with predicate(m) (value may be a function of
    the old value); restored after. At least one module must match."""
    touched = []
    for root in instances:
        for _, m in root.named_modules():
            if predicate(m) and all(m is not t for t, _ in touched):
                touched.append((m, getattr(m, name)))
    if not touched:
        raise LookupError(f"no module matched for attribute '{name}'")
    try:
        for m, old in touched:
            setattr(m, name, value(old) if callable(value) else value)
        yield
    finally:
        for m, old in touched:
            setattr(m, name, old)


@contextlib.contextmanager
def weights(instances, pattern: str, transform: Callable, expect: Optional[int] = None) -> Iterator[None]:
    """Every parameter whose dotted name matches `pattern` replaced by transform(array); restored
    after. `expect`: the number of matching tensors per instance (a check that the patch hits)."""
    from mlx.utils import tree_flatten

    saved = []
    for root in instances:
        hits = [(k, v) for k, v in tree_flatten(root.parameters()) if re.search(pattern, k)]
        if not hits or (expect is not None and len(hits) != expect):
            raise LookupError(f"{len(hits)} parameters match '{pattern}' (expected {expect or '> 0'})")
        saved.append((root, hits))
    try:
        for root, hits in saved:
            root.load_weights([(k, transform(v)) for k, v in hits], strict=False)
        yield
    finally:
        for root, hits in saved:
            root.load_weights(hits, strict=False)


@contextlib.contextmanager
def all_of(*managers) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


def _is(cls_path: str) -> Callable:
    mod, _, cls = cls_path.rpartition(".")
    klass = getattr(importlib.import_module(mod), cls)
    return lambda m: isinstance(m, klass)


# ============================================================================ audio front end
def _resampler(point: str, method: str):
    def patch(ctx):
        from mlx_impl import audio

        return patched_item(audio.DEFAULT_METHOD, point, method)
    return patch


def _first_channel(ctx):
    def first_channel(y):
        return y[0] if y.ndim > 1 else y
    return patched("mlx_impl.audio", "to_mono_like_librosa", first_channel)


def _cut(name: str, value: int):
    def patch(ctx):
        from mlx_impl.tts import ChatterboxTTS

        return patched(ChatterboxTTS, name, value)
    return patch


# ---------------------------------------------------------------- S3Gen mel (embed_ref.prompt_feat)
def _htk_mel_fn(sr, n_fft, n_mels, fmin=0.0, fmax=None):
    """librosa.filters.mel(htk=True) (Slaney norm kept): the mel scale another port used."""
    fmax = float(sr) / 2 if fmax is None else fmax
    to_mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)
    to_hz = lambda m: 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower, upper = -ramps[:n_mels] / fdiff[:n_mels, None], ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    return (w * (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]).astype(np.float32)


def _mel_htk(ctx):
    return patched("mlx_impl.s3gen.utils.mel", "librosa_mel_fn", _htk_mel_fn)


def _mel_zero_pad(ctx):
    import mlx.core as mx

    def zero_pad(x, left, right):
        return mx.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, right)])
    return patched("mlx_impl.s3gen.utils.mel", "reflect_pad", zero_pad)


def _mel_symmetric_hann(ctx):
    return wrapped("mlx_impl.s3gen.utils.mel", "torch_hann_window",
                   lambda orig: lambda n, periodic=True: orig(n, periodic=False))


def _mel_log_plus_eps(ctx):
    import mlx.core as mx

    return patched("mlx_impl.s3gen.utils.mel", "dynamic_range_compression",
                   lambda x, C=1, clip_val=1e-5: mx.log(x + clip_val) * C)


def _mel_power2(ctx):
    # the power spectrum into the mel basis where the original takes the magnitude
    return wrapped("mlx_impl.s3gen.utils.mel", "power_spectrum",
                   lambda orig: lambda frames, n_fft: orig(frames, n_fft) ** 2)


# ---------------------------------------------------------------- VoiceEncoder
def _ve_mel_power1(ctx):
    return wrapped("mlx_impl.voice_encoder.melspec", "_stft_power",
                   lambda orig: lambda y, hp, pad=True, power=2.0: orig(y, hp, pad=pad, power=1.0))


def _ve_trim_default_db(ctx):
    return wrapped("mlx_impl.voice_encoder.voice_encoder", "trim",
                   lambda orig: lambda y, top_db=60, **kw: orig(y, top_db=60, **kw))


def _ve_no_rate(ctx):
    from mlx_impl.voice_encoder.voice_encoder import VoiceEncoder

    return wrapped(VoiceEncoder, "make_partials",
                   lambda orig: lambda self, mels, mel_lens, overlap=0.5, rate=None, min_coverage=0.8:
                   orig(self, mels, mel_lens, overlap=overlap, rate=None, min_coverage=min_coverage))


def _ve_lstm_gates(ctx):
    def swap_f_g(a):  # PyTorch's (i, f, g, o) rows taken as (i, g, f, o)
        i, f, g, o = np.split(np.array(a), 4, axis=0)
        import mlx.core as mx
        return mx.array(np.concatenate([i, g, f, o], axis=0))
    return weights(ctx.models("ve"), r"^lstm\.layers\.\d+\.(Wx|Wh|bias)$", swap_f_g, expect=9)


def _ve_no_final_relu(ctx):
    return instance_attrs(ctx.models("ve"), _is("mlx_impl.voice_encoder.voice_encoder.VoiceEncoder"), "hp",
                          lambda hp: dataclasses.replace(hp, ve_final_relu=False))


# ---------------------------------------------------------------- S3 tokenizer
def _s3tok_freqs(ctx, **kw):
    from mlx_impl.s3tokenizer.model_v2 import AudioEncoderV2, precompute_freqs_cis

    return instance_attrs(ctx.models("s3tok"), lambda m: isinstance(m, AudioEncoderV2), "_freqs_cis",
                          precompute_freqs_cis(64, 1024 * 2, **kw))


def _s3tok_rope_theta(ctx):
    return _s3tok_freqs(ctx, theta=500000.0)


def _s3tok_rope_interleaved(ctx):
    import mlx.core as mx

    def interleaved(xq, xk, freqs_cis):
        d = xq.shape[-1]
        cos = mx.repeat(mx.real(freqs_cis)[:, : d // 2], 2, axis=-1)[None, :, None, :]
        sin = mx.repeat(mx.imag(freqs_cis)[:, : d // 2], 2, axis=-1)[None, :, None, :]

        def rot(x):  # pairs (2i, 2i+1) instead of (i, i + d/2)
            x2 = x.reshape(*x.shape[:-1], d // 2, 2)
            return mx.stack([-x2[..., 1], x2[..., 0]], axis=-1).reshape(x.shape)
        return xq * cos + rot(xq) * sin, xk * cos + rot(xk) * sin
    return patched("mlx_impl.s3tokenizer.model_v2", "apply_rotary_emb", interleaved)


def _s3tok_keep_last_frame(ctx):
    import mlx.core as mx

    from mlx_impl.s3tokenizer import utils

    def log_mel(audio, filters, window, padding=0):
        audio = (mx.array(audio) if not isinstance(audio, mx.array) else audio).astype(mx.float32)
        mag = utils.stft_power(audio, window)  # the last STFT frame kept
        log_spec = mx.log10(mx.maximum(filters @ mag, 1e-10))
        log_spec = mx.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0
    return all_of(patched("mlx_impl.s3tokenizer.utils", "log_mel_from_filters", log_mel),
                  patched("mlx_impl.s3tokenizer.s3tokenizer", "log_mel_from_filters", log_mel))


def _s3tok_frame_floor(ctx):
    import mlx.core as mx

    from mlx_impl.s3tokenizer import utils

    def log_mel(audio, filters, window, padding=0):
        audio = (mx.array(audio) if not isinstance(audio, mx.array) else audio).astype(mx.float32)
        log_spec = mx.log10(mx.maximum(filters @ utils.stft_power(audio, window)[..., :-1], 1e-10))
        log_spec = mx.maximum(log_spec, log_spec.max(axis=-2, keepdims=True) - 8.0)  # per frame, not global
        return (log_spec + 4.0) / 4.0
    return all_of(patched("mlx_impl.s3tokenizer.utils", "log_mel_from_filters", log_mel),
                  patched("mlx_impl.s3tokenizer.s3tokenizer", "log_mel_from_filters", log_mel))


def _layer_norm_eps(kind: str, eps: float, predicate=None):
    def patch(ctx):
        import mlx.nn as nn

        pred = predicate or (lambda m: isinstance(m, nn.LayerNorm))
        return instance_attrs(ctx.models(kind), pred, "eps", eps)
    return patch


# ---------------------------------------------------------------- CAMPPlus and its fbank
def _fbank_kw(**over):
    def patch(ctx):
        return wrapped("mlx_impl.s3gen.xvector", "fbank", lambda orig: lambda waveform, **kw: orig(waveform, **{**kw, **over}))
    return patch


def _fbank_dither(ctx):
    import mlx.core as mx

    rng = np.random.default_rng(0)

    def dithered(orig):
        def fbank(waveform, **kw):  # Kaldi's dither=1.0 (torchaudio's default is 0.0)
            w = np.asarray(waveform, np.float32)
            return orig(mx.array(w + rng.standard_normal(w.shape).astype(np.float32)), **kw)
        return fbank
    return wrapped("mlx_impl.s3gen.xvector", "fbank", dithered)


def _fbank_no_dc(ctx):
    import mlx.core as mx

    from mlx_impl.s3gen import xvector

    def no_dc(orig):
        def fbank(waveform, num_mel_bins=23, frame_length=25.0, frame_shift=10.0, sample_frequency=16000.0,
                  preemphasis_coefficient=0.97, low_freq=20.0, high_freq=0.0):
            w = waveform if isinstance(waveform, mx.array) else mx.array(np.asarray(waveform, np.float32))
            w = w[0] if w.ndim == 2 else w
            shift, size = int(sample_frequency * frame_shift * 1e-3), int(sample_frequency * frame_length * 1e-3)
            padded = xvector._next_power_of_2(size)
            frames = xvector.frame(w, size, shift)  # no per-frame DC removal
            frames = frames - preemphasis_coefficient * mx.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
            spec = xvector.power_spectrum(frames * mx.array(xvector.povey_window(size)), padded)
            banks = xvector.get_mel_banks(num_mel_bins, padded, sample_frequency, low_freq, high_freq)
            return mx.log(mx.maximum(spec @ mx.array(banks).T, xvector.EPSILON))
        return fbank
    return wrapped(xvector, "fbank", no_dc)


def _fbank_hann(ctx):
    from mlx_impl.s3gen.utils.mel import torch_hann_window

    return patched("mlx_impl.s3gen.xvector", "povey_window", lambda n: torch_hann_window(n, periodic=False))


def _stats_pool(var_eps: float, ddof: int):
    def patch(ctx):
        import mlx.core as mx

        def pooling(x, axis=1, keepdims=False, unbiased=True):
            mean = mx.mean(x, axis=axis)
            std = mx.sqrt(mx.var(x, axis=axis, ddof=ddof) + var_eps)
            stats = mx.concatenate([mean, std], axis=-1)
            return mx.expand_dims(stats, axis) if keepdims else stats
        return patched("mlx_impl.s3gen.xvector", "statistics_pooling", pooling)
    return patch


@contextlib.contextmanager
def _campplus_train_mode(ctx):
    """BatchNorm with the batch's statistics: train mode (its running statistics, which training
    mode updates, are restored after). The last BatchNorm, over the pooled (1, 1024) statistics, keeps
    inference mode: one value per channel has no batch statistics (torch raises there too)."""
    from mlx.utils import tree_flatten

    models = ctx.models("campplus")
    saved = [(m, tree_flatten(m.parameters())) for m in models]
    try:
        for m in models:
            m.train()
            m.xvector.dense.eval()
        yield
    finally:
        for m, params in saved:
            m.load_weights(params, strict=False)
            m.eval()


# ---------------------------------------------------------------- T3
def _t3_cfg_zero_after_pos(ctx):
    import mlx.core as mx

    from mlx_impl.t3.t3 import T3

    def prepare_input_embeds(self, *, t3_cond, text_tokens, speech_tokens, cfg_weight=0.0, outputs=None):
        text_tokens, speech_tokens = mx.array(text_tokens), mx.array(speech_tokens)
        cond_emb = self.prepare_conditioning(t3_cond, outputs)
        text_emb = self.text_emb(text_tokens) + self.text_pos_emb(text_tokens)
        if cfg_weight > 0.0:  # zeroed after the position embedding: row 1 keeps no positions either
            text_emb = text_emb * (mx.arange(text_emb.shape[0]) != 1).astype(text_emb.dtype)[:, None, None]
        speech_emb = self.speech_emb(speech_tokens) + self.speech_pos_emb(speech_tokens)
        if cond_emb.shape[0] != text_emb.shape[0]:
            cond_emb = mx.broadcast_to(cond_emb, (text_emb.shape[0], *cond_emb.shape[1:]))
        return mx.concatenate([cond_emb, text_emb, speech_emb], axis=1), cond_emb.shape[1]
    return patched(T3, "prepare_input_embeds", prepare_input_embeds)


def _t3_single_bos(ctx):
    from mlx_impl.t3.t3 import T3

    def speech_logits(orig):
        def call(self, inputs_embeds, cache):
            if inputs_embeds.shape[1] > 1:  # the prefill: its last position is the appended BOS
                inputs_embeds = inputs_embeds[:, :-1]
            return orig(self, inputs_embeds, cache)
        return call
    return wrapped(T3, "speech_logits", speech_logits)


def _t3_position_off_by_one(ctx):
    from mlx_impl.t3.t3 import T3

    return wrapped(T3, "speech_token_embed",
                   lambda orig: lambda self, token, position: orig(self, token, position + 1 if position else 0))


def _t3_emotion_fixed(ctx):
    from mlx_impl.t3.modules.cond_enc import T3CondEnc

    def call(orig):
        def __call__(self, cond, outputs=None):
            return orig(self, dataclasses.replace(cond, emotion_adv=0.5), outputs)
        return __call__
    return wrapped(T3CondEnc, "__call__", call)


def _t3_rms_norm_eps(ctx):
    import mlx.nn as nn

    return instance_attrs(ctx.models("t3"), lambda m: isinstance(m, nn.RMSNorm), "eps", 1e-6)


def _rep_penalty_divides_all(ctx):
    import mlx.core as mx

    from mlx_impl.t3.inference.sampling import RepetitionPenaltyLogitsProcessor

    def call(self, input_ids, scores):
        mask = np.zeros(scores.shape[-1], dtype=bool)
        mask[np.unique(np.asarray(input_ids).reshape(-1))] = True
        return mx.where(mx.array(mask)[None], scores / self.penalty, scores)
    return patched(RepetitionPenaltyLogitsProcessor, "__call__", call)


def _rep_penalty_empty_history(ctx):
    from mlx_impl.t3.inference.sampling import RepetitionPenaltyLogitsProcessor

    def call(orig):
        def __call__(self, input_ids, scores):
            ids = np.asarray(input_ids).reshape(-1)[1:]  # the first start-of-speech token left out
            return orig(self, ids, scores) if ids.size else scores
        return __call__
    return wrapped(RepetitionPenaltyLogitsProcessor, "__call__", call)


def _min_p_before_temperature(ctx):
    from mlx_impl.t3 import t3 as t3_module

    state = {}
    original = t3_module.apply_temperature

    def remember_temperature(scores, temperature):  # logits_temp = the penalised logits, unscaled
        state["t"] = temperature
        return scores

    class MinPFirst(t3_module.MinPLogitsWarper):
        def __call__(self, input_ids, scores):
            return original(super().__call__(input_ids, scores), state["t"])

    return all_of(patched(t3_module, "apply_temperature", remember_temperature),
                  patched(t3_module, "MinPLogitsWarper", MinPFirst))


def _temperature_before_rep_penalty(ctx):
    from mlx_impl.t3 import t3 as t3_module

    state = {}
    original = t3_module.apply_temperature

    def remember(scores, temperature):
        state["t"] = temperature
        return scores

    class TempFirst(t3_module.RepetitionPenaltyLogitsProcessor):
        def __call__(self, input_ids, scores):
            return super().__call__(input_ids, original(scores, state["t"]))

    def first_step_temperature(orig):  # the processor runs before apply_temperature: seed the value
        def inference_from_embeds(self, embeds, **kw):
            state["t"] = kw.get("temperature", 0.8)
            return orig(self, embeds, **kw)
        return inference_from_embeds
    return all_of(patched(t3_module, "apply_temperature", remember),
                  patched(t3_module, "RepetitionPenaltyLogitsProcessor", TempFirst),
                  wrapped(t3_module.T3, "inference_from_embeds", first_step_temperature))


def _cfg_formula_uncond_base(ctx):
    import mlx.core as mx

    def cfg_combine(logits_step, cfg_weight):
        cond, uncond = logits_step[0:1], logits_step[1:2]
        return uncond + mx.array(cfg_weight, dtype=cond.dtype) * (cond - uncond)
    return patched("mlx_impl.t3.t3", "cfg_combine", cfg_combine)


def _stop_token_kept(ctx):
    from mlx_impl import tts

    def speech_tokens(row):  # drop_invalid_tokens only: the special tokens >= 6561 reach S3Gen
        return np.asarray(tts.drop_invalid_tokens(np.asarray(row)))
    return patched(tts, "s3gen_speech_tokens", speech_tokens)


# ---------------------------------------------------------------- text
def _punc_norm_without(old: str):
    def patch(ctx):
        from mlx_impl import tts

        original = tts.punc_norm

        def punc_norm(text):
            marker = "\x00"  # keep `old` out of the replacements, then put it back
            return original(text.replace(old, marker)).replace(marker, old)
        return patched(tts, "punc_norm", punc_norm)
    return patch


def _punc_norm_no_capital(ctx):
    from mlx_impl import tts

    original = tts.punc_norm
    return patched(tts, "punc_norm", lambda text: text[:1] + original(text)[1:] if text else original(text))


# ---------------------------------------------------------------- flow
def _flow_steps(n: int):
    def patch(ctx):
        from mlx_impl.s3gen.flow_matching import CausalConditionalCFM

        def call(orig):
            def __call__(self, mu, mask, n_timesteps, *a, **kw):
                return orig(self, mu, mask, n, *a, **kw)
            return __call__
        return wrapped(CausalConditionalCFM, "__call__", call)
    return patch


def _flow_linear_schedule(ctx):
    return wrapped("mlx_impl.s3gen.flow_matching", "t_span_schedule",
                   lambda orig: lambda n_timesteps, scheduler="cosine": orig(n_timesteps, "linear"))


def _flow_no_cfg(ctx):
    from mlx_impl.s3gen.flow_matching import ConditionalCFM

    return instance_attrs(ctx.models("flow"), lambda m: isinstance(m, ConditionalCFM), "inference_cfg_rate", 0.0)


def _flow_drop_out_bias(ctx):
    import mlx.core as mx

    return weights(ctx.models("flow"), r"attn1\.to_out\.bias$", mx.zeros_like, expect=56)


def _flow_gelu_tanh(ctx):
    from mlx_impl.s3gen.matcha.transformer import GELU

    return instance_attrs(ctx.models("flow"), lambda m: isinstance(m, GELU), "approximate", "tanh")


def _flow_relpos_swapped(ctx):
    from mlx_impl.s3gen.transformer import embedding

    original = embedding._espnet_rel_pe

    def swapped(d_model, size):  # positions -(T-1) ... T-1: the two halves (and their order) swapped
        return np.ascontiguousarray(original(d_model, size)[::-1])
    return patched(embedding, "_espnet_rel_pe", swapped)


def _flow_speaker_not_normalized(ctx):
    return patched("mlx_impl.s3gen.flow", "l2_normalize", lambda x, axis=1, eps=1e-12: x)


def _flow_no_prompt_cond(ctx):
    import mlx.core as mx

    from mlx_impl.s3gen.flow import CausalMaskedDiffWithXvec

    def build_cond(self, prompt_feat, mel_len):
        return mx.zeros((prompt_feat.shape[0], self.output_size, mel_len), dtype=prompt_feat.dtype)
    return patched(CausalMaskedDiffWithXvec, "build_cond", build_cond)


def _flow_encoder_ln_eps(ctx):
    return _layer_norm_eps("flow", 1e-5, lambda m: _is("mlx_impl.backend.LayerNorm")(m) and m.eps == 1e-12)(ctx)


# ---------------------------------------------------------------- HiFT
def _hift_final_slope(ctx):
    return wrapped("mlx_impl.s3gen.hifigan", "leaky_relu",
                   lambda orig: lambda x, negative_slope=0.1: orig(x, negative_slope))


def _hift_resblock_slope(ctx):
    from mlx_impl.s3gen.hifigan import HiFTGenerator

    return instance_attrs(ctx.models("hift"), lambda m: isinstance(m, HiFTGenerator), "lrelu_slope", 0.01)


def _hift_linear_f0(ctx):
    import mlx.core as mx

    def upsample_linear(x, scale_factor):
        t = x.shape[-1]
        pos = np.clip((np.arange(t * scale_factor, dtype=np.float64) + 0.5) / scale_factor - 0.5, 0, t - 1)
        lo = np.floor(pos).astype(np.int32)
        hi = np.minimum(lo + 1, t - 1)
        w = mx.array((pos - lo).astype(np.float32))
        return mx.take(x, mx.array(lo), axis=-1) * (1 - w) + mx.take(x, mx.array(hi), axis=-1) * w
    return patched("mlx_impl.s3gen.hifigan", "upsample_nearest", upsample_linear)


def _hift_no_magnitude_clip(ctx):
    import mlx.core as mx

    return patched("mlx_impl.s3gen.hifigan", "mx", _MxWithout(mx, "minimum"))


class _MxWithout:
    """mlx.core as a module sees it, with one function replaced by the identity on its first
    argument (the iSTFT's magnitude clip is `mx.minimum(magnitude, 1e2)`, hifigan's only minimum)."""

    def __init__(self, mx, name):
        self._mx, self._name = mx, name

    def __getattr__(self, attr):
        if attr == self._name:
            return lambda a, *rest, **kw: a
        return getattr(self._mx, attr)


def _hift_snake_logscale(ctx):
    from mlx_impl.s3gen.hifigan import Snake

    return instance_attrs(ctx.models("hift"), lambda m: isinstance(m, Snake), "alpha_logscale", True)


def _hift_phase_not_zeroed(ctx):
    import mlx.core as mx

    from mlx_impl.s3gen.hifigan import SineGen

    def call(self, f0, phase_vec=None, noise=None):
        n_harm = self.harmonic_num + 1
        harmonics = mx.arange(1, n_harm + 1, dtype=mx.float32).reshape(1, n_harm, 1)
        cums = mx.cumsum((f0 * harmonics / self.sampling_rate).astype(mx.float64, stream=mx.cpu), axis=-1,
                         stream=mx.cpu).astype(mx.float32, stream=mx.cpu)
        theta = mx.array(2 * np.pi, dtype=mx.float32) * (cums - mx.floor(cums))
        if phase_vec is None:
            phase_vec = mx.random.uniform(-np.pi, np.pi, shape=(f0.shape[0], n_harm, 1))
        sine = self.sine_amp * mx.sin(theta + phase_vec)  # harmonic 0's phase kept
        uv = self._f02uv(f0)
        if noise is None:
            noise = (uv * self.noise_std + (1 - uv) * self.sine_amp / 3) * mx.random.normal(sine.shape)
        return sine * uv + noise, uv, noise
    return patched(SineGen, "__call__", call)


def _hift_voiced_threshold(ctx):
    from mlx_impl.s3gen.hifigan import SineGen

    return instance_attrs(ctx.models("hift"), lambda m: isinstance(m, SineGen), "voiced_threshold", 0)


def _hift_no_trim_fade(ctx):
    import mlx.core as mx

    from mlx_impl.s3gen.s3gen import S3Token2Wav

    return all_of(patched("mlx_impl.s3gen.s3gen", "make_trim_fade", lambda sr=24000: mx.ones((2 * (sr // 50),))),
                  patched(S3Token2Wav, "apply_trim_fade", lambda self, wav: wav))


def _hift_edge_pad(ctx):
    import mlx.core as mx

    from mlx_impl.s3gen.hifigan import HiFTGenerator, leaky_relu

    def _upsample(self, i, x):
        x = self.ups[i](leaky_relu(x, self.lrelu_slope))
        if i == self.num_upsamples - 1:
            x = mx.concatenate([x[:, :1], x], axis=1)  # edge (replicate) padding, not ReflectionPad1d((1, 0))
        return x
    return patched(HiFTGenerator, "_upsample", _upsample)


def _hift_no_audio_limit(ctx):
    from mlx_impl.s3gen.hifigan import HiFTGenerator

    return instance_attrs(ctx.models("hift"), lambda m: isinstance(m, HiFTGenerator), "audio_limit", math.inf)


# ---------------------------------------------------------------- Chatterbox Turbo
TURBO_CASE = "turbo_espeak"


def _turbo_processors(reorder=None, **override):
    """inference_turbo's processor list (mlx_impl.t3.t3's turbo_logits_processors) built with `override`
    arguments, then put in another order by `reorder(list)`."""
    def patch(ctx):
        from mlx_impl.t3 import t3 as t3_module

        def make(orig):
            def processors(temperature, top_k, top_p, repetition_penalty):
                args = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
                out = orig(**{**args, **override})
                return reorder(out) if reorder else out
            return processors
        return wrapped(t3_module, "turbo_logits_processors", make)
    return patch


def _penalty_first(processors):
    from mlx_impl.t3.inference.sampling import RepetitionPenaltyLogitsProcessor

    return ([p for p in processors if isinstance(p, RepetitionPenaltyLogitsProcessor)]
            + [p for p in processors if not isinstance(p, RepetitionPenaltyLogitsProcessor)])


def _turbo_penalty_without_start(ctx):
    from mlx_impl.convert.t3_turbo import turbo_hp
    from mlx_impl.t3.inference.sampling import RepetitionPenaltyLogitsProcessor

    start = turbo_hp().start_speech_token

    def call(orig):
        def __call__(self, input_ids, scores):
            ids = np.asarray(input_ids).reshape(-1)
            return scores if ids.size == 1 and ids[0] == start else orig(self, input_ids, scores)
        return __call__
    return wrapped(RepetitionPenaltyLogitsProcessor, "__call__", call)


def _turbo_stop_on_first_draw(ctx):
    """The loop's stop check also after the first draw: a first stop token ends decoding there (then
    trimmed: no tokens), where the original goes on. Planted as the loop's all -inf break after it."""
    import mlx.core as mx

    from mlx_impl.t3.t3 import T3

    state = {}

    def draw(orig):
        def turbo_draw(logits, draw_fn, step, on_token):
            token = orig(logits, draw_fn, step, on_token)
            if step == 0:
                state["stop"] = token
            return token
        return staticmethod(turbo_draw)

    def step_logits(orig):
        def turbo_step_logits(self, token, cache):
            logits = orig(self, token, cache)
            if state.pop("stop", None) == self.hp.stop_speech_token:
                return mx.full(logits.shape, -math.inf, logits.dtype)
            return logits
        return turbo_step_logits
    return all_of(patched(T3, "turbo_draw", draw(T3.turbo_draw)), wrapped(T3, "turbo_step_logits", step_logits))


def _turbo_gelu_exact(ctx):
    import mlx.nn as nn

    from mlx_impl.t3.gpt2 import GPT2MLP

    def __call__(self, x):
        return self.c_proj(nn.gelu(self.c_fc(x)))
    return patched(GPT2MLP, "__call__", __call__)


def _turbo_wpe_offset_fixed(ctx):
    import mlx.core as mx
    from mlx_lm.models.base import create_attention_mask

    from mlx_impl.t3.gpt2 import GPT2Backbone

    def __call__(self, inputs=None, cache=None, input_embeddings=None):
        h = input_embeddings + self.wpe(mx.arange(input_embeddings.shape[1]))  # no cache offset
        cache = cache if cache is not None else [None] * len(self.h)
        mask = create_attention_mask(h, cache[0])
        for layer, c in zip(self.h, cache):
            h = layer(h, mask, cache=c)
        return self.ln_f(h)
    return patched(GPT2Backbone, "__call__", __call__)


def _turbo_speech_head_no_bias(ctx):
    import mlx.core as mx

    return weights(ctx.models("turbo_t3"), r"^speech_head\.bias$", mx.zeros_like, expect=1)


def _turbo_meanflow_without_r(ctx):
    """time_embed_mixer(concat(t_emb, r_emb)) with the r half of its weight dropped: a port that mixes t only."""
    import mlx.core as mx

    def t_half_only(w):
        half = w.shape[1] // 2
        return mx.concatenate([w[:, :half], mx.zeros_like(w[:, half:])], axis=1)
    return weights(ctx.models("turbo_flow"), r"decoder\.estimator\.time_embed_mixer\.weight$", t_half_only, expect=1)


def _turbo_meanflow_cosine(ctx):
    from mlx_impl.s3gen import flow_matching

    return wrapped(flow_matching, "t_span_schedule",
                   lambda orig: lambda n_timesteps, scheduler="cosine": orig(n_timesteps, "cosine"))


def _turbo_no_silence_tokens(ctx):
    from mlx_impl import tts_turbo

    def s3gen_tokens(speech_tokens):
        speech_tokens = np.asarray(speech_tokens).reshape(-1)
        return speech_tokens[speech_tokens < tts_turbo.SPEECH_VOCAB_SIZE].astype(np.int32)
    return patched(tts_turbo, "s3gen_tokens", s3gen_tokens)


def _turbo_loudness_23(ctx):
    from mlx_impl import tts_turbo

    return wrapped(tts_turbo, "norm_loudness",
                   lambda orig: lambda wav, sr, target_lufs=-27: orig(wav, sr, -23))


# ---------------------------------------------------------------- Chatterbox Multilingual
MTL_CASE = "mtl_de"
MTL_ZH_CASE = "mtl_zh"


def _mtl_tokenizer_method(name: str, make: Callable):
    """MTLTokenizer.<name> (or ChineseCangjieConverter's, `name` "cangjie.<method>") replaced by make(original)."""
    def patch(ctx):
        from mlx_impl.tokenizers import tokenizer

        owner, _, method = name.rpartition(".")
        cls = tokenizer.ChineseCangjieConverter if owner == "cangjie" else tokenizer.MTLTokenizer
        return wrapped(cls, method, make)
    return patch


def _without_language_tag(orig):
    def front_end(self, txt, language_id=None, lowercase=True, nfkd_normalize=True):
        out = orig(self, txt, language_id=language_id, lowercase=lowercase, nfkd_normalize=nfkd_normalize)
        tag = f"[{language_id.lower()}]" if language_id else ""
        return out[len(tag):] if tag and out.startswith(tag) else out
    return front_end


def _without_nfkd(orig):
    def preprocess_text(self, raw_text, language_id=None, lowercase=True, nfkd_normalize=True):
        return orig(self, raw_text, language_id=language_id, lowercase=lowercase, nfkd_normalize=False)
    return preprocess_text


def _cangjie_index_from_one(orig):
    def _cangjie_encode(self, glyph):
        code = self.word2cj.get(glyph, None)
        if code is None:
            return None
        return code + str(self.cj2word[code].index(glyph) + 1)  # the original: index, and none for the first glyph
    return _cangjie_encode


def _mtl_analyzer_heads(heads):
    def patch(ctx):
        from mlx_impl.t3.inference import alignment_stream_analyzer

        return patched(alignment_stream_analyzer, "LLAMA_ALIGNED_HEADS", list(heads))
    return patch


def _mtl_analyzer_unconditional_row(ctx):
    """The spy's attention weights of batch row 1 (CFG's unconditional half) instead of row 0."""
    import mlx.core as mx

    from mlx_impl.t3.inference.alignment_stream_analyzer import AttentionSpy, causal_bias, rope

    def head_weights(self, offset, cache):
        keys = cache.keys[1:2, :, : cache.offset]
        n_kv, D = keys.shape[1], keys.shape[-1]
        L = self._q.shape[1]
        q = self._q[1:2].reshape(1, L, -1, D)[:, :, self.head_idx][:, None]
        q = rope(self.attn.rope, q, offset).astype(mx.float32)
        k = keys[:, self.head_idx // (self.attn.n_heads // n_kv)][:, None].astype(mx.float32)
        scores = (q @ k.swapaxes(-1, -2)) * self.attn.scale
        if L > 1:
            scores = scores + causal_bias(L, k.shape[2])
        return mx.softmax(scores, axis=-1)[0, 0]
    return patched(AttentionSpy, "head_weights", head_weights)


def _mtl_eos_suppression(rule: Callable):
    """AlignmentStreamAnalyzer.step with the stop token suppressed where rule(analyzer, step_record, S) holds
    (the original: cur_text_posn < S - 3), S > 5 as in the original; a forced stop still replaces the row."""
    def patch(ctx):
        import mlx.core as mx

        from mlx_impl.t3.inference import alignment_stream_analyzer as asa

        def make(orig):
            def step(self, logits, next_token=None):
                out = orig(self, logits, next_token=next_token)
                record, S = self.steps[-1], self.alignment.shape[1]
                suppress = bool(rule(self, record, S)) and S > 5
                if suppress != record["eos_suppressed"] and not record["forced_eos"]:
                    eos = mx.arange(out.shape[-1]) == self.eos_idx
                    out = mx.where(eos, mx.array(-asa.EOS_LOGIT, dtype=out.dtype) if suppress else logits, out)
                record["eos_suppressed"] = suppress
                return out
            return step
        return wrapped(asa.AlignmentStreamAnalyzer, "step", make)
    return patch


def _mtl_t3_processor(name: str, **fixed):
    """The multilingual loop's logits processor `name` (mlx_impl.t3.t3's global) built with `fixed` arguments
    whatever T3.inference passes."""
    def patch(ctx):
        return wrapped("mlx_impl.t3.t3", name, lambda orig: lambda *a, **kw: orig(**fixed))
    return patch


def _mtl_speech_filter(ctx):
    """The English generate()'s `< 6561` filter after drop_invalid_tokens in the multilingual pipeline."""
    from mlx_impl import mtl_tts

    def make(orig):
        def drop_invalid_tokens(x):
            tokens = orig(x)
            return tokens[tokens < mtl_tts.SPEECH_VOCAB_SIZE]
        return drop_invalid_tokens
    return wrapped(mtl_tts, "drop_invalid_tokens", make)


# ============================================================================ the catalogue
_PARITY_NOTES = "docs/PARITY_NOTES.md"
_SECOND_PORT = "a second public MLX port (PARITY_NOTES)"

CATALOGUE: List[Mutation] = [
    # text
    Mutation("punc_norm_no_ellipsis", "punc_norm missing a replacement (issue 19)", ("text",),
             _punc_norm_without("…"), bisect_na="text normalisation: no module to bisect"),
    Mutation("punc_norm_no_capital", "punc_norm's first-letter capitalisation dropped (bug class: text front end)",
             ("text",), _punc_norm_no_capital, bisect_na="text normalisation: no module to bisect"),
    # audio front end
    Mutation("load_24k_poly", "scipy resample_poly in librosa.load's place (an older MLX port)", ("audio",),
             _resampler("prepare_conditionals.load_24k", "poly"), bisect_na="resampling: no module to bisect"),
    Mutation("resample_16k_sinc", "torchaudio's sinc resampler where prepare_conditionals uses librosa (soxr)",
             ("audio",), _resampler("prepare_conditionals.resample_16k", "torchaudio_sinc"),
             bisect_na="resampling: no module to bisect"),
    Mutation("embed_ref_resample_poly", "Kaiser/polyphase resampler in S3Gen.embed_ref (x-vector cos 0.64, "
             + _PARITY_NOTES + ")", ("embed_ref",), _resampler("embed_ref.resample_16k", "poly"),
             bisect_na="resampling: no module to bisect"),
    Mutation("downmix_first_channel", "stereo reference read as its first channel, not the channel mean "
             "(s3tokenizer's own load_audio does so)", ("audio",), _first_channel, case="stereo_44k",
             bisect_na="loading: no module to bisect"),
    Mutation("dec_cond_cut_16k_rate", "the 10 s S3Gen reference cut at 16 kHz instead of 24 kHz (issue 19)",
             ("embed_ref",), _cut("DEC_COND_LEN", 10 * 16000), case="long_16k",
             bisect_na="a cut in ChatterboxTTS.prepare_conditionals: only cumulative mode sees it"),
    Mutation("enc_cond_cut_24k_rate", "the 6 s T3 prompt cut at 24 kHz instead of 16 kHz (issue 19)", ("s3tok",),
             _cut("ENC_COND_LEN", 6 * 24000), case="long_16k",
             bisect_na="a cut in ChatterboxTTS.prepare_conditionals: only cumulative mode sees it"),
    # S3Gen mel
    Mutation("s3gen_mel_htk", "mel filterbank on the HTK scale instead of Slaney (issue 19)", ("embed_ref",),
             _mel_htk, bisect_na="mel front end: bisect starts at the networks"),
    Mutation("s3gen_mel_zero_pad", "constant (zero) padding where the original reflects (issue 19)", ("embed_ref",),
             _mel_zero_pad, bisect_na="mel front end: bisect starts at the networks"),
    Mutation("s3gen_mel_symmetric_hann", "symmetric Hann window instead of the periodic one (issue 19)",
             ("embed_ref",), _mel_symmetric_hann, bisect_na="mel front end: bisect starts at the networks"),
    Mutation("s3gen_mel_log_plus_eps", "log(mel + 1e-5) for log(clamp(mel, 1e-5)): another log floor (issue 19)",
             ("embed_ref",), _mel_log_plus_eps, bisect_na="mel front end: bisect starts at the networks"),
    Mutation("s3gen_mel_power2", "power spectrum where S3Gen's mel takes the magnitude (power 2 for 1)",
             ("embed_ref",), _mel_power2, bisect_na="mel front end: bisect starts at the networks"),
    # VoiceEncoder
    Mutation("ve_mel_power1", "VoiceEncoder mel of the magnitude instead of the power (power 1 for 2, issue 19)",
             ("ve",), _ve_mel_power1, bisect_na="mel front end: bisect starts at the networks"),
    Mutation("ve_trim_top_db_60", "librosa.effects.trim's default top_db=60 for the original's 20 (own trim: 40 dB, "
             + _PARITY_NOTES + ")", ("ve",), _ve_trim_default_db, bisect_na="trim: before the network"),
    Mutation("ve_partials_rate_ignored", "partials at overlap 0.5 instead of embeds_from_wavs' rate=1.3",
             ("ve",), _ve_no_rate, bisect_na="partial windows: before the network"),
    Mutation("ve_lstm_gate_order", "LSTM gate order permuted (i, g, f, o for i, f, g, o; " + _PARITY_NOTES + ")",
             ("ve",), _ve_lstm_gates, bisect="ve", bisect_max_len=4),
    Mutation("ve_no_final_relu", "the ReLU after VoiceEncoder.proj left out (bug class: activation dropped)",
             ("ve",), _ve_no_final_relu, bisect="ve", bisect_max_len=4),
    # S3 tokenizer
    Mutation("s3tok_rope_theta", "S3TokenizerV2 RoPE theta wrong (58% of tokens changed in one port, "
             + _PARITY_NOTES + ")", ("s3tok", "embed_ref"), _s3tok_rope_theta, bisect="s3tok", bisect_max_len=200),
    Mutation("s3tok_rope_interleaved", "S3TokenizerV2 RoPE pairing interleaved instead of rotate-half (issue 19)",
             ("s3tok", "embed_ref"), _s3tok_rope_interleaved, bisect="s3tok", bisect_max_len=200),
    Mutation("s3tok_keep_last_frame", "the tokenizer's log-mel keeps the last STFT frame (" + _PARITY_NOTES + ")",
             ("s3tok", "embed_ref"), _s3tok_keep_last_frame, bisect_na="log-mel front end: before the network"),
    Mutation("s3tok_floor_per_frame", "log-mel's 8-decade floor against each frame's maximum, not the clip's",
             ("s3tok", "embed_ref"), _s3tok_frame_floor, bisect_na="log-mel front end: before the network"),
    Mutation("s3tok_layernorm_eps", "LayerNorm eps 1e-6 for 1e-5 in the tokenizer's blocks (issue 19)",
             ("s3tok", "embed_ref"), _layer_norm_eps("s3tok", 1e-6), bisect="s3tok", bisect_max_len=200),
    # CAMPPlus
    Mutation("fbank_no_preemphasis", "Kaldi fbank without pre-emphasis (issue 19)", ("embed_ref",),
             _fbank_kw(preemphasis_coefficient=0.0), bisect_na="fbank: bisect's campplus stage starts at the fbank"),
    Mutation("fbank_dither", "Kaldi fbank with dither 1.0 (Kaldi's default; torchaudio's is 0)", ("embed_ref",),
             _fbank_dither, bisect_na="fbank: bisect's campplus stage starts at the fbank"),
    Mutation("fbank_no_dc_removal", "Kaldi fbank without the per-frame DC removal (" + _PARITY_NOTES + ")",
             ("embed_ref",), _fbank_no_dc, bisect_na="fbank: bisect's campplus stage starts at the fbank"),
    Mutation("fbank_hann_window", "Hann window where Kaldi uses Povey's (Hann^0.85)", ("embed_ref",), _fbank_hann,
             bisect_na="fbank: bisect's campplus stage starts at the fbank"),
    Mutation("campplus_stats_eps", "CAMPPlus statistics pooling with sqrt(var + 1e-5) (x-vector 29 dB in one port)",
             ("embed_ref",), _stats_pool(1e-5, 1), bisect="campplus"),
    Mutation("campplus_stats_biased", "CAMPPlus statistics pooling with the biased std (ddof 0)", ("embed_ref",),
             _stats_pool(0.0, 0), bisect="campplus"),
    Mutation("campplus_batchnorm_train", "BatchNorm with batch statistics (train mode; the x-vector collapses)",
             ("embed_ref",), _campplus_train_mode, bisect="campplus"),
    # T3 conditioning and decoding
    Mutation("t3_cfg_zero_after_pos", "CFG text embedding zeroed after instead of before the position embedding",
             ("t3_cond",), _t3_cfg_zero_after_pos, bisect_na="T3.prepare_input_embeds: bisect's t3_cond stage is T3CondEnc"),
    Mutation("t3_emotion_fixed", "exaggeration not passed to the emotion input (fixed 0.5)", ("t3_cond",),
             _t3_emotion_fixed, case="stereo_44k", bisect="t3_cond"),
    Mutation("t3_single_bos", "one of the two start-of-speech embeddings missing from T3's context (issue 19)",
             ("t3_decode",), _t3_single_bos, bisect_na="T3 decoding has no bisect stage"),
    Mutation("t3_position_off_by_one", "speech position index off by one after the prefill (issue 19)",
             ("t3_decode",), _t3_position_off_by_one, bisect_na="T3 decoding has no bisect stage"),
    Mutation("t3_rmsnorm_eps", "Llama RMSNorm eps 1e-6 for the config's 1e-5", ("t3_decode",),
             _t3_rms_norm_eps, bisect_na="T3 decoding has no bisect stage"),
    Mutation("cfg_uncond_base", "CFG as uncond + w (cond - uncond) instead of cond + w (cond - uncond)",
             ("t3_decode",), _cfg_formula_uncond_base, bisect_na="T3 decoding has no bisect stage"),
    Mutation("rep_penalty_divides_negative", "repetition penalty dividing negative logits too (issue 19)",
             ("t3_decode",), _rep_penalty_divides_all, bisect_na="T3 decoding has no bisect stage"),
    Mutation("rep_penalty_empty_history", "repetition-penalty history without the first start-of-speech token "
             "(" + _SECOND_PORT + ")", ("t3_decode",), _rep_penalty_empty_history,
             bisect_na="T3 decoding has no bisect stage"),
    Mutation("min_p_before_temperature", "min-p applied before the temperature (mlx-lm's sampler order)",
             ("t3_decode",), _min_p_before_temperature, bisect_na="T3 decoding has no bisect stage"),
    Mutation("temperature_before_rep_penalty", "the logits processors in another order: temperature, then the "
             "repetition penalty", ("t3_decode",), _temperature_before_rep_penalty,
             bisect_na="T3 decoding has no bisect stage"),
    Mutation("stop_token_to_s3gen", "special tokens (>= 6561) not filtered before S3Gen (issue 19)", ("flow",),
             _stop_token_kept, bisect_na="token filtering: no module to bisect"),
    # flow
    Mutation("flow_32_steps", "32 ODE steps instead of 10 (another port: 5 midpoint steps)", ("flow",),
             _flow_steps(32), bisect_na="the CFM solver has no bisect stage"),
    Mutation("flow_linear_schedule", "no cosine time schedule (linear t)", ("flow",), _flow_linear_schedule,
             bisect_na="the CFM solver has no bisect stage"),
    Mutation("flow_no_cfg", "the CFM's unconditional pass skipped (no guidance)", ("flow",), _flow_no_cfg,
             bisect_na="the CFM solver has no bisect stage"),
    Mutation("flow_drop_attn1_out_bias", "the 56 attn1.to_out.0.bias tensors dropped by a conversion "
             "(" + _PARITY_NOTES + ")", ("flow",), _flow_drop_out_bias, bisect_na="the CFM estimator has no bisect stage"),
    Mutation("flow_gelu_tanh", "tanh-GELU for erf-GELU in the estimator's feed-forward (issue 19)", ("flow",),
             _flow_gelu_tanh, bisect_na="the CFM estimator has no bisect stage"),
    Mutation("flow_relpos_swapped", "relative-position halves swapped in the flow encoder (issue 19)", ("flow",),
             _flow_relpos_swapped, bisect="flow_encoder", bisect_max_len=60),
    Mutation("flow_encoder_layernorm_eps", "LayerNorm eps 1e-5 for the conformer's 1e-12", ("flow",),
             _flow_encoder_ln_eps, bisect="flow_encoder", bisect_max_len=60),
    Mutation("flow_estimator_layernorm_eps", "LayerNorm eps 1e-6 for 1e-5 in the flow (the encoder's input and "
             "final norms, the estimator's blocks; issue 19)", ("flow",),
             _layer_norm_eps("flow", 1e-6, lambda m: _is("mlx_impl.backend.LayerNorm")(m) and m.eps == 1e-5),
             bisect_na="mostly the CFM estimator, which has no bisect stage"),
    Mutation("flow_xvector_not_normalized", "x-vector not L2-normalised before spk_embed_affine_layer", ("flow",),
             _flow_speaker_not_normalized, bisect_na="flow's speaker projection has no bisect stage"),
    Mutation("flow_no_prompt_cond", "the prompt mel left out of the CFM's cond (zeros)", ("flow",),
             _flow_no_prompt_cond, bisect_na="the CFM solver has no bisect stage"),
    # HiFT
    Mutation("hift_final_leaky_slope", "HiFT's final leaky_relu slope 0.1 instead of 0.01 (17.5 dB in "
             + _SECOND_PORT + ")", ("hift",), _hift_final_slope, bisect="hift", bisect_max_len=20),
    Mutation("hift_resblock_slope", "leaky_relu slope 0.01 instead of 0.1 before the upsampling convolutions",
             ("hift",), _hift_resblock_slope, bisect="hift", bisect_max_len=20),
    Mutation("hift_edge_pad", "edge padding where the original has ReflectionPad1d((1, 0)) (" + _SECOND_PORT + ")",
             ("hift",), _hift_edge_pad, bisect="hift", bisect_max_len=20),
    Mutation("hift_snake_logscale", "Snake alpha on the log scale (exp(alpha)) (issue 19)", ("hift",),
             _hift_snake_logscale, bisect="hift", bisect_max_len=20),
    Mutation("hift_f0_linear", "F0 upsampled linearly instead of nearest (issue 19)", ("hift",), _hift_linear_f0,
             bisect_na="the source module: bisect's hift stage runs decode() on the reference's source"),
    Mutation("hift_sine_phase_not_zeroed", "SineGen's fundamental phase not zeroed (issue 19)", ("hift",),
             _hift_phase_not_zeroed,
             bisect_na="the source module: bisect's hift stage runs decode() on the reference's source"),
    Mutation("hift_voiced_threshold_0", "SineGen's default voiced threshold 0 for HiFT's 10 Hz", ("hift",),
             _hift_voiced_threshold,
             bisect_na="the source module: bisect's hift stage runs decode() on the reference's source"),
    Mutation("hift_no_magnitude_clip", "the iSTFT's magnitude clip at 1e2 missing (issue 19)", ("hift",),
             _hift_no_magnitude_clip, bisect="hift", bisect_max_len=20),
    Mutation("hift_no_audio_limit", "the +-0.99 clamp of the waveform missing", ("hift",), _hift_no_audio_limit,
             bisect="hift", bisect_max_len=20),
    Mutation("hift_no_trim_fade", "the 40 ms trim-fade missing (issue 19)", ("hift",), _hift_no_trim_fade,
             bisect_na="after the vocoder: no module to bisect"),
    # Chatterbox Turbo (GPT-2 T3, inference_turbo's processors, MeanFlow S3Gen, generate()'s hand-over)
    Mutation("turbo_rep_penalty_first", "Turbo's repetition penalty applied before temperature / top-k / top-p "
             "instead of last (the English order carried over)", ("turbo_t3_decode",),
             _turbo_processors(reorder=_penalty_first), case=TURBO_CASE,
             bisect_na="logits processors: no module to bisect"),
    Mutation("turbo_penalty_history_without_start", "the first draw's penalty history empty instead of the "
             "start-of-speech token", ("turbo_t3_decode",), _turbo_penalty_without_start, case=TURBO_CASE,
             bisect_na="logits processors: no module to bisect"),
    Mutation("turbo_stop_on_first_draw", "the stop-token check also on the first draw (the original checks "
             "from the second)", ("turbo_t3_decode", "turbo_t3_greedy"), _turbo_stop_on_first_draw,
             case=TURBO_CASE, bisect_na="the decoding loop: no module to bisect"),
    Mutation("turbo_gpt2_gelu_exact", "GPT-2's tanh GELU (gelu_new) replaced by the exact erf GELU",
             ("turbo_t3_decode",), _turbo_gelu_exact, case=TURBO_CASE, bisect="turbo_t3", bisect_max_len=40),
    Mutation("turbo_wpe_offset_not_advanced", "GPT-2's wpe position not advanced with the KV cache (every "
             "step at position 0..L)", ("turbo_t3_decode",), _turbo_wpe_offset_fixed, case=TURBO_CASE,
             bisect="turbo_t3", bisect_max_len=40),
    Mutation("turbo_speech_head_no_bias", "the speech head's bias dropped (the English head has none)",
             ("turbo_t3_decode",), _turbo_speech_head_no_bias, case=TURBO_CASE, bisect="turbo_t3",
             bisect_max_len=40),
    Mutation("turbo_meanflow_without_r", "MeanFlow's time_embed_mixer without the end time r's half",
             ("turbo_flow",), _turbo_meanflow_without_r, case=TURBO_CASE, bisect="turbo_flow", bisect_max_len=8),
    Mutation("turbo_meanflow_cosine_t_span", "MeanFlow's 2 steps on the cosine t_span of the English CFM "
             "instead of basic_euler's linear one", ("turbo_flow",), _turbo_meanflow_cosine, case=TURBO_CASE,
             bisect_na="the solver's time grid: bisect's turbo_flow stage runs the estimator's first step"),
    Mutation("turbo_no_s3gen_silence", "the three S3GEN_SIL tokens not appended before S3Gen", ("turbo_flow",),
             _turbo_no_silence_tokens, case=TURBO_CASE, bisect_na="token hand-over: no module to bisect"),
    Mutation("turbo_loudness_minus_23", "the reference clip normalised to -23 LUFS (EBU R128) instead of -27",
             ("turbo_audio",), _turbo_loudness_23, case=TURBO_CASE, bisect_na="loudness: before the networks"),
    Mutation("turbo_top_k_100", "top_k 100 instead of generate()'s 1000", ("turbo_t3_decode",),
             _turbo_processors(top_k=100), case=TURBO_CASE, bisect_na="logits processors: no module to bisect"),
    # Chatterbox Multilingual (MTLTokenizer's front end, the AlignmentStreamAnalyzer, the decoding loop, the hand-over)
    Mutation("mtl_language_tag_missing", "the [xx] language tag not prepended to the text", ("mtl_text",),
             _mtl_tokenizer_method("front_end", _without_language_tag), case=MTL_CASE,
             bisect_na="text front end: no module to bisect"),
    Mutation("mtl_nfkd_skipped", "no NFKD after lower() (precomposed umlauts and compatibility forms kept)",
             ("mtl_text",), _mtl_tokenizer_method("preprocess_text", _without_nfkd), case=MTL_CASE,
             bisect_na="text front end: no module to bisect"),
    Mutation("mtl_cangjie_index_from_one", "the Cangjie glyph index counted from 1 (every glyph of a code suffixed "
             "1, 2, ...; the original: none for the first, then 1, 2, ...)", ("mtl_text",),
             _mtl_tokenizer_method("cangjie._cangjie_encode", _cangjie_index_from_one), case=MTL_ZH_CASE,
             bisect_na="text front end: no module to bisect"),
    Mutation("mtl_analyzer_head_off_by_one", "the analyzer watching head 14 of layer 12 instead of head 15",
             ("mtl_t3_decode",), _mtl_analyzer_heads([(12, 14), (13, 11), (9, 2)]), case=MTL_CASE,
             bisect_na="the analyzer reads attention weights, no module's output: bisect's mtl_t3 compares modules"),
    Mutation("mtl_analyzer_unconditional_row", "the analyzer reading CFG's unconditional row (batch 1) of the "
             "attention instead of the conditional one", ("mtl_t3_decode",), _mtl_analyzer_unconditional_row,
             case=MTL_CASE, bisect_na="the analyzer reads attention weights, no module's output: bisect's mtl_t3 compares modules"),
    Mutation("mtl_eos_suppressed_on_text_position", "the stop token suppressed while the analyzer's kept "
             "text_position < S - 3 instead of this step's cur_text_posn", ("mtl_t3_decode",),
             _mtl_eos_suppression(lambda analyzer, record, S: analyzer.text_position < S - 3), case=MTL_CASE,
             bisect_na="the analyzer's rule: no module to bisect"),
    Mutation("mtl_eos_threshold_off_by_one", "the stop token suppressed while cur_text_posn < S - 2 instead of "
             "S - 3", ("mtl_t3_decode", "mtl_t3_greedy"), _mtl_eos_suppression(lambda analyzer, record, S: record["cur_text_posn"] < S - 2),
             case=MTL_CASE, bisect_na="the analyzer's rule: no module to bisect"),
    Mutation("mtl_rep_penalty_1_2", "the repetition penalty 1.2 (the English generate()'s) instead of the "
             "multilingual 2.0", ("mtl_t3_decode",), _mtl_t3_processor("RepetitionPenaltyLogitsProcessor", penalty=1.2),
             case=MTL_CASE, bisect_na="logits processors: no module to bisect"),
    Mutation("mtl_top_p_0_95", "top_p 0.95 (T3.inference's default) instead of the multilingual generate()'s 1.0",
             ("mtl_t3_decode",), _mtl_t3_processor("TopPLogitsWarper", top_p=0.95), case=MTL_CASE,
             bisect_na="logits processors: no module to bisect"),
    Mutation("mtl_speech_filter_6561", "the English generate()'s `< 6561` filter applied before S3Gen (the "
             "multilingual generate() has only drop_invalid_tokens)", ("mtl_flow",), _mtl_speech_filter, case=MTL_CASE,
             bisect_na="token hand-over: no module to bisect"),
]


def by_name() -> dict:
    out = {}
    for m in CATALOGUE:
        if m.name in out:
            raise ValueError(f"mutation '{m.name}' twice in the catalogue")
        out[m.name] = m
    return out
