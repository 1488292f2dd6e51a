"""What a checkpoint leaves idle: the ORIGINAL modules run on the parity cases' inputs, observed by
forward hooks (and wrappers around the original methods), never modified in their math.

Per case, as `ChatterboxTTS.generate` runs it: prepare_conditionals (VoiceEncoder, S3 tokenizer,
CAMPPlus), T3 sampled with recorded draws (reference.recording.RecordedSampler), S3Gen on the valid
tokens. Measured:
  - per module (activations, LSTMs, linear and convolution outputs): dead units (a ReLU-type unit
    never > 0, or any unit whose output does not vary), saturated entries (tanh / sigmoid / LSTM
    output beyond +-0.99 or outside [0.01, 0.99]; HiFT's magnitude at its clip of 100);
  - attention entropy per layer, normalised by log(number of keys a query sees) (1 = uniform);
  - T3's next-token distribution at the case's temperature (after CFG and the repetition penalty):
    normalised entropy, top-1 probability, the stop token's probability and rank, where T3 stopped;
  - speaker embeddings: VoiceEncoder and CAMPPlus cosine between the cases' voices and a copy of the
    first one with white noise at 13 dB SNR;
  - the voiced share of HiFT's F0 (> 10 Hz, SineGen's threshold).
Numbers are rounded to 6 significant digits; the same checkpoint gives the same file.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections import defaultdict
from typing import Dict, List

import numpy as np

from parity.cases import Case
from parity.checkpoint_dir import CheckpointDir

from .recording import RecordedSampler, Recorder, forward_hook, patched, wrap_method

STATS_VERSION = "1"
NOISE_SNR_DB = 13.0
NOISE_SEED = 0
DEAD_REL_STD = 1e-4  # a unit whose output std is below this share of its module's RMS does not vary
SAT_TANH = 0.99
VOICED_HZ = 10.0  # SineGen's voiced_threshold
STOP = 6562
IDLE_SHARE = 0.5
MAX_ROWS = 4096  # positions per call that enter a module's statistics  # a module with more dead units or saturated entries than this counts as idle


def _r(x):
    """6 significant digits (None, int and bool pass)."""
    if x is None or isinstance(x, (bool, int, str)):
        return x
    x = float(x)
    if not math.isfinite(x) or x == 0.0:
        return x
    return float(f"{x:.6g}")


# ----------------------------------------------------------------------------- per-module statistics
class UnitStats:
    """Running per-unit (channel) statistics of one module's outputs over every call."""

    def __init__(self, kind: str):
        self.kind = kind
        self.n = 0
        self.sum = self.sumsq = self.maxv = None
        self.entries = 0
        self.saturated = 0

    def add(self, y, channel_axis: int) -> None:
        import torch

        flat = torch.movedim(y.detach(), channel_axis, -1).reshape(-1, y.shape[channel_axis])
        if flat.shape[0] > MAX_ROWS:  # long outputs (HiFT at 24 kHz): every k-th position
            flat = flat[:: -(-flat.shape[0] // MAX_ROWS)]
        flat = flat.double()
        s, ss, mx = flat.sum(0), (flat * flat).sum(0), flat.max(0).values
        if self.sum is None or self.sum.shape != s.shape:
            if self.sum is not None:  # the unit count changed between calls: keep the first layout
                return
            self.sum, self.sumsq, self.maxv = torch.zeros_like(s), torch.zeros_like(s), torch.full_like(s, -math.inf)
        self.sum += s
        self.sumsq += ss
        self.maxv = torch.maximum(self.maxv, mx)
        self.n += flat.shape[0]
        self.entries += flat.numel()
        self.saturated += int(_saturated(self.kind, flat))

    def result(self) -> dict:
        mean = self.sum / self.n
        var = (self.sumsq / self.n - mean * mean).clamp_min(0.0)
        rms = float((self.sumsq.sum() / (self.n * len(self.sum))).sqrt())
        constant = var.sqrt() <= DEAD_REL_STD * max(rms, 1e-30)
        dead = constant | (self.maxv <= 0.0) if self.kind == "relu" else constant
        out = {"kind": self.kind, "units": len(self.sum), "dead_share": _r(float(dead.double().mean())),
               "rms": _r(rms)}
        if self.kind in SATURATING:
            out["saturated_share"] = _r(self.saturated / max(self.entries, 1))
        return out


SATURATING = ("tanh", "sigmoid", "lstm", "fsq")


def _saturated(kind: str, flat) -> int:
    if kind in ("tanh", "lstm"):
        return int((flat.abs() > SAT_TANH).sum())
    if kind == "fsq":  # FSQ's tanh of project_down
        return int((flat.tanh().abs() > SAT_TANH).sum())
    if kind == "sigmoid":
        return int(((flat < 1 - SAT_TANH) | (flat > SAT_TANH)).sum())
    return 0


def _module_kind(module):
    """(kind, channel axis or None to inherit the producer's) for the modules observed."""
    import torch.nn as nn

    name = type(module).__name__
    if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
        return "relu", None
    if isinstance(module, nn.Tanh):
        return "tanh", None
    if isinstance(module, nn.Sigmoid):
        return "sigmoid", None
    if isinstance(module, (nn.SiLU, nn.GELU, nn.Mish)) or name in ("Snake", "SnakeBeta", "Swish", "GELU"):
        return "smooth", None
    if isinstance(module, nn.LSTM):
        return "lstm", -1
    if isinstance(module, nn.Linear):
        return "linear", -1
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d)):
        return "conv", 1
    return None, None


