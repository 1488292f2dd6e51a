"""Chatterbox Turbo end to end: the original `ChatterboxTurboTTS.from_local(synthetic-turbo-s0)
.generate(text, audio_prompt_path=voice)` against MLX's `ChatterboxTurboTTS.from_pretrained(...)
.generate(...)` on a short text and one fixture voice.

The original's random draws are recorded and replayed into MLX: T3's token draws through the
inverse-CDF sampler both sides share (reference.recording.RecordedSampler in place of
torch.multinomial; MLX's ReplayDraw; greedy: argmax on both sides), MeanFlow's start noise and
SineGen's phase and noise as tests/test_turbo_checkpoint.py replays them. T3 is bounded to N_STEPS
steps after its first draw (generate() leaves max_gen_len at 1000; only that bound is lowered).
Asserted: the T3 prompt tokens of the voice, every drawn speech token and the tokens S3Gen gets
(the stop-token trim, the three S3GEN_SIL) exact; the waveform (before the original's watermark,
which MLX does not apply) at the tolerance of cumulative e2e hift.wav (60 dB).
"""
import gc

import numpy as np
import pytest

pytestmark = pytest.mark.reference

TEXT = "Hello there [laugh], a short turbo test."
VOICE = "fixtures/inputs/espeak_22k_mono.wav"  # 6.1 s: Turbo asserts more than 5 s
N_STEPS = 50
MODES = ("greedy", "sampled")


def _run_original(turbo, greedy: bool, seed: int, audio_prompt_path=None) -> dict:
    """One generate() of the original with its draws recorded; the waveform before the watermark."""
    import torch

    from reference.export import record_s3gen
    from reference.recording import RecordedSampler, Recorder, patched, wrap_method

    sampler, rec, out = RecordedSampler(seed=seed, greedy=greedy), Recorder(), {}
    inference = turbo.t3.inference_turbo

    def bounded(**kw):
        with patched(torch, "multinomial", sampler):
            return inference(**kw, max_gen_len=N_STEPS)

    def s3gen_before(*a, **kw):
        out["s3gen_tokens"] = kw["speech_tokens"].numpy().copy()

    torch.manual_seed(seed)
    with patched(turbo.t3, "inference_turbo", bounded), record_s3gen(turbo, rec), \
            wrap_method(turbo.s3gen.flow.decoder, "basic_euler", before=lambda x, *a, **k: out.setdefault("start", x.clone())), \
            wrap_method(turbo.s3gen, "inference", before=s3gen_before, after=lambda r, *a, **k: out.setdefault("wav", r[0])), \
            patched(turbo.watermarker, "apply_watermark", lambda wav, sample_rate: wav):
        turbo.generate(TEXT, audio_prompt_path=audio_prompt_path)
    return dict(draws=np.array(sampler.tokens), uniforms=np.array(sampler.uniforms), s3gen_tokens=out["s3gen_tokens"],
                start=out["start"].numpy(), sine_phase=rec.values["hift.sine_phase"].numpy(),
                sine_noise=rec.values["hift.sine_noise"].numpy(), wav=out["wav"].numpy())


@pytest.fixture(scope="module")
def reference_runs():
    """The original's two runs (greedy with the voice, sampled on the conditionals it prepared), then
    the original model released before MLX's is loaded."""
    import torch
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

    torch.set_grad_enabled(False)
    turbo = ChatterboxTurboTTS.from_local(ensure_turbo_checkpoint(), "cpu")
    runs = {"greedy": _run_original(turbo, greedy=True, seed=1, audio_prompt_path=VOICE)}
    runs["prompt_tokens"] = turbo.conds.t3.cond_prompt_speech_tokens.numpy()
    runs["sampled"] = _run_original(turbo, greedy=False, seed=2)
    del turbo
    gc.collect()
    return runs


@pytest.fixture(scope="module")
def mlx_turbo(reference_runs):
    from mlx_impl.tts_turbo import ChatterboxTurboTTS

    from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

    tts = ChatterboxTurboTTS.from_pretrained(str(ensure_turbo_checkpoint()))
    tts.prepare_conditionals(VOICE)
    return tts


