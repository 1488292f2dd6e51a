"""`chatterbox-parity tts` and `python -m mlx_impl.generate` write a playable 24 kHz wav whose
length is the original S3Gen's for the same tokens."""
import subprocess
import sys

import numpy as np
import pytest

from tests.mlx_layout_checks import assert_same_parameters_and_voice

pytestmark = pytest.mark.reference


@pytest.mark.parametrize("command", [["parity.cli", "tts"], ["mlx_impl.generate"]], ids=["chatterbox-parity", "standalone"])
def test_tts_command_writes_a_playable_wav_of_the_reference_length(tmp_path, command, parity_session):
    import soundfile as sf
    import torch

    s = parity_session
    out = tmp_path / "out.wav"
    r = subprocess.run([sys.executable, "-m", *command, "--text", "Hello there.", "--out", str(out),
                        "--model", str(s.ckpt.path), "--greedy", "--max-new-tokens", "40", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no hidden temporary left beside it
    audio, sr = sf.read(str(out), dtype="float32")
    assert sr == 24000 and audio.ndim == 1 and len(audio) > 0 and np.isfinite(audio).all()
    # the original S3Gen on the same (greedy, built-in voice) tokens gives the same length
    from mlx_impl.t3.inference.sampling import GreedyDraw
    from mlx_impl.tts import ChatterboxTTS, SPEECH_VOCAB_SIZE, drop_invalid_tokens

    mlx_tts = ChatterboxTTS.from_pretrained(str(s.ckpt.path))
    tokens = mlx_tts.t3.inference(t3_cond=mlx_tts.conds.t3, text_tokens=mlx_tts.text_tokens("Hello there."),
                                  max_new_tokens=40, draw=GreedyDraw(), temperature=0.8, cfg_weight=0.5,
                                  repetition_penalty=1.2, min_p=0.05, top_p=1.0)
    speech = drop_invalid_tokens(tokens[0])
    speech = speech[speech < SPEECH_VOCAB_SIZE]
    original = s._original()
    conds = type(original.conds).load(s.ckpt.path / "conds.pt")
    wav, _ = original.s3gen.inference(speech_tokens=torch.from_numpy(speech.astype(np.int64)), ref_dict=conds.gen)
    assert len(audio) == wav.shape[-1] == 960 * len(speech)


# ----------------------------------------------------------------------------- Chatterbox Turbo
TURBO_VOICE = "fixtures/inputs/espeak_22k_mono.wav"  # 6.1 s: Turbo wants more than 5 s


@pytest.fixture(scope="module")
def turbo_mlx(tmp_path_factory):
    """The synthetic Turbo checkpoint converted by `chatterbox-parity convert --checkpoint turbo`."""
    out = tmp_path_factory.mktemp("turbo") / "mlx"
    r = subprocess.run([sys.executable, "-m", "parity.cli", "convert", "--checkpoint", "turbo", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    print(r.stdout)
    return out, r.stdout


def test_turbo_convert_writes_turbos_mlx_layout_with_counts_per_component(turbo_mlx):
    """Turbo's MLX layout: model.safetensors + config.json (model_type chatterbox_turbo) + the GPT-2
    tokenizer files + conds.safetensors; the summary states the counts per file and per component,
    and the only dropped tensors are the named ones."""
    import json

    from mlx_impl.tts_turbo import TOKENIZER_FILES

    out, stdout = turbo_mlx
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == sorted(
        ["model.safetensors", "config.json", "conds.safetensors", "tokenizer", *(f"tokenizer/{f}" for f in TOKENIZER_FILES)])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "chatterbox_turbo" and config["s3gen"]["meanflow"] is True
    assert config["t3"]["llama_config_name"] == "GPT2_medium" and config["quantization"] == {}
    assert "T3: 7 of its own + GPT-2 backbone 291 (3 + 12 x 24 blocks)" in stdout
    assert "unassigned MLX parameters: 0, unconsumed source tensors outside the ignore list: 0" in stdout
    assert "source tensors: ve.safetensors 16, t3_turbo_v1.safetensors 299, s3gen_meanflow.safetensors" in stdout
    assert "   1 x deleted by ChatterboxTurboTTS.from_local after loading (T3 has its own token tables): " \
           "t3.tfmr.wte.weight" in stdout
    n_dropped = int(stdout.split("dropped source tensors (by name): ")[1].split()[0])
    reasons = [ln for ln in stdout.split("dropped source tensors (by name):")[1].splitlines()[1:] if ln.startswith("  ")]
    assert sum(int(ln.split(" x ")[0]) for ln in reasons) == n_dropped
    # T3: 299 source tensors = 298 converted + wte; nothing else of T3 is dropped
    assert "t3.               298" in stdout and sum("t3." in ln for ln in reasons) == 1


def test_turbo_mlx_layout_loads_the_hubs_weights_bit_exact(turbo_mlx):
    """from_pretrained on the converted folder gives the same parameters (every one, bit-exact) and the
    same built-in voice as from_pretrained on the hub's layout."""
    from mlx_impl.tts_turbo import ChatterboxTurboTTS
    from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

    out, _ = turbo_mlx
    hub, mlx = ChatterboxTurboTTS.from_pretrained(str(ensure_turbo_checkpoint())), ChatterboxTurboTTS.from_pretrained(str(out))
    assert_same_parameters_and_voice(hub, mlx)


def test_turbo_tts_command_hub_and_mlx_layouts_write_the_same_wav(tmp_path, turbo_mlx):
    """`chatterbox-parity tts --model turbo` (the hub's layout) and `python -m mlx_impl.generate --model
    <converted>` with the same voice, greedy, the same seed: the same 24 kHz WAV, of S3Gen's length
    (960 samples per token, the three S3GEN_SIL included), no temporary left beside it."""
    import soundfile as sf

    out_dir, _ = turbo_mlx
    args = ["--text", "Hello there.", "--voice", TURBO_VOICE, "--greedy", "--max-new-tokens", "20", "--quiet"]
    wavs = []
    for name, command in (("hub.wav", ["parity.cli", "tts", "--model", "turbo"]),
                          ("mlx.wav", ["mlx_impl.generate", "--model", str(out_dir)])):
        r = subprocess.run([sys.executable, "-m", *command, *args, "--out", str(tmp_path / name)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        audio, sr = sf.read(str(tmp_path / name), dtype="int16")
        assert sr == 24000 and audio.ndim == 1
        wavs.append(audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub.wav", "mlx.wav"]
    assert len(wavs[0]) % 960 == 0 and 960 * 4 <= len(wavs[0]) <= 960 * (20 + 3)
    assert np.array_equal(wavs[0], wavs[1])
    assert np.abs(wavs[0]).max() > 0
