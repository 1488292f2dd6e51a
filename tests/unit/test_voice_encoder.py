"""VoiceEncoder (mlx_impl/voice_encoder) against the ORIGINAL chatterbox VoiceEncoder, librosa's trim
and mel, with seeded random weights converted through mlx_impl.convert.voice_encoder.sanitize;
fp32 on the CPU."""
from __future__ import annotations

import librosa
import mlx.core as mx
import numpy as np
import pytest
import torch

from chatterbox.models.voice_encoder import VoiceEncoder as RefVoiceEncoder
from chatterbox.models.voice_encoder import voice_encoder as ref_ve
from chatterbox.models.voice_encoder.melspec import melspectrogram as ref_melspectrogram
from mlx_impl.convert.common import ConversionError, load_strict
from mlx_impl.convert.voice_encoder import load_voice_encoder, sanitize
from mlx_impl.voice_encoder import VoiceEncConfig, VoiceEncoder
from mlx_impl.voice_encoder import voice_encoder as ve
from mlx_impl.voice_encoder.melspec import mel_basis, melspectrogram
from parity import registry
from parity.metrics import compare
from signals import speech_like as _speech_like

SNR_DB = registry.load().default("float").snr_db  # the registry's float goal
COSINE = 0.999999
SR = 16000
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def speech_like(seconds: float, seed: int = 0, lead=0.4, tail=0.5):
    """Near-silent lead and tail for the trim to cut."""
    return _speech_like(seconds, SR, seed, lead=lead, tail=tail)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(1234)
    ref = RefVoiceEncoder().eval()
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    return ref, load_voice_encoder(state), state


# ---------------------------------------------------------------- trim

def _step(quiet_db: float, seed: int = 7) -> np.ndarray:
    """Random-sign samples: 0.5 s at `quiet_db` below full scale, then 0.5 s at full scale."""
    sign = np.sign(np.random.default_rng(seed).standard_normal(16000)).astype(np.float32)
    return (np.concatenate([np.full(8000, 10 ** (quiet_db / 20)), np.ones(8000)]) * sign).astype(np.float32)


@pytest.mark.parametrize("signal", ["speech", "loud_tail", "no_silence", "zeros", "short",
                                    "just_above_threshold", "just_below_threshold"])
def test_trim_exact_span(signal):
    # Frames 0.01 dB either side of -top_db check the strict ">" and the dB against the loudest
    # frame. (An exact tie at -20.000 dB is decided by float32 rounding — numpy's pairwise sum,
    # log10's last ulp — and is not reproducible across libraries; the fixture clips' closest
    # frames sit 0.03 to 0.24 dB from the threshold, float32 error is ~1e-5 dB.)
    y = {
        "speech": lambda: speech_like(2.3, seed=1),
        "loud_tail": lambda: speech_like(1.7, seed=2, tail=0),
        "no_silence": lambda: (0.1 * np.random.default_rng(7).standard_normal(20000)).astype(np.float32),
        "zeros": lambda: np.zeros(9000, np.float32),
        "short": lambda: speech_like(0.2, seed=3, lead=0.05, tail=0.05),
        "just_above_threshold": lambda: _step(-19.99),
        "just_below_threshold": lambda: _step(-20.01),
    }[signal]()
    ref_y, ref_idx = librosa.effects.trim(y, top_db=20)
    out_y, out_idx = ve.trim(y, top_db=20)
    assert tuple(int(i) for i in ref_idx) == out_idx
    assert np.array_equal(np.array(out_y), ref_y)


def test_trim_other_top_db():
    y = speech_like(2.0, seed=4)
    for top_db in (10, 30, 60):
        _, ref_idx = librosa.effects.trim(y, top_db=top_db)
        _, out_idx = ve.trim(y, top_db=top_db)
        assert tuple(int(i) for i in ref_idx) == out_idx, top_db


# ---------------------------------------------------------------- mel

def test_mel_basis_bit_identical():
    hp = VoiceEncConfig()
    ref = librosa.filters.mel(sr=hp.sample_rate, n_fft=hp.n_fft, n_mels=hp.num_mels, fmin=hp.fmin, fmax=hp.fmax)
    assert np.array_equal(mel_basis(hp), ref)


