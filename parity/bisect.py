"""`chatterbox-parity bisect`: the first sub-module where MLX leaves the original.

Runs the ORIGINAL PyTorch module of a stage and the MLX module side by side on the same inputs
(the case's reference fixture), recording every sub-module call on both sides: PyTorch with forward
(pre-)hooks, MLX by swapping each sub-module instance's class for a recording subclass (restored
afterwards). Each call keeps its first input tensor and its output tensor. Then, walking the
original's calls in execution order (each call's input when it starts, its output when it returns),
the first tensor that diverges beyond the tolerance names the culprit:

  * a module whose input matches and whose output diverges: that module (when its sub-modules all
    matched, the divergence is in its own code between them);
  * a module whose input already diverges while the last compared tensor before it matched: the
    code between the two (a functional op that is not a module, e.g. an activation);
  * the stage's final output diverging after every module matched: the code after the last module.

Tensors are compared after adapting layouts (MLX is channels-last for convolutions): every axis
permutation (then, failing that, with unit axes squeezed) that makes the shapes equal is tried and
the best match kept. Original modules without an MLX counterpart (through the name map in
parity/bisect_maps.py) are not compared.

Exit status: 0 nothing diverges, 1 a divergence was found, 2 user error.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import bisect_maps
from .errors import ParityError
from .metrics import Metrics, compare

MODEL_CASES = {"tts": "the English model's cases", "vc": "the voice-conversion cases (vc_*)",
               "turbo": "the Chatterbox Turbo cases (turbo_*)", "mtl": "the Chatterbox Multilingual cases (mtl_*)"}
MEANFLOW_T_SPAN = (0.0, 0.5, 1.0)  # basic_euler's linear t_span for generate()'s 2 steps
HIFT_HOP = 480  # source samples per mel frame (S3Token2Wav: 8 * 5 * 3 upsampling * 4 iSTFT hop)
MTL_CFG = 0.5  # the multilingual T3.inference always decodes the CFG pair: any cfg_weight > 0 zeroes row 1's text
S3TOK_PROMPT_FRAMES = 150 * 4  # S3Tokenizer.forward(..., max_len=150) keeps 600 mel frames


# ============================================================================ recording
@dataclass
class Call:
    """One call of a sub-module: when it started and returned (a counter shared by both events)."""

    name: str
    index: int  # the n-th call of this module
    cls: str
    start: int
    end: int = -1
    parent: Optional[int] = None  # position of the enclosing call in the call list
    inp: Any = None  # numpy array (or None when the call had no tensor input)
    out: Any = None

    @property
    def key(self) -> Tuple[str, int]:
        return (self.name, self.index)


class _Recorder:
    def __init__(self):
        self.calls: List[Call] = []
        self.stack: List[int] = []
        self.counter = 0
        self.counts: Dict[str, int] = {}

    def _tick(self) -> int:
        self.counter += 1
        return self.counter

    def begin(self, name: str, cls: str, inp) -> int:
        idx = self.counts.get(name, 0)
        self.counts[name] = idx + 1
        call = Call(name, idx, cls, self._tick(), parent=self.stack[-1] if self.stack else None, inp=inp)
        self.calls.append(call)
        self.stack.append(len(self.calls) - 1)
        return len(self.calls) - 1

    def end(self, pos: int, out) -> None:
        if self.stack and self.stack[-1] == pos:
            self.stack.pop()
        self.calls[pos].end = self._tick()
        self.calls[pos].out = out


def _first(obj, is_tensor: Callable, depth: int = 0):
    """The first tensor in obj (tensors, tuples, lists, dicts, dataclasses), depth first."""
    if is_tensor(obj):
        return obj
    if depth > 4:
        return None
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (tuple, list)):
        items = list(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    else:
        return None
    for item in items:
        t = _first(item, is_tensor, depth + 1)
        if t is not None:
            return t
    return None


def _torch_tensor(x) -> bool:
    import torch

    return isinstance(x, torch.Tensor) and not x.is_complex()


def _torch_np(x) -> Optional[np.ndarray]:
    import torch

    t = _first(x, _torch_tensor)
    if t is None:
        return None
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16, torch.bool):
        t = t.float()
    return t.numpy().copy()


def _mx_tensor(x) -> bool:
    import mlx.core as mx

    return isinstance(x, mx.array) and x.dtype != mx.complex64


def record_original(root, run: Callable[[], Any], adapters: Dict[str, Callable] = None):
    """Run `run()` with forward hooks on every sub-module of the torch `root`; -> (calls, result)."""
    import torch

    adapters = adapters or {}
    rec = _Recorder()
    handles = []

    def pre(name, module, args, kwargs):
        rec.begin(name, type(module).__name__, _torch_np((args, kwargs)))

    def post(name, module, args, kwargs, output):
        pos = rec.stack[-1] if rec.stack else None
        if pos is None or rec.calls[pos].name != name:  # not ours (e.g. an exception unwound the stack)
            return
        if name in adapters:
            output = adapters[name](output)
        rec.end(pos, _torch_np(output))

    try:
        for name, module in root.named_modules():
            if bisect_maps.skip_original(name):
                continue
            handles.append(module.register_forward_pre_hook(
                lambda m, a, k, _n=name: pre(_n, m, a, k), with_kwargs=True))
            handles.append(module.register_forward_hook(
                lambda m, a, k, o, _n=name: post(_n, m, a, k, o), with_kwargs=True))
        with torch.inference_mode():
            result = run()
    finally:
        for h in handles:
            h.remove()
    return rec.calls, result


def record_mlx(root, run: Callable[[], Any], adapters: Dict[str, Callable] = None):
    """Run `run()` with every sub-module instance of the MLX `root` swapped for a recording subclass
    of its class (restored afterwards, even on error); -> (calls, result)."""
    import mlx.core as mx

    adapters = adapters or {}
    rec = _Recorder()
    swapped = []

    def recording_class(orig, name):
        def __call__(self, *args, **kwargs):
            pos = rec.begin(name, orig.__name__, _first((args, kwargs), _mx_tensor))
            try:
                out = orig.__call__(self, *args, **kwargs)
            except BaseException:
                rec.end(pos, None)
                raise
            rec.end(pos, _first(adapters[name](out) if name in adapters else out, _mx_tensor))
            return out

        return type(orig.__name__, (orig,), {"__call__": __call__, "__module__": orig.__module__,
                                             "__qualname__": orig.__qualname__})

    seen = set()
    try:
        for name, module in root.named_modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            orig = type(module)
            module.__class__ = recording_class(orig, name)
            swapped.append((module, orig))
        result = run()
    finally:
        for module, orig in reversed(swapped):
            module.__class__ = orig
    arrays = [a for c in rec.calls for a in (c.inp, c.out) if a is not None]
    mx.eval(arrays)
    for c in rec.calls:
        c.inp = _mx_np(c.inp)
        c.out = _mx_np(c.out)
    return rec.calls, result


def _mx_np(a) -> Optional[np.ndarray]:
    import mlx.core as mx

    if a is None:
        return None
    if a.dtype in (mx.bfloat16, mx.float16, mx.bool_):
        a = a.astype(mx.float32)
    return np.array(a)


# ============================================================================ comparison
@dataclass
class Match:
    metrics: Metrics
    layout: str  # how the MLX tensor was arranged to match: "as is", "axes (0, 2, 1)", ...
    out: np.ndarray  # the MLX tensor in the original's layout (when shapes could be matched)


def align(ref: np.ndarray, out: np.ndarray) -> Optional[Match]:
    """The arrangement of `out` that best matches `ref` (by SNR): as is, or any axis permutation
    that makes the shapes equal, or (failing those) the same with unit axes squeezed.
    None when no arrangement has ref's shape."""
    kind = "int" if (np.issubdtype(ref.dtype, np.integer) and np.issubdtype(out.dtype, np.integer)) else "float"
    cands = _arrangements(ref, out)
    if not cands:
        rs, os_ = np.squeeze(ref), np.squeeze(out)
        if rs.size == ref.size and os_.size == out.size and rs.size == os_.size:
            cands = [(f"squeezed, {how}", a.reshape(ref.shape)) for how, a in _arrangements(rs, os_)]
    if not cands:
        return None
    best = None
    for how, a in cands:
        m = compare(ref, a, kind)
        score = (m.exact if kind == "int" else (m.snr_db if m.snr_db is not None and not math.isnan(m.snr_db)
                                               else -math.inf)) - (1e-9 * m.nonfinite_mismatch)
        if best is None or score > best[0]:
            best = (score, Match(m, how, a))
    return best[1]


