"""Stage "mtl_t3_greedy": free-running greedy decoding of the multilingual T3 (argmax of the processed
probabilities, the AlignmentStreamAnalyzer in the loop), isolated from the reference's mtl.t3.input_embeds."""
from __future__ import annotations

import numpy as np

from .mtl_t3_decode import AnalyzedSteps, decode

STAGE = "mtl_t3_greedy"
PROVIDES = ["mtl.t3_greedy.logits_cfg", "mtl.t3_greedy.speech_tokens", "mtl.t3_greedy.analysis"]


def run(fx, ckpt) -> dict:
    from mlx_impl.t3.inference import GreedyDraw

    recorder = AnalyzedSteps()
    tokens = decode(fx, ckpt, draw=GreedyDraw(), on_step=recorder)
    return {"mtl.t3_greedy.logits_cfg": recorder.stacked("logits_cfg"),
            "mtl.t3_greedy.speech_tokens": np.asarray(tokens, dtype=np.int32),
            "mtl.t3_greedy.analysis": recorder.analyzed("mtl.t3_greedy")["mtl.t3_greedy.analysis"]}
