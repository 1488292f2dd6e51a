"""Stage "mtl_s3tok": the S3 tokenizer's T3 prompt (the first 6 s, 150 tokens), isolated: the English s3tok
runner (s3tok.py) on the multilingual fixture and the tokenizer of the multilingual folder's s3gen.pt. (The
English stage's s3tok.full_tokens is the export's own extra call, not part of generate(): not recorded here.)"""
from __future__ import annotations

from . import s3tok
from .mtl_common import mtl_names, run_english

STAGE = "mtl_s3tok"
PROVIDES = mtl_names(["s3tok.prompt_log_mel", "s3tok.prompt_tokens"])


def run(fx, ckpt) -> dict:
    return run_english(s3tok, fx, ckpt, PROVIDES)
