"""Chatterbox Turbo's S3Gen flow with MeanFlow (S3Gen(meanflow=True)) in MLX against the original:
the decoder's time mixer (t and the step's end time r) and the 2-step basic Euler solve without CFG,
with the original's start noise replayed. The original's random weights are perturbed as in
test_flow.py, and the mixer's r half is randomised (its default [I | 0] init ignores r)."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from compare_helpers import snr
from mlx_impl.convert.common import load_strict
from mlx_impl.convert.flow import sanitize
from mlx_impl.s3gen.flow import build_causal_flow
from parity import registry
from reference.builders import original_flow
from test_flow import flow_inputs, mlx_inputs, randomize, t2m, t_pad_mask

SNR_MIN = registry.load().default("float").snr_db


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ref = original_flow(meanflow=True).eval()
    randomize(ref, seed=1)
    with torch.no_grad():
        w = ref.decoder.estimator.time_embed_mixer.weight
        w[:, w.shape[0]:] = torch.randn(w.shape[0], w.shape[0], generator=torch.Generator().manual_seed(2)) / 32
    state = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    mlx_flow = build_causal_flow(meanflow=True)
    load_strict(mlx_flow, sanitize(state), what="flow")
    return ref, mlx_flow


def _estimator_inputs(seed=3, b=1, t=37):
    g = torch.Generator().manual_seed(seed)
    x, mu, cond = (torch.randn(b, 80, t, generator=g) for _ in range(3))
    spks = torch.randn(b, 80, generator=g)
    mask = (~t_pad_mask(torch.tensor([t] * b), t)).unsqueeze(1).float()
    return x, mask, mu, spks, cond


def test_turbo_meanflow_estimator_sees_t_and_r(models):
    ref, mlx_flow = models
    x, mask, mu, spks, cond = _estimator_inputs()
    t, r = torch.tensor([0.0]), torch.tensor([0.5])
    with torch.inference_mode():
        out_ref = ref.decoder.estimator(x, mask, mu, t, spks, cond, r=r)
        out_other_r = ref.decoder.estimator(x, mask, mu, t, spks, cond, r=torch.tensor([1.0]))
    assert snr(out_ref.numpy(), out_other_r.numpy()) < 60  # r changes the output: the mixer's r half is live
    out = mlx_flow.decoder.estimator(t2m(x), t2m(mask), t2m(mu), t2m(t), t2m(spks), t2m(cond), r=t2m(r))
    s = snr(out_ref.numpy(), out)
    print(f"meanflow estimator: SNR {s:.1f} dB")
    assert s >= SNR_MIN


def test_turbo_meanflow_flow_inference_replayed_noise(models):
    """CausalMaskedDiffWithXvec.inference(meanflow=True, n_timesteps=2) with the original's own
    noised_mels draw; MLX replays the start x that basic_euler received."""
    ref, mlx_flow = models
    inputs = flow_inputs()
    rec = {"x": None, "dxdt": []}
    cfm, est = ref.decoder, ref.decoder.estimator
    real_euler, real_forward = cfm.basic_euler, est.forward

    def basic_euler(x, *a, **k):
        rec["x"] = x.clone()
        return real_euler(x, *a, **k)

    def forward(*a, **k):
        out = real_forward(*a, **k)
        rec["dxdt"].append(out.clone())
        return out

    cfm.basic_euler, est.forward = basic_euler, forward
    try:
        torch.manual_seed(5)
        noised = torch.randn(1, 80, 2 * inputs["token"].shape[1])  # S3Token2Mel.flow_inference's draw
        with torch.inference_mode():
            feat_ref, _ = ref.inference(finalize=True, n_timesteps=2, noised_mels=noised, meanflow=True, **inputs)
    finally:
        del cfm.basic_euler, est.forward
    assert len(rec["dxdt"]) == 2 and rec["dxdt"][0].shape[0] == 1  # two steps, no CFG batch
    n_prompt = inputs["prompt_feat"].shape[1]
    assert torch.equal(rec["x"][..., n_prompt:], noised)  # the generated frames start from noised_mels

    trace = {}
    feat, _ = mlx_flow.inference(finalize=True, n_timesteps=2, meanflow=True, noise=t2m(rec["x"]), trace=trace,
                                 **mlx_inputs(inputs))
    results = {"estimator_first": snr(rec["dxdt"][0].numpy(), trace["estimator_first"]),
               "estimator_last": snr(rec["dxdt"][1].numpy(), trace["estimator_last"]),
               "output_mel": snr(feat_ref.numpy(), feat)}
    print("meanflow flow inference: " + ", ".join(f"{k} {v:.1f} dB" for k, v in results.items()))
    assert feat.shape == tuple(feat_ref.shape)
    for k, v in results.items():
        assert v >= SNR_MIN, f"{k}: SNR {v:.1f} dB"


def test_turbo_meanflow_draws_the_generated_frames_apart(models, monkeypatch):
    """Without a replayed start, S3Token2Mel.flow_inference(meanflow) draws (1, 80, 2T) noised mels
    for the generated frames, as the original does, and passes them to the flow."""
    from mlx_impl.s3gen.s3gen import S3Token2Mel

    _, mlx_flow = models
    s = S3Token2Mel.__new__(S3Token2Mel)
    s.meanflow = True
    seen = {}

    class FlowSpy:
        def inference(self, **kw):
            seen.update(kw)
            return mx.zeros((1, 80, 2 * kw["token"].shape[1])), None

    s.__dict__["flow"] = FlowSpy()  # nn.Module's attribute dict: no module tree needed
    s.flow_inference(np.zeros((1, 9), np.int32), ref_dict={})
    assert seen["meanflow"] and seen["n_timesteps"] == 2 and seen["noise"] is None
    assert seen["noised_mels"].shape == (1, 80, 18)
