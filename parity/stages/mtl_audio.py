"""Stage "mtl_audio": the reference clip as ChatterboxMultilingualTTS.prepare_conditionals loads it (the English
model's code), isolated: the English audio runner (audio.py) on the multilingual fixture."""
from __future__ import annotations

from . import audio
from .mtl_common import mtl_names, run_english

STAGE = "mtl_audio"
PROVIDES = mtl_names(audio.PROVIDES)


def run(fx, ckpt) -> dict:
    return run_english(audio, fx, ckpt, PROVIDES)