def _arrangements(ref, out):
    cands = []
    if ref.shape == out.shape:
        cands.append(("as is", out))
    if ref.size == out.size and ref.ndim == out.ndim and 1 < out.ndim <= 5:
        ident = tuple(range(out.ndim))
        for perm in itertools.permutations(ident):
            if perm != ident and tuple(out.shape[p] for p in perm) == ref.shape:
                cands.append((f"axes {perm}", np.transpose(out, perm)))
    return cands


def diverges(m: Metrics, tol_db: float) -> bool:
    if m.length_mismatch:
        return True
    if m.exact is not None:
        return m.exact < 1.0
    return bool(m.nonfinite_mismatch) or m.snr_db is None or m.snr_db < tol_db


def stats(a: np.ndarray) -> str:
    f = np.asarray(a, dtype=np.float64)
    fin = f[np.isfinite(f)]
    if fin.size == 0:
        return f"shape {tuple(a.shape)} (no finite values)"
    nonfin = f" non-finite {f.size - fin.size}" if fin.size != f.size else ""
    return (f"shape {tuple(a.shape)} min {fin.min():.6g} max {fin.max():.6g} mean {fin.mean():.6g} "
            f"std {fin.std():.6g}{nonfin}")


def _snr(m: Metrics) -> str:
    if m.exact is not None:
        return f"exact {m.exact:.4f}"
    if m.snr_db is None:
        return "SNR n/a"
    return "SNR inf" if m.snr_db == math.inf else f"SNR {m.snr_db:.1f} dB"


# ============================================================================ stages
@dataclass
class Stage:
    about: str
    original: Callable  # (the original model: ChatterboxTTS, or ChatterboxVC for a vc stage) -> torch root module
    mlx: Callable  # (CheckpointDir) -> MLX root module
    inputs: Callable  # (Fixture, max_len) -> dict of numpy arrays
    run_original: Callable  # (root, torch inputs) -> output
    run_mlx: Callable  # (root, mx inputs) -> output
    name_map: Callable = bisect_maps.identity
    length_unit: str = "frames"
    entry: str = ""  # the code that calls the root's sub-modules when the root itself is not called
    model: str = "tts"  # the model whose cases it runs on: "tts", or "vc" (inputs read through VCFixture)


def _hift_inputs(fx, n):
    mel = fx.tensor("flow.output_mel").astype(np.float32)
    if n is not None:
        mel = mel[..., :n]
    src = fx.tensor("hift.source").astype(np.float32)[..., : mel.shape[-1] * HIFT_HOP]
    return {"mel": mel, "source": src}


