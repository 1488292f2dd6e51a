"""Cumulative mode "turbo": the MLX ChatterboxTurboTTS end to end, loaded as users load it
(mlx_impl.tts_turbo.load_turbo), chained as its generate() chains it: the case's audio file ->
prepare_conditionals (-27 LUFS, VE, S3 prompt tokens, embed_ref) -> the text through punc_norm and the
GPT-2 tokenizer -> T3.inference_turbo free-running with the recorded uniforms replayed -> tokens < 6561
plus three S3GEN_SIL -> S3Gen with MeanFlow (2 steps) with the recorded start and SineGen draws -> the
waveform. MLX feeds MLX throughout. Where T3's tokens differ from the reference's (judged as flips,
parity/flips.py), S3Gen runs on the reference's tokens with MLX's conditioning, so that the flow and
HiFT are still compared. Compared against [cumulative.turbo] (tests/parity/test_cumulative.py)."""
from __future__ import annotations

import numpy as np

from .. import flips
from .turbo_common import N_CFM_TIMESTEPS, decode_params, pipeline, recording_t3, stacked


def run(fx, ckpt) -> dict:
    import mlx.core as mx

    from mlx_impl.t3.inference import ReplayDraw
    from mlx_impl.tts_turbo import s3gen_tokens

    tts = pipeline(ckpt)
    p = fx.params
    trace: dict = {}
    conds = tts.prepare_conditionals(fx.audio_path(), exaggeration=float(p["exaggeration"]),
                                     norm_loudness=bool(p["norm_loudness"]), trace=trace)
    out = {
        "turbo.audio.wav_24k": np.asarray(trace["wav_24k"]), "turbo.audio.wav_16k": np.asarray(trace["wav_16k"]),
        "turbo.ve.speaker_emb": np.array(conds.t3.speaker_emb),
        "turbo.s3tok.prompt_tokens": np.array(conds.t3.cond_prompt_speech_tokens),
        "turbo.embed_ref.prompt_feat": np.array(conds.gen["prompt_feat"]),
        "turbo.embed_ref.prompt_token": np.array(conds.gen["prompt_token"]),
        "turbo.embed_ref.xvector": np.array(conds.gen["embedding"]),
    }
    text_tokens = tts.text_tokens(fx.case["text"])
    out["turbo.text.tokens"] = text_tokens
    uniforms = fx.tensor("turbo.t3.uniform_draws")
    record, tokens = {}, []
    with recording_t3(tts.t3, record):  # the scaled logits: the flip verdict checks them at a differing step
        tts.t3.inference_turbo(t3_cond=conds.t3, text_tokens=text_tokens,
                               max_gen_len=min(int(p["max_gen_len"]), uniforms.size - 1), draw=ReplayDraw(uniforms),
                               on_token=lambda i, t: tokens.append(t), **decode_params(fx))
    out["turbo.t3.speech_tokens"] = np.asarray(tokens, dtype=np.int32)[None]
    out["turbo.t3.logits_temp"] = stacked(record, len(tokens))["logits_temp"]
    speech = s3gen_tokens(np.asarray(tokens, dtype=np.int32))  # generate()'s hand-over (a drawn stop token is >= 6561)
    out["turbo.flow.speech_tokens"] = speech[None]
    ref_speech = fx.tensor("turbo.flow.speech_tokens")
    if not np.array_equal(speech[None], ref_speech):
        mism = flips.token_mismatches(fx.tensor("turbo.t3.speech_tokens"), out["turbo.t3.speech_tokens"], [],
                                      teacher_forced=False)
        note = ("S3Gen ran on the reference's tokens: MLX's T3 tokens differ from step "
                f"{mism[0].step if mism else '?'} on")
        out[flips.NOTES] = {"turbo.flow.output_mel": note, "turbo.hift.wav": note}
        speech = ref_speech[0]
    s3_trace: dict = {}
    wav, _ = tts.s3gen.inference(speech[None], ref_dict=conds.gen, n_cfm_timesteps=N_CFM_TIMESTEPS,
                                 flow_noise=mx.array(fx.tensor("turbo.flow.start_noise")),
                                 sine_phase=mx.array(fx.tensor("turbo.hift.sine_phase")),
                                 sine_noise=mx.array(fx.tensor("turbo.hift.sine_noise")), trace=s3_trace)
    out["turbo.flow.output_mel"] = np.array(s3_trace["output_mel"])
    out["turbo.hift.wav"] = np.array(wav)
    return out
