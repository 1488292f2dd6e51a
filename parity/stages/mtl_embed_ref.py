"""Stage "mtl_embed_ref": S3Token2Mel.embed_ref on the clip's first 10 s, isolated: the English runners
(embed_ref_tokens.py: the 16 kHz copy, log-mel, reference tokens; embed_ref_speaker.py: the 24 kHz mel, the fbank
and CAMPPlus's x-vector) on the multilingual fixture and the multilingual folder's s3gen.pt."""
from __future__ import annotations

from . import embed_ref_speaker, embed_ref_tokens
from .mtl_common import mtl_names, run_english

STAGE = "mtl_embed_ref"
PROVIDES = mtl_names(embed_ref_tokens.PROVIDES + embed_ref_speaker.PROVIDES)


def run(fx, ckpt) -> dict:
    return {**run_english(embed_ref_tokens, fx, ckpt, mtl_names(embed_ref_tokens.PROVIDES)),
            **run_english(embed_ref_speaker, fx, ckpt, mtl_names(embed_ref_speaker.PROVIDES))}