class ModuleObserver:
    """Forward hooks on every observed module of a component; activations take the channel axis of
    the module that ran just before them (a Linear: last axis; a convolution: axis 1)."""

    def __init__(self):
        self.stats: Dict[str, UnitStats] = {}
        self.last_axis = -1

    @contextlib.contextmanager
    def observe(self, component: str, root):
        handles = []
        for name, module in root.named_modules():
            kind, axis = _module_kind(module)
            if kind is not None:
                handles.append(module.register_forward_hook(self._hook(f"{component}.{name}", kind, axis)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, key: str, kind: str, axis):
        import torch

        def hook(module, inputs, output):
            y = output[0] if isinstance(output, tuple) else output
            if not torch.is_tensor(y) or not y.is_floating_point() or y.dim() < 2:
                return
            if axis is not None:
                self.last_axis = axis
            channel = self.last_axis if axis is None else axis
            if kind == "linear" and key.endswith("project_down"):
                self.stats.setdefault(key, UnitStats("fsq")).add(y, -1)
                return
            self.stats.setdefault(key, UnitStats(kind)).add(y, channel)

        return hook

    def results(self) -> Dict[str, dict]:
        return {k: v.result() for k, v in sorted(self.stats.items()) if v.n}


# ----------------------------------------------------------------------------- attention entropy
class Entropies:
    """Normalised attention entropy per attention module, averaged over batch, heads and queries
    that see at least two keys."""

    def __init__(self):
        self.sum = defaultdict(float)
        self.count = defaultdict(int)

    def add_probs(self, key: str, probs) -> None:
        import torch

        p = probs.detach().double()
        n = (p > 0).sum(-1)
        h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
        ok = n >= 2
        if ok.any():
            self.sum[key] += float((h[ok] / torch.log(n[ok].double())).sum())
            self.count[key] += int(ok.sum())

    def results(self) -> Dict[str, float]:
        return {k: _r(self.sum[k] / self.count[k]) for k in sorted(self.sum) if self.count[k]}


@contextlib.contextmanager
def observe_t3_attention(t3, ent: Entropies):
    """T3's prefill with eager attention (the probabilities the sdpa path does not return); the
    decoding steps then run as the original runs them (sdpa)."""
    cfg = t3.tfmr.config
    old = cfg._attn_implementation

    def hook(module, inputs, output):
        if output.attentions is not None and cfg._attn_implementation == "eager":
            for i, a in enumerate(output.attentions):
                ent.add_probs(f"t3.layers.{i}", a)
            cfg._attn_implementation = old

    cfg._attn_implementation = "eager"
    try:
        with forward_hook(t3.tfmr, hook):
            yield
    finally:
        cfg._attn_implementation = old


@contextlib.contextmanager
def observe_flow_attention(flow, ent: Entropies):
    """The flow encoder's relative-position attention (forward_attention's scores and mask) and the
    flow decoder's diffusers attention (its math processor's probabilities)."""
    import torch
    from diffusers.models.attention_processor import Attention, AttnProcessor

    from chatterbox.models.s3gen.transformer.attention import MultiHeadedAttention

    def scores_hook(key):
        def before(value, scores, mask=torch.ones((0, 0, 0), dtype=torch.bool)):
            if mask.size(2) > 0:
                scores = scores.masked_fill(mask.unsqueeze(1).eq(0)[:, :, :, :scores.size(-1)], -float("inf"))
            ent.add_probs(key, torch.softmax(scores.double(), dim=-1))
        return before

    def probs_hook(key):
        return lambda result, *a, **k: ent.add_probs(key, result)

    with contextlib.ExitStack() as stack:
        for name, m in flow.encoder.named_modules():
            if isinstance(m, MultiHeadedAttention):
                stack.enter_context(wrap_method(m, "forward_attention", before=scores_hook(f"flow.encoder.{name}")))
        for name, m in flow.decoder.named_modules():
            if isinstance(m, Attention):
                stack.enter_context(patched(m, "processor", AttnProcessor()))
                stack.enter_context(wrap_method(m, "get_attention_scores", after=probs_hook(f"flow.decoder.{name}")))
        yield


# ----------------------------------------------------------------------------- T3's next-token distribution
def next_token_stats(logits_temp, min_p: float, tokens: List[int], max_new_tokens: int) -> dict:
    """From the scaled logits each step sampled from (after CFG, repetition penalty, temperature)."""
    import torch

    z = logits_temp.double()
    p = torch.softmax(z, dim=-1)
    top1 = p.max(-1).values
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1) / math.log(p.shape[-1])
    p_stop = p[:, STOP]
    rank = (p > p_stop[:, None]).sum(-1)
    stopped = tokens[-1] == STOP
    return {
        "steps": len(tokens), "stopped_at_step": len(tokens) - 1 if stopped else None,
        "max_new_tokens": max_new_tokens, "uniform_probability": _r(1.0 / p.shape[-1]),
        "top1_median": _r(top1.median()), "top1_mean": _r(top1.mean()),
        "entropy_median": _r(entropy.median()), "entropy_mean": _r(entropy.mean()),
        "stop_probability_max": _r(p_stop.max()), "stop_rank_min": int(rank.min()),
        "stop_rank_median": int(rank.median()),
        "stop_within_min_p_share": _r(float((p_stop >= min_p * top1).double().mean())),
        "distinct_tokens": len(set(tokens)), "valid_tokens": sum(t < 6561 for t in tokens),
    }


