"""Issue 21: `tts` on a Chatterbox Multilingual folder (chatterbox-parity tts --model mtl --language xx,
python -m mlx_impl.generate --model MTL_DIR --language xx) and the loaders: every bad input is one error
line naming it, exit status 2, before any weights load, and the file system is left as it was; the
multilingual model runs with its own generate()'s defaults; the English and multilingual loaders (hub
and MLX layouts) name a folder of the other model.

Fast: the model folders are stand-ins (the multilingual tokenizer and Cangjie stand-ins of
reference/mtl_data.py, weight files holding only the tensors the checks read, a small conditioning
file); `load_mtl` / `load_pipeline` are replaced by functions that fail the test or record the call.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mlx_impl import generate
from mlx_impl import load as load_mod
from mlx_impl import mtl_tts
from mlx_impl.load import ModelLoadError
from tests.mtl_front_end import hub_offline_with_pkuseg
from test_cli_validation import (R, _conds, _hub_checkpoint, _mlx_model, _safetensors, assert_one_error_line,
                                 assert_refused_leaving_files_alone, command_argv, forbid_loading, run_cli, snapshot)

MTL_CONFIG = '{"model_type": "chatterbox_multilingual", "t3": {"text_tokens_dict_size": 2454}}\n'


def _pt(path: Path) -> None:
    import torch

    torch.save({"x": torch.zeros(2)}, path)


def _front_end(d: Path) -> None:
    from reference import mtl_data

    mtl_data.write_front_end_files(d)


def _mtl_hub(d: Path, *, skip=(), conds=True) -> Path:
    """The hub's multilingual layout: ve.pt, s3gen.pt (archives), T3 with its 2454-row text table, the
    tokenizer JSON and Cangjie stand-ins, the built-in voice."""
    d.mkdir(parents=True)
    _front_end(d)
    for name in ("ve.pt", "s3gen.pt"):
        _pt(d / name)
    _safetensors(d / mtl_tts.T3_WEIGHTS, {"text_emb.weight": np.zeros((2454, 1), np.float32)})
    for name in skip:
        (d / name).unlink()
    if conds:
        _conds(d / "conds.safetensors")
    return d


def _mtl_mlx(d: Path) -> Path:
    d.mkdir(parents=True)
    _front_end(d)
    _safetensors(d / "model.safetensors", {"t3.text_emb.weight": np.zeros((2454, 1), np.float32)})
    (d / "config.json").write_text(MTL_CONFIG)
    _conds(d / "conds.safetensors")
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from reference import mtl_data

    root = tmp_path_factory.mktemp("mtl_cli")
    with hub_offline_with_pkuseg(mtl_data.write_pkuseg_home(root / "_pkuseg")):
        w = {"root": root, "mtl": _mtl_hub(root / "mtl"), "mlx": _mtl_mlx(root / "mtl_mlx"),
             "english": _mlx_model(root / "english"), "english_hub": _hub_checkpoint(root / "english_hub")}
        w["no_t3"] = _mtl_hub(root / "no_t3", skip=(mtl_tts.T3_WEIGHTS,))
        w["no_tokenizer"] = _mtl_hub(root / "no_tokenizer", skip=(mtl_tts.TOKENIZER_FILE,))
        _mtl_hub(root / "novoice", conds=False)
        yield w


@pytest.fixture
def no_load(monkeypatch):
    forbid_loading(monkeypatch, (mtl_tts, "load_mtl"), (load_mod, "load_pipeline"))


MTL_BAD = [
    # (id, extra argv, substrings of the one error line)
    ("mtl-unknown-language", ["--language", "xx"], ["--language xx", "Unsupported language_id 'xx'", "ar, da, de"]),
    ("mtl-no-language", [], ["--language is required", "Chatterbox Multilingual", "zh"]),
    ("mtl-top-k", ["--language", "fr", "--top-k", "5"], ["--top-k 5", "no top-k"]),
    ("mtl-repetition-penalty-0", ["--language", "fr", "--repetition-penalty", "0"], ["--repetition-penalty"]),
    ("mtl-no-t3", ["--language", "fr", "--model", R + "/no_t3"],
     ["no_t3", "not a Chatterbox Multilingual folder", "missing t3_mtl23ls_v2.safetensors"]),
    ("mtl-no-tokenizer", ["--language", "fr", "--model", R + "/no_tokenizer"],
     ["no_tokenizer", "missing grapheme_mtl_merged_expanded_v1.json"]),
    ("mtl-no-voice-anywhere", ["--language", "fr", "--model", R + "/novoice"], ["novoice has no built-in voice", "--voice"]),
    ("mtl-language-on-english", ["--language", "fr", "--model", R + "/english"],
     ["--language fr", "English Chatterbox speaks English only", "t3_mtl23ls_v2.safetensors"]),
]


def _argv(world, extra):
    root = world["root"]
    return command_argv("tts", root, {"--text": "Bonjour.", "--out": f"{root}/out.wav", "--model": str(world["mtl"])},
                        extra)


@pytest.mark.parametrize("case_id,extra,expect", MTL_BAD, ids=[c[0] for c in MTL_BAD])
def test_mtl_tts_bad_input_is_one_line_exit_2_nothing_written(world, no_load, capsys, case_id, extra, expect):
    assert_refused_leaving_files_alone(world["root"], _argv(world, extra), expect, capsys)


def test_mtl_tts_standalone_entry_point_same_errors(world, no_load, capsys):
    rc = generate.main(_argv(world, ["--language", "xx"])[1:])
    _, err = capsys.readouterr()
    assert_one_error_line(rc, err, ["--language xx", "Unsupported language_id"])


def test_mtl_language_refused_on_turbo():
    with pytest.raises(generate.UsageError, match="--language fr: Chatterbox Turbo speaks English only"):
        generate.turbo_options(SimpleNamespace(language="fr"), None)


class _Loaded(Exception):
    pass


@pytest.mark.parametrize("model", ["mtl", "mlx"], ids=["mtl-hub-layout", "mtl-mlx-layout"])
def test_mtl_tts_valid_input_reaches_the_multilingual_load(world, capsys, monkeypatch, model):
    """A multilingual folder (hub or MLX layout) goes to the multilingual loader with its files checked and
    generate()'s defaults (repetition penalty 2.0); the language lower-cased as generate() passes it on."""
    seen = {}

    def fake_load(model_dir, cls, files=None):
        seen.update(cls=cls, files=files)
        raise _Loaded

    monkeypatch.setattr(mtl_tts, "load_mtl", fake_load)
    monkeypatch.setattr(load_mod, "load_pipeline", lambda *a, **k: pytest.fail("the English loader ran"))
    monkeypatch.delenv("CHATTERBOX_CKPT", raising=False)
    plans = []
    real_check = generate.check_tts_args
    monkeypatch.setattr(generate, "check_tts_args", lambda *a, **k: plans.append(real_check(*a, **k)) or plans[-1])
    before = snapshot(world["root"])
    with pytest.raises(_Loaded):
        from parity import cli

        cli.main(_argv(world, ["--model", str(world[model]), "--language", "FR"]))
    assert seen["cls"] is mtl_tts.ChatterboxMultilingualTTS
    assert seen["files"].kind == ("mlx" if model == "mlx" else "hub") and seen["files"].text_vocab == 2454
    assert seen["files"].conds is not None
    assert plans[0].kind == "mtl" and plans[0].options["language"] == "fr"
    assert plans[0].options["repetition_penalty"] == 2.0 and plans[0].options["max_new_tokens"] == 1000
    assert snapshot(world["root"]) == before


