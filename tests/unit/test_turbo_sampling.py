"""Chatterbox Turbo's logits processing (T3.inference_turbo: temperature, top-k, top-p, then the
repetition penalty) in MLX (mlx_impl/t3/inference/sampling.py turbo_logits_processors) against HF's
processors built as the original builds them, over decoding steps with a growing history."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from compare_helpers import snr
from mlx_impl.t3.inference.sampling import turbo_logits_processors
from parity import registry

V = 6563  # Turbo's speech vocabulary
START = 6561


def original_processors(temperature, top_k, top_p, repetition_penalty):
    """chatterbox/models/t3/t3.py T3.inference_turbo's LogitsProcessorList."""
    from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    procs = LogitsProcessorList()
    if temperature > 0 and temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    if repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    return procs


@pytest.mark.parametrize("params", [(0.8, 1000, 0.95, 1.2), (1.0, 50, 1.0, 1.0), (0.5, 7000, 0.5, 2.0)],
                         ids=["defaults", "top-k-only", "k-past-vocab"])
def test_turbo_logits_processors_match_hf(params):
    g = torch.Generator().manual_seed(0)
    ref_procs, mlx_procs = original_processors(*params), turbo_logits_processors(*params)
    history = torch.tensor([[START]])  # the first step's history is the start-of-speech token
    kept = []
    for step in range(6):
        scores = 3.0 * torch.randn(1, V, generator=g)
        scores[0, 100:110] = scores[0, 99]  # ties
        ref = ref_procs(history, scores.clone())
        out = mx.array(scores.numpy())
        for p in mlx_procs:
            out = p(history.numpy(), out)
        out = np.array(out)
        ref = ref.numpy()
        assert np.array_equal(np.isfinite(out), np.isfinite(ref)), f"step {step}: filtered entries differ"
        fin = np.isfinite(ref)
        assert snr(ref[fin], out[fin]) >= registry.load().default("float").snr_db
        kept.append(int(fin.sum()))
        token = int(np.argmax(np.where(fin, ref, -np.inf)))
        history = torch.tensor([[token]]) if step == 0 else torch.cat([history, torch.tensor([[token]])], dim=1)
    if params[1] < V and params[2] == 1.0:
        assert max(kept) <= params[1] + 10  # top-k filters (the ties at the k-th value may stay)
