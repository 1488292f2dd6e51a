"""Issue 20 (items 5 and 6): `tts` on a Chatterbox Turbo folder (chatterbox-parity tts --model turbo,
python -m mlx_impl.generate --model TURBO_DIR) and `convert` of a Turbo checkpoint: every bad input is one
error line naming it, exit status 2, before any weights load, and the file system is left as it was;
Turbo runs with its own generate()'s options and defaults; the English and Turbo loaders (hub and MLX
layouts) and the VC loader name a folder of the other model.

Fast: the model folders are stand-ins (the GPT-2 tokenizer reference/gpt2_tokenizer.py writes, weight
files holding only the tensors the checks read, a small conditioning file); `load_turbo` /
`load_pipeline` are replaced by functions that fail the test or record the call.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from mlx_impl import load as load_mod
from mlx_impl import tts_turbo
from mlx_impl.load import ModelLoadError
from test_cli_validation import (R, _conds, _hub_checkpoint, _mlx_model, _safetensors, assert_one_error_line,
                                 assert_refused_leaving_files_alone, command_argv, forbid_loading, run_cli, snapshot)

TURBO_CONFIG = '{"model_type": "chatterbox_turbo", "t3": {"text_tokens_dict_size": 50276}}\n'


def _turbo_hub(d: Path, tok_src: Path, *, conds=True, weights=tts_turbo.TURBO_WEIGHTS) -> Path:
    """The hub's Turbo layout: the three weight files (T3's text table the only real-sized tensor), the
    GPT-2 tokenizer files, the built-in voice."""
    d.mkdir(parents=True)
    for name in weights:
        tensors = {"text_emb.weight": np.zeros((50276, 1), np.float32)} if name.startswith("t3") else \
            {"x": np.zeros(2, np.float32)}
        _safetensors(d / name, tensors)
    for f in tok_src.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    if conds:
        _conds(d / "conds.safetensors")
    return d


def _turbo_mlx(d: Path, tok_src: Path) -> Path:
    """Turbo's MLX layout (config.json model_type chatterbox_turbo), header-only weights."""
    d.mkdir(parents=True)
    _safetensors(d / "model.safetensors", {"t3.text_emb.weight": np.zeros((50276, 1), np.float32)})
    (d / "config.json").write_text(TURBO_CONFIG)
    (d / "tokenizer").mkdir()
    for f in tok_src.iterdir():
        (d / "tokenizer" / f.name).write_bytes(f.read_bytes())
    _conds(d / "conds.safetensors")
    return d


def _clip(path: Path, seconds: float, sr: int = 24000) -> Path:
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(round(seconds * sr)))).astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from reference.gpt2_tokenizer import write_gpt2_tokenizer

    root = tmp_path_factory.mktemp("turbo_cli")
    tok = root / "_tokenizer"
    tok.mkdir()
    write_gpt2_tokenizer(tok)
    w = {"root": root, "turbo": _turbo_hub(root / "turbo", tok), "mlx": _turbo_mlx(root / "turbo_mlx", tok),
         "novoice": _turbo_hub(root / "novoice", tok, conds=False),
         "english": _mlx_model(root / "english")}
    _turbo_hub(root / "no_meanflow", tok, weights=("ve.safetensors", "t3_turbo_v1.safetensors"))
    t = _turbo_hub(root / "no_tokenizer", tok)
    (t / "vocab.json").unlink()
    e = _hub_checkpoint(root / "english_with_meanflow")
    _safetensors(e / "s3gen_meanflow.safetensors", {"x": np.zeros(2, np.float32)})
    v = root / "clips"
    v.mkdir()
    _clip(v / "six.wav", 6.0)
    _clip(v / "five.wav", 5.0)
    _clip(v / "six_16k.wav", 6.0, sr=16000)
    return w


@pytest.fixture
def no_load(monkeypatch):
    forbid_loading(monkeypatch, (tts_turbo, "load_turbo"), (load_mod, "load_pipeline"))


