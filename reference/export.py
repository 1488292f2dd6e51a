"""Reference export: runs the ORIGINAL Chatterbox on one case and writes every parity checkpoint.

The run follows `ChatterboxTTS.generate` step by step (prepare_conditionals, punc_norm,
text_to_tokens, CFG copy, start/stop padding, T3.inference, drop_invalid_tokens,
S3Token2Wav.inference), with two differences, both recorded in the manifest:
  - `T3.inference` gets a bounded `max_new_tokens` (generate() hard-codes 1000);
  - `torch.multinomial` is replaced, during T3.inference only, by `RecordedSampler` (inverse CDF
    on a recorded uniform) so that the draws can be replayed; a second T3 run takes the argmax
    (greedy reference).
The watermark is not applied: the compared waveform is S3Token2Wav.inference's output.
"""
from __future__ import annotations

import contextlib
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from parity.cases import Case
from parity.checkpoint_dir import CheckpointDir
from parity.errors import ParityError
from parity.fixtures import FixtureWriter, fixture_dir

from .recording import RecordedSampler, Recorder, forward_hook, patched, wrap_method

EXPORT_VERSION = "3"  # 2, 3: t3.sampling_margin, t3_greedy.sampling_margin
VERSIONED_PACKAGES = ("torch", "torchaudio", "transformers", "chatterbox-tts", "s3tokenizer", "librosa",
                      "soxr", "numpy", "diffusers", "safetensors", "tokenizers")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def from_local_or_error(model_class, ckpt: CheckpointDir, device: str = "cpu"):
    """The original `model_class.from_local(ckpt.path, device)`, gradients off; its failure one
    ParityError naming the folder and the cause."""
    import torch

    torch.set_grad_enabled(False)
    try:
        return model_class.from_local(ckpt.path, device)
    except Exception as e:  # the original's own loader failed: name the folder and the cause
        raise ParityError(f"the original {model_class.__name__}.from_local could not load {ckpt.path}: {e}") from None


def load_original(ckpt: CheckpointDir, device: str = "cpu"):
    from chatterbox.tts import ChatterboxTTS

    return from_local_or_error(ChatterboxTTS, ckpt, device)


def checkpoint_meta(ckpt: CheckpointDir, **extra) -> dict:
    """The fixture manifest's record of the checkpoint it was exported from."""
    return {"name": ckpt.path.name, "files_sha256": ckpt.file_hashes(), "identity": ckpt.identity(),
            "synthetic": (ckpt.path / "synthetic.json").is_file(), **extra}


def write_case_fixture(rec: Recorder, meta: dict, out_root, case, t0: float, log) -> Path:
    """Every recorded tensor and the manifest `meta` into the case's fixture folder (atomically)."""
    writer = FixtureWriter()
    for name, value in rec.values.items():
        writer.add(name, value)
    out = writer.write(fixture_dir(out_root, case.name), meta)
    log(f"[{case.name}] wrote {out} ({len(rec.values)} tensors) in {time.time() - t0:.1f}s")
    return out


# ----------------------------------------------------------------------------- conditioning
class _LibrosaProxy:
    """Stands in for the `librosa` module inside one original module, recording some calls."""

    def __init__(self, real, on_load=None, on_resample=None, on_trim=None):
        self._real, self._on_load, self._on_resample, self._on_trim = real, on_load, on_resample, on_trim
        if on_trim is not None:
            self.effects = _TrimProxy(real.effects, on_trim)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def load(self, *a, **k):
        out = self._real.load(*a, **k)
        if self._on_load:
            self._on_load(out)
        return out

    def resample(self, *a, **k):
        out = self._real.resample(*a, **k)
        if self._on_resample:
            self._on_resample(out)
        return out


class _TrimProxy:
    def __init__(self, real_effects, on_trim):
        self._real, self._on_trim = real_effects, on_trim

    def __getattr__(self, name):
        return getattr(self._real, name)

    def trim(self, *a, **k):
        out = self._real.trim(*a, **k)
        self._on_trim(out)
        return out


