"""Issue 23: every bad input to `tts` and `convert` gives one error line naming it, exit status 2,
before any work, and leaves the file system as it was; the sampling ranges are the same on every
decoding path; T3's embedding lookups never read past a table.

Fast: the model folders here are tiny stand-ins (real tokenizer.json, a safetensors file holding
only the tensor the checks read, a small conditioning file); `load_pipeline` is replaced by a
function that fails the test, so any case that got past validation would show. No weights load.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from mlx_impl import load as load_mod
from mlx_impl import validate
from mlx_impl.validate import UsageError
from parity import cli

# ----------------------------------------------------------------------------- fixtures


def _tokenizer(path: Path) -> None:
    from reference.tokenizer_json import write_tokenizer_json

    write_tokenizer_json(path)


def _conds(path: Path) -> None:
    from mlx_impl.t3.modules.cond_enc import T3Cond
    from mlx_impl.tts import Conditionals

    t3 = T3Cond(speaker_emb=mx.zeros((1, 256)), cond_prompt_speech_tokens=mx.zeros((1, 150), dtype=mx.int32),
                emotion_adv=0.5 * mx.ones((1, 1, 1)))
    gen = dict(prompt_token=mx.zeros((1, 10), dtype=mx.int32), prompt_token_len=mx.array([10], dtype=mx.int32),
               prompt_feat=mx.zeros((1, 20, 80)), embedding=mx.zeros((1, 192)))
    Conditionals(t3, gen).save(path)


def _safetensors(path: Path, tensors: dict) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v) for k, v in tensors.items()}, str(path))


def _mlx_model(d: Path, *, conds=True) -> Path:
    """An MLX-layout folder that passes check_model_dir (the weights are not read before loading)."""
    d.mkdir(parents=True)
    _safetensors(d / "model.safetensors", {"t3.text_emb.weight": np.zeros((704, 2), np.float32)})
    (d / "config.json").write_text('{"model_type": "chatterbox", "t3": {"text_tokens_dict_size": 704}}\n')
    _tokenizer(d / "tokenizer.json")
    if conds:
        _conds(d / "conds.safetensors")
    return d


def _hub_checkpoint(d: Path, *, conds_pt: bytes = None) -> Path:
    """A hub-layout folder whose files all parse (tiny weight files: conversion itself would fail)."""
    d.mkdir(parents=True)
    _safetensors(d / "ve.safetensors", {"proj.weight": np.zeros((2, 2), np.float32)})
    _safetensors(d / "t3_cfg.safetensors", {"text_emb.weight": np.zeros((704, 2), np.float32)})
    _safetensors(d / "s3gen.safetensors", {"flow.x": np.zeros(2, np.float32)})
    _tokenizer(d / "tokenizer.json")
    if conds_pt is not None:
        (d / "conds.pt").write_bytes(conds_pt)
    return d


def write_clips(d: Path) -> Path:
    """The clips the audio checks are tried on, 16 kHz, in the new folder `d`: good.wav (1 s), short.wav
    (25 ms: too short), empty.wav (no samples), nan.wav (a NaN sample), text.wav (not audio), folder.wav (a
    folder)."""
    d.mkdir()
    rng = np.random.default_rng(0)
    sf.write(d / "good.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    sf.write(d / "short.wav", (0.1 * rng.standard_normal(400)).astype(np.float32), 16000)
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    (d / "text.wav").write_text("this is not audio\n")
    (d / "folder.wav").mkdir()
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue23")
    w = {"root": root}
    w["model"] = _mlx_model(root / "model")
    w["noconds"] = _mlx_model(root / "noconds", conds=False)
    m = _mlx_model(root / "badtok")
    (m / "tokenizer.json").write_text('{"not": "a tokenizer"')
    m = _mlx_model(root / "nostart")
    tok = (m / "tokenizer.json").read_text().replace('"[START]"', '"[BEGIN]"')
    (m / "tokenizer.json").write_text(tok)
    m = _mlx_model(root / "badconds", conds=False)
    (m / "conds.pt").write_bytes(b"not a torch zip file")
    m = _mlx_model(root / "badcfg")
    (m / "config.json").write_text('{"t3": ')
    m = _mlx_model(root / "trunc")
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[:-100])
    m = _mlx_model(root / "notensor")
    _safetensors(m / "model.safetensors", {"t3.other.weight": np.zeros((3, 2), np.float32)})
    m = root / "bigvocab"
    _mlx_model(m)
    _safetensors(m / "model.safetensors", {"t3.text_emb.weight": np.zeros((100, 2), np.float32)})

    v = write_clips(root / "voices")
    short_ok = (0.1 * np.random.default_rng(1).standard_normal(800)).astype(np.float32)
    sf.write(v / "short_ok.wav", short_ok, 16000)  # 50 ms: a warning

    (root / "afile").write_text("x")
    full = root / "full"
    full.mkdir()
    (full / "keep.txt").write_text("precious")
    w["hub"] = _hub_checkpoint(root / "hub")
    h = _hub_checkpoint(root / "hub_badtok")
    (h / "tokenizer.json").write_text("{")
    _hub_checkpoint(root / "hub_badconds", conds_pt=b"garbage")
    h = _hub_checkpoint(root / "hub_trunc")
    (h / "t3_cfg.safetensors").write_bytes((h / "t3_cfg.safetensors").read_bytes()[:50])
    return w


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def forbid_loading(monkeypatch, *loaders) -> None:
    """Each (module, name) loader replaced by one that fails the test (validation must stop before any
    weights load), and $CHATTERBOX_CKPT unset."""
    def fail(*a, **k):
        pytest.fail("the model was loaded: validation should have stopped before")

    for module, name in loaders:
        monkeypatch.setattr(module, name, fail)
    monkeypatch.delenv("CHATTERBOX_CKPT", raising=False)


@pytest.fixture
def no_load(monkeypatch):
    forbid_loading(monkeypatch, (load_mod, "load_pipeline"))


def run_cli(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(rc, err, expect):
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for part in expect:
        assert part in lines[0], lines[0]


R = "{root}"  # in the tables of bad input: the test's folder


def command_argv(command: str, root: Path, defaults: dict, extra: list) -> list:
    """`<command> --quiet` with the options of `defaults`, each replaced by `extra`'s (flag, value) pairs
    ({root} filled in; a None value drops the option)."""
    args = dict(defaults)
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value.replace(R, str(root)) if value is not None else None
    return [command, "--quiet"] + [x for k, v in args.items() if v is not None for x in (k, v)]


def assert_refused_leaving_files_alone(root: Path, argv: list, expect: list, capsys) -> None:
    """The command exits 2 with one error line holding every part of `expect` ({root} filled in), and
    nothing under `root` is written, removed or touched."""
    before = snapshot(root)
    rc, _, err = run_cli(argv, capsys)
    assert_one_error_line(rc, err, [e.replace(R, str(root)) for e in expect])
    assert snapshot(root) == before


# ----------------------------------------------------------------------------- tts: items 1 and 2

TTS_BAD = [
    # (id, extra argv, substrings of the one error line)
    ("temperature-0", ["--temperature", "0"], ["--temperature", "> 0"]),
    ("temperature-negative", ["--temperature", "-1"], ["--temperature", "> 0"]),
    ("temperature-nan", ["--temperature", "nan"], ["--temperature", "> 0"]),
    ("min-p-2", ["--min-p", "2"], ["--min-p", "[0, 1]"]),
    ("min-p-negative", ["--min-p", "-0.1"], ["--min-p", "[0, 1]"]),
    ("top-p-0", ["--top-p", "0"], ["--top-p", "(0, 1]"]),
    ("top-p-above-1", ["--top-p", "1.5"], ["--top-p", "(0, 1]"]),
    ("cfg-weight-0", ["--cfg-weight", "0"], ["--cfg-weight", "> 0"]),
    ("cfg-weight-negative", ["--cfg-weight", "-0.5"], ["--cfg-weight", "> 0"]),
    ("repetition-penalty-0", ["--repetition-penalty", "0"], ["--repetition-penalty", "> 0"]),
    ("exaggeration-negative", ["--exaggeration", "-1"], ["--exaggeration", ">= 0"]),
    ("max-new-tokens-0", ["--max-new-tokens", "0"], ["--max-new-tokens", "[1, 4099]"]),
    ("max-new-tokens-negative", ["--max-new-tokens", "-5"], ["--max-new-tokens", "[1, 4099]"]),
    ("max-new-tokens-past-table", ["--max-new-tokens", "4100"], ["--max-new-tokens", "[1, 4099]"]),
    ("seed-negative", ["--seed", "-1"], ["--seed"]),
    ("empty-text", ["--text", "   "], ["--text is empty"]),
    ("text-past-position-table", ["--text", "word " * 2500], ["--text is", "tokens", "2048"]),
    ("out-mp3", ["--out", R + "/o.mp3"], ["--out", "'.mp3'", ".wav or .flac"]),
    ("out-no-extension", ["--out", R + "/o"], ["--out", "no extension"]),
    ("out-is-directory", ["--out", R + "/full"], ["--out", "is a folder"]),
    ("out-parent-is-file", ["--out", R + "/afile/o.wav"], ["--out", "afile is a file"]),
    ("voice-missing", ["--voice", R + "/voices/nothere.wav"], ["--voice", "not found"]),
    ("voice-directory", ["--voice", R + "/voices/folder.wav"], ["--voice", "is a folder"]),
    ("voice-not-audio", ["--voice", R + "/voices/text.wav"], ["--voice", "text.wav", "not an audio file"]),
    ("voice-0-samples", ["--voice", R + "/voices/empty.wav"], ["--voice", "empty.wav", "no samples"]),
    ("voice-nan", ["--voice", R + "/voices/nan.wav"], ["--voice", "nan.wav", "NaN"]),
    ("voice-too-short", ["--voice", R + "/voices/short.wav"], ["--voice", "short.wav", "too short"]),
    ("out-is-the-voice", ["--voice", R + "/voices/good.wav", "--out", R + "/voices/good.wav"], ["is the --voice file"]),
    ("model-missing", ["--model", R + "/nothere/"], ["model folder not found"]),
    ("tokenizer-invalid", ["--model", R + "/badtok"], ["malformed tokenizer file", "badtok/tokenizer.json"]),
    ("tokenizer-no-start", ["--model", R + "/nostart"], ["nostart/tokenizer.json", "[START]"]),
    ("conds-corrupt", ["--model", R + "/badconds"], ["malformed conds file", "badconds/conds.pt"]),
    ("config-invalid", ["--model", R + "/badcfg"], ["malformed config file", "badcfg/config.json"]),
    ("weights-truncated", ["--model", R + "/trunc"], ["trunc/model.safetensors", "truncated"]),
    ("tensor-missing", ["--model", R + "/notensor"], ["notensor/model.safetensors", "'t3.text_emb.weight'"]),
    ("text-outside-vocab", ["--model", R + "/bigvocab"], ["--text", "token id", "[0, 100)"]),
    ("no-voice-anywhere", ["--model", R + "/noconds"], ["no built-in voice", "--voice"]),
]


@pytest.mark.parametrize("case_id,extra,expect", TTS_BAD, ids=[c[0] for c in TTS_BAD])
def test_tts_bad_input_is_one_line_exit_2_nothing_written(world, no_load, capsys, case_id, extra, expect):
    root = world["root"]
    defaults = {"--text": "Hello there.", "--out": f"{root}/out.wav", "--model": str(world["model"])}
    assert_refused_leaving_files_alone(root, command_argv("tts", root, defaults, extra), expect, capsys)


def test_tts_env_checkpoint_error_names_the_variable(world, no_load, capsys, monkeypatch):
    monkeypatch.setenv("CHATTERBOX_CKPT", str(world["root"] / "nothere"))
    rc, _, err = run_cli(["tts", "--text", "Hi.", "--out", str(world["root"] / "o.wav")], capsys)
    assert_one_error_line(rc, err, ["CHATTERBOX_CKPT", "nothere"])


def test_tts_unwritable_out_folder(world, no_load, capsys, monkeypatch):
    """A read-only folder (os.access is what is checked: as root a chmod would not stop the write)."""
    ro = world["root"] / "full"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real(p, mode, **k))
    rc, _, err = run_cli(["tts", "--text", "Hi.", "--out", str(ro / "o.wav"), "--model", str(world["model"])], capsys)
    assert_one_error_line(rc, err, ["--out", "not writable"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_tts_read_only_folder_for_real(world, no_load, capsys, tmp_path):
    tmp_path.chmod(0o555)
    try:
        rc, _, err = run_cli(["tts", "--text", "Hi.", "--out", str(tmp_path / "o.wav"), "--model", str(world["model"])],
                             capsys)
    finally:
        tmp_path.chmod(0o755)
    assert_one_error_line(rc, err, ["--out", "not writable"])


class _Loaded(Exception):
    pass


@pytest.mark.parametrize("extra", [
    [], ["--voice", "{root}/voices/good.wav"], ["--out", "{root}/new/sub/o.FLAC"],
    ["--min-p", "0", "--top-p", "1", "--exaggeration", "0", "--max-new-tokens", "4099", "--temperature", "1e-3"],
    ["--min-p", "1", "--max-new-tokens", "1", "--seed", str(2**64 - 1)],
], ids=["defaults", "voice", "flac-new-folder", "range-edges-low", "range-edges-high"])
def test_valid_input_reaches_the_model_load(world, capsys, monkeypatch, extra):
    """The edges of every range are accepted; nothing is written before the model loads."""
    seen = {}

    def fake_load(model_dir, cls, files=None):
        seen["files"] = files
        raise _Loaded

    monkeypatch.setattr(load_mod, "load_pipeline", fake_load)
    root = world["root"]
    before = snapshot(root)
    argv = ["tts", "--quiet", "--text", "Hello there.", "--out", f"{root}/o.wav", "--model", str(world["model"])]
    with pytest.raises(_Loaded):
        cli.main(argv + [a.replace("{root}", str(root)) for a in extra])
    assert seen["files"].text_vocab == 704 and seen["files"].conds is not None
    assert snapshot(root) == before


def test_short_voice_the_original_accepts_is_a_warning(world, capsys, monkeypatch):
    monkeypatch.setattr(load_mod, "load_pipeline", lambda *a, **k: (_ for _ in ()).throw(_Loaded()))
    with pytest.raises(_Loaded):
        cli.main(["tts", "--quiet", "--text", "Hi.", "--out", str(world["root"] / "o.wav"), "--model",
                  str(world["model"]), "--voice", str(world["root"] / "voices" / "short_ok.wav")])
    err = capsys.readouterr().err
    assert err.startswith("warning: --voice") and "0.05 s" in err


def test_debug_shows_the_traceback(world, no_load, capsys):
    rc, _, err = run_cli(["tts", "--text", "Hi.", "--out", str(world["root"] / "o.mp3"), "--debug"], capsys)
    assert rc == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: --out")


def test_ctrl_c_says_so_exit_130(world, capsys, monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(load_mod, "load_pipeline", interrupt)
    before = snapshot(world["root"])
    rc, _, err = run_cli(["tts", "--quiet", "--text", "Hi.", "--out", str(world["root"] / "o.wav"), "--model",
                          str(world["model"])], capsys)
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert snapshot(world["root"]) == before


# ----------------------------------------------------------------------------- tts: the run itself, faked


class _FakeTTS:
    sr = 24000

    def __init__(self, fail=None):
        from types import SimpleNamespace

        self.t3 = SimpleNamespace(hp=SimpleNamespace(stop_speech_token=6562))
        self.fail = fail
        self.calls = []

    def prepare_conditionals(self, path, exaggeration=0.5):
        self.calls.append(("conds", path))

    def generate(self, text, on_token=None, **kw):
        self.calls.append(("generate", kw))
        for i, t in enumerate([5, 6, 7, 6562]):
            on_token(i, t)
        if self.fail:
            raise self.fail
        return mx.zeros((1, 4800))


@pytest.mark.parametrize("name,fmt", [("o.wav", "WAV"), ("o.flac", "FLAC")])
def test_tts_writes_the_format_of_the_extension_one_progress_line(world, capsys, monkeypatch, tmp_path, name, fmt):
    fake = _FakeTTS()
    monkeypatch.setattr(load_mod, "load_pipeline", lambda *a, **k: fake)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = tmp_path / "sub" / name
    rc, stdout, err = run_cli(["tts", "--text", "Hi.", "--out", str(out), "--model", str(world["model"]), "--voice",
                               str(world["root"] / "voices" / "good.wav")], capsys)
    assert rc == 0, err
    assert sf.info(str(out)).format == fmt and sf.info(str(out)).samplerate == 24000
    assert sorted(p.name for p in out.parent.iterdir()) == [name]  # no hidden temporary left
    assert fake.calls[0][0] == "conds"  # the voice is read before the bar starts
    assert err.count("100%") == 1 and "4/4" in err, err
    assert "S3Gen" in stdout


def test_failed_synthesis_keeps_the_old_output(world, capsys, monkeypatch, tmp_path):
    out = tmp_path / "o.wav"
    out.write_bytes(b"old")
    monkeypatch.setattr(load_mod, "load_pipeline", lambda *a, **k: _FakeTTS(fail=KeyboardInterrupt()))
    rc, _, err = run_cli(["tts", "--quiet", "--text", "Hi.", "--out", str(out), "--model", str(world["model"])], capsys)
    assert rc == 130 and out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["o.wav"]


def test_write_audio_failure_leaves_nothing(tmp_path, monkeypatch):
    from mlx_impl import generate

    out = tmp_path / "o.wav"
    out.write_bytes(b"old")

    def broken_write(path, *a, **k):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sf, "write", broken_write)
    with pytest.raises(UsageError, match="No space left"):
        generate.write_audio(out, np.zeros(10, np.float32), 24000, "WAV")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["o.wav"]


# ----------------------------------------------------------------------------- convert: items 1 and 2

CONVERT_BAD = [
    ("out-not-empty", ["--out", "{root}/full"], ["--out", "not empty", "--force"]),
    ("out-is-file", ["--out", "{root}/afile"], ["--out", "is a file"]),
    ("out-under-a-file", ["--out", "{root}/afile/x"], ["afile is a file"]),
    ("out-is-the-checkpoint", ["--out", "{root}/hub", "--force"], ["is the input folder"]),
    ("out-holds-the-checkpoint", ["--out", "{root}", "--force"], ["holds the input folder"]),
    ("checkpoint-missing", ["--checkpoint", "{root}/nothere"], ["checkpoint folder not found", "nothere"]),
    ("tokenizer-invalid", ["--checkpoint", "{root}/hub_badtok"], ["malformed tokenizer file", "hub_badtok/tokenizer.json"]),
    ("conds-corrupt", ["--checkpoint", "{root}/hub_badconds"], ["malformed conds file", "hub_badconds/conds.pt"]),
    ("weights-truncated", ["--checkpoint", "{root}/hub_trunc"], ["malformed safetensors file", "t3_cfg.safetensors"]),
    # everything parses, the conversion itself fails: named by file, and the --force target survives
    ("tensor-missing-force", ["--out", "{root}/full", "--force"], ["conversion of", "ve.safetensors: missing source tensor"]),
]


@pytest.mark.parametrize("case_id,extra,expect", CONVERT_BAD, ids=[c[0] for c in CONVERT_BAD])
def test_convert_bad_input_is_one_line_exit_2_nothing_lost(world, capsys, monkeypatch, case_id, extra, expect):
    monkeypatch.delenv("CHATTERBOX_CKPT", raising=False)
    root = world["root"]
    args = {"--checkpoint": str(world["hub"]), "--out": f"{root}/converted"}
    extra = [a.replace("{root}", str(root)) for a in extra]
    flags = [a for a in extra if a == "--force"]
    extra = [a for a in extra if a != "--force"]
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    before = snapshot(root)
    rc, _, err = run_cli(["convert"] + [x for kv in args.items() for x in kv] + flags, capsys)
    assert_one_error_line(rc, err, expect)
    assert snapshot(root) == before
    assert (root / "full" / "keep.txt").read_text() == "precious"


def test_convert_env_checkpoint_error_names_the_variable(world, capsys, monkeypatch):
    monkeypatch.setenv("CHATTERBOX_CKPT", str(world["root"] / "nothere"))
    rc, _, err = run_cli(["convert", "--out", str(world["root"] / "c")], capsys)
    assert_one_error_line(rc, err, ["CHATTERBOX_CKPT", "nothere"])


def test_convert_write_folder_replaces_only_when_complete(tmp_path, monkeypatch):
    import shutil

    from mlx_impl.convert import cli as conv

    ck = _hub_checkpoint(tmp_path / "ck")
    tokenizer = ck / "tokenizer.json"
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("precious")
    weights = {"t3.x": mx.zeros((2,))}

    real_copy = shutil.copyfile
    monkeypatch.setattr(shutil, "copyfile", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(UsageError, match="No space left"):
        conv.write_folder(dest, tokenizer, weights, {}, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "out"] and (dest / "keep.txt").exists()

    monkeypatch.setattr(shutil, "copyfile", real_copy)
    conv.write_folder(dest, tokenizer, weights, {"a": 1}, None)
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "out"]
    # a new folder under new parents; a failure removes the parents it made
    monkeypatch.setattr(shutil, "copyfile", lambda *a, **k: (_ for _ in ()).throw(OSError(13, "Permission denied")))
    with pytest.raises(UsageError):
        conv.write_folder(tmp_path / "a" / "b" / "c", tokenizer, weights, {}, None)
    assert not (tmp_path / "a").exists()


def test_missing_tensor_names_its_file(world, tmp_path):
    """The hub layout's loader and the converter say which file lacks the tensor."""
    from mlx_impl.convert.cli import convert_state
    from mlx_impl.convert.common import ConversionError

    with pytest.raises(load_mod.ModelLoadError, match=r"ve\.safetensors: missing source tensor"):
        load_mod.load_hub_layout(world["hub"])
    with pytest.raises(ConversionError, match=r"^ve\.safetensors: missing source tensor"):
        convert_state({"ve": {}, "t3": {}, "s3gen": {}})


