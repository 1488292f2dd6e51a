"""Stage "mtl_t3_decode": the multilingual T3's sampled decoding, isolated (from the reference's
mtl.t3.input_embeds), as the English t3_decode stage: teacher-forced on the reference's mtl.t3.speech_tokens, the
recorded uniforms replayed through the reference's inverse-CDF sampler on MLX's own probabilities at every step
(mtl.t3.speech_tokens is that pick per step). Beside the English per-step logits: the AlignmentStreamAnalyzer's
output (mtl.t3.logits_analyzed), its decisions (mtl.t3.analysis) and the alignment rows it appended
(mtl.t3.alignment), MLX's analyzer fed the reference's history."""
from __future__ import annotations

import numpy as np

from .mtl_common import MtlFixture, analysis_rows, mtl_names, pipeline, text_tokens_slice
from .t3_decode import STEP_KEYS, StepRecorder, decode_params

STAGE = "mtl_t3_decode"
MTL_STEP_KEYS = STEP_KEYS + ("logits_analyzed",)
PROVIDES = mtl_names([f"t3.{k}" for k in MTL_STEP_KEYS] + ["t3.speech_tokens", "t3.analysis", "t3.alignment"])


def decode(fx, ckpt, *, draw=None, forced_tokens=None, on_step=None, max_new_tokens=None):
    """MLX's multilingual T3 loop from the reference's input embeddings, the analyzer on the text's positions."""
    import mlx.core as mx

    mfx = MtlFixture(fx)
    embeds = np.asarray(mfx.tensor("t3.input_embeds"), np.float32)
    span = text_tokens_slice(embeds, mfx.tensor("t3.text_tokens"))
    return pipeline(ckpt).t3.inference_from_embeds(
        mx.array(embeds), max_new_tokens=max_new_tokens or int(fx.params["max_new_tokens"]), draw=draw,
        forced_tokens=forced_tokens, on_step=on_step, text_tokens_slice=span, **decode_params(mfx))


class AnalyzedSteps(StepRecorder):
    """The English step recorder plus the analyzer's output and decisions."""

    def __init__(self, keys=MTL_STEP_KEYS + ("probs",)):
        super().__init__(keys)
        self.analysis = []

    def __call__(self, step: int, outputs: dict) -> None:
        super().__call__(step, outputs)
        self.analysis.append(outputs["analysis"])

    def analyzed(self, prefix: str) -> dict:
        return {f"{prefix}.analysis": analysis_rows(self.analysis),
                f"{prefix}.alignment": np.concatenate([np.asarray(s["A_chunk"], np.float32) for s in self.analysis])}


def run(fx, ckpt) -> dict:
    from mlx_impl.t3.inference import ReplayDraw

    from ..flips import TEACHER_FORCED

    ref_tokens = fx.tensor("mtl.t3.speech_tokens").reshape(-1)
    uniforms = fx.tensor("mtl.t3.uniform_draws")
    if uniforms.size != ref_tokens.size:
        raise ValueError(f"{uniforms.size} recorded uniforms for {ref_tokens.size} reference tokens")
    draw, recorder, picks = ReplayDraw(uniforms), AnalyzedSteps(), []

    def on_step(step: int, outputs: dict) -> None:
        recorder(step, outputs)
        picks.append(draw(outputs["probs"], step))

    decode(fx, ckpt, forced_tokens=ref_tokens, on_step=on_step, max_new_tokens=ref_tokens.size)
    out = {f"mtl.t3.{k}": recorder.stacked(k) for k in MTL_STEP_KEYS}
    out.update(recorder.analyzed("mtl.t3"))
    out["mtl.t3.speech_tokens"] = np.asarray(picks, dtype=np.int32)[None]
    out[TEACHER_FORCED] = True
    return out
