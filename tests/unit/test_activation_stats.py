"""The activation statistics (reference/activation_stats.py), the report's before/after table
(parity/activations.py) and the synthetic checkpoint's "exercised" init recipe."""
import math

import numpy as np
import pytest
import torch

from parity.activations import section, table
from reference import activation_stats as stats
from reference import synth_checkpoint as synth


def test_a_relu_unit_that_never_fires_is_dead_and_a_constant_unit_too():
    s = stats.UnitStats("relu")
    y = torch.rand(2, 4, 50)  # (B, C, T): channel axis 1
    y[:, 1] = 0.0  # never > 0
    s.add(y, 1)
    assert s.result()["dead_share"] == 0.25
    t = stats.UnitStats("smooth")
    z = torch.randn(3, 20, 6)  # (B, T, C): channel axis -1
    z[..., 2] = 0.7  # does not vary
    t.add(z, -1)
    assert t.result()["dead_share"] == pytest.approx(1 / 6, rel=1e-5)


def test_tanh_and_sigmoid_saturation_shares():
    s = stats.UnitStats("tanh")
    s.add(torch.tensor([[0.999, -0.995, 0.5, 0.0]]), -1)
    assert s.result()["saturated_share"] == 0.5
    g = stats.UnitStats("sigmoid")
    g.add(torch.tensor([[0.001, 0.5, 0.999, 0.3]]), -1)
    assert g.result()["saturated_share"] == 0.5
    lin = stats.UnitStats("linear")
    lin.add(torch.tensor([[0.999, -0.995, 0.5, 0.0]]), -1)
    assert "saturated_share" not in lin.result()  # only the saturating kinds report it


def test_long_outputs_are_subsampled_deterministically():
    s = stats.UnitStats("linear")
    y = torch.arange(3 * 10000, dtype=torch.float32).reshape(1, 10000, 3)
    s.add(y, -1)
    assert s.n <= stats.MAX_ROWS and s.n > stats.MAX_ROWS // 2


def test_attention_entropy_is_one_for_uniform_and_zero_for_one_hot_rows():
    ent = stats.Entropies()
    ent.add_probs("uniform", torch.full((1, 2, 3, 8), 1 / 8))
    peaked = torch.full((1, 1, 4, 8), 1e-6 / 7)
    peaked[..., 0] = 1.0 - 1e-6
    ent.add_probs("peaked", peaked)
    masked = torch.tensor([[[0.5, 0.5, 0.0, 0.0]]])  # a masked key does not count
    ent.add_probs("masked", masked)
    r = ent.results()
    assert r["uniform"] == pytest.approx(1.0) and r["masked"] == pytest.approx(1.0) and 0.0 < r["peaked"] < 1e-5


def test_next_token_stats_find_the_stop_and_the_top1_probability():
    v = 8194
    z = torch.zeros(3, v)
    z[0, 5] = 10.0
    z[1, 7] = 10.0
    z[2, stats.STOP] = 10.0
    out = stats.next_token_stats(z, min_p=0.05, tokens=[5, 7, stats.STOP], max_new_tokens=10)
    p_top = math.exp(10) / (math.exp(10) + v - 1)
    assert out["stopped_at_step"] == 2 and out["valid_tokens"] == 2 and out["distinct_tokens"] == 3
    assert out["top1_median"] == pytest.approx(p_top, rel=1e-5) and out["stop_rank_min"] == 0
    assert out["stop_within_min_p_share"] == pytest.approx(1 / 3, rel=1e-5)
    flat = stats.next_token_stats(torch.zeros(2, v), min_p=0.05, tokens=[1, 2], max_new_tokens=2)
    assert flat["stopped_at_step"] is None and flat["entropy_median"] == pytest.approx(1.0)


def test_cosines_between_voices_and_the_noisy_copy():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = stats._cosines(e, ["a", "b", "a+noise"])
    assert c["voices_min"] == c["voices_max"] == 0.0
    assert c["noisy_copy"] == pytest.approx(math.sqrt(0.5), rel=1e-5)


def test_the_noisy_copy_has_the_asked_snr():
    wav = np.sin(np.arange(16000) / 10.0).astype(np.float32)
    noisy = stats._noisy_copy(wav)
    snr = 10 * np.log10(np.mean(wav.astype(np.float64) ** 2) / np.mean((noisy - wav).astype(np.float64) ** 2))
    assert snr == pytest.approx(stats.NOISE_SNR_DB, abs=0.01)
    assert np.array_equal(noisy, stats._noisy_copy(wav))


