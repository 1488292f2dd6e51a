"""Stage "mtl_t3_cond": T3's conditioning and input embeddings, isolated: the English t3_cond runner (t3_cond.py)
on the multilingual fixture and the multilingual T3 (t3_mtl23ls_v2.safetensors: its 2454-entry text table). The
multilingual generate() always makes the CFG copy of the text tokens (the English one only where cfg_weight > 0):
the same for the cases' cfg_weight 0.5."""
from __future__ import annotations

from . import t3_cond
from .mtl_common import mtl_names, run_english

STAGE = "mtl_t3_cond"
PROVIDES = mtl_names(t3_cond.PROVIDES)


def run(fx, ckpt) -> dict:
    return run_english(t3_cond, fx, ckpt, PROVIDES)
