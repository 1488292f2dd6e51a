"""Stage "turbo_hift": the HiFT vocoder and the trim-fade on turbo.flow.output_mel, isolated: the English
hift runner (hift.py) on the Turbo fixture (turbo_common.TurboFixture) and the Turbo folder's
s3gen_meanflow.safetensors (its mel2wav.* tensors: the same HiFT), the recorded SineGen phase and noise
replayed. turbo.hift.wav is s3gen.inference's output (generate() watermarks it afterwards; the MLX port
applies no watermark)."""
from __future__ import annotations

from . import hift
from .turbo_common import run_english, turbo_names

STAGE = "turbo_hift"
PROVIDES = turbo_names(hift.PROVIDES)


def run(fx, ckpt) -> dict:
    return run_english(hift, fx, ckpt)
