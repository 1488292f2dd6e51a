"""Chatterbox TTS pipeline helpers (mirrors chatterbox/tts.py).

For now this module holds only the text normalisation `punc_norm` and `drop_invalid_tokens`
(the latter mirrors chatterbox.models.s3tokenizer.drop_invalid_tokens, used by
ChatterboxTTS.generate). The ChatterboxTTS class will be added here later.
"""
from __future__ import annotations

import numpy as np

SPEECH_VOCAB_SIZE = 6561
SOS = SPEECH_VOCAB_SIZE  # start of speech
EOS = SPEECH_VOCAB_SIZE + 1  # stop of speech


def punc_norm(text: str) -> str:
    """Quick cleanup of punctuation from LLMs or characters rarely seen in the dataset."""
    if len(text) == 0:
        return "You need to add some text for me to talk."

    # Capitalise first letter
    if text[0].islower():
        text = text[0].upper() + text[1:]

    # Remove multiple space chars
    text = " ".join(text.split())

    # Replace uncommon/llm punc
    punc_to_replace = [
        ("...", ", "),
        ("…", ", "),
        (":", ","),
        (" - ", ", "),
        (";", ", "),
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


def drop_invalid_tokens(x) -> np.ndarray:
    """Keep the tokens after the start-of-speech token and before the stop token.

    Mirrors the original, quirks included: only 1-D input or a (1, n) array is allowed; for a
    (1, n) array the original's `nonzero(...)[0]` gives ROW indices, so any SOS/EOS there slices
    rows (an empty result); more than one SOS (or EOS) in a 1-D input is an error.
    """
    x = np.asarray(x)
    assert x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1), "only batch size of one allowed for now"

    def position(token: int):
        hits = np.nonzero(x == token)[0]  # first axis, as torch's nonzero(as_tuple=True)[0]
        if hits.size != 1:
            raise TypeError(f"only integer tensors of a single element can be converted to an index "
                            f"({hits.size} positions of token {token})")
        return int(hits[0])

    s = position(SOS) + 1 if (x == SOS).any() else 0
    e = position(EOS) if (x == EOS).any() else None
    return x[s:e]
