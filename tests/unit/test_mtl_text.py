"""The multilingual text front end: mlx_impl's MTLTokenizer against the ORIGINAL one
(chatterbox.models.tokenizers.tokenizer.MTLTokenizer, chatterbox-tts 0.1.7), token ids exact, on
the offline stand-ins of the files it downloads (reference/mtl_tokenizer_json.py,
reference/mtl_data.py), with the optional language packages as installed here and, for the ones
that cannot be installed, stand-in modules given to both sides alike.

The hub is never contacted: huggingface_hub runs in offline mode (where the network is up, the
original's hf_hub_download would otherwise replace the stand-in Cangjie file by the real one).
"""
from __future__ import annotations

import logging
import sys
import types
import unicodedata

import numpy as np
import pytest

from mlx_impl import mtl_tts as mlx_mtl
from mlx_impl.tokenizers import ChineseSegmenterError, MTLTokenizer, UncoveredTextError, optional_steps
from mlx_impl.tokenizers import tokenizer as mlx_tok
from reference import mtl_data
from reference.mtl_tokenizer_json import FILE_NAME, LANGUAGES, SENTENCES, VOCAB_SIZE

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")
orig_tok = pytest.importorskip("chatterbox.models.tokenizers.tokenizer")
orig_mtl = pytest.importorskip("chatterbox.mtl_tts")


@pytest.fixture(scope="module", autouse=True)
def hub_offline():
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def pkuseg_home(tmp_path_factory):
    home = mtl_data.write_pkuseg_home(tmp_path_factory.mktemp("pkuseg"))
    with mtl_data.pkuseg_home(home):
        yield home


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mtl_front_end")
    mtl_data.write_front_end_files(d)
    return d


@pytest.fixture(scope="module")
def pair(model_dir, pkuseg_home):
    """(original, MLX) tokenizers of the same folder, in the same environment."""
    path = str(model_dir / FILE_NAME)
    return orig_tok.MTLTokenizer(path), MTLTokenizer(path)


def encode_both(pair, text, **kw):
    orig, mlx = pair
    return orig.encode(text, **kw), mlx.encode(text, **kw)


@pytest.fixture()
def fresh_globals(monkeypatch):
    """The optional packages' cached instances, reset on both sides for the test."""
    for mod in (orig_tok, mlx_tok):
        for name in ("_kakasi", "_dicta", "_russian_stresser"):
            monkeypatch.setattr(mod, name, None)
    return monkeypatch


# ----------------------------------------------------------------------------- one sentence per language