# ----------------------------------------------------------------------------- items 1 and 3: one rule set, every path


def _small_t3():
    from mlx_impl.t3 import T3, T3Config
    from mlx_impl.t3.llama_configs import LLAMA_CONFIGS

    cfg = dict(LLAMA_CONFIGS["Llama_520M"], hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=4, head_dim=16, intermediate_size=128)
    return T3(T3Config(704, llama_config=cfg))


@pytest.fixture(scope="module")
def t3():
    return _small_t3()


GOOD = dict(temperature=0.8, top_p=1.0, min_p=0.05, repetition_penalty=1.2, cfg_weight=0.5)
SAMPLING_BAD = [
    ("temperature", 0.0), ("temperature", -1.0), ("temperature", math.inf), ("temperature", math.nan),
    ("min_p", 1.5), ("min_p", -0.01), ("top_p", 0.0), ("top_p", 1.01), ("repetition_penalty", 0.0),
    ("repetition_penalty", -1.2), ("cfg_weight", 0.0), ("cfg_weight", -1.0),
]


def _decode_paths(t3):
    from mlx_impl.t3.inference import fast_decode
    from mlx_impl.t3.inference.sampling import GreedyDraw

    embeds = mx.zeros((2, 3, t3.dim))

    def mirror(**kw):
        return t3.inference_from_embeds(embeds, draw=GreedyDraw(), on_step=lambda i, o: None, **kw)

    def fast(**kw):
        return t3.inference_from_embeds(embeds, draw=GreedyDraw(), **kw)

    def fast_direct(**kw):
        return fast_decode.fast_decode(t3, embeds, draw=GreedyDraw(), **kw)

    return {"mirror": mirror, "fast": fast, "fast_decode": fast_direct}


