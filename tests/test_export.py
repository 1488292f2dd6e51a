"""The reference export on the synthetic checkpoint: determinism, the original's own generate(),
and bad input (one clear error line, non-zero exit, no partial fixture folder)."""
import dataclasses

import numpy as np
import pytest

from parity.cases import get_case
from tests.export_checks import (CLI, assert_one_error_line_and_no_fixture, assert_same_bytes, linked_checkpoint,
                                 run_without_warnings)

pytestmark = pytest.mark.reference


def _short_case(n=6):
    c = get_case("stereo_44k")
    return dataclasses.replace(c, params={**c.params, "max_new_tokens": n})


def test_export_twice_is_bit_identical(tmp_path, parity_session):
    from reference.export import export_case

    s = parity_session
    tts = s._original()
    a = export_case(s.ckpt, _short_case(), out_root=tmp_path / "a", tts=tts, log=lambda m: None)
    b = export_case(s.ckpt, _short_case(), out_root=tmp_path / "b", tts=tts, log=lambda m: None)
    files = sorted(p.name for p in a.iterdir())
    assert "manifest.json" in files and len(files) >= 10
    assert_same_bytes(a, b, files)


def test_synthetic_checkpoint_loads_in_original_and_generates(parity_session):
    """ChatterboxTTS.from_local(DIR, 'cpu') loads the synthetic checkpoint unmodified and
    generate() returns audio. generate() hard-codes 1000 T3 steps: only that bound is lowered."""
    import torch
    from chatterbox.tts import ChatterboxTTS

    s = parity_session
    tts = s._original()  # reference.export.load_original: ChatterboxTTS.from_local(DIR, "cpu")
    assert isinstance(tts, ChatterboxTTS)
    tts.conds = type(tts.conds).load(s.ckpt.path / "conds.pt")  # built-in voice from conds.pt
    inference = tts.t3.inference
    tts.t3.inference = lambda **kw: inference(**{**kw, "max_new_tokens": 12})
    try:
        torch.manual_seed(0)
        wav = tts.generate("Hello from a synthetic checkpoint.")
    finally:
        del tts.t3.inference
    assert wav.ndim == 2 and wav.shape[0] == 1 and wav.shape[1] > 0
    assert torch.isfinite(wav).all() and float(wav.abs().max()) > 0


@pytest.mark.parametrize("problem", ["missing_file", "corrupt_safetensors", "unreadable_audio", "empty_text"])
def test_bad_input_gives_one_clear_error_and_no_fixture(tmp_path, problem, parity_session):
    ckpt = parity_session.ckpt.path
    out = tmp_path / "fx"
    args = ["export", "--case", "stereo_44k", "--out", str(out)]
    expect = {
        "missing_file": "t3_cfg.safetensors", "corrupt_safetensors": "s3gen.safetensors",
        "unreadable_audio": "garbage.wav", "empty_text": "empty text",
    }[problem]
    if problem == "missing_file":
        args += ["--checkpoint", str(linked_checkpoint(ckpt, tmp_path, drop="t3_cfg.safetensors"))]
    elif problem == "corrupt_safetensors":
        args += ["--checkpoint", str(linked_checkpoint(ckpt, tmp_path, corrupt="s3gen.safetensors"))]
    elif problem == "unreadable_audio":
        bad = tmp_path / "garbage.wav"
        bad.write_bytes(b"RIFF this is not audio")
        args += ["--checkpoint", str(ckpt), "--audio", str(bad)]
    else:
        args += ["--checkpoint", str(ckpt), "--text", "   "]
    r = run_without_warnings(CLI + args, tmp_path)
    assert r.returncode != 0
    assert_one_error_line_and_no_fixture(r, expect, out)
