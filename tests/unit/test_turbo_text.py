"""Chatterbox Turbo's text normalisation and reference loudness normalisation (mlx_impl/tts_turbo.py)
against the original's (chatterbox/tts_turbo.py)."""
from __future__ import annotations

import numpy as np
import pytest

from mlx_impl import tts_turbo
from parity.cases import load_cases

TEXTS = [case.text for case in load_cases().values()] + [
    "", "hello", "Wait... what?", "a - b; c: d", "“quoted” ‘single’ it’s", "dash — and – en", "  spaced   out  ",
    "ends with comma,", "trailing space ", "Tags [laugh] stay [clear throat]", "…leading ellipsis", "x ,y",
]


@pytest.mark.parametrize("text", TEXTS)
def test_turbo_punc_norm_is_the_originals(text):
    from chatterbox.tts_turbo import punc_norm

    assert tts_turbo.punc_norm(text) == punc_norm(text)


def test_turbo_punc_norm_differs_from_the_english_one():
    """Turbo keeps "..." and ";" (the English table rewrites them): the two tables are not the same."""
    from mlx_impl.tts import punc_norm as english

    assert tts_turbo.punc_norm("Wait... what; now") == "Wait... what; now."
    assert english("Wait... what; now") != tts_turbo.punc_norm("Wait... what; now")


@pytest.mark.parametrize("kind", ["speech", "quiet", "silent"])
def test_turbo_norm_loudness_is_the_originals(kind):
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    from signals import speech_like

    sr = 24000
    wav = {"speech": lambda: speech_like(3.0, sr), "quiet": lambda: 0.02 * speech_like(3.0, sr),
           "silent": lambda: np.zeros(3 * sr, np.float32)}[kind]().astype(np.float32)
    ref = ChatterboxTurboTTS.norm_loudness(None, wav.copy(), sr)  # the method does not read self
    out = tts_turbo.norm_loudness(wav.copy(), sr)
    assert out.dtype == ref.dtype and np.array_equal(out, ref)
    if kind == "silent":
        assert np.array_equal(out, wav)  # -inf LUFS: no finite gain, unchanged
    else:
        import pyloudnorm as ln

        # one gain: exact but for the -70 LUFS absolute gate, whose gated blocks change when quiet ones are lifted
        assert abs(ln.Meter(sr).integrated_loudness(out) - (-27.0)) < (0.01 if kind == "speech" else 0.5)
