"""Stage "text": punc_norm and the English tokenizer."""
from __future__ import annotations

import numpy as np

STAGE = "text"
PROVIDES = ["text.normalized_utf8", "text.tokens"]


def run(fx, ckpt) -> dict:
    from mlx_impl.tokenizers import EnTokenizer
    from mlx_impl.tts import punc_norm

    normalized = punc_norm(fx.case["text"])
    tokenizer = EnTokenizer(ckpt.file("tokenizer.json"))
    return {
        "text.normalized_utf8": np.frombuffer(normalized.encode("utf-8"), dtype=np.uint8).copy(),
        "text.tokens": tokenizer.text_to_tokens(normalized).astype(np.int32),
    }