def _campplus_inputs(fx, n):
    fbank = fx.tensor("embed_ref.fbank").astype(np.float32)
    return {"fbank": fbank if n is None else fbank[:, :n]}


def _s3tok_inputs(fx, n):
    mel = fx.tensor("s3tok.prompt_log_mel").astype(np.float32)[..., :S3TOK_PROMPT_FRAMES]
    if n is not None:
        mel = mel[..., :n]
    return {"mel": mel, "mel_len": np.array([mel.shape[-1]], dtype=np.int32)}


def _ve_inputs(fx, n):
    p = fx.tensor("ve.partials").astype(np.float32)
    return {"partials": p if n is None else p[:n]}


def _t3_cond_inputs(fx, n):
    emb = fx.tensor("t3.cond_prompt_speech_emb").astype(np.float32)
    tok = fx.tensor("s3tok.prompt_tokens").astype(np.int32)
    if n is not None:
        emb, tok = emb[:, :n], tok[:, :n]
    return {"speaker_emb": fx.tensor("ve.speaker_emb").astype(np.float32), "prompt_emb": emb, "prompt_tokens": tok,
            "emotion_adv": np.full((1, 1, 1), float(fx.params["exaggeration"]), dtype=np.float32)}


def _flow_encoder_inputs(fx, n):
    x = fx.tensor("flow.input_embedding").astype(np.float32)
    if n is not None:
        x = x[:, :n]
    return {"xs": x, "xs_lens": np.array([x.shape[1]], dtype=np.int32)}


def _flow_inputs(fx, n):
    """The flow encoder's input, then its estimator's inputs at the first Euler step as solve_euler
    builds them: the CFG batch of 2 (row 1: mu, spks and cond zeroed), t = t_span[0] = 0. `n`: the
    first n tokens, and the first 2n mel frames."""
    enc = _flow_encoder_inputs(fx, n)
    noise, mu, cond = (fx.tensor(f"flow.{k}").astype(np.float32) for k in ("start_noise", "mu", "cond"))
    if n is not None:
        noise, mu, cond = noise[..., :2 * n], mu[..., :2 * n], cond[..., :2 * n]
    spks = fx.tensor("flow.spk_embedding").astype(np.float32)
    pair = lambda a: np.concatenate([a, np.zeros_like(a)], axis=0)
    return {**enc, "x": np.concatenate([noise, noise], axis=0), "mask": np.ones((2, 1, mu.shape[-1]), np.float32),
            "mu": pair(mu), "t": np.zeros(2, np.float32), "spks": pair(spks), "cond": pair(cond)}


def _flow_run(root, i):
    """The flow's encoder, then its estimator's first Euler step (the same calls on both sides)."""
    root.encoder(i["xs"], i["xs_lens"])
    return root.decoder.estimator(i["x"], i["mask"], i["mu"], i["t"], i["spks"], i["cond"])


def _turbo_flow_inputs(fx, n):
    """The flow encoder's input, then MeanFlow's estimator inputs at basic_euler's first step: batch 1
    (no CFG), t = 0, r = 0.5 (2 steps)."""
    enc = _flow_encoder_inputs(fx, n)
    x, mu, cond = (fx.tensor(f"flow.{k}").astype(np.float32) for k in ("start_noise", "mu", "cond"))
    if n is not None:
        x, mu, cond = x[..., :2 * n], mu[..., :2 * n], cond[..., :2 * n]
    return {**enc, "x": x, "mask": np.ones((1, 1, mu.shape[-1]), np.float32), "mu": mu,
            "t": np.full(1, MEANFLOW_T_SPAN[0], np.float32), "spks": fx.tensor("flow.spk_embedding").astype(np.float32),
            "cond": cond, "r": np.full(1, MEANFLOW_T_SPAN[1], np.float32)}


def _turbo_flow_run(root, i):
    root.encoder(i["xs"], i["xs_lens"])
    return root.decoder.estimator(i["x"], i["mask"], i["mu"], i["t"], i["spks"], i["cond"], i["r"])


def _turbo_t3_inputs(fx, n):
    """T3's input embeddings (the reference's turbo.t3.input_embeds: conditioning, text, start token),
    the first n positions with `n`; then one decode step on the KV cache, fed the reference's first
    drawn token."""
    embeds = fx.tensor("t3.input_embeds").astype(np.float32)
    if n is not None:
        embeds = embeds[:, :n]
    return {"embeds": embeds, "next_token": fx.tensor("t3.speech_tokens").astype(np.int64).reshape(-1)[:1][None]}


def _turbo_t3_original(t3, i):
    """inference_turbo's backbone calls: the prefill, the speech head on its last position, then one
    step (speech_emb of the drawn token, the GPT-2 on the KV cache, the speech head)."""
    out = t3.tfmr(inputs_embeds=i["embeds"], use_cache=True)
    t3.speech_head(out[0][:, -1:])
    step = t3.tfmr(inputs_embeds=t3.speech_emb(i["next_token"]), past_key_values=out.past_key_values, use_cache=True)
    return t3.speech_head(step[0])


def _turbo_t3_mlx(t3, i):
    cache = t3.make_cache()
    hidden = t3.tfmr(None, cache=cache, input_embeddings=i["embeds"])
    t3.speech_head(hidden[:, -1:])
    hidden = t3.tfmr(None, cache=cache, input_embeddings=t3.speech_emb(i["next_token"]))
    return t3.speech_head(hidden)


