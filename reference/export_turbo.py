"""Reference export of Chatterbox Turbo: runs the ORIGINAL ChatterboxTurboTTS on one Turbo case and
writes every `turbo.*` parity checkpoint (parity/checkpoints.toml, model turbo).

The run is the original's own: `ChatterboxTurboTTS.from_local(ckpt)`, `torch.manual_seed(case.seed)`,
then `generate(text, audio_prompt_path=clip, ...)` with the case's arguments (generate()'s defaults:
fixtures/cases.toml [turbo_defaults]), with two differences, both recorded in the manifest:
  - `T3.inference_turbo` is bounded to the case's `max_gen_len` by a wrapper (generate() passes none:
    1000; the synthetic checkpoint's T3 never draws the stop token, so it runs to the bound);
  - `torch.multinomial` is replaced, during the run, by `RecordedSampler` (inverse CDF on a recorded
    uniform) so that the draws can be replayed. A second `inference_turbo` on the same conditionals
    and text takes the argmax (greedy reference).
Hooks record (reference/export.py's helpers, the checkpoints renamed "turbo." + the English name):
  - prepare_conditionals: the librosa load and resample of chatterbox/tts_turbo.py, the -27 LUFS
    loudness step (norm_loudness's result), the VoiceEncoder, the S3 tokenizer's T3 prompt and
    S3Token2Mel.embed_ref (record_conditioning's hooks);
  - the text: Turbo's punc_norm and the GPT-2 tokenizer's ids;
  - T3: the conditioning encoder, the input embeddings, per step the speech head's logits and each
    logits processor's output, by subclass wrappers in inference_turbo's order (temperature, top-k,
    top-p, repetition penalty);
  - S3Gen: record_s3gen's flow and HiFT hooks, the start MeanFlow's basic_euler gets (both draws of
    the original in it), the tokens s3gen.inference gets and its output (before the watermark, which
    generate() then applies).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from parity.cases import TurboCase
from parity.errors import ParityError

from .export import (_LibrosaProxy, _recording_processor, checkpoint_meta, from_local_or_error, package_versions,
                     record_conditioning, record_s3gen, sanity_check, validate_case_inputs, write_case_fixture)
from .recording import ModelRecorder, RecordedSampler, Recorder, forward_hook, patched, wrap_method

TURBO_EXPORT_VERSION = "turbo-1"
# inference_turbo's processors in its order, each recorded under the name of its output
PROCESSORS = (("TemperatureLogitsWarper", "logits_temp"), ("TopKLogitsWarper", "logits_top_k"),
              ("TopPLogitsWarper", "logits_top_p"), ("RepetitionPenaltyLogitsProcessor", "logits_rep"))
STEP_KEYS = ("logits_raw",) + tuple(name for _, name in PROCESSORS)
N_CFM_TIMESTEPS = 2  # ChatterboxTurboTTS.generate's s3gen.inference(n_cfm_timesteps=2)


def load_original_turbo(ckpt, device: str = "cpu"):
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    return from_local_or_error(ChatterboxTurboTTS, ckpt, device)


def generate_kwargs(params: dict) -> dict:
    """The case's arguments of ChatterboxTurboTTS.generate (max_gen_len is inference_turbo's, not generate()'s)."""
    return {k: v for k, v in params.items() if k != "max_gen_len"}


class _TokenizerProxy:
    """Stands in for ChatterboxTurboTTS.tokenizer: records the ids of the text generate() tokenizes."""

    def __init__(self, real, rec: Recorder):
        self._real, self._rec = real, rec

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __len__(self):
        return len(self._real)

    def __call__(self, *a, **k):
        out = self._real(*a, **k)
        self._rec.put("text.tokens", out.input_ids)
        return out