# ----------------------------------------------------------------------------- speaker embeddings
def _noisy_copy(wav: np.ndarray, snr_db: float = NOISE_SNR_DB, seed: int = NOISE_SEED) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(wav))
    noise *= math.sqrt(float(np.mean(wav.astype(np.float64) ** 2)) / 10 ** (snr_db / 10) / float(np.mean(noise ** 2)))
    return (wav + noise).astype(np.float32)


def _cosines(emb: np.ndarray, labels: List[str]) -> dict:
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    c = e @ e.T
    voices = [i for i, l in enumerate(labels) if not l.endswith("+noise")]
    pairs = {f"{labels[i]}~{labels[j]}": _r(c[i, j]) for i, j in itertools.combinations(range(len(labels)), 2)}
    between = [c[i, j] for i, j in itertools.combinations(voices, 2)] or [None]
    return {"pairs": pairs, "voices_min": _r(min(between)), "voices_max": _r(max(between)),
            "noisy_copy": _r(c[0, len(labels) - 1])}


def speaker_embeddings(tts, wavs_16k: Dict[str, np.ndarray]) -> dict:
    """VoiceEncoder (T3's speaker embedding, as prepare_conditionals computes it) and CAMPPlus
    (S3Gen's x-vector) on each case's 16 kHz clip and on the first clip with 13 dB white noise."""
    import torch

    names = list(wavs_16k)
    wavs = [wavs_16k[n] for n in names] + [_noisy_copy(wavs_16k[names[0]])]
    labels = names + [f"{names[0]}+noise"]
    ve = np.stack([tts.ve.embeds_from_wavs([w], sample_rate=16000, as_spk=True) for w in wavs])
    xv = np.stack([tts.s3gen.speaker_encoder.inference([torch.from_numpy(w)])[0].numpy() for w in wavs])
    return {"noise": f"white Gaussian noise at {NOISE_SNR_DB:g} dB SNR (numpy default_rng({NOISE_SEED}))",
            "voice_encoder": _cosines(ve, labels), "campplus": _cosines(xv, labels)}