def test_mtl_language_packages_installed_as_pinned():
    """requirements/languages.txt: the steps these tests compare run only where the packages are."""
    from importlib.metadata import version

    from parity import ROOT

    for line in (ROOT / "requirements" / "languages.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, pinned = line.split("==")
            assert version(name) == pinned, f"{name}: scripts/setup.sh installs {pinned}"


def test_mtl_sentences_cover_the_23_supported_languages():
    assert sorted(SENTENCES) == sorted(orig_mtl.SUPPORTED_LANGUAGES) == LANGUAGES
    assert mlx_mtl.SUPPORTED_LANGUAGES == orig_mtl.SUPPORTED_LANGUAGES


@pytest.mark.parametrize("lang", LANGUAGES)
def test_mtl_tokens_exact(pair, lang):
    text = orig_mtl.punc_norm(SENTENCES[lang])
    ids_orig, ids_mlx = encode_both(pair, text, language_id=lang)
    assert ids_mlx == ids_orig
    vocab = pair[0].tokenizer.get_vocab()
    assert ids_orig[0] == vocab[f"[{lang}]"]
    assert vocab["[UNK]"] not in ids_orig, "the stand-in tokenizer must cover the test sentence"
    assert max(ids_orig) < VOCAB_SIZE
    got = pair[1].text_to_tokens(text, language_id=lang, strict=True)
    assert got.dtype == np.int32 and got.shape == (1, len(ids_orig))
    assert got[0].tolist() == pair[0].text_to_tokens(text, language_id=lang)[0].tolist()
    assert pair[1].decode(ids_mlx) == pair[0].decode(torch.tensor(ids_orig))


def test_mtl_punc_norm_matches_original():
    cases = list(SENTENCES.values()) + ["", "你好", "你好。", "こんにちは、", "안녕…", "a; b - c", "“quoted”",
                                        "  spaced   out  ", "ends，", "why？", "wow！", "ok、"]
    for text in cases:
        assert mlx_mtl.punc_norm(text) == orig_mtl.punc_norm(text), text


# ----------------------------------------------------------------------------- tag, lowercase, NFKD


def test_mtl_language_tag(pair):
    vocab = pair[0].tokenizer.get_vocab()
    for lang_id in ("fr", "FR", "Ja", "ZH", None, ""):
        ids_orig, ids_mlx = encode_both(pair, "Été à Paris", language_id=lang_id)
        assert ids_mlx == ids_orig, lang_id
        if lang_id:
            assert ids_orig[0] == vocab[f"[{lang_id.lower()}]"]
        else:
            assert all(i not in ids_orig for i in (vocab["[fr]"], vocab["[en]"]))
    # the language's own step runs only for the exact lower-case id (as in the original): "ZH" is tagged, not converted
    assert "[cj_" not in pair[1].front_end("今天", language_id="ZH")
    assert "[cj_" in pair[1].front_end("今天", language_id="zh")


@pytest.mark.parametrize("lowercase,nfkd", [(True, True), (True, False), (False, True), (False, False)])
def test_mtl_lowercase_and_nfkd(pair, lowercase, nfkd):
    for lang in LANGUAGES:
        ids_orig, ids_mlx = encode_both(pair, SENTENCES[lang], language_id=lang, lowercase=lowercase,
                                        nfkd_normalize=nfkd)
        assert ids_mlx == ids_orig, lang
    seen = pair[1].front_end("Été", language_id="fr", lowercase=lowercase, nfkd_normalize=nfkd)
    body = seen[len("[fr]"):]
    assert body == unicodedata.normalize("NFKD" if nfkd else "NFC", "Été".lower() if lowercase else "Été")
    assert ("\u0301" in body) == nfkd


def test_mtl_turkish_dotted_capital_i(pair):
    """'İ'.lower() is 'i' + U+0307 in Python: both sides see the combining dot."""
    assert "i\u0307" in pair[1].front_end("İstanbul", language_id="tr")
    assert encode_both(pair, "İstanbul", language_id="tr")[0] == encode_both(pair, "İstanbul", language_id="tr")[1]


# ----------------------------------------------------------------------------- per-language steps


def test_mtl_korean_jamo_every_syllable():
    """All 11172 Hangul syllables, and text around them, as the original decomposes them."""
    syllables = "".join(chr(c) for c in range(0xAC00, 0xD7A4))
    beyond = "".join(chr(c) for c in range(0xD7A4, 0xD7B1))  # inside the original's range check, not syllables
    for text in (syllables, "  한국어 text 123 ", "ㄱㅏ", beyond):
        assert mlx_tok.korean_normalize(text) == orig_tok.korean_normalize(text)
    assert mlx_tok.korean_normalize(syllables) == unicodedata.normalize("NFD", syllables)


def test_mtl_korean_without_nfkd(pair):
    ids_orig, ids_mlx = encode_both(pair, SENTENCES["ko"], language_id="ko", nfkd_normalize=False)
    assert ids_mlx == ids_orig
    assert "\u1100" <= pair[1].front_end("가", language_id="ko", nfkd_normalize=False)[4] <= "\u11ff"


def test_mtl_japanese_kanji_to_hiragana(pair):
    for text in (SENTENCES["ja"], "母は東京へ行った", "カタカナだけ", "ひらがな", "漢字とカタカナとabc", "", "部屋へ"):
        assert mlx_tok.hiragana_normalize(text) == orig_tok.hiragana_normalize(text), text
    seen = pair[1].front_end(SENTENCES["ja"], language_id="ja")
    assert seen.startswith("[ja][SPACE]はは")  # 母 -> " はは": the original's space before a reading starting with は/へ
    assert "東" not in seen and "タワー" in seen  # kanji gone, katakana kept
    assert "\u3099" in seen  # NFKD after the conversion splits the voiced mark (が -> か + U+3099)


def test_mtl_chinese_cangjie_and_segmentation(pair):
    orig, mlx = pair
    text = orig.preprocess_text(SENTENCES["zh"])
    assert mlx.cangjie_converter(text) == orig.cangjie_converter(text)
    assert mlx.cangjie_converter.word2cj == orig.cangjie_converter.word2cj
    assert mlx.cangjie_converter.cj2word == orig.cangjie_converter.cj2word
    out = mlx.cangjie_converter(text)
    assert "[cj_1]" in out  # a glyph sharing its code takes the index suffix
    assert " " in out  # pkuseg's words, joined by spaces
    assert all(unicodedata.category(c) != "Lo" for c in out)  # every ideograph became a code


# ----------------------------------------------------------------------------- where the original skips a step


def test_mtl_cangjie_file_only_beside_the_tokenizer_is_skipped_like_original(tmp_path, pkuseg_home, caplog):
    """A snapshot folder as snapshot_download leaves it (Cangjie5_TC.json beside the tokenizer, no
    hub cache inside): offline, the original's hf_hub_download(cache_dir=folder) finds nothing, it
    logs a warning and leaves Chinese characters as they are, which the tokenizer spells [UNK]."""
    from reference.mtl_tokenizer_json import write_mtl_tokenizer_json

    write_mtl_tokenizer_json(tmp_path / FILE_NAME)
    (tmp_path / mtl_data.CANGJIE_FILE).write_text(mtl_data.cangjie_json_text(), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        orig = orig_tok.MTLTokenizer(str(tmp_path / FILE_NAME))
        mlx = MTLTokenizer(tmp_path / FILE_NAME)
    assert orig.cangjie_converter.word2cj == {} and mlx.cangjie_converter.word2cj == {}
    warnings = [r.getMessage() for r in caplog.records if "Could not load Cangjie mapping" in r.getMessage()]
    assert len(warnings) == 2
    text = SENTENCES["zh"]
    assert mlx.encode(text, language_id="zh") == orig.encode(text, language_id="zh")
    assert orig.tokenizer.token_to_id("[UNK]") in orig.encode(text, language_id="zh")
    with pytest.raises(UncoveredTextError, match=r"^text for language 'zh' has characters the tokenizer does not cover"
                       r" \(they would be encoded as \[UNK\]\): '今' U\+4ECA CJK UNIFIED IDEOGRAPH-4ECA") as e:
        mlx.encode(text, language_id="zh", strict=True)
    assert "\n" not in str(e.value)
    assert optional_steps(mlx)["zh_cangjie"]["runs"] is False


def test_mtl_pkuseg_absent_skips_like_original(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy_pkuseg", None)  # import fails with ImportError
    orig = orig_tok.MTLTokenizer(str(model_dir / FILE_NAME))
    mlx = MTLTokenizer(model_dir / FILE_NAME)
    assert orig.cangjie_converter.segmenter is None and mlx.cangjie_converter.segmenter is None
    text = orig.preprocess_text(SENTENCES["zh"])
    assert mlx.cangjie_converter(text) == orig.cangjie_converter(text)
    assert " " not in mlx.cangjie_converter(text)
    assert mlx.encode(SENTENCES["zh"], language_id="zh") == orig.encode(SENTENCES["zh"], language_id="zh")
    steps = optional_steps(mlx)
    assert steps["zh_segmentation"] == {"language": "zh", "runs": False, "skipped": "spacy_pkuseg not installed"}


def test_mtl_pkuseg_without_its_model_is_a_named_error(model_dir, tmp_path, monkeypatch):
    """spacy_pkuseg installed, its model neither in $PKUSEG_HOME nor downloadable: the original's
    MTLTokenizer cannot be built (the download's error propagates); MLX raises one named line."""
    import spacy_pkuseg

    def no_network(url, model_dir, hash_prefix, progress=True):
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(spacy_pkuseg, "download_model", no_network)
    with mtl_data.pkuseg_home(tmp_path / "empty"):
        with pytest.raises(ConnectionError):
            orig_tok.MTLTokenizer(str(model_dir / FILE_NAME))
        with pytest.raises(ChineseSegmenterError, match=r"spacy_pkuseg is installed but its model is not in .*empty"
                           r"/spacy_ontonotes.*PKUSEG_HOME") as e:
            MTLTokenizer(model_dir / FILE_NAME)
    assert "\n" not in str(e.value)


def test_mtl_japanese_without_pykakasi_skips_like_original(pair, fresh_globals, caplog):
    fresh_globals.setitem(sys.modules, "pykakasi", None)
    with caplog.at_level(logging.WARNING):
        ids_orig, ids_mlx = encode_both(pair, SENTENCES["ja"], language_id="ja")
    assert ids_mlx == ids_orig
    assert "東" in pair[1].front_end(SENTENCES["ja"], language_id="ja")  # kanji left as they are
    assert sum("pykakasi not available" in r.getMessage() for r in caplog.records) >= 2
    assert optional_steps()["ja_kanji_to_hiragana"]["runs"] is False


def _module(name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


class DictaLikeReleased:
    """dicta_onnx 1.0.9's Dicta: a model path is required, which the original does not pass."""

    def __init__(self, model_path):
        self.model_path = model_path


class DictaWorking:
    def add_diacritics(self, text):
        return "".join(c + "\u05b7" if "\u05d0" <= c <= "\u05ea" else c for c in text)  # a patah on each letter


class StresserWorking:
    def stress_text(self, text):
        return text.replace("о", "о\u0301")


def test_mtl_hebrew_dicta_present_but_failing_skips_like_original(pair, fresh_globals, caplog):
    fresh_globals.setitem(sys.modules, "dicta_onnx", _module("dicta_onnx", Dicta=DictaLikeReleased))
    with caplog.at_level(logging.WARNING):
        ids_orig, ids_mlx = encode_both(pair, SENTENCES["he"], language_id="he")
    assert ids_mlx == ids_orig
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Hebrew diacritization failed")]
    assert len(failed) == 2 and failed[0] == failed[1]
    step = optional_steps()["he_diacritics"]
    assert step["runs"] is False and step["skipped"].startswith("fails: TypeError")


def test_mtl_hebrew_and_russian_steps_run_like_original_when_present(pair, fresh_globals):
    """Packages that do not install here (docs/MULTILINGUAL.md): a working stand-in module, given
    to both sides, shows that each side calls it the same way and tokenizes its output alike."""
    fresh_globals.setitem(sys.modules, "dicta_onnx", _module("dicta_onnx", Dicta=DictaWorking))
    text_sub = _module("russian_text_stresser.text_stresser", RussianTextStresser=StresserWorking)
    fresh_globals.setitem(sys.modules, "russian_text_stresser", _module("russian_text_stresser", text_stresser=text_sub))
    fresh_globals.setitem(sys.modules, "russian_text_stresser.text_stresser", text_sub)
    for lang, mark in (("he", "\u05b7"), ("ru", "\u0301")):
        ids_orig, ids_mlx = encode_both(pair, SENTENCES[lang], language_id=lang)
        assert ids_mlx == ids_orig, lang
        assert mark in pair[1].front_end(SENTENCES[lang], language_id=lang)
    steps = optional_steps()
    assert steps["he_diacritics"]["runs"] and steps["ru_stress"]["runs"]


# ----------------------------------------------------------------------------- bad input


def test_mtl_unknown_language_code_is_one_named_error(pair):
    with pytest.raises(ValueError) as orig_err:
        orig_mtl.ChatterboxMultilingualTTS.generate(object(), "Hello.", "xx")  # checked before self is used
    with pytest.raises(mlx_mtl.UnsupportedLanguageError) as mlx_err:
        mlx_mtl.check_language_id("xx")
    assert str(mlx_err.value) == str(orig_err.value)
    assert str(mlx_err.value).startswith("Unsupported language_id 'xx'. Supported languages: ar, da, de,")
    assert "\n" not in str(mlx_err.value)
    assert mlx_mtl.check_language_id("FR") == "fr" and mlx_mtl.check_language_id(None) is None
    # the tokenizer itself, like the original's, tags any id; the tag's brackets are not in the
    # vocabulary, so the strict mode names them
    ids_orig, ids_mlx = encode_both(pair, "hello", language_id="xx")
    assert ids_mlx == ids_orig
    with pytest.raises(UncoveredTextError, match=r"^text for language 'xx' has characters .*'\[' U\+005B"):
        pair[1].encode("hello", language_id="xx", strict=True)


def test_mtl_uncovered_script_is_one_named_error(pair):
    thai = "สวัสดีครับ"
    ids_orig, ids_mlx = encode_both(pair, thai, language_id="en")
    assert ids_mlx == ids_orig
    unk = pair[0].tokenizer.token_to_id("[UNK]")
    assert unk in ids_orig  # the original spells it [UNK], silently
    with pytest.raises(UncoveredTextError, match=r"^text for language 'en' has characters the tokenizer does not "
                       r"cover \(they would be encoded as \[UNK\]\): 'ส' U\+0E2A THAI CHARACTER SO SUA, .* and \d+ more$") as e:
        pair[1].text_to_tokens(thai, language_id="en", strict=True)
    assert "\n" not in str(e.value)
    assert pair[1].text_to_tokens("hello 😀", language_id="en").shape[1] == len(pair[0].encode("hello 😀", language_id="en"))


# ----------------------------------------------------------------------------- the record of steps


def test_mtl_optional_steps_record_what_the_original_ran(pair, fresh_globals):
    orig, mlx = pair
    for lang in LANGUAGES:
        orig.encode(SENTENCES[lang], language_id=lang)
    steps = optional_steps(mlx)
    assert set(steps) == {"ja_kanji_to_hiragana", "he_diacritics", "ru_stress", "ko_hangul_to_jamo", "zh_cangjie",
                          "zh_segmentation"}
    assert steps["ja_kanji_to_hiragana"]["runs"] == (orig_tok._kakasi is not None)
    assert steps["he_diacritics"]["runs"] == (orig_tok._dicta is not None)
    assert steps["ru_stress"]["runs"] == (orig_tok._russian_stresser is not None)
    assert steps["zh_cangjie"]["runs"] == bool(orig.cangjie_converter.word2cj)
    assert steps["zh_segmentation"]["runs"] == (orig.cangjie_converter.segmenter is not None)
    for name, step in steps.items():
        assert ("by" in step) == step["runs"] and ("skipped" in step) != step["runs"], name


# ----------------------------------------------------------------------------- the stand-ins


def test_mtl_stand_in_files_are_deterministic(model_dir, tmp_path):
    mtl_data.write_front_end_files(tmp_path / "again")
    for f in (FILE_NAME, mtl_data.CANGJIE_FILE):
        assert (tmp_path / "again" / f).read_bytes() == (model_dir / f).read_bytes(), f
    cached = sorted(p.relative_to(model_dir) for p in model_dir.rglob("*") if p.is_file())
    assert cached == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())


def test_mtl_pkuseg_stand_in_is_deterministic(pkuseg_home, tmp_path):
    again = mtl_data.write_pkuseg_home(tmp_path / "again")
    for f in ("spacy_ontonotes.zip", "spacy_ontonotes/features.msgpack", "spacy_ontonotes/weights.npz"):
        assert (again / f).read_bytes() == (pkuseg_home / f).read_bytes(), f


def test_mtl_stand_in_tokenizer_shape(pair):
    vocab = pair[0].tokenizer.get_vocab()
    assert len(vocab) == VOCAB_SIZE == orig_mtl.T3Config.multilingual().text_tokens_dict_size
    assert vocab["[START]"] == 255 and vocab["[STOP]"] == 0 and vocab["[SPACE]"] == 2 and vocab["[UNK]"] == 1
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))
    assert all(f"[{lang}]" in vocab for lang in orig_mtl.SUPPORTED_LANGUAGES)
    assert pair[0].tokenizer.encode("[fr][cj_a][cj_.][SPACE]").ids == [vocab[t] for t in ("[fr]", "[cj_a]", "[cj_.]",
                                                                                           "[SPACE]")]
