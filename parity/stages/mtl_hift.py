"""Stage "mtl_hift": the HiFT vocoder and the trim-fade on mtl.flow.output_mel, isolated: the English hift runner
(hift.py) on the multilingual fixture and the HiFT of the multilingual folder's s3gen.pt, the recorded SineGen
phase and noise replayed. mtl.hift.wav is s3gen.inference's output (generate() watermarks it afterwards; the MLX
port applies no watermark)."""
from __future__ import annotations

from . import hift
from .mtl_common import mtl_names, run_english

STAGE = "mtl_hift"
PROVIDES = mtl_names(hift.PROVIDES)


def run(fx, ckpt) -> dict:
    return run_english(hift, fx, ckpt, PROVIDES)