@pytest.mark.parametrize("name,value", SAMPLING_BAD, ids=[f"{n}={v}" for n, v in SAMPLING_BAD])
def test_sampling_ranges_are_the_same_on_every_path(t3, monkeypatch, name, value):
    from mlx_impl.tts import ChatterboxTTS

    # any model work would show: the backbone must not run
    monkeypatch.setattr(type(t3), "speech_logits", lambda *a, **k: pytest.fail("decoding ran"))
    for path, run in _decode_paths(t3).items():
        with pytest.raises(UsageError, match=rf"^{name} "):
            run(max_new_tokens=5, **dict(GOOD, **{name: value}))
    tts = ChatterboxTTS(t3, None, None, tokenizer=None, conds=None)
    with pytest.raises(UsageError, match=rf"^{name} "):
        tts.generate("Hi.", max_new_tokens=5, **dict(GOOD, **{name: value}))
    with pytest.raises(UsageError, match=rf"^--{name.replace('_', '-')} "):
        validate.check_sampling({name: value}, cli=True)


@pytest.mark.parametrize("n", [0, -1, 4100, 2.5])
def test_max_new_tokens_within_the_speech_position_table_on_every_path(t3, monkeypatch, n):
    monkeypatch.setattr(type(t3), "speech_logits", lambda *a, **k: pytest.fail("decoding ran"))
    for path, run in _decode_paths(t3).items():
        with pytest.raises(UsageError, match="max_new_tokens .*4099"):
            run(max_new_tokens=n, **GOOD)


