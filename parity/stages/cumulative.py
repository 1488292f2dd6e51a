"""Cumulative mode: the MLX pipeline chained end to end, each stage fed MLX's own upstream output.

  e2e    from the case's raw audio file and text to the waveform (conditioning, T3 with the
         recorded uniforms replayed, S3Gen with the recorded noise): what a user of the MLX port gets.
  s3gen  from the reference's speech tokens and conditioning to the waveform (flow -> HiFT), with
         the recorded flow noise and SineGen draws.
Compared in tests/parity/test_cumulative.py against [cumulative.<mode>] tolerances of the registry.
"""
from __future__ import annotations

import numpy as np

MODES = ("e2e", "s3gen")


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
    text_tokens = tts.text_tokens(fx.case["text"])
    out["t3.text_tokens"] = text_tokens
    filtered = []  # per-step filtered logits, to find a min-p/top-p boundary flip against the reference
    tokens = tts.t3.inference(
        t3_cond=conds.t3, text_tokens=text_tokens, max_new_tokens=int(p["max_new_tokens"]),
        temperature=float(p["temperature"]), cfg_weight=float(p["cfg_weight"]),
        repetition_penalty=float(p["repetition_penalty"]), min_p=float(p["min_p"]), top_p=float(p["top_p"]),
        draw=ReplayDraw(fx.tensor("t3.uniform_draws")),
        on_step=lambda i, d: filtered.append(np.array(d["logits_top_p"]).reshape(-1)))
    out["t3.speech_tokens"] = _np(tokens)
    out["t3.logits_top_p"] = np.stack(filtered)
    speech = s3gen_speech_tokens(tokens[0])
    out["flow.speech_tokens"] = speech[None]
    if speech.shape[0] != fx.tensor("flow.speech_tokens").shape[1] or not np.array_equal(
            speech, fx.tensor("flow.speech_tokens")[0]):
        from ..session import first_filter_flip

        flip = first_filter_flip(fx, out)
        if flip is not None:
            out["_not_comparable"] = (f"T3's tokens diverged after a min-p/top-p boundary flip at step {flip}: "
                                      "S3Gen ran on other tokens, its output cannot be compared")
        return out  # tokens diverged: the noise cannot be replayed, the S3Gen checkpoints stay missing
    trace = {}
    wav, _ = tts.s3gen.inference(speech[None], ref_dict=conds.gen, n_cfm_timesteps=int(p["n_cfm_timesteps"]),
                                 trace=trace, **_replay(fx))
    out.update({"flow.output_mel": _np(trace["output_mel"]), "hift.wav": _np(wav)})
    return out


def run(fx, ckpt, mode: str) -> dict:
    return {"e2e": run_e2e, "s3gen": run_s3gen}[mode](fx, ckpt)