@contextlib.contextmanager
def record_conditioning(tts, rec: Recorder):
    import librosa
    import torch
    import chatterbox.tts as tts_mod
    import chatterbox.models.s3gen.s3gen as s3gen_mod
    import chatterbox.models.s3gen.xvector as xvector_mod
    import chatterbox.models.voice_encoder.voice_encoder as ve_mod

    phase = {"name": "s3tok"}

    def on_load(out):
        rec.put("audio.wav_24k", torch.from_numpy(out[0]))

    def on_resample(out):
        rec.put("audio.wav_16k", torch.from_numpy(out))

    def on_trim(out):
        rec.put("ve.trimmed_wav", torch.from_numpy(out[0]))

    real_mel = ve_mod.melspectrogram

    def melspectrogram(wav, hp, *a, **k):
        mel = real_mel(wav, hp, *a, **k)
        rec.put("ve.mel", torch.from_numpy(np.ascontiguousarray(mel.T)))
        return mel

    real_get_resampler = s3gen_mod.get_resampler

    def get_resampler(src_sr, dst_sr, device):
        resampler = real_get_resampler(src_sr, dst_sr, device)

        def run(x):
            y = resampler(x)
            if dst_sr == 16000:
                rec.put("embed_ref.wav_16k", y)
            return y

        return run

    real_extract = xvector_mod.extract_feature

    def extract_feature(audio):
        out = real_extract(audio)
        rec.put("embed_ref.fbank", out[0])
        return out

    def log_mel_after(result, *a, **k):
        rec.put("embed_ref.log_mel" if phase["name"] == "embed_ref" else "s3tok.prompt_log_mel", result)

    def embed_ref_before(*a, **k):
        phase["name"] = "embed_ref"

    def embed_ref_after(result, *a, **k):
        phase["name"] = "s3tok"
        rec.put("embed_ref.prompt_feat", result["prompt_feat"])
        rec.put("embed_ref.prompt_token", result["prompt_token"])
        rec.put("embed_ref.xvector", result["embedding"])

    def ve_hook(module, inputs, output):  # called once per batch of 32 partials
        rec.append("ve.partials", inputs[0])
        rec.append("ve.partial_embeds", output)

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(tts_mod, "librosa", _LibrosaProxy(librosa, on_load=on_load, on_resample=on_resample)))
        stack.enter_context(patched(ve_mod, "librosa", _LibrosaProxy(librosa, on_trim=on_trim)))
        stack.enter_context(patched(ve_mod, "melspectrogram", melspectrogram))
        stack.enter_context(patched(s3gen_mod, "get_resampler", get_resampler))
        stack.enter_context(patched(xvector_mod, "extract_feature", extract_feature))
        stack.enter_context(wrap_method(tts.s3gen.tokenizer, "log_mel_spectrogram", after=log_mel_after))
        stack.enter_context(wrap_method(tts.s3gen, "embed_ref", before=embed_ref_before, after=embed_ref_after))
        stack.enter_context(forward_hook(tts.ve, ve_hook))
        yield
    rec.put("ve.partials", torch.cat(rec.lists.pop("ve.partials")))
    rec.put("ve.partial_embeds", torch.cat(rec.lists.pop("ve.partial_embeds")))


# ----------------------------------------------------------------------------- T3
def _recording_processor(base, on_call):
    class Recording(base):
        def __call__(self, input_ids, scores):
            out = super().__call__(input_ids, scores)
            on_call(scores, out)
            return out

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


@contextlib.contextmanager
def record_t3(tts, rec: Recorder, sampler: RecordedSampler, with_conditioning: bool):
    import torch
    import chatterbox.models.t3.t3 as t3_mod

    t3 = tts.t3

    def rep(scores_in, scores_out):
        rec.append(f"{rec.prefix}.logits_cfg", scores_in[0])
        rec.append(f"{rec.prefix}.logits_rep", scores_out[0])

    def min_p(scores_in, scores_out):
        rec.append(f"{rec.prefix}.logits_temp", scores_in[0])
        rec.append(f"{rec.prefix}.logits_min_p", scores_out[0])

    def top_p(scores_in, scores_out):
        rec.append(f"{rec.prefix}.logits_top_p", scores_out[0])

    def head_hook(module, inputs, output):
        rec.append(f"{rec.prefix}.logits_raw", output[:, -1, :])

    def hook_put(name, fn=lambda o: o):
        return lambda module, inputs, output: rec.put(name, fn(output))

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(t3_mod, "RepetitionPenaltyLogitsProcessor",
                                    _recording_processor(t3_mod.RepetitionPenaltyLogitsProcessor, rep)))
        stack.enter_context(patched(t3_mod, "MinPLogitsWarper", _recording_processor(t3_mod.MinPLogitsWarper, min_p)))
        stack.enter_context(patched(t3_mod, "TopPLogitsWarper", _recording_processor(t3_mod.TopPLogitsWarper, top_p)))
        stack.enter_context(patched(torch, "multinomial", sampler))
        stack.enter_context(forward_hook(t3.speech_head, head_hook))
        if with_conditioning:
            enc = t3.cond_enc
            stack.enter_context(forward_hook(enc.spkr_enc, hook_put("t3.cond_spkr")))
            stack.enter_context(forward_hook(enc.perceiver, hook_put("t3.perceiver_out")))
            stack.enter_context(forward_hook(enc.emotion_adv_fc, hook_put("t3.cond_emotion")))
            stack.enter_context(forward_hook(enc, hook_put("t3.cond_emb")))
            stack.enter_context(wrap_method(t3, "prepare_input_embeds",
                                            after=lambda result, *a, **k: rec.put("t3.input_embeds", result[0])))
        yield