TURBO_BAD = [
    # (id, extra argv, substrings of the one error line)
    ("turbo-voice-5s", ["--voice", R + "/clips/five.wav"], ["--voice", "five.wav", "5.00 s", "longer than 5 s"]),
    ("turbo-cfg-weight", ["--cfg-weight", "0.5"], ["--cfg-weight 0.5", "Chatterbox Turbo has no classifier-free"]),
    ("turbo-exaggeration", ["--exaggeration", "0.7"], ["--exaggeration 0.7", "no emotion exaggeration"]),
    ("turbo-min-p", ["--min-p", "0.05"], ["--min-p 0.05", "no min-p"]),
    ("turbo-top-k-negative", ["--top-k", "-1"], ["--top-k -1", ">= 0"]),
    ("turbo-top-p-0", ["--top-p", "0"], ["--top-p", "(0, 1]"]),
    ("turbo-temperature-0", ["--temperature", "0"], ["--temperature", "> 0"]),
    ("turbo-max-new-tokens-0", ["--max-new-tokens", "0"], ["--max-new-tokens 0", ">= 1"]),
    # 8196 positions less 1 speaker + 150 prompt (the stand-in voice) + 3 text + 1 start, + 1
    ("turbo-max-new-tokens-past-positions", ["--max-new-tokens", "8100"], ["--max-new-tokens 8100", "[1, 8042]",
                                                                           "8196 positions"]),
    ("turbo-text-past-tokenizer", ["--text", "word " * 1100], ["--text is", "tokens after tokenisation", "cuts it at 1024"]),
    ("turbo-no-meanflow", ["--model", R + "/no_meanflow"], ["no_meanflow", "not a Chatterbox Turbo folder",
                                                           "s3gen_meanflow.safetensors (Turbo's MeanFlow S3Gen)"]),
    ("turbo-no-tokenizer", ["--model", R + "/no_tokenizer"], ["no_tokenizer", "GPT-2 tokenizer", "could not be loaded"]),
    ("turbo-no-voice-anywhere", ["--model", R + "/novoice"], ["novoice has no built-in voice", "--voice"]),
    ("turbo-english-hub-folder-with-meanflow", ["--model", R + "/english_with_meanflow"],
     ["english_with_meanflow", "missing t3_turbo_v1.safetensors", "English Chatterbox's t3_cfg.safetensors",
      "ChatterboxTTS"]),
    ("turbo-only-top-k-on-english", ["--model", R + "/english", "--top-k", "50"],
     ["--top-k 50", "English model has no top-k"]),
]


def _argv(world, extra):
    root = world["root"]
    return command_argv("tts", root, {"--text": "Hi.", "--out": f"{root}/out.wav", "--model": str(world["turbo"])},
                        extra)


@pytest.mark.parametrize("case_id,extra,expect", TURBO_BAD, ids=[c[0] for c in TURBO_BAD])
def test_turbo_tts_bad_input_is_one_line_exit_2_nothing_written(world, no_load, capsys, case_id, extra, expect):
    assert_refused_leaving_files_alone(world["root"], _argv(world, extra), expect, capsys)


def test_turbo_tts_long_text_is_one_line_no_tokenizer_warning(world, no_load, capsys, caplog):
    """transformers' own warning about a sequence past model_max_length would be a second line on
    stderr (a logging record: pytest's log capture holds it, a terminal shows it)."""
    rc, _, err = run_cli(_argv(world, ["--text", "word " * 1100]), capsys)
    assert_one_error_line(rc, err, ["--text is", "cuts it at 1024"])
    assert not [r for r in caplog.records if r.levelno >= 30], [r.getMessage() for r in caplog.records]


def test_turbo_tts_standalone_entry_point_same_errors(world, no_load, capsys):
    from mlx_impl import generate

    rc = generate.main(_argv(world, ["--cfg-weight", "0.5"])[1:])
    _, err = capsys.readouterr()
    assert_one_error_line(rc, err, ["--cfg-weight", "Chatterbox Turbo"])


class _Loaded(Exception):
    pass


@pytest.mark.parametrize("model,extra", [("turbo", []), ("turbo", ["--voice", R + "/clips/six_16k.wav"]),
                                         ("mlx", []), ("turbo", ["--max-new-tokens", "8042", "--top-k", "0"])],
                         ids=["turbo-hub-built-in-voice", "turbo-hub-voice-over-5s", "turbo-mlx-layout",
                              "turbo-range-edges"])