def test_mtl_model_name_is_the_synthetic_multilingual_checkpoint(world, capsys, monkeypatch):
    """`chatterbox-parity tts --model mtl`: the synthetic multilingual checkpoint, made to exist only after
    the cheap checks passed (an unknown language is refused first)."""
    import reference.mtl_synth_checkpoint as synth
    from parity import cli

    calls = []
    monkeypatch.setattr(cli, "DEFAULT_MTL_CKPT", world["mtl"])
    monkeypatch.setattr(synth, "ensure_mtl_checkpoint", lambda path: calls.append(Path(path)))
    monkeypatch.setattr(mtl_tts, "load_mtl", lambda *a, files=None, **k: (_ for _ in ()).throw(_Loaded()))
    monkeypatch.delenv("CHATTERBOX_CKPT", raising=False)
    rc, _, err = run_cli(_argv(world, ["--model", "mtl", "--language", "xx"]), capsys)
    assert_one_error_line(rc, err, ["--language xx", "Unsupported language_id"])
    assert calls == []
    with pytest.raises(_Loaded):
        cli.main(_argv(world, ["--model", "mtl", "--language", "de"]))
    assert calls == [world["mtl"]]


@pytest.mark.parametrize("folder,loader,words", [
    ("mtl", "english", ["t3_mtl23ls_v2.safetensors", "load it with ChatterboxMultilingualTTS"]),
    ("mlx", "english", ["config.json", "chatterbox_multilingual", "load it with ChatterboxMultilingualTTS"]),
    ("english_hub", "mtl", ["not a Chatterbox Multilingual folder", "English Chatterbox's t3_cfg.safetensors",
                            "load it with ChatterboxTTS"]),
    ("english", "mtl", ["config.json", "'chatterbox'", "not 'chatterbox_multilingual'", "ChatterboxTTS"]),
    ("no_t3", "mtl", ["missing t3_mtl23ls_v2.safetensors"]),
    ("no_tokenizer", "mtl", ["missing grapheme_mtl_merged_expanded_v1.json"]),
], ids=["mtl-hub-to-english-loader", "mtl-mlx-to-english-loader", "mtl-loader-english-hub",
        "mtl-loader-english-mlx", "mtl-loader-no-t3", "mtl-loader-no-tokenizer"])
def test_mtl_loaders_name_the_other_model(world, folder, loader, words):
    """from_pretrained of the wrong model's folder: one ModelLoadError line naming the file and the loader
    to use, before any weight is read."""
    from mlx_impl.tts import ChatterboxTTS

    cls = ChatterboxTTS if loader == "english" else mtl_tts.ChatterboxMultilingualTTS
    with pytest.raises(ModelLoadError) as e:
        cls.from_pretrained(str(world[folder]))
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_mtl_s3gen_token_range_is_checked():
    """Ids S3Gen cannot embed (>= 6561: the multilingual generate() has no filter) are refused by name."""
    mtl_tts.check_s3gen_tokens(np.array([0, 6560]))
    with pytest.raises(mtl_tts.SpeechTokenRangeError, match="speech token 6563"):
        mtl_tts.check_s3gen_tokens(np.array([5, 6563, 7000]))