def run_t3(tts, rec: Recorder, text_tokens, params: dict, sampler: RecordedSampler, prefix: str,
           with_conditioning: bool):
    rec.prefix = prefix
    with record_t3(tts, rec, sampler, with_conditioning):
        tokens = tts.t3.inference(
            t3_cond=tts.conds.t3,
            text_tokens=text_tokens,
            max_new_tokens=int(params["max_new_tokens"]),
            temperature=params["temperature"],
            cfg_weight=params["cfg_weight"],
            repetition_penalty=params["repetition_penalty"],
            min_p=params["min_p"],
            top_p=params["top_p"],
        )
    n = len(sampler.tokens)
    return tokens, n


def sampling_margins(logits_temp, sampler: RecordedSampler, params: dict):
    """Per step, the reference's own margin to its pick (parity/flips.py): measured in numpy (float64)
    from the scaled logits it recorded, the uniform its draw used and the token it picked."""
    import torch

    from parity.flips import sampling_margin

    z = logits_temp.numpy()
    assert z.shape[0] == len(sampler.uniforms) == len(sampler.tokens)
    m = [sampling_margin(z[i], sampler.uniforms[i], sampler.tokens[i], min_p=float(params["min_p"]),
                         top_p=float(params["top_p"])) for i in range(z.shape[0])]
    return torch.tensor(m, dtype=torch.float64)


def greedy_margins(logits_temp):
    """Per step, half the gap between the reference's top two scaled logits (parity/flips.py)."""
    import torch

    from parity.flips import greedy_margin

    return torch.tensor([greedy_margin(row) for row in logits_temp.numpy()], dtype=torch.float64)


# ----------------------------------------------------------------------------- S3Gen
@contextlib.contextmanager
def record_s3gen(tts, rec: Recorder):
    import torch
    import chatterbox.models.s3gen.hifigan as hifigan_mod

    s3 = tts.s3gen
    flow, hift = s3.flow, s3.mel2wav
    estimator = flow.decoder.estimator
    phases = []

    class RecordingUniform(hifigan_mod.Uniform):
        def sample(self, *a, **k):
            out = super().sample(*a, **k)
            phases.append(out)  # SineGen zeroes harmonic 0 in place afterwards: read it after the run
            return out

    def solve_euler_before(x, t_span, mu, mask, spks, cond, *a, **k):
        rec.put("flow.start_noise", x)
        rec.put("flow.mu", mu)
        rec.put("flow.cond", cond)

    def estimator_after(result, *a, **k):
        rec.append("flow.estimator", result)

    def istft_before(magnitude, phase):
        rec.put("hift.magnitude", magnitude)
        rec.put("hift.phase", phase)

    hook = lambda name, fn=lambda o: o: (lambda m, i, o: rec.put(name, fn(o)))
    with contextlib.ExitStack() as stack:
        stack.enter_context(forward_hook(flow.input_embedding, hook("flow.input_embedding")))
        stack.enter_context(forward_hook(flow.spk_embed_affine_layer, hook("flow.spk_embedding")))
        stack.enter_context(forward_hook(flow.encoder, hook("flow.encoder_out", lambda o: o[0])))
        stack.enter_context(wrap_method(flow.decoder, "solve_euler", before=solve_euler_before))
        stack.enter_context(wrap_method(estimator, "forward", after=estimator_after))
        stack.enter_context(wrap_method(s3, "flow_inference", after=lambda r, *a, **k: rec.put("flow.output_mel", r)))
        stack.enter_context(forward_hook(hift.f0_predictor, hook("hift.f0")))
        stack.enter_context(patched(hifigan_mod, "Uniform", RecordingUniform))
        stack.enter_context(forward_hook(hift.m_source.l_sin_gen, hook("hift.sine_noise", lambda o: o[2])))
        stack.enter_context(wrap_method(hift, "_istft", before=istft_before))
        stack.enter_context(wrap_method(hift, "inference", after=lambda r, *a, **k: rec.put("hift.wav_pre_fade", r[0])))
        yield
    if len(phases) != 1:
        raise RuntimeError(f"expected one SineGen phase draw, saw {len(phases)}")
    phase = phases[0].detach().clone()
    assert torch.all(phase[:, 0, :] == 0), "SineGen should have zeroed the phase of harmonic 0"
    rec.put("hift.sine_phase", phase)