def _mtl_t3_inputs(fx, n):
    """The multilingual T3's conditioning (the reference's VoiceEncoder embedding and prompt tokens), its padded
    text tokens with the CFG copy (the first n with `n`), the start speech token, and the reference's first
    drawn token for the decode step."""
    text = fx.tensor("t3.text_tokens").astype(np.int64)
    if n is not None:
        text = text[:, :n]
    return {"speaker_emb": fx.tensor("ve.speaker_emb").astype(np.float32),
            "prompt_tokens": fx.tensor("s3tok.prompt_tokens").astype(np.int64),
            "emotion_adv": np.full((1, 1, 1), float(fx.params["exaggeration"]), dtype=np.float32),
            "text_tokens": text,
            "next_token": fx.tensor("t3.speech_tokens").astype(np.int64).reshape(-1)[:1][None]}


def _start_speech(t3, text_tokens):
    return np.full((text_tokens.shape[0], 1), t3.hp.start_speech_token, dtype=np.int64)


def _mtl_t3_original(t3, i):
    """T3.inference's prefill (prepare_input_embeds: cond_enc, the text table with the uncond row zeroed, the
    position embeddings; the HF Llama with eager attention, as the AlignmentStreamAnalyzer sets it; the speech
    head on the last position), then one step on the KV cache (speech_emb of the drawn token + its position)."""
    import torch
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    t3.tfmr.config._attn_implementation = "eager"
    cond = T3Cond(speaker_emb=i["speaker_emb"], cond_prompt_speech_tokens=i["prompt_tokens"],
                  emotion_adv=i["emotion_adv"])
    embeds, _ = t3.prepare_input_embeds(t3_cond=cond, text_tokens=i["text_tokens"], cfg_weight=MTL_CFG,
                                        speech_tokens=torch.from_numpy(_start_speech(t3, i["text_tokens"])))
    out = t3.tfmr(inputs_embeds=embeds, use_cache=True)
    t3.speech_head(out[0][:, -1:])
    step = t3.speech_emb(i["next_token"]) + t3.speech_pos_emb.get_fixed_embedding(1)
    step = t3.tfmr(inputs_embeds=torch.cat([step, step]), past_key_values=out.past_key_values, use_cache=True)
    return t3.speech_head(step[0])


def _mtl_t3_mlx(t3, i):
    import mlx.core as mx

    from mlx_impl.t3 import T3Cond

    cond = T3Cond(speaker_emb=i["speaker_emb"], cond_prompt_speech_tokens=i["prompt_tokens"],
                  emotion_adv=i["emotion_adv"])
    embeds, _ = t3.prepare_input_embeds(t3_cond=cond, text_tokens=np.asarray(i["text_tokens"]),
                                        speech_tokens=_start_speech(t3, i["text_tokens"]), cfg_weight=MTL_CFG)
    cache = t3.make_cache()
    hidden = t3.tfmr(None, cache=cache, input_embeddings=embeds)
    t3.speech_head(hidden[:, -1:])
    step = t3.speech_emb(i["next_token"]) + t3.speech_pos_emb.get_fixed_embedding(1)
    hidden = t3.tfmr(None, cache=cache, input_embeddings=mx.concatenate([step, step]))
    return t3.speech_head(hidden)


def _mtl(inputs):
    """A stage's input builder reading a multilingual fixture under the English names (stages/mtl_common.py)."""
    def build(fx, n):
        from .stages.mtl_common import MtlFixture

        return inputs(MtlFixture(fx), n)
    return build


def _turbo(inputs):
    """A stage's input builder reading a Turbo fixture under the English names (stages/turbo_common.py)."""
    def build(fx, n):
        from .stages.turbo_common import TurboFixture

        return inputs(TurboFixture(fx), n)

    return build


def _vc(inputs):
    """A stage's input builder reading a VC fixture under the English names (stages/vc_common.py)."""
    def build(fx, n):
        from .stages.vc_common import VCFixture

        return inputs(VCFixture(fx), n)

    return build


def _s3tok_original(root, i):
    h, _ = root.encoder(i["mel"], i["mel_len"])
    return root.quantizer.encode(h)


def _s3tok_mlx(root, i):
    h, _ = root.encoder(i["mel"], i["mel_len"])
    return root.quantizer.encode(h)


def _t3_cond_original(root, i):
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    return root(T3Cond(speaker_emb=i["speaker_emb"], cond_prompt_speech_tokens=i["prompt_tokens"],
                       cond_prompt_speech_emb=i["prompt_emb"], emotion_adv=i["emotion_adv"]))


def _t3_cond_mlx(root, i):
    from mlx_impl.t3 import T3Cond

    return root(T3Cond(speaker_emb=i["speaker_emb"], cond_prompt_speech_tokens=i["prompt_tokens"],
                       cond_prompt_speech_emb=i["prompt_emb"], emotion_adv=i["emotion_adv"]))


def _mlx_hift(ckpt):
    from .stages.hift import model

    return model(ckpt)


def _mlx_campplus(ckpt):
    from .stages.embed_ref_speaker import load_campplus_model

    return load_campplus_model(ckpt)


def _mlx_s3tok(ckpt):
    from .stages.s3tok import load_tokenizer

    return load_tokenizer(ckpt)


def _mlx_ve(ckpt):
    from .stages.ve import load_ve_model

    return load_ve_model(ckpt)


def _mlx_t3_cond(ckpt):
    from .stages.t3_cond import load_t3_model

    return load_t3_model(ckpt).cond_enc


def _mlx_flow_encoder(ckpt):
    from .stages.flow import load_flow

    return load_flow(ckpt).encoder


def _mlx_flow(ckpt):
    from .stages.flow import load_flow

    return load_flow(ckpt)


def _mlx_turbo_t3(ckpt):
    from .stages.turbo_common import pipeline

    return pipeline(ckpt).t3


