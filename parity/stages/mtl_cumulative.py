"""Cumulative mode "mtl": the MLX ChatterboxMultilingualTTS end to end, loaded as users load it
(mlx_impl.mtl_tts.load_mtl), chained as its generate() chains it: the case's audio file -> prepare_conditionals
(VE, S3 prompt tokens, embed_ref) -> the text through punc_norm and MTLTokenizer with the case's language -> T3
with its AlignmentStreamAnalyzer free-running, the recorded uniforms replayed -> drop_invalid_tokens -> S3Gen (10
steps) with the recorded flow start and SineGen draws -> the waveform. MLX feeds MLX throughout. Where T3's tokens
differ from the reference's, S3Gen runs on the reference's tokens with MLX's conditioning, so that the flow and
HiFT are still compared. Compared against [cumulative.mtl] (tests/parity/test_cumulative.py)."""
from __future__ import annotations

import numpy as np

from .. import flips
from .mtl_common import MtlFixture, analysis_rows, offline_front_end, pipeline
from .t3_decode import decode_params


def replay(mfx) -> dict:
    """S3Gen's recorded draws: the flow's start noise, SineGen's phase and noise."""
    import mlx.core as mx

    return dict(flow_noise=mx.array(mfx.tensor("flow.start_noise")), sine_phase=mx.array(mfx.tensor("hift.sine_phase")),
                sine_noise=mx.array(mfx.tensor("hift.sine_noise")))


def run(fx, ckpt) -> dict:
    from mlx_impl.mtl_tts import drop_invalid_tokens
    from mlx_impl.t3.inference import ReplayDraw

    tts = pipeline(ckpt)
    mfx = MtlFixture(fx)
    p = fx.params
    trace: dict = {}
    conds = tts.prepare_conditionals(fx.audio_path(), exaggeration=float(p["exaggeration"]), trace=trace)
    out = {
        "mtl.audio.wav_24k": np.asarray(trace["wav_24k"]), "mtl.audio.wav_16k": np.asarray(trace["wav_16k"]),
        "mtl.ve.speaker_emb": np.array(conds.t3.speaker_emb),
        "mtl.s3tok.prompt_tokens": np.array(conds.t3.cond_prompt_speech_tokens),
        "mtl.embed_ref.prompt_feat": np.array(conds.gen["prompt_feat"]),
        "mtl.embed_ref.prompt_token": np.array(conds.gen["prompt_token"]),
        "mtl.embed_ref.xvector": np.array(conds.gen["embedding"]),
    }
    with offline_front_end(ckpt):
        text_tokens = tts.text_tokens(fx.case["text"], fx.case["language"])
    out["mtl.text.tokens"] = text_tokens[:1, 1:-1]  # one row, without [START]/[STOP]: as MTLTokenizer returns it
    uniforms = mfx.tensor("t3.uniform_draws")
    analysis = []
    tokens = tts.t3.inference(t3_cond=conds.t3, text_tokens=text_tokens, max_new_tokens=min(int(p["max_new_tokens"]),
                              uniforms.size), draw=ReplayDraw(uniforms),
                              on_step=lambda i, d: analysis.append(d["analysis"]), **decode_params(mfx))
    out["mtl.t3.speech_tokens"] = np.asarray(tokens, dtype=np.int32)
    out["mtl.t3.analysis"] = analysis_rows(analysis)
    speech = np.asarray(drop_invalid_tokens(np.asarray(tokens)[0]), dtype=np.int32)
    out["mtl.flow.speech_tokens"] = speech[None]
    ref_speech = fx.tensor("mtl.flow.speech_tokens")
    if not np.array_equal(speech[None], ref_speech):
        mism = flips.token_mismatches(fx.tensor("mtl.t3.speech_tokens"), tokens, [], teacher_forced=False)
        note = ("S3Gen ran on the reference's tokens: MLX's T3 tokens differ from step "
                f"{mism[0].step if mism else '?'} on")
        out[flips.NOTES] = {"mtl.flow.output_mel": note, "mtl.hift.wav": note}
        speech = np.asarray(ref_speech[0], dtype=np.int32)
    s3_trace: dict = {}
    wav, _ = tts.s3gen.inference(speech[None], ref_dict=conds.gen, trace=s3_trace, **replay(mfx))
    out["mtl.flow.output_mel"] = np.array(s3_trace["output_mel"])
    out["mtl.hift.wav"] = np.array(wav)
    return out
