"""`chatterbox-parity tts` and `python -m mlx_impl.generate` write a playable 24 kHz wav whose
length is the original S3Gen's for the same tokens."""
import subprocess
import sys

import numpy as np
import pytest


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
