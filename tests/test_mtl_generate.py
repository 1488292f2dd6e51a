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
from tests.mlx_layout_checks import assert_same_parameters_and_voice
from tests.mtl_front_end import ckpt, offline_env, offline_front_end  # noqa: F401 (module fixtures)

pytestmark = pytest.mark.reference

N_STEPS = 120
CASES = [("el", "greedy"), ("el", "sampled"), ("ja", "greedy"), ("ja", "sampled")]


def _run_original(mtl, text: str, lang: str, greedy: bool, seed: int) -> dict:
    """One generate() of the original with its draws and analyzer decisions recorded; the waveform
    before the watermark."""
    import torch

    from reference.export import record_s3gen
    from reference.recording import RecordedSampler, Recorder, patched, wrap_method

    sampler, rec, out, analysis, logits = RecordedSampler(seed=seed, greedy=greedy), Recorder(), {}, [], []
    inference = mtl.t3.inference
    head = mtl.t3.speech_head.register_forward_hook(lambda m, i, o: logits.append(o[:, -1, :].numpy().copy()))

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
    head.remove()
    return dict(draws=np.array(sampler.tokens), uniforms=np.array(sampler.uniforms), analysis=analysis,
                logits_raw=np.stack(logits),
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


def test_mtl_t3_logits_gap_of_eager_attention(reference_runs, mlx_mtl):
    """The original's multilingual T3 runs eager attention in every layer (its analyzer asks for the
    weights), MLX its SDPA: the raw logits of each step (the original's tokens teacher-forced) differ by
    float32 rounding only. Measured here: printed, and bounded by the registry's float goal."""
    from parity import registry
    from parity.metrics import compare
    from reference.mtl_tokenizer_json import SENTENCES

    ref = reference_runs[("el", "greedy")]
    steps = []
    mlx_mtl.t3.inference(t3_cond=mlx_mtl.conds.t3, text_tokens=mlx_mtl.text_tokens(SENTENCES["el"], "el"),
                         max_new_tokens=N_STEPS, forced_tokens=ref["draws"], repetition_penalty=2.0, top_p=1.0,
                         on_step=lambda i, o: steps.append(np.array(o["logits_raw"])))
    got, want = np.stack(steps), ref["logits_raw"][: len(steps)]
    m = compare(want, got, "float")
    print(f"\n[mtl-t3-logits-gap] {len(steps)} steps: max |MLX SDPA - original eager| {np.abs(got - want).max():.2e}, "
          f"SNR {m.snr_db:.1f} dB")
    assert len(steps) == ref["draws"].size
    assert m.snr_db >= registry.load().default("float").snr_db


@pytest.fixture(scope="module")
def converted(ckpt, tmp_path_factory, mlx_mtl):
    """The synthetic multilingual checkpoint converted by `chatterbox-parity convert --checkpoint mtl`."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("mtl") / "mlx"
    r = subprocess.run([sys.executable, "-m", "parity.cli", "convert", "--checkpoint", "mtl", "--out", str(out)],
                       capture_output=True, text=True, env=offline_env(ckpt))
    assert r.returncode == 0, r.stderr[-2000:]
    print(r.stdout)
    return out, r.stdout


def test_mtl_convert_writes_the_multilingual_mlx_layout(converted):
    """model.safetensors + config.json (model_type chatterbox_multilingual, text table 2454) + the tokenizer,
    Cangjie file and hub cache + conds.safetensors; the summary counts per file and prefix, the dropped
    tensors named."""
    import json

    out, stdout = converted
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Cangjie5_TC.json", "conds.safetensors", "config.json", "grapheme_mtl_merged_expanded_v1.json",
                     "model.safetensors", "models--ResembleAI--chatterbox"], names
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "chatterbox_multilingual" and config["t3"]["text_tokens_dict_size"] == 2454
    assert "source tensors per file: ve.pt " in stdout and "MLX tensors per prefix: " in stdout
    assert "unassigned MLX parameters: 0" in stdout


def test_mtl_mlx_layout_loads_the_hubs_weights_bit_exact(converted, mlx_mtl, offline_front_end):
    """from_pretrained on the converted folder: every parameter bit-exact, the same built-in voice, the
    same text tokens (Chinese too: the Cangjie mapping read from the copied hub cache)."""
    from mlx_impl.mtl_tts import ChatterboxMultilingualTTS
    from reference.mtl_tokenizer_json import SENTENCES

    out, _ = converted
    mlx = ChatterboxMultilingualTTS.from_pretrained(str(out))
    assert_same_parameters_and_voice(mlx_mtl, mlx)
    assert mlx.tokenizer.cangjie_converter.mapping_file is not None
    for lang, text in SENTENCES.items():
        assert np.array_equal(mlx.text_tokens(text, lang), mlx_mtl.text_tokens(text, lang)), lang


def test_mtl_tts_command_hub_and_mlx_layouts_write_the_same_wav(tmp_path, converted, ckpt):
    """`chatterbox-parity tts --model mtl --language el` (the hub's layout, built-in voice) and `python -m
    mlx_impl.generate --model <converted> --language el`, greedy: the same 24 kHz WAV of S3Gen's length
    (960 samples per token), no temporary left beside it."""
    import subprocess
    import sys

    import soundfile as sf

    from reference.mtl_tokenizer_json import SENTENCES

    out_dir, _ = converted
    env = offline_env(ckpt)
    env.pop("CHATTERBOX_CKPT", None)
    args = ["--text", SENTENCES["el"], "--language", "el", "--greedy", "--max-new-tokens", "20", "--quiet"]
    wavs = []
    for name, command in (("hub.wav", ["parity.cli", "tts", "--model", "mtl"]),
                          ("mlx.wav", ["mlx_impl.generate", "--model", str(out_dir)])):
        r = subprocess.run([sys.executable, "-m", *command, *args, "--out", str(tmp_path / name)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        audio, sr = sf.read(str(tmp_path / name), dtype="int16")
        assert sr == 24000 and audio.ndim == 1
        wavs.append(audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub.wav", "mlx.wav"]
    assert len(wavs[0]) % 960 == 0 and 0 < len(wavs[0]) <= 960 * 20
    assert np.array_equal(wavs[0], wavs[1])
    assert np.abs(wavs[0]).max() > 0