def _mlx_mtl_t3(ckpt):
    """The multilingual T3 as converted from the hub's file, q/k/v and gate/up not fused (the original's modules)."""
    from mlx_impl.convert.t3 import load_t3
    from mlx_impl.load import convert_file
    from mlx_impl.mtl_tts import T3_WEIGHTS
    from mlx_impl.t3 import T3Config

    return convert_file(lambda state: load_t3(state, T3Config.multilingual()), ckpt.path / T3_WEIGHTS)


def _mlx_turbo_flow(ckpt):
    from .stages.turbo_common import pipeline

    return pipeline(ckpt).s3gen.flow


STAGES: Dict[str, Stage] = {
    "hift": Stage(
        about="HiFTGenerator.decode(flow.output_mel, hift.source)",
        original=lambda tts: tts.s3gen.mel2wav, mlx=_mlx_hift, inputs=_hift_inputs,
        run_original=lambda m, i: m.decode(x=i["mel"], s=i["source"]),
        run_mlx=lambda m, i: m.decode(i["mel"], i["source"]),
        length_unit="mel frames (and 480 source samples each)", entry="HiFTGenerator.decode"),
    "campplus": Stage(
        about="CAMPPlus(embed_ref.fbank): the S3Gen speaker x-vector",
        original=lambda tts: tts.s3gen.speaker_encoder, mlx=_mlx_campplus, inputs=_campplus_inputs,
        run_original=lambda m, i: m(i["fbank"]), run_mlx=lambda m, i: m(i["fbank"]),
        length_unit="fbank frames"),
    "s3tok": Stage(
        about="S3 tokenizer: encoder(s3tok.prompt_log_mel[..., :600]), then the FSQ quantizer",
        original=lambda tts: tts.s3gen.tokenizer, mlx=_mlx_s3tok, inputs=_s3tok_inputs,
        run_original=_s3tok_original, run_mlx=_s3tok_mlx, name_map=bisect_maps.s3tokenizer,
        length_unit="mel frames", entry="the stage's encoder + quantizer.encode calls"),
    "ve": Stage(
        about="VoiceEncoder.forward(ve.partials)",
        original=lambda tts: tts.ve, mlx=_mlx_ve, inputs=_ve_inputs,
        run_original=lambda m, i: m(i["partials"]), run_mlx=lambda m, i: m(i["partials"]),
        name_map=bisect_maps.voice_encoder, length_unit="partials"),
    "t3_cond": Stage(
        about="T3CondEnc(T3Cond(ve.speaker_emb, t3.cond_prompt_speech_emb, exaggeration))",
        original=lambda tts: tts.t3.cond_enc, mlx=_mlx_t3_cond, inputs=_t3_cond_inputs,
        run_original=_t3_cond_original, run_mlx=_t3_cond_mlx, length_unit="prompt tokens"),
    "flow_encoder": Stage(
        about="UpsampleConformerEncoder(flow.input_embedding)",
        original=lambda tts: tts.s3gen.flow.encoder, mlx=_mlx_flow_encoder, inputs=_flow_encoder_inputs,
        run_original=lambda m, i: m(i["xs"], i["xs_lens"]), run_mlx=lambda m, i: m(i["xs"], i["xs_lens"]),
        name_map=bisect_maps.flow_encoder, length_unit="tokens"),
    "flow": Stage(
        about="the flow: UpsampleConformerEncoder(flow.input_embedding), then the estimator's first Euler step "
              "(flow.start_noise, flow.mu, flow.cond, flow.spk_embedding; the CFG batch of 2)",
        original=lambda tts: tts.s3gen.flow, mlx=_mlx_flow, inputs=_flow_inputs, run_original=_flow_run,
        run_mlx=_flow_run, name_map=bisect_maps.flow, length_unit="tokens (and 2 mel frames each)",
        entry="the stage's encoder + decoder.estimator calls"),
    # voice conversion: ChatterboxVC's S3Gen is the English one; its stages read the vc.* tensors
    "vc_flow": Stage(
        about="ChatterboxVC's flow: UpsampleConformerEncoder(vc.flow.input_embedding), then the estimator's first "
              "Euler step (vc.flow.start_noise, vc.flow.mu, vc.flow.cond, vc.flow.spk_embedding; CFG batch of 2)",
        original=lambda vc: vc.s3gen.flow, mlx=_mlx_flow, inputs=_vc(_flow_inputs), run_original=_flow_run,
        run_mlx=_flow_run, name_map=bisect_maps.flow, length_unit="tokens (and 2 mel frames each)",
        entry="the stage's encoder + decoder.estimator calls", model="vc"),
    "vc_hift": Stage(
        about="ChatterboxVC's HiFTGenerator.decode(vc.output_mel, vc.hift.source)",
        original=lambda vc: vc.s3gen.mel2wav, mlx=_mlx_hift, inputs=_vc(_hift_inputs),
        run_original=lambda m, i: m.decode(x=i["mel"], s=i["source"]),
        run_mlx=lambda m, i: m.decode(i["mel"], i["source"]),
        length_unit="mel frames (and 480 source samples each)", entry="HiFTGenerator.decode", model="vc"),
    # Chatterbox Multilingual: its T3 (t3_mtl23ls_v2.safetensors); the stage reads the mtl.* tensors
    "mtl_t3": Stage(
        about="the multilingual T3: prepare_input_embeds (cond_enc, the 2454-entry text table, position embeddings) of "
              "mtl.t3.text_tokens, the Llama prefill (eager attention) and the speech head, then one decode step on "
              "the KV cache (speech_emb of mtl.t3.speech_tokens[0])",
        original=lambda tts: tts.t3, mlx=_mlx_mtl_t3, inputs=_mtl(_mtl_t3_inputs),
        run_original=_mtl_t3_original, run_mlx=_mtl_t3_mlx, length_unit="text tokens",
        entry="the stage's prepare_input_embeds + tfmr + speech_head calls (T3.inference's prefill and first step)",
        model="mtl"),
    # Chatterbox Turbo: S3Gen with MeanFlow (s3gen_meanflow.safetensors); its stages read the turbo.* tensors
    "turbo_t3": Stage(
        about="Turbo's T3 on GPT-2 medium: the prefill of turbo.t3.input_embeds (wpe added, 24 blocks, ln_f) and the "
              "speech head, then one decode step on the KV cache (speech_emb of turbo.t3.speech_tokens[0])",
        original=lambda tts: tts.t3, mlx=_mlx_turbo_t3, inputs=_turbo(_turbo_t3_inputs),
        run_original=_turbo_t3_original, run_mlx=_turbo_t3_mlx, length_unit="prefill positions",
        entry="the stage's tfmr + speech_head calls (inference_turbo's prefill and first step)", model="turbo"),
    "turbo_flow": Stage(
        about="Turbo's flow: UpsampleConformerEncoder(turbo.flow.input_embedding), then MeanFlow's estimator at "
              "basic_euler's first step (turbo.flow.start_noise, mu, cond, spk_embedding; t = 0, r = 0.5, no CFG)",
        original=lambda tts: tts.s3gen.flow, mlx=_mlx_turbo_flow, inputs=_turbo(_turbo_flow_inputs),
        run_original=_turbo_flow_run, run_mlx=_turbo_flow_run, name_map=bisect_maps.flow,
        length_unit="tokens (and 2 mel frames each)", entry="the stage's encoder + decoder.estimator calls",
        model="turbo"),
    "turbo_hift": Stage(
        about="Turbo's HiFTGenerator.decode(turbo.flow.output_mel, turbo.hift.source)",
        original=lambda tts: tts.s3gen.mel2wav, mlx=_mlx_hift, inputs=_turbo(_hift_inputs),
        run_original=lambda m, i: m.decode(x=i["mel"], s=i["source"]),
        run_mlx=lambda m, i: m.decode(i["mel"], i["source"]),
        length_unit="mel frames (and 480 source samples each)", entry="HiFTGenerator.decode", model="turbo"),
}


