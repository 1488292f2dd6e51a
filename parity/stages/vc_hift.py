"""Stage "vc_hift": the HiFT vocoder and the trim-fade on vc.output_mel, isolated: the English hift
runner (hift.py) on the VC fixture, the recorded SineGen phase and noise replayed. vc.wav is
s3gen.inference's output (generate() watermarks it afterwards; the MLX port applies no watermark)."""
from __future__ import annotations

from . import hift
from .vc_common import run_english, vc_names

STAGE = "vc_hift"
PROVIDES = vc_names(hift.PROVIDES)


def run(fx, ckpt) -> dict:
    return run_english(hift, fx, ckpt)
