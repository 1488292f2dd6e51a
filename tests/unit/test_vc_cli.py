"""Voice conversion (issue 20): every bad input to `vc` (chatterbox-parity vc, python -m mlx_impl.vc_cli)
gives one error line naming it, exit status 2, before any weights load, and leaves the file system
as it was; a VC call without a target voice is one clear error, from the command line and from
Python.

Fast: the model folders are tiny stand-ins (a safetensors file whose header the checks read, a small
conditioning file); `load_vc` is replaced by a function that fails the test, so any case that got
past validation would show.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_impl import load as load_mod
from mlx_impl.validate import UsageError
from test_cli_validation import (R, _conds, _safetensors, assert_one_error_line, assert_refused_leaving_files_alone,
                                 command_argv, forbid_loading, run_cli, snapshot, write_clips)


def _vc_hub(d: Path, *, conds: bool) -> Path:
    """The VC hub layout: s3gen.safetensors (+ the built-in voice)."""
    d.mkdir(parents=True)
    _safetensors(d / "s3gen.safetensors", {"flow.x": np.zeros(2, np.float32)})
    if conds:
        _conds(d / "conds.safetensors")
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vc")
    w = {"root": root, "model": _vc_hub(root / "model", conds=True), "novoice": _vc_hub(root / "novoice", conds=False)}
    _vc_hub(root / "empty_dir", conds=False)
    (root / "empty_dir" / "s3gen.safetensors").unlink()
    t = _vc_hub(root / "trunc", conds=True)
    (t / "s3gen.safetensors").write_bytes((t / "s3gen.safetensors").read_bytes()[:-4])
    b = _vc_hub(root / "badconds", conds=False)
    (b / "conds.pt").write_bytes(b"not a torch zip file")
    m = root / "mlx_no_s3gen"
    m.mkdir()
    _safetensors(m / "model.safetensors", {"t3.text_emb.weight": np.zeros((4, 2), np.float32)})

    write_clips(root / "clips")
    return w


@pytest.fixture
def no_load(monkeypatch):
    forbid_loading(monkeypatch, (load_mod, "load_vc"))


VC_BAD = [
    # (id, extra argv, substrings of the one error line)
    ("source-missing", ["--source", R + "/clips/nothere.wav"], ["--source", "nothere.wav", "not found"]),
    ("source-directory", ["--source", R + "/clips/folder.wav"], ["--source", "is a folder"]),
    ("source-not-audio", ["--source", R + "/clips/text.wav"], ["--source", "text.wav", "not an audio file"]),
    ("source-0-samples", ["--source", R + "/clips/empty.wav"], ["--source", "empty.wav", "no samples"]),
    ("source-nan", ["--source", R + "/clips/nan.wav"], ["--source", "nan.wav", "NaN"]),
    ("source-too-short", ["--source", R + "/clips/short.wav"], ["--source", "short.wav", "too short", "40 ms"]),
    ("target-missing", ["--target-voice", R + "/clips/nothere.wav"], ["--target-voice", "nothere.wav", "not found"]),
    ("target-not-audio", ["--target-voice", R + "/clips/text.wav"], ["--target-voice", "not an audio file"]),
    ("target-too-short", ["--target-voice", R + "/clips/short.wav"], ["--target-voice", "short.wav", "too short"]),
    ("out-mp3", ["--out", R + "/o.mp3"], ["--out", "'.mp3'", ".wav or .flac"]),
    ("out-is-the-source", ["--out", R + "/clips/good.wav"], ["--out", "is the --source file"]),
    ("seed-negative", ["--seed", "-1"], ["--seed"]),
    ("model-missing", ["--model", R + "/nothere/"], ["model folder not found"]),
    ("model-no-weights", ["--model", R + "/empty_dir"], ["empty_dir", "s3gen.safetensors"]),
    ("weights-truncated", ["--model", R + "/trunc"], ["trunc/s3gen.safetensors", "truncated"]),
    ("mlx-without-s3gen", ["--model", R + "/mlx_no_s3gen"], ["mlx_no_s3gen/model.safetensors", "no s3gen."]),
    ("conds-corrupt", ["--model", R + "/badconds"], ["malformed conds file", "badconds/conds.pt"]),
    ("no-target-voice", ["--model", R + "/novoice", "--target-voice", None], ["no target voice", "--target-voice",
                                                                             "novoice"]),
]


def _argv(world, extra):
    root = world["root"]
    return command_argv("vc", root, {"--source": f"{root}/clips/good.wav", "--target-voice": f"{root}/clips/good.wav",
                                     "--out": f"{root}/out.wav", "--model": str(world["model"])}, extra)


@pytest.mark.parametrize("case_id,extra,expect", VC_BAD, ids=[c[0] for c in VC_BAD])
def test_vc_bad_input_is_one_line_exit_2_nothing_written(world, no_load, capsys, case_id, extra, expect):
    assert_refused_leaving_files_alone(world["root"], _argv(world, extra), expect, capsys)


def test_vc_out_is_the_target_voice(world, no_load, capsys):
    root = world["root"]
    rc, _, err = run_cli(_argv(world, ["--out", R + "/clips/good.wav", "--source", R + "/clips/good.wav"]), capsys)
    assert_one_error_line(rc, err, ["--out", "is the --source file"])
    src = root / "src.wav"
    sf.write(src, np.zeros(16000, np.float32), 16000)
    try:
        rc, _, err = run_cli(_argv(world, ["--source", str(src), "--out", R + "/clips/good.wav"]), capsys)
    finally:
        src.unlink()
    assert_one_error_line(rc, err, ["--out", "is the --target-voice file"])


def test_vc_standalone_entry_point_same_errors(world, no_load, capsys):
    from mlx_impl import vc_cli

    rc = vc_cli.main(_argv(world, ["--source", R + "/clips/nothere.wav"])[1:])
    _, err = capsys.readouterr()
    assert_one_error_line(rc, err, ["--source", "nothere.wav", "not found"])


class _Loaded(Exception):
    pass


@pytest.mark.parametrize("model,target", [("model", True), ("model", False), ("novoice", True)],
                         ids=["target-voice", "built-in-voice", "no-conds-with-target"])
def test_vc_valid_input_reaches_the_model_load(world, capsys, monkeypatch, model, target):
    """Nothing is written before the model loads; the built-in voice serves when no target is given."""
    seen = {}

    def fake_load(model_dir, cls, files=None):
        seen["files"] = files
        raise _Loaded

    monkeypatch.setattr(load_mod, "load_vc", fake_load)
    monkeypatch.delenv("CHATTERBOX_CKPT", raising=False)
    before = snapshot(world["root"])
    argv = _argv(world, ["--model", str(world[model])] + ([] if target else ["--target-voice", None]))
    with pytest.raises(_Loaded):
        from parity import cli

        cli.main(argv)
    assert seen["files"].kind == "hub"
    assert (seen["files"].ref_dict is not None) == (model == "model")
    assert snapshot(world["root"]) == before


def test_vc_python_call_without_target_voice_is_one_clear_error(world):
    from mlx_impl.vc import ChatterboxVC

    vc = ChatterboxVC(s3gen=None)  # no built-in voice; nothing may reach S3Gen
    with pytest.raises(UsageError, match="no target voice: pass target_voice_path or call set_target_voice"):
        vc.generate(str(world["root"] / "clips" / "good.wav"))


def test_vc_python_bad_clips_name_the_argument(world):
    from mlx_impl.vc import ChatterboxVC

    vc = ChatterboxVC(s3gen=None, ref_dict={"prompt_feat": None})
    with pytest.raises(UsageError, match=r"^audio .*nothere\.wav: file not found"):
        vc.generate(str(world["root"] / "clips" / "nothere.wav"))
    with pytest.raises(UsageError, match=r"^target_voice_path .*short\.wav: .* too short"):
        vc.generate(str(world["root"] / "clips" / "good.wav"), target_voice_path=str(world["root"] / "clips" / "short.wav"))


@pytest.mark.parametrize("command", ["vc"])
def test_turbo_folder_given_to_the_english_or_vc_loader_is_named(tmp_path, no_load, capsys, monkeypatch, command):
    """A Chatterbox Turbo folder (t3_turbo_v1 / s3gen_meanflow, no s3gen) handed to `vc`: one error line
    naming the missing file and saying it is a Turbo checkpoint. (`tts` runs a Turbo folder as Turbo; the
    English loader's own error: tests/unit/test_tts_cli_turbo.py.)"""
    monkeypatch.setattr(load_mod, "load_pipeline", lambda *a, **k: pytest.fail("loaded"))
    d = tmp_path / "turbo"
    d.mkdir()
    for f in ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors"):
        _safetensors(d / f, {"x": np.zeros(2, np.float32)})
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(16000, np.float32), 16000)
    args = (["tts", "--text", "Hi.", "--voice", str(clip)] if command == "tts"
            else ["vc", "--source", str(clip), "--target-voice", str(clip)])
    before = snapshot(tmp_path)
    rc, _, err = run_cli(args + ["--quiet", "--out", str(tmp_path / "o.wav"), "--model", str(d)], capsys)
    missing = "t3_cfg.safetensors" if command == "tts" else "s3gen.safetensors"
    assert_one_error_line(rc, err, [str(d), missing, "Chatterbox Turbo", "t3_turbo_v1.safetensors"])
    assert snapshot(tmp_path) == before