# ============================================================================ the finder
@dataclass
class Check:
    """One compared tensor: a call's input ("in") or output ("out"), or the stage's output."""

    call: Optional[Call]  # None for the stage output
    what: str  # "in" | "out" | "stage output"
    match: Optional[Match]
    ref: Optional[np.ndarray]
    out: Optional[np.ndarray]
    diverged: bool

    @property
    def label(self) -> str:
        return _label(self.call) if self.call is not None else "the stage output"


def _label(call: Call) -> str:
    name = call.name or "<root>"
    return name if call.index == 0 else f"{name}#{call.index}"


@dataclass
class Finding:
    stage: str
    kind: str  # "none" | "module" | "gap"
    module: Optional[str] = None  # "module": the diverging module; "gap": the module after the gap (B)
    previous: Optional[str] = None  # "gap": the last matching tensor's module before the gap (A)
    parent: Optional[str] = None  # the call enclosing the diverging call / gap
    check: Optional[Check] = None  # the first diverging tensor
    last_ok: Optional[Check] = None  # the last matching tensor before it
    checks: List[Check] = field(default_factory=list)  # every compared tensor, in order
    n_original_calls: int = 0
    unmatched: List[str] = field(default_factory=list)  # original modules without an MLX call
    lines: List[str] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return self.kind != "none"

    def report(self) -> str:
        return "\n".join(self.lines)


def _as_torch(inputs: dict) -> dict:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}


def _as_mx(inputs: dict) -> dict:
    import mlx.core as mx

    return {k: mx.array(v) for k, v in inputs.items()}


def _result_np(result, framework: str) -> Optional[np.ndarray]:
    if framework == "torch":
        return _torch_np(result)
    a = _first(result, _mx_tensor)
    return _mx_np(a) if a is not None else None


def bisect(stage: str, fixture, *, ckpt=None, tol_db: float = 100.0, max_len: Optional[int] = None,
           original_root=None, mlx_root=None, tts=None) -> Finding:
    """Run the stage on both sides and find the first divergence. The original root defaults to the
    stage's module of `tts` (or of load_original(ckpt)); the MLX root to the stage's builder on ckpt."""
    if stage not in STAGES:
        raise ParityError(f"unknown stage '{stage}' (one of: {', '.join(STAGES)})")
    if max_len is not None and max_len <= 0:
        raise ParityError(f"--max-len must be positive, got {max_len}")
    if not (tol_db > 0 and math.isfinite(tol_db)):
        raise ParityError(f"--tol-db must be a positive number of dB, got {tol_db}")
    spec = STAGES[stage]
    if original_root is None:
        if tts is None:
            tts = load_original_model(spec.model, ckpt)
        original_root = spec.original(tts)
    if mlx_root is None:
        mlx_root = spec.mlx(ckpt)
    inputs = spec.inputs(fixture, max_len)

    ref_calls, ref_result = record_original(
        original_root, lambda: spec.run_original(original_root, _as_torch(inputs)),
        bisect_maps.ORIGINAL_OUTPUT_ADAPTERS.get(stage))
    mlx_calls, mlx_result = record_mlx(
        mlx_root, lambda: spec.run_mlx(mlx_root, _as_mx(inputs)), bisect_maps.MLX_OUTPUT_ADAPTERS.get(stage))
    finding = find_first_divergence(stage, ref_calls, mlx_calls, spec.name_map,
                                    _result_np(ref_result, "torch"), _result_np(mlx_result, "mlx"), tol_db,
                                    entry=spec.entry)
    head = [f"bisect {stage}: {spec.about}",
            f"  case {fixture.name}, inputs " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items()),
            f"  tolerance: SNR >= {tol_db:g} dB (integers: exact)"]
    finding.lines = head + finding.lines
    return finding


