"""Stage "mtl_text": the multilingual punc_norm and MTLTokenizer (mlx_impl.mtl_tts.punc_norm, the pipeline's
tokenizer on the folder's grapheme_mtl_merged_expanded_v1.json, Cangjie mapping and pkuseg model), isolated:
  mtl.text.normalized_utf8 <- the case's text
  mtl.text.preprocessed    <- the reference's punc_norm output: MTLTokenizer.front_end (lower case, NFKD, the
                              language's step, the [xx] tag, [SPACE]), the string its BPE encodes
  mtl.text.tokens          <- the reference's punc_norm output, encoded with the case's language"""
from __future__ import annotations

import numpy as np

from .mtl_common import offline_front_end, pipeline

STAGE = "mtl_text"
PROVIDES = ["mtl.text.normalized_utf8", "mtl.text.preprocessed", "mtl.text.tokens"]


def utf8(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def run(fx, ckpt) -> dict:
    from mlx_impl.mtl_tts import punc_norm

    tokenizer = pipeline(ckpt).tokenizer
    language = fx.case["language"].lower()  # generate() lower-cases the id it hands the tokenizer
    ref_normalized = bytes(fx.tensor("mtl.text.normalized_utf8").astype(np.uint8)).decode("utf-8")
    with offline_front_end(ckpt):
        return {
            "mtl.text.normalized_utf8": utf8(punc_norm(fx.case["text"])),
            "mtl.text.preprocessed": utf8(tokenizer.front_end(ref_normalized, language_id=language)),
            "mtl.text.tokens": tokenizer.text_to_tokens(ref_normalized, language_id=language).astype(np.int32),
        }