def _record(top1, voices, noisy, stopped):
    return {"checkpoint": {"init": {"recipe": "x"}},
            "cases": {"a": {"t3": {"top1_median": top1, "entropy_median": 0.5, "stop_probability_max": 0.1,
                                   "stop_within_min_p_share": 0.2, "stopped_at_step": stopped, "steps": 9},
                            "f0_voiced_share": 0.6, "hift_magnitude_clipped_share": 0.0}},
            "speaker_embeddings": {k: {"voices_min": voices, "voices_max": voices, "noisy_copy": noisy}
                                   for k in ("voice_encoder", "campplus")},
            "summary": {"t3": {"modules": 3, "dead_share_max": 0.0, "saturated_share_max": None, "idle_modules": [],
                               "attention_entropy_t3": {"min": 0.5, "median": 0.6, "max": 0.7}}}}


def test_the_report_table_puts_before_beside_after():
    rows = dict((a, (b, c)) for a, b, c in table(_record(0.002, 0.9999, 1.0, None), _record(0.45, 0.7, 0.9, 120)))
    assert rows["T3 top-1 probability at temperature 0.8 (median over steps, per case)"] == ("0.002", "0.450")
    assert rows["T3 stopped at step"] == ("no (9)", "120")
    assert rows["VoiceEncoder cosine"][1] == "voices 0.7000 .. 0.7000; 13 dB noisy copy 0.900000"
    assert rows["flow: worst module"] == ("-", "-")
    md, page = section(_record(0.002, 0.9999, 1.0, None), _record(0.45, 0.7, 0.9, 120))
    assert "| T3 stopped at step | no (9) | 120 |" in md and "<table>" in page


def test_the_synthetic_checkpoint_is_built_exercised_unless_asked_otherwise():
    import inspect

    from parity.synthetic import INIT_CHOICES

    assert synth.DEFAULT_INIT == INIT_CHOICES[0] == "exercised"
    assert inspect.signature(synth.make_synthetic_checkpoint).parameters["init"].default == "exercised"
    assert set(INIT_CHOICES) == set(synth.INIT_RECIPES)


def test_an_unknown_init_recipe_is_refused():
    with pytest.raises(ValueError, match="unknown init recipe"):
        synth._init_manifest("trained")


def test_the_voice_encoder_recipe_scales_the_lstm_exactly():
    from chatterbox.models.voice_encoder import VoiceEncoder

    torch.manual_seed(0)
    ve = VoiceEncoder()
    before = {k: v.clone() for k, v in ve.state_dict().items()}
    synth._exercise_ve(ve)
    after = ve.state_dict()
    for k, v in before.items():
        gain = (synth.VE_INPUT_GAIN if k == "lstm.weight_ih_l0" else
                synth.VE_RECURRENT_GAIN if k.startswith(("lstm.weight_ih", "lstm.weight_hh")) else 1.0)
        assert torch.equal(after[k], v * gain), k


def test_the_xvector_calibration_is_deterministic_and_centres_the_last_batchnorm():
    from chatterbox.models.s3gen.xvector import CAMPPlus

    runs = []
    for _ in range(2):
        torch.manual_seed(2)
        m = CAMPPlus(memory_efficient=False).eval()
        synth._exercise_campplus(m)
        bn = m.xvector.dense.nonlinear.batchnorm
        runs.append((bn.running_mean.clone(), bn.running_var.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert float(runs[0][0].abs().max()) > 0.0 and not torch.equal(runs[0][1], torch.ones_like(runs[0][1]))


def test_the_constant_biases_and_norm_gains_are_perturbed_deterministically_and_only_they():
    import torch.nn as nn

    def block():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3))
        nn.init.zeros_(m[0].bias)
        return m

    a, b = block(), block()
    before = {k: v.clone() for k, v in a.state_dict().items()}
    assert synth._exercise_constants(a, ("",), seed=0) == 3  # Linear 0's bias, the LayerNorm's weight and bias
    synth._exercise_constants(b, ("",), seed=0)
    after = a.state_dict()
    for k in ("0.bias", "1.weight", "1.bias"):
        assert not torch.equal(after[k], before[k]) and torch.equal(after[k], b.state_dict()[k]), k
    for k in ("0.weight", "2.weight", "2.bias"):  # random already: untouched
        assert torch.equal(after[k], before[k]), k
    assert (after["1.weight"] - 1).abs().max() < 6 * synth.CONSTANT_GAIN_STD