def test_turbo_tts_valid_input_reaches_the_turbo_load(world, capsys, monkeypatch, model, extra):
    """A Turbo folder (the hub's layout or Turbo's MLX layout) is loaded by the Turbo loader, with the
    files checked; nothing is written before."""
    seen = {}

    def fake_load(model_dir, cls, files=None):
        seen.update(cls=cls, files=files)
        raise _Loaded

    monkeypatch.setattr(tts_turbo, "load_turbo", fake_load)
    monkeypatch.setattr(load_mod, "load_pipeline", lambda *a, **k: pytest.fail("the English loader ran"))
    monkeypatch.delenv("CHATTERBOX_CKPT", raising=False)
    before = snapshot(world["root"])
    with pytest.raises(_Loaded):
        from parity import cli

        cli.main(_argv(world, ["--model", str(world[model])] + extra))
    assert seen["cls"] is tts_turbo.ChatterboxTurboTTS
    assert seen["files"].kind == ("mlx" if model == "mlx" else "hub") and seen["files"].text_vocab == 50276
    assert seen["files"].conds is not None and len(seen["files"].tokenizer) == 50276
    assert snapshot(world["root"]) == before


def test_turbo_tts_model_name_turbo_is_the_synthetic_turbo_checkpoint(world, capsys, monkeypatch):
    """`chatterbox-parity tts --model turbo`: the synthetic Turbo checkpoint, made to exist (ensure) only
    after the cheap checks passed, then checked as a Turbo folder."""
    import reference.synth_turbo_checkpoint as synth
    from parity import cli

    calls = []
    monkeypatch.setattr(cli, "DEFAULT_TURBO_CKPT", world["turbo"])
    monkeypatch.setattr(synth, "ensure_turbo_checkpoint", lambda path: calls.append(Path(path)))
    monkeypatch.setattr(tts_turbo, "load_turbo", lambda *a, files=None, **k: (_ for _ in ()).throw(_Loaded()))
    monkeypatch.delenv("CHATTERBOX_CKPT", raising=False)
    rc, _, err = run_cli(_argv(world, ["--model", "turbo", "--cfg-weight", "1"]), capsys)
    assert_one_error_line(rc, err, ["--cfg-weight", "Chatterbox Turbo"])
    assert calls == []  # refused before the checkpoint is built
    with pytest.raises(_Loaded):
        cli.main(_argv(world, ["--model", "turbo"]))
    assert calls == [world["turbo"]]


class _FakeTurbo:
    sr = 24000

    def __init__(self, fail=None):
        self.t3 = SimpleNamespace(hp=SimpleNamespace(stop_speech_token=6562))
        self.fail, self.calls = fail, []

    def prepare_conditionals(self, path, **kw):
        self.calls.append(("conds", path, kw))

    def generate(self, text, on_token=None, **kw):
        self.calls.append(("generate", text, kw))
        for i, t in enumerate([5, 6, 7, 6562]):
            on_token(i, t)
        if self.fail:
            raise self.fail
        return mx.zeros((1, 4800))


@pytest.mark.parametrize("extra,expect", [
    ([], dict(temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2, max_gen_len=1000)),
    (["--temperature", "0.5", "--top-k", "20", "--top-p", "0.9", "--repetition-penalty", "1.5", "--max-new-tokens", "51",
      "--greedy"], dict(temperature=0.5, top_k=20, top_p=0.9, repetition_penalty=1.5, max_gen_len=50)),
], ids=["turbo-defaults", "turbo-options-given"])
def test_turbo_tts_runs_generate_with_turbos_options(world, capsys, monkeypatch, tmp_path, extra, expect):
    """ChatterboxTurboTTS.generate()'s defaults (max_gen_len: --max-new-tokens - 1, the steps after the
    first draw); the voice prepared before the bar; one progress bar to 100%; the seed set; a 24 kHz
    file and no temporary beside it."""
    from mlx_impl.t3.inference.sampling import GreedyDraw, MLXDraw

    fake, seeds = _FakeTurbo(), []
    monkeypatch.setattr(tts_turbo, "load_turbo", lambda *a, **k: fake)
    monkeypatch.setattr(mx.random, "seed", lambda s: seeds.append(s))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = tmp_path / "sub" / "o.flac"
    rc, stdout, err = run_cli(["tts", "--text", "Hi.", "--out", str(out), "--model", str(world["turbo"]), "--voice",
                               str(world["root"] / "clips" / "six.wav"), "--seed", "7"] + extra, capsys)
    assert rc == 0, err
    assert fake.calls[0] == ("conds", str(world["root"] / "clips" / "six.wav"), {})
    kind, text, kw = fake.calls[1]
    assert kind == "generate" and text == "Hi."
    assert {k: kw[k] for k in expect} == expect and set(kw) == set(expect) | {"draw"}
    assert isinstance(kw["draw"], GreedyDraw if "--greedy" in extra else MLXDraw)
    assert seeds == [7]
    assert sf.info(str(out)).format == "FLAC" and sf.info(str(out)).samplerate == 24000
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.flac"]
    assert err.count("100%") == 1 and "4/4" in err, err
    assert "wrote" in stdout and "S3Gen" in stdout


