"""Chatterbox Turbo's MLX layout at `convert --dtype float16` and `convert --quantize-t3 4`: the synthetic
Turbo checkpoint converted each way, loaded by ChatterboxTurboTTS.from_pretrained, generate() run, and the
loaded model measured as the precision matrix measures its fp16 / q4 rows (parity/precision.py, the
turbo_espeak fixture): the same T3 draws and the same S3Gen output as the row computed from the hub's
files, and the row within [precision_matrix.<precision>] of parity/checkpoints.toml.

The fp16 layout is the fp16 row's setting: T3, the flow and HiFT in float16; the VoiceEncoder, the S3
tokenizer and CAMPPlus stored and run in float32 (their kernels take float32 only). The q4 layout's T3
transformer is quantized from float32 as the q4 row's."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

CASE = "turbo_espeak"
N_TOKENS = 20  # T3 draws compared (the precision CLI's rows use 60; the first 20 decide equality as well)
VOICE = "fixtures/inputs/espeak_22k_mono.wav"
LAYOUTS = {"fp16": ["--dtype", "float16"], "q4": ["--quantize-t3", "4"]}


@pytest.fixture(scope="module")
def turbo_env(parity_session):
    pytest.importorskip("torch")
    from parity.fixtures import Fixture, fixture_dir

    ckpt = parity_session.ckpt_for("turbo")
    try:
        fx = Fixture.open(fixture_dir(parity_session.fx_root, CASE))
    except Exception:
        fx = parity_session.fixture(CASE)
    return ckpt, fx


def _convert(ckpt, out, extra):
    r = subprocess.run([sys.executable, "-m", "mlx_impl.convert", "--checkpoint", str(ckpt.path), "--out", str(out),
                        *extra], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.parametrize("precision", list(LAYOUTS))
def test_turbo_layout_converts_loads_generates_and_matches_the_precision_row(turbo_env, tmp_path, precision):
    import gc

    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_impl.load import is_quantized
    from mlx_impl.tts_turbo import ChatterboxTurboTTS
    from mlx_impl.validate import safetensors_header
    from parity.precision import _tolerances, check_row, measure_turbo, measure_turbo_modules, row_tolerance

    ckpt, fx = turbo_env
    out = tmp_path / f"turbo_{precision}"
    _convert(ckpt, out, LAYOUTS[precision])
    config = json.loads((out / "config.json").read_text())
    header = safetensors_header(out / "model.safetensors")
    dtypes = {k: v["dtype"] for k, v in header.items() if isinstance(v, dict) and "dtype" in v}
    front_end = [k for k in dtypes if k.startswith(("ve.", "s3_tokenizer.", "s3gen.speaker_encoder."))]
    assert front_end and {dtypes[k] for k in front_end} == {"F32"}
    if precision == "fp16":
        assert config["dtype"] == "float16" and config["quantization"] == {}
        assert dtypes["t3.speech_head.weight"] == dtypes["s3gen.flow.decoder.estimator.down_blocks.0.downsample.weight"] == "F16"
        assert dtypes["s3gen.mel2wav.conv_post.weight"] == "F16"
    else:
        assert config["dtype"] == "float32" and config["quantization"] == {"t3": {"group_size": 64, "bits": 4}}
        assert dtypes["t3.tfmr.h.0.attn.c_attn.weight"] == "U32" and "t3.tfmr.h.0.attn.c_attn.scales" in dtypes

    tts = ChatterboxTurboTTS.from_pretrained(str(out))
    params = dict(tree_flatten(tts.t3.parameters()))
    if precision == "fp16":
        assert params["speech_head.weight"].dtype == mx.float16
        assert dict(tree_flatten(tts.ve.parameters()))["proj.weight"].dtype == mx.float32
    else:
        assert is_quantized(tts.t3.tfmr) and params["speech_head.weight"].dtype == mx.float32

    wav = np.asarray(tts.generate("Hello there, this is a short test.", audio_prompt_path=VOICE, max_gen_len=10)
                     .astype(mx.float32))
    assert wav.ndim == 2 and wav.shape[1] > 0 and np.isfinite(wav).all() and np.abs(wav).max() > 1e-4

    layout_row = measure_turbo_modules(fx, tts.t3, tts.s3gen, N_TOKENS, tts.ve)
    del tts
    gc.collect()
    hub_row = measure_turbo(fx, ckpt, precision, N_TOKENS)
    print(f"{precision}: layout {({k: v for k, v in layout_row.items() if k != 'drawn'})}\n"
          f"{precision}: hub    {({k: v for k, v in hub_row.items() if k != 'drawn'})}")
    assert layout_row["drawn"] == hub_row["drawn"]
    for key in ("mel_snr_db", "wav_snr_db", "speaker_cosine"):
        assert layout_row[key] == pytest.approx(hub_row[key], rel=1e-6), key
    assert check_row(layout_row, row_tolerance(_tolerances(), "turbo", precision)) == []
