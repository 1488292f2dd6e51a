"""Stage "t3_greedy": free-running greedy T3 decoding (argmax of the processed probabilities),
isolated from the reference's t3.input_embeds, with the case's processor parameters."""
from __future__ import annotations

import sys

import numpy as np

STAGE = "t3_greedy"
PROVIDES = ["t3_greedy.logits_cfg", "t3_greedy.speech_tokens"]


def greedy_decode(fx, ckpt):
    from mlx_impl.t3.inference import GreedyDraw

    from .t3_decode import decode

    return decode(fx, ckpt, draw=GreedyDraw())


def run(fx, ckpt) -> dict:
    tokens, rec = greedy_decode(fx, ckpt)
    return {
        "t3_greedy.logits_cfg": rec.stacked("logits_cfg"),
        "t3_greedy.speech_tokens": tokens.astype(np.int32),
    }


def explain_divergence(fx, ckpt, file=sys.stdout):
    """Print the first step where the greedy tokens differ, with the top-5 of both CFG distributions."""
    from .t3_decode import first_divergence, print_divergence

    ref_tokens = fx.tensor("t3_greedy.speech_tokens").reshape(-1)
    tokens, rec = greedy_decode(fx, ckpt)
    step = first_divergence(ref_tokens, tokens)
    print_divergence(step, ref_tokens, tokens, fx.tensor("t3_greedy.logits_cfg"), rec.stacked("logits_cfg"),
                     label=f"{fx.name} t3_greedy.speech_tokens", file=file)
    return step