def load_original_model(model: str, ckpt):
    """The original ChatterboxTTS, ChatterboxVC for a voice-conversion stage, ChatterboxTurboTTS for Turbo's."""
    if model == "turbo":
        from reference.export_turbo import load_original_turbo

        return load_original_turbo(ckpt)
    if model == "mtl":
        from reference.export_mtl import load_original_mtl

        return load_original_mtl(ckpt)
    if model == "vc":
        from reference.export_vc import load_original_vc

        return load_original_vc(ckpt)
    from reference.export import load_original

    return load_original(ckpt)


def find_first_divergence(stage: str, ref_calls: List[Call], mlx_calls: List[Call], name_map: Callable,
                          ref_result, mlx_result, tol_db: float, entry: str = "") -> Finding:
    mlx_by_key = {c.key: c for c in mlx_calls}
    finding = Finding(stage=stage, kind="none", n_original_calls=len(ref_calls))
    events = sorted([(c.start, "in", c) for c in ref_calls] + [(c.end, "out", c) for c in ref_calls],
                    key=lambda e: e[0])
    unmatched = []
    last_ok: Optional[Check] = None
    for _, what, call in events:
        mapped = name_map(call.name)
        mcall = mlx_by_key.get((mapped, call.index)) if mapped is not None else None
        if mcall is None:
            if what == "in" and call.name not in unmatched:
                unmatched.append(call.name)
            continue
        ref, out = (call.inp, mcall.inp) if what == "in" else (call.out, mcall.out)
        if ref is None or out is None:
            continue
        match = align(ref, out)
        if match is None and what == "in":
            continue  # inputs the two sides pass differently (e.g. another argument order): not compared
        bad = match is None or diverges(match.metrics, tol_db)
        chk = Check(call, what, match, ref, out, bad)
        finding.checks.append(chk)
        if not bad:
            last_ok = chk
            continue
        finding.check, finding.last_ok = chk, last_ok
        parent = ref_calls[call.parent] if call.parent is not None else None
        finding.parent = _label(parent) if parent is not None else None
        # output diverges after a matching input: the module; input diverges: the code before it
        finding.kind, finding.module = ("module" if what == "out" else "gap"), _label(call)
        finding.previous = last_ok.label if last_ok is not None else None
        break
    else:
        if ref_result is not None and mlx_result is not None:
            match = align(ref_result, mlx_result)
            bad = match is None or diverges(match.metrics, tol_db)
            chk = Check(None, "stage output", match, ref_result, mlx_result, bad)
            finding.checks.append(chk)
            if bad:
                finding.kind, finding.module, finding.check, finding.last_ok = "gap", None, chk, last_ok
                finding.previous = last_ok.label if last_ok is not None else None
    finding.unmatched = unmatched
    finding.lines = _describe(finding, ref_calls, entry)
    return finding


def _describe(f: Finding, ref_calls: List[Call], entry: str = "") -> List[str]:
    n_cmp = len({id(c.call) for c in f.checks if c.call is not None})
    upto = " up to the first divergence" if f.kind != "none" else ""
    lines = [f"  compared {len(f.checks)} tensors of {n_cmp} module calls{upto} "
             f"({f.n_original_calls} original calls; {len(f.unmatched)} original modules without an MLX "
             f"counterpart{upto}, not compared{': ' + ', '.join(_short(f.unmatched)) if f.unmatched else ''})"]
    if f.kind == "none":
        worst = min((c for c in f.checks if c.match and c.match.metrics.snr_db is not None),
                    key=lambda c: c.match.metrics.snr_db, default=None)
        lines.append("NO DIVERGENCE: every compared tensor is within tolerance"
                     + (f" (lowest: {worst.what} of `{worst.label}`, {_snr(worst.match.metrics)})" if worst else ""))
        return lines
    c = f.check
    cls = f" ({c.call.cls})" if c.call is not None else ""
    inside = f" inside `{f.parent}`" if f.parent else (f" (in {entry})" if entry else "")
    if f.kind == "module":
        inp_checked = any(x.call is c.call and x.what == "in" for x in f.checks)
        lines.append(f"FIRST DIVERGENCE: module `{f.module}`{cls}{inside}: "
                     + ("its input matches, its output diverges" if inp_checked else
                        "its output diverges (its input was not compared; see the last match before it)"))
        children = [x for x in f.checks if x.call is not None and x.call.parent is not None
                    and ref_calls[x.call.parent] is c.call]
        if children:
            lines.append(f"  its {len({id(x.call) for x in children})} compared sub-module calls all match: the "
                         f"divergence is in `{c.call.cls}`'s own code (after `{f.previous}`)")
    elif c.call is None:
        lines.append(f"FIRST DIVERGENCE: the code between `{f.previous}` and the stage output (every module "
                     "matched; the stage's code after its last module call)")
    else:
        after_output = f.last_ok is None or f.last_ok.what == "out"
        prev = f"`{f.previous}`" if after_output else f"the start of `{f.previous}`"
        lines.append(f"FIRST DIVERGENCE: the code between {prev} and `{f.module}`{inside}: `{f.module}`{cls} "
                     f"receives a diverging input although the {'output' if after_output else 'input'} of "
                     f"`{f.previous}` matched (a functional op that is not a module, e.g. an activation)")
    if f.last_ok is not None:
        ok = f.last_ok
        lines.append(f"  last match:   {ok.what} of `{ok.label}` {_snr(ok.match.metrics)}, "
                     f"max abs err {ok.match.metrics.max_abs if ok.match.metrics.max_abs is not None else 0:.3g}")
    if f.kind == "module" and c.call is not None:
        inp = next((x for x in f.checks if x.call is c.call and x.what == "in"), None)
        if inp is not None and inp is not f.last_ok:
            lines.append(f"  input of `{f.module}`: {_snr(inp.match.metrics)}")
    lines.append(f"  diverging:    {c.what} of `{c.label}`")
    lines.append(f"    original  {stats(c.ref)}")
    if c.match is None:
        lines.append(f"    mlx       {stats(c.out)}  (no axis arrangement matches the original's shape)")
    else:
        m = c.match.metrics
        lines.append(f"    mlx       {stats(c.match.out)}  (MLX layout {tuple(c.out.shape)}, {c.match.layout})")
        err = "" if m.max_abs is None else f", max abs err {m.max_abs:.6g}"
        cos = "" if m.cosine is None else f", cosine {m.cosine:.9f}"
        nonfin = f", {m.nonfinite_mismatch} non-finite entries differ" if m.nonfinite_mismatch else ""
        lines.append(f"    {_snr(m)}{err}{cos}{nonfin}")
    return lines