# ----------------------------------------------------------------------------- one case
def _t3_text_tokens(tts, case: Case):
    import torch
    import torch.nn.functional as F
    from chatterbox.tts import punc_norm

    tokens = tts.tokenizer.text_to_tokens(punc_norm(case.text))
    if case.params["cfg_weight"] > 0.0:
        tokens = torch.cat([tokens, tokens], dim=0)
    tokens = F.pad(tokens, (1, 0), value=tts.t3.hp.start_text_token)
    return F.pad(tokens, (0, 1), value=tts.t3.hp.stop_text_token)


def measure_case(tts, case: Case, obs: ModuleObserver, ent: Entropies, t3_steps=None, log=print) -> dict:
    import torch
    from chatterbox.models.s3tokenizer import drop_invalid_tokens

    from .export import run_t3

    p = dict(case.params)
    if t3_steps is not None:
        p["max_new_tokens"] = int(t3_steps)
    t0 = time.time()
    torch.manual_seed(case.seed)
    with obs.observe("ve", tts.ve), obs.observe("s3tok", tts.s3gen.tokenizer), \
            obs.observe("campplus", tts.s3gen.speaker_encoder):
        tts.prepare_conditionals(str(case.audio_path), exaggeration=p["exaggeration"])
    sampler, rec = RecordedSampler(seed=case.seed), Recorder()
    with obs.observe("t3", tts.t3), observe_t3_attention(tts.t3, ent):
        tokens, n = run_t3(tts, rec, _t3_text_tokens(tts, case), p, sampler, prefix="t3", with_conditioning=False)
    t3 = next_token_stats(rec.stacked("t3.logits_temp", n), p["min_p"], sampler.tokens, int(p["max_new_tokens"]))
    speech = drop_invalid_tokens(tokens[0])
    speech = speech[speech < 6561]
    log(f"[{case.name}] conditioning and T3 in {time.time() - t0:.0f}s")
    f0s, clipped = [], []
    torch.manual_seed(case.seed)
    with obs.observe("flow", tts.s3gen.flow), obs.observe("hift", tts.s3gen.mel2wav), \
            observe_flow_attention(tts.s3gen.flow, ent), \
            forward_hook(tts.s3gen.mel2wav.f0_predictor, lambda m, i, o: f0s.append(o.detach())), \
            wrap_method(tts.s3gen.mel2wav, "_istft", before=lambda mag, ph: clipped.append(mag.detach())):
        tts.s3gen.inference(speech_tokens=speech, ref_dict=tts.conds.gen, n_cfm_timesteps=int(p["n_cfm_timesteps"]))
    f0, mag = torch.cat([f.reshape(-1) for f in f0s]), torch.cat([m.reshape(-1) for m in clipped])
    log(f"[{case.name}] activation statistics in {time.time() - t0:.0f}s ({n} T3 steps)")
    return {"t3": t3, "f0_voiced_share": _r(float((f0 > VOICED_HZ).double().mean())),
            "f0_hz_max": _r(f0.max()), "hift_magnitude_clipped_share": _r(float((mag >= 1e2).double().mean()))}


