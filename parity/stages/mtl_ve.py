"""Stage "mtl_ve": the VoiceEncoder speaker embedding of prepare_conditionals, isolated: the English ve runner
(ve.py) on the multilingual fixture and the multilingual folder's ve.pt."""
from __future__ import annotations

from . import ve
from .mtl_common import mtl_names, run_english

STAGE = "mtl_ve"
PROVIDES = mtl_names(ve.PROVIDES)


def run(fx, ckpt) -> dict:
    return run_english(ve, fx, ckpt, PROVIDES)