@contextlib.contextmanager
def record_turbo_front(tts, rec: Recorder):
    """prepare_conditionals (the clip: load, loudness, 16 kHz copy; VE, S3 prompt tokens, embed_ref) and
    the text (punc_norm, the tokenizer)."""
    import librosa
    import torch
    import chatterbox.tts_turbo as turbo_mod

    real_punc_norm = turbo_mod.punc_norm

    def punc_norm(text):
        out = real_punc_norm(text)
        rec.put("text.normalized_utf8", torch.tensor(list(out.encode("utf-8")), dtype=torch.uint8))
        return out

    proxy = _LibrosaProxy(librosa, on_load=lambda out: rec.put("audio.wav_24k_loaded", torch.from_numpy(out[0])),
                          on_resample=lambda out: rec.put("audio.wav_16k", torch.from_numpy(out)))
    with contextlib.ExitStack() as stack:
        stack.enter_context(record_conditioning(tts, rec))  # VE, the S3 tokenizer, embed_ref (English hooks)
        stack.enter_context(patched(turbo_mod, "librosa", proxy))
        stack.enter_context(wrap_method(tts, "norm_loudness",
                                        after=lambda r, *a, **k: rec.put("audio.wav_24k", torch.from_numpy(np.asarray(r)))))
        stack.enter_context(patched(turbo_mod, "punc_norm", punc_norm))
        stack.enter_context(patched(tts, "tokenizer", _TokenizerProxy(tts.tokenizer, rec)))
        yield


@contextlib.contextmanager
def record_turbo_t3(tts, rec: Recorder, sampler: RecordedSampler, prefix: str, max_gen_len: int,
                    with_conditioning: bool):
    """inference_turbo bounded to `max_gen_len`, its draws through `sampler`, per step the speech head's
    logits and each processor's output appended to `<prefix>.<name>`."""
    import torch
    import chatterbox.models.t3.t3 as t3_mod

    t3 = tts.t3
    real_inference = t3.inference_turbo

    def bounded(*a, **k):
        return real_inference(*a, **{**k, "max_gen_len": max_gen_len})

    def appender(name):
        return lambda scores_in, scores_out: rec.append(f"{prefix}.{name}", scores_out[0])

    def hook_put(name):
        return lambda module, inputs, output: rec.put(name, output)

    with contextlib.ExitStack() as stack:
        for cls_name, name in PROCESSORS:
            stack.enter_context(patched(t3_mod, cls_name, _recording_processor(getattr(t3_mod, cls_name), appender(name))))
        stack.enter_context(patched(torch, "multinomial", sampler))
        stack.enter_context(patched(t3, "inference_turbo", bounded))
        stack.enter_context(forward_hook(t3.speech_head, lambda m, i, o: rec.append(f"{prefix}.logits_raw", o[:, -1, :][0])))
        if with_conditioning:
            stack.enter_context(forward_hook(t3.cond_enc.spkr_enc, hook_put("t3.cond_spkr")))
            stack.enter_context(forward_hook(t3.cond_enc, hook_put("t3.cond_emb")))
            stack.enter_context(wrap_method(t3, "prepare_input_embeds",
                                            after=lambda result, *a, **k: rec.put("t3.input_embeds", result[0])))
        yield


def stacked_steps(rec: Recorder, prefix: str, n: int) -> dict:
    """The per-step tensors of a T3 run, (n, V) each; a processor that the case's arguments switch off
    (as inference_turbo does: temperature 1, top_k 0, top_p 1, penalty 1) passes its input on."""
    import torch

    out, last = {}, None
    for key in STEP_KEYS:
        items = rec.lists.pop(f"{prefix}.{key}", [])
        if items and len(items) != n:
            raise RuntimeError(f"{prefix}.{key}: {len(items)} steps recorded for {n} draws")
        out[key] = torch.stack(items) if items else last
        last = out[key]
    return out


@contextlib.contextmanager
def record_turbo_s3gen(tts, rec: Recorder, outputs: dict):
    """record_s3gen's flow and HiFT hooks, the start of MeanFlow's basic_euler, s3gen.inference's tokens and output."""
    s3 = tts.s3gen

    def basic_euler_before(x, t_span, mu, mask, spks, cond, *a, **k):
        rec.put("flow.start_noise", x)
        rec.put("flow.mu", mu)
        rec.put("flow.cond", cond)

    def inference_before(*a, speech_tokens=None, **k):
        rec.put("flow.speech_tokens", (speech_tokens if speech_tokens is not None else a[0])[None])

    def inference_after(result, *a, **k):
        outputs.setdefault("s3gen", []).append(result)

    with record_s3gen(tts, rec), wrap_method(s3.flow.decoder, "basic_euler", before=basic_euler_before), \
            wrap_method(s3, "inference", before=inference_before, after=inference_after):
        yield