# ----------------------------------------------------------------------------- the whole record
def summarize(modules: Dict[str, dict], attention: Dict[str, float]) -> dict:
    """Per component: the worst module's dead and saturated shares, and the modules over IDLE_SHARE."""
    out = {}
    for comp in sorted({k.split(".")[0] for k in modules}):
        mods = {k: v for k, v in modules.items() if k.startswith(comp + ".")}
        dead = max(mods.items(), key=lambda kv: kv[1]["dead_share"])
        sat = [(k, v["saturated_share"]) for k, v in mods.items() if "saturated_share" in v]
        worst_sat = max(sat, key=lambda kv: kv[1]) if sat else (None, None)
        out[comp] = {"modules": len(mods), "dead_share_max": dead[1]["dead_share"], "dead_share_max_at": dead[0],
                     "saturated_share_max": worst_sat[1], "saturated_share_max_at": worst_sat[0],
                     "idle_modules": sorted(k for k, v in mods.items()
                                            if v["dead_share"] > IDLE_SHARE or v.get("saturated_share", 0) > IDLE_SHARE)}
    for comp in sorted({k.split(".")[0] + "." + k.split(".")[1] if k.startswith("flow") else k.split(".")[0]
                        for k in attention}):
        vals = [v for k, v in attention.items() if k.startswith(comp + ".")]
        out.setdefault(comp.split(".")[0], {})[f"attention_entropy_{comp.replace('.', '_')}"] = {
            "min": _r(min(vals)), "median": _r(float(np.median(vals))), "max": _r(max(vals))}
    return out


def measure(ckpt: CheckpointDir, cases: List[Case], tts=None, t3_steps=None, log=print) -> dict:
    import json

    import librosa
    import torch

    from .export import load_original

    torch.set_grad_enabled(False)
    tts = tts or load_original(ckpt)
    obs, ent = ModuleObserver(), Entropies()
    per_case = {c.name: measure_case(tts, c, obs, ent, t3_steps=t3_steps, log=log) for c in cases}
    wavs = {c.name: librosa.resample(librosa.load(str(c.audio_path), sr=24000)[0], orig_sr=24000, target_sr=16000)
            for c in cases}
    modules, attention = obs.results(), ent.results()
    synth = ckpt.path / "synthetic.json"
    return {
        "stats_version": STATS_VERSION,
        "checkpoint": {"name": ckpt.path.name, "identity": ckpt.identity(),
                       "init": json.loads(synth.read_text()).get("init", "default") if synth.is_file() else None},
        "definitions": {"dead": f"ReLU-type unit never > 0, or any unit with output std <= {DEAD_REL_STD:g} x the "
                                "module's RMS, over every call on every case",
                        "saturated": f"|tanh|, |LSTM h|, |tanh(FSQ projection)| > {SAT_TANH}; sigmoid outside "
                                     f"[{1 - SAT_TANH:.2f}, {SAT_TANH}]",
                        "attention_entropy": "entropy / log(keys the query sees), 1 = uniform",
                        "idle": f"dead share or saturated share > {IDLE_SHARE}",
                        "t3": "softmax of the scaled logits each step sampled from (CFG, repetition penalty, "
                              "temperature), sampled with the case's seed"},
        "cases": per_case,
        "speaker_embeddings": speaker_embeddings(tts, wavs),
        "summary": summarize(modules, attention),
        "attention_entropy": attention,
        "modules": modules,
    }