def test_turbo_tts_failed_synthesis_keeps_the_old_output(world, capsys, monkeypatch, tmp_path):
    out = tmp_path / "o.wav"
    out.write_bytes(b"old")
    monkeypatch.setattr(tts_turbo, "load_turbo", lambda *a, **k: _FakeTurbo(fail=RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        run_cli(["tts", "--quiet", "--text", "Hi.", "--out", str(out), "--model", str(world["turbo"])], capsys)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["o.wav"]
    monkeypatch.setattr(tts_turbo, "load_turbo", lambda *a, **k: _FakeTurbo(fail=KeyboardInterrupt()))
    rc, _, err = run_cli(["tts", "--quiet", "--text", "Hi.", "--out", str(out), "--model", str(world["turbo"])], capsys)
    assert rc == 130 and out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["o.wav"]


# ----------------------------------------------------------------------------- the loaders, each way round


def test_turbo_folders_given_to_the_english_loader_are_named(world):
    """The English loader (ChatterboxTTS.from_pretrained's check_model_dir) on Turbo's hub layout and on
    Turbo's MLX layout: one error line naming the file and ChatterboxTurboTTS."""
    with pytest.raises(ModelLoadError) as e:
        load_mod.check_model_dir(world["turbo"])
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in ("t3_cfg.safetensors", "Chatterbox Turbo", "t3_turbo_v1.safetensors",
                                                     "ChatterboxTurboTTS")), msg
    with pytest.raises(ModelLoadError) as e:
        load_mod.check_model_dir(world["mlx"])
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in (str(world["mlx"] / "config.json"), "'chatterbox_turbo'",
                                                     "ChatterboxTurboTTS")), msg


def test_turbo_loader_given_english_folders_names_them(world, tmp_path):
    """The Turbo loader on the English hub layout and on the English MLX layout."""
    hub = tmp_path / "english_hub"
    hub.mkdir()
    for name in ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json"):
        (hub / name).write_bytes(b"")
    for folder, words in ((hub, ["not a Chatterbox Turbo folder", "t3_turbo_v1.safetensors", "s3gen_meanflow",
                                 "t3_cfg.safetensors", "ChatterboxTTS"]),
                          (world["english"], ["config.json", "not 'chatterbox_turbo'", "ChatterboxTTS"])):
        with pytest.raises(ModelLoadError) as e:
            tts_turbo.check_turbo_dir(folder)
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_turbo_mlx_folder_given_to_vc_is_one_error_line(world, no_load, capsys, monkeypatch):
    monkeypatch.setattr(load_mod, "load_vc", lambda *a, **k: pytest.fail("loaded"))
    clip = str(world["root"] / "clips" / "six.wav")
    before = snapshot(world["root"])
    rc, _, err = run_cli(["vc", "--quiet", "--source", clip, "--target-voice", clip, "--out",
                          str(world["root"] / "o.wav"), "--model", str(world["mlx"])], capsys)
    assert_one_error_line(rc, err, [str(world["mlx"] / "config.json"), "Chatterbox Turbo"])
    assert snapshot(world["root"]) == before


# ----------------------------------------------------------------------------- convert on a Turbo checkpoint


