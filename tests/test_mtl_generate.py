"""Chatterbox Multilingual end to end: the original `ChatterboxMultilingualTTS.from_local(synthetic-mtl-s0,
"cpu").generate(text, language_id)` against MLX's `ChatterboxMultilingualTTS.from_pretrained(...)
.generate(...)`, the built-in voice (conds.pt), two languages of different scripts (Greek, Japanese:
pykakasi's kana), greedy and sampled.

The original's random draws are recorded and replayed into MLX: T3's token draws through the
inverse-CDF sampler both sides share (reference.recording.RecordedSampler in place of torch.multinomial;
MLX's ReplayDraw; greedy: argmax on both sides), the flow's start noise and SineGen's phase and noise
(reference.export.record_s3gen). T3 is bounded to N_STEPS steps (generate() hard-codes 1000; only that
bound is lowered). The original's AlignmentStreamAnalyzer decisions are read from its step()'s locals
(tests/mtl_analysis.py). Asserted: every drawn token exact, every step's analyzer decisions exact, the
tokens S3Gen gets exact, the waveform (before the original's watermark, which MLX does not apply) at
the tolerance of cumulative e2e hift.wav (60 dB). Printed: how many steps T3 ran and why it stopped.
Full size: its own process, under the shared lock.
"""
import gc

import numpy as np
import pytest

from tests.mtl_analysis import DECISIONS, recording_original_analysis

pytestmark = pytest.mark.reference

N_STEPS = 120
CASES = [("el", "greedy"), ("el", "sampled"), ("ja", "greedy"), ("ja", "sampled")]


@pytest.fixture(scope="module")
def ckpt():
    from reference.mtl_synth_checkpoint import ensure_mtl_checkpoint

    return ensure_mtl_checkpoint()


@pytest.fixture(scope="module")
def offline_front_end(ckpt):
    """The hub out of reach (the stand-in Cangjie file must be the one read), pkuseg's model from the folder."""
    from huggingface_hub import constants

    from reference.mtl_data import pkuseg_home
    from reference.mtl_synth_checkpoint import PKUSEG_DIR

    with pytest.MonkeyPatch.context() as mp, pkuseg_home(ckpt / PKUSEG_DIR):
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        yield


def _run_original(mtl, text: str, lang: str, greedy: bool, seed: int) -> dict:
    """One generate() of the original with its draws and analyzer decisions recorded; the waveform
    before the watermark."""
    import torch

    from reference.export import record_s3gen
    from reference.recording import RecordedSampler, Recorder, patched, wrap_method

    sampler, rec, out, analysis = RecordedSampler(seed=seed, greedy=greedy), Recorder(), {}, []
    inference = mtl.t3.inference

    def bounded(**kw):
        kw["max_new_tokens"] = N_STEPS
        with patched(torch, "multinomial", sampler):
            return inference(**kw)

    def s3gen_before(*a, **kw):
        out["s3gen_tokens"] = kw["speech_tokens"].numpy().copy()

    torch.manual_seed(seed)
    with patched(mtl.t3, "inference", bounded), record_s3gen(mtl, rec), recording_original_analysis(analysis), \
            wrap_method(mtl.s3gen, "inference", before=s3gen_before, after=lambda r, *a, **k: out.setdefault("wav", r[0])), \
            patched(mtl.watermarker, "apply_watermark", lambda wav, sample_rate: wav):
        mtl.generate(text, language_id=lang)
    return dict(draws=np.array(sampler.tokens), uniforms=np.array(sampler.uniforms), analysis=analysis,
                s3gen_tokens=out["s3gen_tokens"], start=rec.values["flow.start_noise"].numpy(),
                sine_phase=rec.values["hift.sine_phase"].numpy(), sine_noise=rec.values["hift.sine_noise"].numpy(),
                wav=out["wav"].numpy())


@pytest.fixture(scope="module")
def reference_runs(ckpt, offline_front_end):
    """The original's runs, then the original model released before MLX's is loaded."""
    import torch
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    from reference.mtl_tokenizer_json import SENTENCES

    torch.set_grad_enabled(False)
    mtl = ChatterboxMultilingualTTS.from_local(ckpt, "cpu")
    runs = {(lang, mode): _run_original(mtl, SENTENCES[lang], lang, mode == "greedy", seed=3 + k)
            for k, (lang, mode) in enumerate(CASES)}
    del mtl
    gc.collect()
    return runs


@pytest.fixture(scope="module")
def mlx_mtl(ckpt, reference_runs, offline_front_end):
    from mlx_impl.mtl_tts import ChatterboxMultilingualTTS

    return ChatterboxMultilingualTTS.from_pretrained(str(ckpt))


def _stop_reason(draws, analysis) -> str:
    if draws[-1] != 6562:
        return f"the bound of {N_STEPS} steps"
    last = analysis[-1]
    forced = [k for k in ("long_tail", "alignment_repetition", "token_repetition") if last[k]]
    return f"forced stop token ({', '.join(forced)})" if forced else "the stop token drawn"


@pytest.mark.parametrize("lang,mode", CASES, ids=[f"mtl-generate-{lang}-{mode}" for lang, mode in CASES])
def test_mtl_generate_matches_the_original(reference_runs, mlx_mtl, lang, mode):
    import mlx.core as mx

    from mlx_impl.t3.inference import GreedyDraw, ReplayDraw
    from parity import registry
    from parity.metrics import compare
    from reference.mtl_tokenizer_json import SENTENCES

    ref = reference_runs[(lang, mode)]
    draws, trace = [], {}
    wav = mlx_mtl.generate(SENTENCES[lang], lang, max_new_tokens=N_STEPS,
                           draw=GreedyDraw() if mode == "greedy" else ReplayDraw(ref["uniforms"]),
                           flow_noise=mx.array(ref["start"]), sine_phase=mx.array(ref["sine_phase"]),
                           sine_noise=mx.array(ref["sine_noise"]), on_token=lambda i, t: draws.append(t), trace=trace)
    agree = int(np.sum(np.array(draws[: ref["draws"].size]) == ref["draws"][: len(draws)]))
    snr = compare(ref["wav"], np.array(wav), "float").snr_db if np.array(wav).shape == ref["wav"].shape else float("nan")
    mismatched = [(k, key) for k, (a, b) in enumerate(zip(trace["analysis"], ref["analysis"]))
                  for key in DECISIONS if a[key] != b[key]]
    fired = {k: sum(bool(a[k]) for a in ref["analysis"]) for k in DECISIONS[2:]}
    print(f"\n[mtl-generate-{lang}-{mode}] T3 ran {ref['draws'].size} steps, stopped by "
          f"{_stop_reason(ref['draws'], ref['analysis'])}; tokens {agree}/{ref['draws'].size} identical; "
          f"analyzer decisions differing: {len(mismatched)}; decisions fired (original) {fired}; wav SNR {snr:.1f} dB")
    assert np.array_equal(np.array(draws), ref["draws"])
    assert len(trace["analysis"]) == len(ref["analysis"]) == ref["draws"].size
    assert not mismatched, mismatched[:5]
    gap = max(float(np.abs(a["A_chunk"] - b["A_chunk"]).max()) for a, b in zip(trace["analysis"], ref["analysis"]))
    assert gap < 1e-5, gap  # the watched heads' weights: float32 rounding of SDPA-side q/k vs eager
    assert np.array_equal(trace["t3_tokens"], ref["s3gen_tokens"].reshape(-1))
    assert snr >= registry.load().cumulative["e2e"]["hift.wav"].snr_db