# ----------------------------------------------------------------------------- the whole case
def export_case(ckpt: CheckpointDir, case: Case, out_root=None, tts=None, log=print) -> Path:
    import torch
    import torch.nn.functional as F
    from chatterbox.models.s3tokenizer import drop_invalid_tokens
    from chatterbox.tts import punc_norm

    validate_case_inputs(case)
    ckpt.validate()
    tts = tts or load_original(ckpt)
    p = case.params
    rec = Recorder()
    t0 = time.time()

    # 1. conditioning (ChatterboxTTS.prepare_conditionals, unmodified)
    torch.manual_seed(case.seed)
    with record_conditioning(tts, rec):
        tts.prepare_conditionals(str(case.audio_path), exaggeration=p["exaggeration"])
    rec.put("ve.speaker_emb", tts.conds.t3.speaker_emb)
    rec.put("s3tok.prompt_tokens", tts.conds.t3.cond_prompt_speech_tokens)
    full_tokens, _ = tts.s3gen.tokenizer.forward([rec.values["audio.wav_16k"].numpy()])
    rec.put("s3tok.full_tokens", full_tokens)
    log(f"[{case.name}] conditioning {time.time() - t0:.1f}s")

    # 2. text, as ChatterboxTTS.generate prepares it
    text = punc_norm(case.text)
    text_tokens = tts.tokenizer.text_to_tokens(text)
    rec.put("text.normalized_utf8", torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8))
    rec.put("text.tokens", text_tokens)
    if p["cfg_weight"] > 0.0:
        text_tokens = torch.cat([text_tokens, text_tokens], dim=0)
    text_tokens = F.pad(text_tokens, (1, 0), value=tts.t3.hp.start_text_token)
    text_tokens = F.pad(text_tokens, (0, 1), value=tts.t3.hp.stop_text_token)
    rec.put("t3.text_tokens", text_tokens)

    # 3. T3, sampled with recorded draws, then greedy
    t1 = time.time()
    sampler = RecordedSampler(seed=case.seed)
    tokens, n = run_t3(tts, rec, text_tokens, p, sampler, prefix="t3", with_conditioning=True)
    rec.put("t3.cond_prompt_speech_emb", tts.conds.t3.cond_prompt_speech_emb)
    rec.put("t3.uniform_draws", torch.tensor(sampler.uniforms, dtype=torch.float64))
    rec.put("t3.speech_tokens", tokens[:1])
    assert tokens[0].tolist() == sampler.tokens
    for k in ("logits_raw", "logits_cfg", "logits_rep", "logits_temp", "logits_min_p", "logits_top_p"):
        rec.put(f"t3.{k}", rec.stacked(f"t3.{k}", n))
    rec.put("t3.sampling_margin", sampling_margins(rec.values["t3.logits_temp"], sampler, p))
    log(f"[{case.name}] T3 sampled {n} steps {time.time() - t1:.1f}s")

    t1 = time.time()
    greedy = RecordedSampler(seed=case.seed, greedy=True)
    g_tokens, g_n = run_t3(tts, rec, text_tokens, p, greedy, prefix="t3_greedy", with_conditioning=False)
    rec.put("t3_greedy.logits_cfg", rec.stacked("t3_greedy.logits_cfg", g_n))
    rec.put("t3_greedy.speech_tokens", g_tokens[:1])
    rec.put("t3_greedy.sampling_margin", greedy_margins(rec.stacked("t3_greedy.logits_temp", g_n)))
    log(f"[{case.name}] T3 greedy {g_n} steps {time.time() - t1:.1f}s")

    # 4. S3Gen on the sampled tokens (as generate: row 0, drop_invalid_tokens, < 6561)
    speech_tokens = drop_invalid_tokens(tokens[0])
    speech_tokens = speech_tokens[speech_tokens < 6561]
    if speech_tokens.numel() < 4:
        raise ParityError(f"case '{case.name}': only {speech_tokens.numel()} valid speech tokens; raise max_new_tokens")
    rec.put("flow.speech_tokens", speech_tokens[None])
    t1 = time.time()
    torch.manual_seed(case.seed)
    with record_s3gen(tts, rec):
        wav, sources = tts.s3gen.inference(speech_tokens=speech_tokens, ref_dict=tts.conds.gen,
                                           n_cfm_timesteps=int(p["n_cfm_timesteps"]))
    est = rec.lists["flow.estimator"]
    rec.put("flow.estimator_first", est[0])
    rec.put("flow.estimator_last", est[-1])
    rec.put("hift.source", sources)
    rec.put("hift.wav", wav)
    log(f"[{case.name}] S3Gen {wav.shape[-1] / 24000:.2f}s of audio in {time.time() - t1:.1f}s")

    meta = {
        "export_version": EXPORT_VERSION,
        "case": case.as_manifest(),
        "checkpoint": checkpoint_meta(ckpt),
        "versions": package_versions(),
        "device": "cpu",
        "dtype": "float32",
        "driver": {
            "t3_max_new_tokens": int(p["max_new_tokens"]),
            "t3_sampler": "torch.multinomial replaced during T3.inference by reference.recording.RecordedSampler: "
                          "u ~ U[0,1) float64 from torch.Generator(seed); cdf = cumsum(float64(probs)); "
                          "token = min(searchsorted(cdf, u*cdf[-1], right=True), V-1). Same distribution as "
                          "torch.multinomial (tests/unit/test_sampler.py).",
            "t3_greedy_sampler": "argmax of the same probabilities (first index of the max)",
            "t3_sampling_margin": "per step, the smallest L-inf perturbation of the scaled logits (t3.logits_temp) that "
                                  "could change the replayed pick (min-p crossings included where they move it); greedy: "
                                  "half the top-two gap (parity/flips.py, float64, from the reference's own tensors)",
            "t3_steps": {"sampled": n, "greedy": g_n},
            "torch_seed": "torch.manual_seed(case.seed) before prepare_conditionals and before S3Gen inference",
            "watermark": "not applied (hift.wav is S3Token2Wav.inference's output)",
            "logits_per_step": "rows of t3.logits_* are decoding steps 0..n-1 (the logits each step sampled from)",
        },
        "sanity": sanity_check(rec.values),
    }
    return write_case_fixture(rec, meta, out_root, case, t0, log)