@pytest.mark.parametrize("mode", MODES, ids=[f"turbo-generate-{m}" for m in MODES])
def test_turbo_generate_matches_the_original(reference_runs, mlx_turbo, mode):
    import mlx.core as mx

    from mlx_impl.t3.inference import GreedyDraw, ReplayDraw
    from parity import registry
    from parity.metrics import compare

    ref = reference_runs[mode]
    assert np.array_equal(np.array(mlx_turbo.conds.t3.cond_prompt_speech_tokens), reference_runs["prompt_tokens"])
    assert ref["draws"].size == N_STEPS + 1 or ref["draws"][-1] == 6562  # the bound (or the stop) was reached
    draws, trace = [], {}
    wav = mlx_turbo.generate(TEXT, max_gen_len=N_STEPS, draw=GreedyDraw() if mode == "greedy" else ReplayDraw(ref["uniforms"]),
                             flow_noise=mx.array(ref["start"]), sine_phase=mx.array(ref["sine_phase"]),
                             sine_noise=mx.array(ref["sine_noise"]), on_token=lambda i, t: draws.append(t), trace=trace)
    agree = int(np.sum(np.array(draws[: ref["draws"].size]) == ref["draws"][: len(draws)]))
    snr = compare(ref["wav"], np.array(wav), "float").snr_db if np.array(wav).shape == ref["wav"].shape else float("nan")
    print(f"\n[turbo-generate-{mode}] tokens {agree}/{ref['draws'].size} identical; wav SNR {snr:.1f} dB")
    assert np.array_equal(np.array(draws), ref["draws"])
    assert np.array_equal(trace["t3_tokens"], ref["s3gen_tokens"])  # the trim and the three S3GEN_SIL
    assert snr >= registry.load().cumulative["e2e"]["hift.wav"].snr_db


def test_turbo_bad_input_is_one_clear_error(tmp_path):
    """A missing s3gen_meanflow.safetensors, an English Chatterbox folder given to the Turbo loader, a
    voice of 5 s or less: one error line naming the file, before any weight is loaded."""
    import soundfile as sf

    from mlx_impl.load import ModelLoadError
    from mlx_impl.tts_turbo import ChatterboxTurboTTS
    from mlx_impl.validate import UsageError

    from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

    src = ensure_turbo_checkpoint()
    no_meanflow = tmp_path / "no_meanflow"
    no_meanflow.mkdir()
    for f in src.iterdir():
        if f.name != "s3gen_meanflow.safetensors":
            (no_meanflow / f.name).symlink_to(f.resolve())
    english = tmp_path / "english"
    english.mkdir()
    for name in ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json"):
        (english / name).write_bytes(b"")
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(24000 * 4, dtype=np.float32) + 0.01, 24000)

    cases = [
        (lambda: ChatterboxTurboTTS.from_pretrained(str(no_meanflow)), ModelLoadError,
         ["s3gen_meanflow.safetensors", str(no_meanflow)]),
        (lambda: ChatterboxTurboTTS.from_pretrained(str(english)), ModelLoadError,
         ["t3_turbo_v1.safetensors", "t3_cfg.safetensors", "ChatterboxTTS"]),
        (lambda: ChatterboxTurboTTS(None, None, None, None).prepare_conditionals(str(short)), UsageError,
         [str(short), "longer than 5 seconds"]),
    ]
    for call, error, words in cases:
        with pytest.raises(error) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and all(w in msg for w in words), msg


def test_turbo_t3_conversion_is_strict():
    """t3_turbo_v1.safetensors' converter: counts per component; only tfmr.wte (deleted by the original's
    from_local) and the mask buffers are dropped, by name; an unknown or a missing tensor is an error
    naming it."""
    from mlx_impl.convert.common import ConversionError
    from mlx_impl.convert.t3_turbo import BACKBONE_KEYS, BLOCK_KEYS, T3_KEYS, sanitize

    state = {k: np.zeros((2, 2), np.float32) for k in T3_KEYS}
    state.update({f"tfmr.{k}": np.zeros((2, 2), np.float32) for k in BACKBONE_KEYS})
    state.update({f"tfmr.h.{i}.{k}": np.zeros((2, 3), np.float32) for i in range(2) for k in BLOCK_KEYS})
    state["tfmr.wte.weight"] = np.zeros((2, 2), np.float32)
    state["tfmr.h.1.attn.bias"] = np.zeros((1, 1), np.float32)
    weights, counts = sanitize(state)
    assert counts == dict(t3=7, backbone=3 + 2 * 12, blocks=2, dropped=["tfmr.h.1.attn.bias", "tfmr.wte.weight"])
    assert len(weights) == 7 + 27 and weights["tfmr.h.0.attn.c_attn.weight"].shape == (3, 2)  # Conv1D transposed
    for bad, word in (({**state, "tfmr.h.0.attn.extra": state["text_emb.weight"]}, "tfmr.h.0.attn.extra"),
                      ({k: v for k, v in state.items() if k != "speech_head.bias"}, "speech_head.bias")):
        with pytest.raises(ConversionError, match=word.replace(".", r"\.")):
            sanitize(bad)
