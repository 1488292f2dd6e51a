"""The ORIGINAL AlignmentStreamAnalyzer's per-step decisions, read from its step()'s own local
variables at return (a profiler hook), not recomputed: what the multilingual tests compare MLX's
`AlignmentStreamAnalyzer.steps` with."""
from __future__ import annotations

import contextlib
import sys

import numpy as np

DECISIONS = ("text_position", "cur_text_posn", "discontinuity", "false_start", "complete", "long_tail",
             "alignment_repetition", "token_repetition", "eos_suppressed", "forced_eos")


@contextlib.contextmanager
def original_step_locals(record: list, step=None):
    """Appends the original step()'s (or `step`'s) local variables at each return."""
    from chatterbox.models.t3.inference.alignment_stream_analyzer import AlignmentStreamAnalyzer as Original

    code = (step or Original.step).__code__

    def profiler(frame, event, arg):
        if event == "return" and frame.f_code is code:
            record.append(dict(frame.f_locals))

    saved = sys.getprofile()
    sys.setprofile(profiler)
    try:
        yield
    finally:
        sys.setprofile(saved)


def original_decisions(loc: dict, out, eos: int) -> dict:
    """The original step's decisions from its locals (`eos_suppressed` is its inline condition on them);
    `out`: the logits it returned (the forced row checked against its decisions)."""
    self, S = loc["self"], int(loc["S"])
    forced = bool(loc["long_tail"] or loc["alignment_repetition"] or loc["token_repetition"])
    o = out.float().numpy().reshape(-1)
    assert forced == bool(o[eos] == 2 ** 15 and np.all(np.delete(o, eos) == -(2 ** 15)))
    return dict(text_position=int(self.text_position), cur_text_posn=int(loc["cur_text_posn"]),
                discontinuity=bool(loc["discontinuity"]), false_start=bool(loc["false_start"]),
                complete=bool(self.complete), long_tail=bool(loc["long_tail"]),
                alignment_repetition=bool(loc["alignment_repetition"]), token_repetition=bool(loc["token_repetition"]),
                eos_suppressed=bool(int(loc["cur_text_posn"]) < S - 3 and S > 5), forced_eos=forced,
                A_chunk=loc["A_chunk"].float().numpy().copy())


@contextlib.contextmanager
def recording_original_analysis(out: list):
    """Within the block, each original AlignmentStreamAnalyzer.step appends its decisions to `out`."""
    from chatterbox.models.t3.inference import alignment_stream_analyzer as asa

    step = asa.AlignmentStreamAnalyzer.step
    record = []

    def recording_step(self, logits, next_token=None):
        with original_step_locals(record, step):
            result = step(self, logits, next_token=next_token)
        out.append(original_decisions(record[-1], result, self.eos_idx))
        return result

    asa.AlignmentStreamAnalyzer.step = recording_step
    try:
        yield out
    finally:
        asa.AlignmentStreamAnalyzer.step = step
