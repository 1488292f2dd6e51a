"""Stage "vc_flow": S3Gen's flow on the source tokens and the target's reference dict, isolated: the
English flow runner (flow.py) on the VC fixture (vc.source_tokens for flow.speech_tokens,
vc.ref_dict.* for embed_ref.*; n_cfm_timesteps 10, s3gen.inference's default), the recorded
vc.flow.start_noise replayed."""
from __future__ import annotations

from . import flow
from .vc_common import run_english, vc_names

STAGE = "vc_flow"
PROVIDES = vc_names(flow.PROVIDES)


def run(fx, ckpt) -> dict:
    return run_english(flow, fx, ckpt)
