"""Chatterbox Turbo in MLX (mirrors chatterbox/tts_turbo.py). In progress (docs/TURBO_DESIGN.md):
the text normalisation `punc_norm` (Turbo's own table) and the reference clip's loudness
normalisation are here; the pipeline class is not yet.
"""
from __future__ import annotations

import math

import numpy as np

REPO_ID = "ResembleAI/chatterbox-turbo"


def punc_norm(text: str) -> str:
    """Quick cleanup of punctuation from LLMs or characters rarely seen in the dataset (Turbo's table:
    unlike the English punc_norm, no "...", " - " or ";" rules)."""
    if len(text) == 0:
        return "You need to add some text for me to talk."

    # Capitalise first letter
    if text[0].islower():
        text = text[0].upper() + text[1:]

    # Remove multiple space chars
    text = " ".join(text.split())

    # Replace uncommon/llm punc
    punc_to_replace = [
        ("…", ", "),
        (":", ","),
        ("—", "-"),
        ("–", "-"),
        (" ,", ","),
        ("“", "\""),
        ("”", "\""),
        ("‘", "'"),
        ("’", "'"),
    ]
    for old_char_sequence, new_char in punc_to_replace:
        text = text.replace(old_char_sequence, new_char)

    # Add full stop if no ending punc
    text = text.rstrip(" ")
    sentence_enders = {".", "!", "?", "-", ","}
    if not any(text.endswith(p) for p in sentence_enders):
        text += "."

    return text


def norm_loudness(wav: np.ndarray, sr: int, target_lufs: float = -27) -> np.ndarray:
    """ChatterboxTurboTTS.norm_loudness: the clip scaled to `target_lufs` integrated loudness
    (ITU-R BS.1770 through pyloudnorm, the original's library and call); unchanged where the gain is
    not finite and positive (a silent clip) or pyloudnorm fails (the original prints a warning)."""
    import pyloudnorm as ln

    try:
        meter = ln.Meter(sr)
        loudness = meter.integrated_loudness(wav)
        gain_db = target_lufs - loudness
        gain_linear = 10.0 ** (gain_db / 20.0)
        if math.isfinite(gain_linear) and gain_linear > 0.0:
            wav = wav * gain_linear
    except Exception as e:
        print(f"Warning: Error in norm_loudness, skipping: {e}")

    return wav