@pytest.mark.parametrize("n", [16000 * 2 + 37, 4800])
def test_melspectrogram(models, n):
    ref_model = models[0]
    y = speech_like(n / SR, seed=5)[:n]
    ref = ref_melspectrogram(y, ref_model.hp)
    out = np.array(melspectrogram(y, VoiceEncConfig()))
    m = compare(ref, out)
    print(f"VE mel {ref.shape}: {m.headline('float')}")
    assert out.shape == ref.shape == (40, 1 + n // 160)
    assert m.snr_db >= SNR_DB


# ---------------------------------------------------------------- partial windows

@pytest.mark.parametrize("n_frames", [1, 100, 159, 160, 161, 236, 237, 400, 1003])
@pytest.mark.parametrize("rate,overlap,min_coverage", [(1.3, 0.5, 0.8), (None, 0.5, 0.8), (2.0, 0.5, 0.5),
                                                       (None, 0.75, 1.0)])
def test_partials(n_frames, rate, overlap, min_coverage):
    ref_hp, hp = ref_ve.VoiceEncConfig(), VoiceEncConfig()
    step = ve.get_frame_step(overlap, rate, hp)
    assert step == ref_ve.get_frame_step(overlap, rate, ref_hp)
    assert ve.get_num_wins(n_frames, step, min_coverage, hp) == ref_ve.get_num_wins(n_frames, step, min_coverage, ref_hp)
    mel = np.random.default_rng(n_frames).random((n_frames, 40), dtype=np.float32)
    ref = ref_ve.stride_as_partials(mel, ref_hp, overlap=overlap, rate=rate, min_coverage=min_coverage)
    out = np.array(ve.stride_as_partials(mel, hp, overlap=overlap, rate=rate, min_coverage=min_coverage))
    assert np.array_equal(out, ref)


# ---------------------------------------------------------------- network

def test_sanitize_is_strict(models):
    state = models[2]
    out = sanitize(state)
    assert len(state) == 16 and len(out) == 13  # 3 x (Wx, Wh, summed bias) + proj + similarity
    np.testing.assert_array_equal(out["lstm.layers.1.bias"], state["lstm.bias_ih_l1"] + state["lstm.bias_hh_l1"])
    with pytest.raises(ConversionError, match="lstm.bias_hh_l2"):
        sanitize({k: v for k, v in state.items() if k != "lstm.bias_hh_l2"})
    with pytest.raises(ConversionError, match="not consumed"):
        sanitize({**state, "lstm.weight_ih_l3": state["lstm.weight_ih_l0"]})
    bad = dict(out)
    bad["proj.weight"] = bad["proj.weight"][:, :128]
    with pytest.raises(ConversionError, match="proj.weight"):
        load_strict(VoiceEncoder(), bad, what="ve")


def test_forward_partial_embeds(models):
    ref_model, model, _ = models
    partials = np.random.default_rng(0).random((5, 160, 40), dtype=np.float32) * 3
    with torch.inference_mode():
        ref = ref_model(torch.from_numpy(partials)).numpy()
    out = np.array(model(mx.array(partials)))
    m = compare(ref, out)
    print(f"VE partial embeds: {m.headline('float')}")
    assert m.snr_db >= SNR_DB
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_embeds_from_wavs(models):
    """End to end, two utterances of different lengths (zero padding of the shorter one's mel)."""
    ref_model, model, _ = models
    wavs = [speech_like(3.1, seed=6), speech_like(1.9, seed=7)]
    ref = ref_model.embeds_from_wavs(wavs, sample_rate=SR)
    out = np.array(model.embeds_from_wavs(wavs, sample_rate=SR))
    m = compare(ref, out)
    print(f"VE utterance embeds {ref.shape}: {m.headline('float')}")
    assert out.shape == ref.shape == (2, 256)
    assert m.snr_db >= SNR_DB

    ref_spk = ref_model.embeds_from_wavs(wavs, sample_rate=SR, as_spk=True)
    out_spk = np.array(model.embeds_from_wavs(wavs, sample_rate=SR, as_spk=True))
    m = compare(ref_spk, out_spk)
    print(f"VE speaker embed: {m.headline('float')}")
    assert m.snr_db >= SNR_DB and m.cosine >= COSINE

    # prepare_conditionals: embeds_from_wavs([wav]).mean(0, keepdim=True)
    ref_one = ref_model.embeds_from_wavs(wavs[:1], sample_rate=SR).mean(0, keepdims=True)
    out_one = np.array(model.embeds_from_wavs(wavs[:1], sample_rate=SR).mean(0, keepdims=True))
    m = compare(ref_one, out_one)
    assert m.snr_db >= SNR_DB and m.cosine >= COSINE

    sim_ref = RefVoiceEncoder.voice_similarity(ref, ref_spk)
    sim_out = VoiceEncoder.voice_similarity(out, out_spk).item()
    assert abs(sim_ref - sim_out) < 1e-6


def test_inference_batches_and_options(models):
    """Chunked forward (batch_size) and the overlap path give the original's embeddings."""
    ref_model, model, _ = models
    mels = [np.random.default_rng(s).random((n, 40), dtype=np.float32) for s, n in ((1, 500), (2, 230))]
    kwargs = dict(overlap=0.5, rate=None, min_coverage=0.8)
    ref = ref_model.embeds_from_mels(mels, batch_size=3, **kwargs)
    out = np.array(model.embeds_from_mels(mels, batch_size=3, **kwargs))
    assert compare(ref, out).snr_db >= SNR_DB


def test_other_sample_rate_is_refused(models):
    with pytest.raises(NotImplementedError):
        models[1].embeds_from_wavs([speech_like(1.0)], sample_rate=22050)