def _short(names: List[str], n: int = 6) -> List[str]:
    out = [x or "<root>" for x in names[:n]]
    return out + [f"... {len(names) - n} more"] if len(names) > n else out


def table(f: Finding) -> List[str]:
    """Every compared tensor, in order (for --verbose)."""
    rows = []
    for c in f.checks:
        m = c.match.metrics if c.match else None
        snr = _snr(m) if m else "shape mismatch"
        what = c.what if c.call is not None else "end"
        rows.append(f"  {'DIVERGES' if c.diverged else 'ok      '} {what:3s} {c.label:50s} {snr:>16s}  "
                    f"{tuple(c.ref.shape)}")
    return rows


# ============================================================================ CLI
def cmd_bisect(args):
    from .synthetic import resolve_checkpoint
    from .fixtures import default_fixture_root
    from .session import ParitySession, all_cases, case_model

    if args.stage not in STAGES:
        raise ParityError(f"unknown stage '{args.stage}' (one of: {', '.join(STAGES)})")
    cases = all_cases()
    if args.case not in cases:
        raise ParityError(f"unknown case '{args.case}' (one of: {', '.join(cases)})")
    spec = STAGES[args.stage]
    if case_model(cases[args.case]) != spec.model:
        fitting = [n for n, c in cases.items() if case_model(c) == spec.model]
        raise ParityError(f"--stage {args.stage} runs on {MODEL_CASES[spec.model]}, not on '{args.case}' "
                          f"(one of: {', '.join(fitting)})")
    if args.max_len is not None and args.max_len <= 0:
        raise ParityError(f"--max-len must be positive, got {args.max_len}")
    if not (args.tol_db > 0 and math.isfinite(args.tol_db)):
        raise ParityError(f"--tol-db must be a positive number of dB, got {args.tol_db}")
    ckpt = resolve_checkpoint(args.checkpoint)
    session = ParitySession(ckpt=ckpt, fx_root=Path(args.fixtures or default_fixture_root()))
    fx = session.fixture(args.case)  # exported when missing or stale
    ckpt = session.ckpt_for(spec.model)  # Turbo's own folder for its stages
    original = session._original() if spec.model == "tts" else load_original_model(spec.model, ckpt)
    finding = bisect(args.stage, fx, ckpt=ckpt, tol_db=args.tol_db, max_len=args.max_len, tts=original)
    print(finding.report())
    if args.verbose:
        print("compared tensors, in the original's execution order:")
        print("\n".join(table(finding)))
    if finding.diverged:
        raise SystemExit(1)


def register(sub):
    p = sub.add_parser("bisect", help="find the first sub-module where MLX diverges from the original (one stage)")
    p.add_argument("--case", required=True,
                   help="case name (fixtures/cases.toml; a vc_* case for the vc_* stages, a turbo_* case for the turbo_* "
                        "stages); its fixture supplies the inputs")
    p.add_argument("--stage", required=True, help=f"one of: {', '.join(STAGES)}")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint folder (hub layout); default: $CHATTERBOX_CKPT or the synthetic one (the turbo_* "
                        "stages: $CHATTERBOX_TURBO_CKPT or the synthetic Turbo checkpoint)")
    p.add_argument("--fixtures", type=Path, default=None, help="fixture root (default: fixtures/)")
    p.add_argument("--tol-db", type=float, default=100.0, help="a tensor diverges below this SNR (default 100)")
    p.add_argument("--max-len", type=int, default=None,
                   help="only the first N steps of the stage input (HiFT: mel frames, with 480 N source samples; "
                        "campplus: fbank frames; s3tok: mel frames; ve: partials; t3_cond: prompt tokens; "
                        "flow_encoder: tokens; flow, vc_flow, turbo_flow: tokens and 2 mel frames each; vc_hift, turbo_hift: as "
                        "hift; turbo_t3: prefill positions; mtl_t3: text tokens)")
    p.add_argument("--verbose", "-v", action="store_true", help="also list every compared tensor and its SNR")
    p.set_defaults(fn=cmd_bisect)