def test_exaggeration_is_checked_before_conditioning(t3):
    from mlx_impl.tts import ChatterboxTTS

    tts = ChatterboxTTS(t3, None, None, tokenizer=None, conds=None)
    with pytest.raises(UsageError, match="^exaggeration "):
        tts.generate("Hi.", exaggeration=-0.1)
    with pytest.raises(UsageError, match="^exaggeration "):
        tts.prepare_conditionals("any.wav", exaggeration=-1)


def test_range_edges_are_accepted():
    validate.check_sampling(dict(temperature=1e-6, min_p=0.0, top_p=1.0, repetition_penalty=1e-3, cfg_weight=1e-3,
                                 exaggeration=0.0))
    validate.check_sampling(dict(min_p=1.0, top_p=1e-6, temperature=100.0))
    assert validate.check_max_new_tokens(1, 4100) == 1 and validate.check_max_new_tokens(4099, 4100) == 4099


def test_table_sizes_used_before_the_model_is_built_are_t3s(t3):
    from mlx_impl.t3 import T3Config

    assert validate.position_tables(T3Config.english_only()) == (validate.TEXT_POSITIONS, validate.SPEECH_POSITIONS)
    assert (t3.text_positions, t3.speech_positions) == validate.position_tables(t3.hp)


def test_embedding_lookups_check_their_range(t3):
    from mlx_impl.t3.modules.cond_enc import T3Cond

    cond = T3Cond(speaker_emb=mx.zeros((1, 256)), cond_prompt_speech_tokens=mx.zeros((1, 10), dtype=mx.int32),
                  emotion_adv=0.5 * mx.ones((1, 1, 1)))

    def text(n, fill=5):
        row = np.concatenate([[255], np.full(n, fill), [0]]).astype(np.int32)
        return np.stack([row, row])

    t3.check_text_tokens(text(2048))  # the whole table: fine
    with pytest.raises(UsageError, match="2051 tokens long; T3's position table for it has 2050 rows"):
        t3.inference(t3_cond=cond, text_tokens=text(2049), max_new_tokens=2, **GOOD)
    with pytest.raises(UsageError, match=r"token id 704, outside the embedding table's \[0, 704\)"):
        t3.inference(t3_cond=cond, text_tokens=text(3, fill=704), max_new_tokens=2, **GOOD)
    for bad, match in ((np.full((1, 4), 8194), "token id 8194"), (np.full((1, 4), -1), "token id -1"),
                       (np.zeros((1, 4101), np.int32), "4101 tokens long")):
        c = T3Cond(speaker_emb=mx.zeros((1, 256)), cond_prompt_speech_tokens=mx.array(bad.astype(np.int32)))
        with pytest.raises(UsageError, match=match):
            t3.prepare_conditioning(c)
    with pytest.raises(IndexError, match="speech position 4100"):
        t3.speech_token_embed(5, 4100)
    t3.speech_token_embed(5, 4099)


# ----------------------------------------------------------------------------- item 4: help texts


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                yield name, p
                for sub_name, sp in _subparsers(p):
                    yield f"{name} {sub_name}", sp


@pytest.mark.parametrize("command", ["tts", "convert", "checkpoint synth", "export"])
def test_every_option_has_help_with_its_default_and_range(command):
    parsers = dict(_subparsers(cli.build_parser()))
    p = parsers[command]
    for action in p._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings}: no help text"
    if command == "tts":
        helps = {a.dest: a.help % {"default": a.default} for a in p._actions}
        for name, rule in validate.RULES.items():
            assert rule.describe() in helps[name] and f"default {validate.DEFAULTS[name]}" in helps[name], helps[name]
        assert "[1, 4099]" in helps["max_new_tokens"] and ".wav or .flac" in helps["out"]


def test_top_level_debug_option():
    assert "--debug" in cli.build_parser().format_help()
