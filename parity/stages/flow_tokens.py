"""Stage "flow": the speech tokens S3Gen receives, from the reference's T3 tokens (isolated):
ChatterboxTTS.generate's row 0 -> drop_invalid_tokens -> tokens < 6561."""
from __future__ import annotations

STAGE = "flow"
PROVIDES = ["flow.speech_tokens"]


def run(fx, ckpt) -> dict:
    from mlx_impl.tts import s3gen_speech_tokens

    return {"flow.speech_tokens": s3gen_speech_tokens(fx.tensor("t3.speech_tokens")[0])[None]}