@pytest.mark.parametrize("case_id,model,expect", [
    ("turbo-convert-no-meanflow", "no_meanflow", ["no_meanflow", "s3gen_meanflow.safetensors (Turbo's MeanFlow S3Gen)"]),
    ("turbo-convert-no-tokenizer", "no_tokenizer", ["no_tokenizer", "GPT-2 tokenizer"]),
    # every file parses, the conversion itself fails: named by file
    ("turbo-convert-tensor-missing", "turbo", ["conversion of", "ve.safetensors: missing source tensor"]),
], ids=["turbo-convert-no-meanflow", "turbo-convert-no-tokenizer", "turbo-convert-tensor-missing"])
def test_turbo_convert_bad_input_is_one_line_exit_2_nothing_written(world, capsys, monkeypatch, case_id, model, expect):
    monkeypatch.delenv("CHATTERBOX_CKPT", raising=False)
    before = snapshot(world["root"])
    rc, _, err = run_cli(["convert", "--checkpoint", str(world["root"] / model), "--out",
                          str(world["root"] / "converted")], capsys)
    assert_one_error_line(rc, err, expect)
    assert snapshot(world["root"]) == before


def test_turbo_convert_is_strict_counts_per_component(monkeypatch):
    """convert/turbo.py on a small Turbo-shaped state (2 GPT-2 blocks): T3's 7 + 3 + 12 per block, the
    named drops with their reasons, nothing else dropped; an unknown tensor is an error naming the file
    and the tensor."""
    from mlx_impl.convert import s3gen as s3gen_conv
    from mlx_impl.convert import turbo
    from mlx_impl.convert import voice_encoder as ve_conv
    from mlx_impl.convert.common import ConversionError
    from mlx_impl.convert.t3_turbo import BACKBONE_KEYS, BLOCK_KEYS, T3_KEYS

    t3 = {k: np.zeros((2, 2), np.float32) for k in T3_KEYS}
    t3.update({f"tfmr.{k}": np.zeros((2, 2), np.float32) for k in BACKBONE_KEYS})
    t3.update({f"tfmr.h.{i}.{k}": np.zeros((2, 3), np.float32) for i in range(2) for k in BLOCK_KEYS})
    t3["tfmr.wte.weight"] = np.zeros((2, 2), np.float32)
    t3["tfmr.h.0.attn.masked_bias"] = np.zeros((1,), np.float32)
    states = {"ve": {}, "t3": t3, "s3gen": {}}
    with pytest.raises(ConversionError, match=r"^ve\.safetensors: missing source tensor"):
        turbo.convert_turbo_state(states)

    # the S3Gen and VoiceEncoder converters are the English ones (tested there): stand-ins here
    monkeypatch.setattr(ve_conv, "sanitize", lambda s: {"lstm.w": np.zeros(1)})
    with pytest.raises(ConversionError, match=r"^t3_turbo_v1\.safetensors: .*tfmr\.h\.0\.extra"):
        turbo.convert_turbo_state({**states, "t3": {**t3, "tfmr.h.0.extra": t3["text_emb.weight"]}})
    with pytest.raises(ConversionError, match=r"^s3gen_meanflow\.safetensors: s3gen: no source tensors"):
        turbo.convert_turbo_state(states)
    monkeypatch.setattr(s3gen_conv, "sanitize", lambda s: {"flow.a": np.zeros(1), "tokenizer.b": np.zeros(1)})
    monkeypatch.setattr(s3gen_conv, "ignored", lambda s: {"tokenizer.window": "recomputed"})
    weights, ignored, counts = turbo.convert_turbo_state(states)
    assert counts == dict(source={"ve": 0, "t3": len(t3), "s3gen": 0}, t3_own=7, t3_backbone=3 + 2 * 12, t3_blocks=2)
    assert turbo.count_by_prefix(weights) == {"ve.": 1, "t3.": 7 + 27, "s3gen.": 1, "s3_tokenizer.": 1}
    assert set(ignored) == {"t3.tfmr.wte.weight", "t3.tfmr.h.0.attn.masked_bias", "s3gen.tokenizer.window"}
    assert "from_local" in ignored["t3.tfmr.wte.weight"] and "masking" in ignored["t3.tfmr.h.0.attn.masked_bias"]
    t3_out = [k for k in weights if k.startswith("t3.")] + [k for k in ignored if k.startswith("t3.")]
    assert len(t3_out) == len(t3)  # every source tensor of T3 converted or dropped by name
