"""Cumulative mode: the MLX pipeline chained end to end, each stage fed MLX's own upstream output.

  e2e    from the case's raw audio file and text to the waveform (conditioning, T3 with the
         recorded uniforms replayed, S3Gen with the recorded noise): what a user of the MLX port gets.
         Where T3's tokens differ from the reference's (judged as flips, parity/flips.py), S3Gen runs
         on the reference's tokens with MLX's conditioning, so that flow and HiFT are still compared.
  s3gen  from the reference's speech tokens and conditioning to the waveform (flow -> HiFT), with
         the recorded flow noise and SineGen draws.
  vc     voice conversion (ChatterboxVC) from the source and target files (vc_cumulative.py).
  turbo  Chatterbox Turbo from the case's audio file and text (turbo_cumulative.py).
  mtl    Chatterbox Multilingual from the case's audio file, text and language (mtl_cumulative.py).
Compared in tests/parity/test_cumulative.py against [cumulative.<mode>] tolerances of the registry.
"""
from __future__ import annotations

import numpy as np

from .. import flips

MODES = ("e2e", "s3gen", "vc", "turbo", "mtl")  # vc: ChatterboxVC end to end (vc_cumulative.py); turbo, mtl: turbo_cumulative.py, mtl_cumulative.py


_PIPELINES: dict = {}


def _pipeline(ckpt):
    """The MLX ChatterboxTTS of `ckpt`, sharing the T3 the isolated runners already hold (memory)."""
    key = str(ckpt.path)
    if key not in _PIPELINES:
        from mlx_impl.convert.s3gen import load_s3gen
        from mlx_impl.convert.voice_encoder import load_voice_encoder
        from mlx_impl.tokenizers import EnTokenizer
        from mlx_impl.tts import ChatterboxTTS

        from .t3_cond import load_t3_model

        _PIPELINES.clear()
        _PIPELINES[key] = ChatterboxTTS(load_t3_model(ckpt), load_s3gen(ckpt.state("s3gen")),
                                        load_voice_encoder(ckpt.state("ve")), EnTokenizer(str(ckpt.file("tokenizer.json"))))
    return _PIPELINES[key]


def _np(x) -> np.ndarray:
    return np.asarray(x)


def _replay(fx):
    import mlx.core as mx

    return dict(flow_noise=mx.array(fx.tensor("flow.start_noise")), sine_phase=mx.array(fx.tensor("hift.sine_phase")),
                sine_noise=mx.array(fx.tensor("hift.sine_noise")))


def run_s3gen(fx, ckpt) -> dict:
    """Reference tokens + reference conditioning -> mel -> waveform, all in MLX."""
    import mlx.core as mx

    tts = _pipeline(ckpt)
    ref = dict(prompt_token=mx.array(fx.tensor("embed_ref.prompt_token")),
               prompt_token_len=mx.array([fx.tensor("embed_ref.prompt_token").shape[1]], dtype=mx.int32),
               prompt_feat=mx.array(fx.tensor("embed_ref.prompt_feat")), prompt_feat_len=None,
               embedding=mx.array(fx.tensor("embed_ref.xvector")))
    trace = {}
    wav, source = tts.s3gen.inference(fx.tensor("flow.speech_tokens"), ref_dict=ref,
                                      n_cfm_timesteps=int(fx.params["n_cfm_timesteps"]), trace=trace, **_replay(fx))
    return {"flow.mu": _np(trace["mu"]), "flow.output_mel": _np(trace["output_mel"]), "hift.source": _np(source),
            "hift.wav": _np(wav)}


def run_e2e(fx, ckpt) -> dict:
    """Raw audio file + text -> every stage, MLX feeding MLX; T3's draws and S3Gen's noise replayed."""
    import mlx.core as mx

    from mlx_impl.t3.inference.sampling import ReplayDraw
    from mlx_impl.tts import s3gen_speech_tokens

    tts = _pipeline(ckpt)
    p = fx.params
    trace = {}
    conds = tts.prepare_conditionals(fx.audio_path(), exaggeration=float(p["exaggeration"]), trace=trace)
    out = {
        "audio.wav_24k": _np(trace["wav_24k"]), "audio.wav_16k": _np(trace["wav_16k"]),
        "ve.speaker_emb": _np(conds.t3.speaker_emb), "s3tok.prompt_tokens": _np(conds.t3.cond_prompt_speech_tokens),
        "embed_ref.prompt_feat": _np(conds.gen["prompt_feat"]), "embed_ref.prompt_token": _np(conds.gen["prompt_token"]),
        "embed_ref.xvector": _np(conds.gen["embedding"]),
    }
    full, _ = tts.s3gen.tokenizer.forward([trace["wav_16k"]])
    out["s3tok.full_tokens"] = _np(full)
    draws = fx.tensor("t3.uniform_draws")
    text_tokens = tts.text_tokens(fx.case["text"])
    out["t3.text_tokens"] = text_tokens
    scaled = []  # per-step scaled logits (input of min-p): the flip verdict checks them at a differing step
    tokens = tts.t3.inference(
        t3_cond=conds.t3, text_tokens=text_tokens, max_new_tokens=min(int(p["max_new_tokens"]), draws.size),
        temperature=float(p["temperature"]), cfg_weight=float(p["cfg_weight"]),
        repetition_penalty=float(p["repetition_penalty"]), min_p=float(p["min_p"]), top_p=float(p["top_p"]),
        draw=ReplayDraw(draws), on_step=lambda i, d: scaled.append(np.array(d["logits_temp"]).reshape(-1)))
    out["t3.speech_tokens"] = _np(tokens)
    out["t3.logits_temp"] = np.stack(scaled)
    speech = s3gen_speech_tokens(tokens[0])
    out["flow.speech_tokens"] = speech[None]
    ref_speech = fx.tensor("flow.speech_tokens")
    if not np.array_equal(speech[None], ref_speech):
        # T3 diverged (its verdict says whether as a justified flip): S3Gen runs on the reference's own
        # tokens, with MLX's conditioning and the recorded draws, so that it is still compared.
        mism = flips.token_mismatches(fx.tensor("t3.speech_tokens"), tokens, [], teacher_forced=False)
        note = ("S3Gen ran on the reference's tokens: MLX's T3 tokens differ from step "
                f"{mism[0].step if mism else '?'} on")
        out[flips.NOTES] = {"flow.output_mel": note, "hift.wav": note}
        speech = ref_speech[0]
    trace = {}
    wav, _ = tts.s3gen.inference(speech[None], ref_dict=conds.gen, n_cfm_timesteps=int(p["n_cfm_timesteps"]),
                                 trace=trace, **_replay(fx))
    out.update({"flow.output_mel": _np(trace["output_mel"]), "hift.wav": _np(wav)})
    return out


def run(fx, ckpt, mode: str) -> dict:
    from . import mtl_cumulative, turbo_cumulative, vc_cumulative

    return {"e2e": run_e2e, "s3gen": run_s3gen, "vc": vc_cumulative.run, "turbo": turbo_cumulative.run,
            "mtl": mtl_cumulative.run}[mode](fx, ckpt)