def validate_case_inputs(case: Case) -> None:
    if not case.text.strip():
        raise ParityError(f"case '{case.name}': empty text")
    if not case.audio_path.is_file():
        raise ParityError(f"case '{case.name}': audio file not found: {case.audio_path}")
    _check_audio_readable(case.audio_path)


def _check_audio_readable(path: Path) -> None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:
        raise ParityError(f"unreadable audio file {path}: {e}") from None
    if info.frames == 0:
        raise ParityError(f"audio file holds no samples: {path}")


def sanity_check(values: dict) -> dict:
    """Finite, non-degenerate activations at every checkpoint (random init can be degenerate)."""
    import torch

    problems = []
    for name, v in values.items():
        if not torch.is_tensor(v) or name.startswith(("t3.logits_min_p", "t3.logits_top_p")):
            continue  # filtered logits are -inf by design
        f = v.double()
        if not torch.isfinite(f).all():
            problems.append(f"{name}: non-finite values")
        elif f.numel() > 1 and float(f.std()) == 0.0:
            problems.append(f"{name}: constant ({float(f.reshape(-1)[0])})")
    f0 = values.get("hift.f0")
    if f0 is not None and not bool((f0 > 10.0).any()):  # SineGen's voiced_threshold
        problems.append("hift.f0: no voiced frame (F0 <= 10 Hz everywhere): SineGen's sine branch unexercised")
    return {"ok": not problems, "problems": problems}