def validate_turbo_case_inputs(case: TurboCase) -> None:
    import soundfile as sf

    validate_case_inputs(case)
    seconds = sf.info(str(case.audio_path)).duration
    if not seconds > 5.0:  # ChatterboxTurboTTS.prepare_conditionals asserts it
        raise ParityError(f"Turbo case '{case.name}': voice {case.audio_path} is {seconds:.2f} s; Chatterbox Turbo's "
                          "audio prompt must be longer than 5 seconds")
    if int(case.params["max_gen_len"]) < 1:
        raise ParityError(f"Turbo case '{case.name}': max_gen_len {case.params['max_gen_len']} must be >= 1")


def export_turbo_case(ckpt, case: TurboCase, out_root=None, tts=None, log=print) -> Path:
    import torch

    from parity.flips import turbo_greedy_margin, turbo_sampling_margin

    validate_turbo_case_inputs(case)
    tts = tts or load_original_turbo(ckpt)
    p = case.params
    bound = int(p["max_gen_len"])
    rec = ModelRecorder("turbo")
    t0 = time.time()

    # 1. generate(), unmodified but for the bound and the recorded draws: conditioning, text, T3 sampled, S3Gen
    sampler, outputs = RecordedSampler(seed=case.seed), {}
    torch.manual_seed(case.seed)
    with record_turbo_front(tts, rec), record_turbo_t3(tts, rec, sampler, "t3", bound, with_conditioning=True), \
            record_turbo_s3gen(tts, rec, outputs):
        tts.generate(case.text, audio_prompt_path=str(case.audio_path), **generate_kwargs(p))
    if len(outputs.get("s3gen", [])) != 1:
        raise RuntimeError(f"expected one s3gen.inference call, saw {len(outputs.get('s3gen', []))}")
    n = len(sampler.tokens)
    if "turbo.audio.wav_24k" not in rec.values:  # norm_loudness=False: the loaded clip goes on unchanged
        rec.put("audio.wav_24k", rec.values["turbo.audio.wav_24k_loaded"])
    conds = tts.conds.t3
    rec.put("ve.speaker_emb", conds.speaker_emb)
    rec.put("s3tok.prompt_tokens", conds.cond_prompt_speech_tokens)
    rec.put("t3.cond_prompt_speech_emb", conds.cond_prompt_speech_emb)
    rec.put("t3.uniform_draws", torch.tensor(sampler.uniforms, dtype=torch.float64))
    rec.put("t3.speech_tokens", torch.tensor([sampler.tokens], dtype=torch.int32))
    steps = stacked_steps(rec, "t3", n)
    for key in STEP_KEYS:
        rec.put(f"t3.{key}", steps[key])
    margin_args = dict(top_k=int(p["top_k"]), top_p=float(p["top_p"]), penalty=float(p["repetition_penalty"]))
    z, w = steps["logits_temp"].double().numpy(), steps["logits_rep"].double().numpy()
    rec.put("t3.sampling_margin", torch.tensor(
        [turbo_sampling_margin(z[i], w[i], sampler.uniforms[i], sampler.tokens[i], **margin_args) for i in range(n)],
        dtype=torch.float64))
    wav, sources = outputs["s3gen"][0]
    est = rec.lists.pop("flow.estimator")
    rec.put("flow.estimator_first", est[0])
    rec.put("flow.estimator_last", est[-1])
    rec.put("hift.source", sources)
    rec.put("hift.wav", wav)
    expect = [t for t in sampler.tokens if t < 6561] + [4299] * 3  # generate()'s hand-over (checked, not assumed)
    if rec.values["turbo.flow.speech_tokens"].reshape(-1).tolist() != expect:
        raise RuntimeError("the tokens s3gen.inference got are not the drawn speech tokens plus three S3GEN_SIL")
    log(f"[{case.name}] ChatterboxTurboTTS.generate: {n} T3 draws, {wav.shape[-1] / 24000:.2f}s of audio "
        f"in {time.time() - t0:.1f}s")

    # 2. T3 greedy on the same conditionals and text
    t1 = time.time()
    greedy = RecordedSampler(seed=case.seed, greedy=True)
    with record_turbo_t3(tts, rec, greedy, "t3_greedy", bound, with_conditioning=False):
        tts.t3.inference_turbo(t3_cond=tts.conds.t3, text_tokens=rec.values["turbo.text.tokens"],
                               temperature=p["temperature"], top_k=p["top_k"], top_p=p["top_p"],
                               repetition_penalty=p["repetition_penalty"])
    g_n = len(greedy.tokens)
    g_steps = stacked_steps(rec, "t3_greedy", g_n)
    rec.put("t3_greedy.logits_raw", g_steps["logits_raw"])
    rec.put("t3_greedy.speech_tokens", torch.tensor([greedy.tokens], dtype=torch.int32))
    g_w = g_steps["logits_rep"].double().numpy()
    rec.put("t3_greedy.sampling_margin", torch.tensor(
        [turbo_greedy_margin(g_w[i], margin_args["penalty"]) for i in range(g_n)], dtype=torch.float64))
    log(f"[{case.name}] T3 greedy {g_n} draws {time.time() - t1:.1f}s")

    meta = {
        "export_version": TURBO_EXPORT_VERSION,
        "model": "turbo",
        "case": case.as_manifest(),
        "checkpoint": checkpoint_meta(ckpt),
        "versions": package_versions(),
        "device": "cpu",
        "dtype": "float32",
        "driver": {
            "run": "ChatterboxTurboTTS.from_local(ckpt, 'cpu'); torch.manual_seed(case.seed); "
                   "generate(text, audio_prompt_path=audio, **case params but max_gen_len)",
            "t3_max_gen_len": f"{bound}: inference_turbo bounded by a wrapper (generate() passes none: 1000)",
            "t3_sampler": "torch.multinomial replaced during the run by reference.recording.RecordedSampler: "
                          "u ~ U[0,1) float64 from torch.Generator(seed); cdf = cumsum(float64(probs)); "
                          "token = min(searchsorted(cdf, u*cdf[-1], right=True), V-1)",
            "t3_greedy": "a second inference_turbo on the same conditionals and text tokens, argmax sampler",
            "t3_sampling_margin": "per step, the smallest L-inf perturbation of the scaled logits (turbo.t3.logits_temp) "
                                  "that could change the top-k or top-p set or the replayed pick (parity/flips.py "
                                  "turbo_sampling_margin); greedy: the top-two gap of the processed logits "
                                  "(turbo_greedy_margin), both over the repetition penalty's Lipschitz bound",
            "t3_steps": {"sampled": n, "greedy": g_n},
            "n_cfm_timesteps": N_CFM_TIMESTEPS,
            "torch_seed": "torch.manual_seed(case.seed) before generate() (MeanFlow's two draws, SineGen's)",
            "watermark": "applied by generate() as in the original; turbo.hift.wav is s3gen.inference's output before it",
            "logits_per_step": "rows of turbo.t3.logits_* are decoding steps 0..n-1 (step 0: the prefill's)",
        },
        "sanity": turbo_sanity_check(rec.values),
    }
    return write_case_fixture(rec, meta, out_root, case, t0, log)


FILTERED = ("turbo.t3.logits_top_k", "turbo.t3.logits_top_p", "turbo.t3.logits_rep")  # -inf where filtered


def turbo_sanity_check(values: dict) -> dict:
    """The English export's activation checks (finite, non-constant) on everything but the filtered logits
    and the margins (inf where nothing moves the pick); SineGen's voiced F0."""
    out = sanity_check({k: v for k, v in values.items() if k not in FILTERED and not k.endswith("sampling_margin")})
    if not bool((values["turbo.hift.f0"] > 10.0).any()):  # SineGen's voiced_threshold
        out["problems"].append("turbo.hift.f0: no voiced frame (F0 <= 10 Hz everywhere): SineGen's sine branch unexercised")
        out["ok"] = False
    return out
