"""T3's text tokenizers (mirrors chatterbox/models/tokenizers/tokenizer.py): the English
`EnTokenizer` and the multilingual `MTLTokenizer` with its per-language text front ends.

Built on the `tokenizers` library with the checkpoint's tokenizer JSON. Spaces are spelled [SPACE]
before encoding; no [START]/[STOP] are added here (the caller pads them). Token arrays are numpy.

The multilingual front end calls the same optional packages as the original (pykakasi,
spacy_pkuseg, dicta_onnx, russian_text_stresser) and skips a step exactly where the original
does: when the package is missing, and for Hebrew and Russian also when it fails. `optional_steps`
says which steps run in this environment. docs/MULTILINGUAL.md has the details.
"""
from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from unicodedata import category, normalize

import numpy as np
from tokenizers import Tokenizer

from ..validate import UsageError

# Special tokens
SOT = "[START]"
EOT = "[STOP]"
UNK = "[UNK]"
SPACE = "[SPACE]"
SPECIAL_TOKENS = [SOT, EOT, UNK, SPACE, "[PAD]", "[SEP]", "[CLS]", "[MASK]"]


class EnTokenizer:
    def __init__(self, vocab_file_path):
        self.tokenizer: Tokenizer = Tokenizer.from_file(str(vocab_file_path))
        self.check_vocabset_sot_eot()

    def check_vocabset_sot_eot(self) -> None:
        voc = self.tokenizer.get_vocab()
        assert SOT in voc
        assert EOT in voc

    def text_to_tokens(self, text: str) -> np.ndarray:
        """(1, n) int32 token ids."""
        return np.asarray(self.encode(text), dtype=np.int32).reshape(1, -1)

    def encode(self, txt: str) -> list:
        """replace ' ' by [SPACE], then encode with the tokenizer."""
        txt = txt.replace(" ", SPACE)
        return self.tokenizer.encode(txt).ids

    def decode(self, seq: Sequence[int]) -> str:
        seq = [int(t) for t in np.asarray(seq).reshape(-1)]
        txt: str = self.tokenizer.decode(seq, skip_special_tokens=False)
        txt = txt.replace(" ", "")
        txt = txt.replace(SPACE, " ")
        txt = txt.replace(EOT, "")
        txt = txt.replace(UNK, "")
        return txt


# ============================================================================ multilingual

# Model repository
REPO_ID = "ResembleAI/chatterbox"
CANGJIE_FILE = "Cangjie5_TC.json"

logger = logging.getLogger(__name__)

# Global instances for optional dependencies
_kakasi = None
_dicta = None
_russian_stresser = None


class UncoveredTextError(UsageError):
    """Text whose characters the tokenizer maps to [UNK] (a script its vocabulary lacks)."""


class ChineseSegmenterError(UsageError):
    """spacy_pkuseg is installed but its model can neither be found nor downloaded."""


def is_kanji(c: str) -> bool:
    """Check if character is kanji."""
    return 19968 <= ord(c) <= 40959


def is_katakana(c: str) -> bool:
    """Check if character is katakana."""
    return 12449 <= ord(c) <= 12538


def hiragana_normalize(text: str) -> str:
    """Japanese: kanji to hiragana (pykakasi), katakana kept, then NFKD. Skipped without pykakasi."""
    global _kakasi
    try:
        if _kakasi is None:
            import pykakasi
            _kakasi = pykakasi.kakasi()
    except ImportError:
        logger.warning("pykakasi not available - Japanese text processing skipped")
        return text

    out = []
    for r in _kakasi.convert(text):
        inp, hira = r["orig"], r["hira"]
        if any(is_kanji(c) for c in inp):
            if hira and hira[0] in ["は", "へ"]:
                hira = " " + hira
            out.append(hira)
        elif inp and all(is_katakana(c) for c in inp):
            out.append(r["orig"])
        else:
            out.append(inp)
    return unicodedata.normalize("NFKD", "".join(out))


def add_hebrew_diacritics(text: str) -> str:
    """Hebrew: niqqud from dicta_onnx. Skipped without it, and when it fails (dicta_onnx 1.0.9's
    `Dicta()` needs a model path the original does not pass: it always fails there)."""
    global _dicta
    try:
        if _dicta is None:
            from dicta_onnx import Dicta
            _dicta = Dicta()
        return _dicta.add_diacritics(text)
    except ImportError:
        logger.warning("dicta_onnx not available - Hebrew text processing skipped")
        return text
    except Exception as e:
        logger.warning(f"Hebrew diacritization failed: {e}")
        return text


def decompose_hangul(char: str) -> str:
    """A precomposed Hangul syllable -> its conjoining Jamo (initial, medial, optional final)."""
    if not ("\uac00" <= char <= "\ud7af"):
        return char
    base = ord(char) - 0xAC00
    initial = chr(0x1100 + base // (21 * 28))
    medial = chr(0x1161 + (base % (21 * 28)) // 28)
    final = chr(0x11A7 + base % 28) if base % 28 > 0 else ""
    return initial + medial + final


def korean_normalize(text: str) -> str:
    """Korean: syllables -> Jamo, then strip. (After the default NFKD there are no syllables left.)"""
    return "".join(decompose_hangul(char) for char in text).strip()


class ChineseCangjieConverter:
    """Chinese characters -> Cangjie code tokens ([cj_x]...[cj_.]), words split by pkuseg."""

    def __init__(self, model_dir=None):
        self.word2cj: Dict[str, str] = {}
        self.cj2word: Dict[str, List[str]] = {}
        self.segmenter = None
        self.mapping_file: Optional[str] = None
        self._load_cangjie_mapping(model_dir)
        self._init_segmenter()

    def _load_cangjie_mapping(self, model_dir=None):
        """The original's lookup: hf_hub_download with `cache_dir=model_dir`, i.e. a hub cache
        inside the model folder (models--ResembleAI--chatterbox/...), not model_dir/Cangjie5_TC.json.
        Any failure leaves the mapping empty (Chinese characters then pass through unchanged)."""
        try:
            from huggingface_hub import hf_hub_download

            cangjie_file = hf_hub_download(repo_id=REPO_ID, filename=CANGJIE_FILE, cache_dir=model_dir)
            with open(cangjie_file, "r", encoding="utf-8") as fp:
                data = json.load(fp)
            for entry in data:
                word, code = entry.split("\t")[:2]
                self.word2cj[word] = code
                self.cj2word.setdefault(code, []).append(word)
            self.mapping_file = str(cangjie_file)
        except Exception as e:
            logger.warning(f"Could not load Cangjie mapping: {e}")

    def _init_segmenter(self):
        try:
            from spacy_pkuseg import pkuseg
        except ImportError:
            logger.warning("pkuseg not available - Chinese segmentation will be skipped")
            self.segmenter = None
            return
        try:
            self.segmenter = pkuseg()
        except Exception as e:  # the original lets this propagate: MTLTokenizer cannot be built
            from spacy_pkuseg import config
            raise ChineseSegmenterError(
                f"spacy_pkuseg is installed but its model is not in {config.pkuseg_home}/spacy_ontonotes "
                f"and could not be downloaded ({type(e).__name__}); set PKUSEG_HOME to a folder "
                "holding it, or uninstall spacy-pkuseg to skip Chinese segmentation") from e

    def _cangjie_encode(self, glyph: str) -> Optional[str]:
        code = self.word2cj.get(glyph, None)
        if code is None:  # e.g. Japanese hiragana
            return None
        index = self.cj2word[code].index(glyph)
        return code + (str(index) if index > 0 else "")

    def __call__(self, text: str) -> str:
        if self.segmenter is not None:
            full_text = " ".join(self.segmenter.cut(text))
        else:
            full_text = text

        output = []
        for t in full_text:
            cangjie = self._cangjie_encode(t) if category(t) == "Lo" else None
            if cangjie is None:
                output.append(t)
            else:
                output.append("".join(f"[cj_{c}]" for c in cangjie) + "[cj_.]")
        return "".join(output)


def add_russian_stress(text: str) -> str:
    """Russian: stress marks from russian_text_stresser. Skipped without it, and when it fails."""
    global _russian_stresser
    try:
        if _russian_stresser is None:
            from russian_text_stresser.text_stresser import RussianTextStresser
            _russian_stresser = RussianTextStresser()
        return _russian_stresser.stress_text(text)
    except ImportError:
        logger.warning("russian_text_stresser not available - Russian stress labeling skipped")
        return text
    except Exception as e:
        logger.warning(f"Russian stress labeling failed: {e}")
        return text


class MTLTokenizer:
    def __init__(self, vocab_file_path):
        self.tokenizer: Tokenizer = Tokenizer.from_file(str(vocab_file_path))
        model_dir = Path(vocab_file_path).parent
        self.cangjie_converter = ChineseCangjieConverter(model_dir)
        self.check_vocabset_sot_eot()

    def check_vocabset_sot_eot(self) -> None:
        voc = self.tokenizer.get_vocab()
        assert SOT in voc
        assert EOT in voc

    def preprocess_text(self, raw_text: str, language_id: str = None, lowercase: bool = True,
                        nfkd_normalize: bool = True) -> str:
        preprocessed_text = raw_text
        if lowercase:
            preprocessed_text = preprocessed_text.lower()
        if nfkd_normalize:
            preprocessed_text = normalize("NFKD", preprocessed_text)
        return preprocessed_text

    def text_to_tokens(self, text: str, language_id: str = None, lowercase: bool = True,
                       nfkd_normalize: bool = True, strict: bool = False) -> np.ndarray:
        """(1, n) int32 token ids. strict: raise UncoveredTextError instead of encoding [UNK]."""
        ids = self.encode(text, language_id=language_id, lowercase=lowercase, nfkd_normalize=nfkd_normalize,
                          strict=strict)
        return np.asarray(ids, dtype=np.int32).reshape(1, -1)

    def front_end(self, txt: str, language_id: str = None, lowercase: bool = True,
                  nfkd_normalize: bool = True) -> str:
        """The text the BPE model sees: lowercase, NFKD, the language's step, [xx] tag, [SPACE]s."""
        txt = self.preprocess_text(txt, language_id=language_id, lowercase=lowercase, nfkd_normalize=nfkd_normalize)
        # Language-specific text processing
        if language_id == "zh":
            txt = self.cangjie_converter(txt)
        elif language_id == "ja":
            txt = hiragana_normalize(txt)
        elif language_id == "he":
            txt = add_hebrew_diacritics(txt)
        elif language_id == "ko":
            txt = korean_normalize(txt)
        elif language_id == "ru":
            txt = add_russian_stress(txt)

        # Prepend language token
        if language_id:
            txt = f"[{language_id.lower()}]{txt}"
        return txt.replace(" ", SPACE)

    def encode(self, txt: str, language_id: str = None, lowercase: bool = True, nfkd_normalize: bool = True,
               strict: bool = False) -> list:
        txt = self.front_end(txt, language_id=language_id, lowercase=lowercase, nfkd_normalize=nfkd_normalize)
        encoding = self.tokenizer.encode(txt)
        if strict:
            check_covered(txt, encoding, self.tokenizer.token_to_id(UNK), language_id)
        return encoding.ids

    def decode(self, seq: Sequence[int]) -> str:
        seq = [int(t) for t in np.asarray(seq).reshape(-1)]
        txt = self.tokenizer.decode(seq, skip_special_tokens=False)
        return txt.replace(" ", "").replace(SPACE, " ").replace(EOT, "").replace(UNK, "")


def check_covered(txt: str, encoding, unk_id: int, language_id: Optional[str]) -> None:
    """Raises UncoveredTextError naming the characters that the encoding spells [UNK]."""
    unknown = []
    for tok_id, (start, end) in zip(encoding.ids, encoding.offsets):
        if tok_id != unk_id:
            continue
        for c in txt[start:end]:
            if c not in unknown:
                unknown.append(c)
    if unknown:
        names = ", ".join(f"{c!r} U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UncoveredTextError(
            f"text for language {language_id!r} has characters the tokenizer does not cover "
            f"(they would be encoded as {UNK}): {names}{more}")


# ----------------------------------------------------------------------------- which steps run here


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _probe(build) -> Optional[str]:
    """None when `build()` works, else why not (the reason the step is skipped)."""
    try:
        build()
        return None
    except ImportError as e:
        return f"not installed ({e.name or e})"
    except Exception as e:
        return f"fails: {type(e).__name__}: {e}"


def _kakasi_probe():
    import pykakasi
    pykakasi.kakasi()


def _dicta_probe():
    from dicta_onnx import Dicta
    Dicta()


def _stresser_probe():
    from russian_text_stresser.text_stresser import RussianTextStresser
    RussianTextStresser()


def optional_steps(tokenizer: Optional[MTLTokenizer] = None) -> Dict[str, dict]:
    """Which optional front-end steps run in this environment, for a fixture manifest:
    {step: {"language", "runs", "by" (package version or data file) or "skipped" (why)}}.
    The Chinese steps are read from `tokenizer` (they depend on its folder); without one they are
    left out. Each probe builds the same object the step builds, so it fails where the step does."""
    probes = {
        "ja_kanji_to_hiragana": ("ja", _kakasi_probe, "pykakasi"),
        "he_diacritics": ("he", _dicta_probe, "dicta-onnx"),
        "ru_stress": ("ru", _stresser_probe, "russian-text-stresser"),
    }
    steps = {}
    for name, (lang, probe, dist) in probes.items():
        why = _probe(probe)
        steps[name] = {"language": lang, "runs": why is None}
        steps[name].update({"by": f"{dist} {_version(dist)}"} if why is None else {"skipped": why})
    steps["ko_hangul_to_jamo"] = {"language": "ko", "runs": True, "by": "built in"}
    if tokenizer is not None:
        conv = tokenizer.cangjie_converter
        steps["zh_cangjie"] = {"language": "zh", "runs": bool(conv.word2cj)}
        steps["zh_cangjie"].update({"by": f"{conv.mapping_file} ({len(conv.word2cj)} glyphs)"} if conv.word2cj
                                   else {"skipped": f"no {CANGJIE_FILE} in the hub cache under the model folder"})
        steps["zh_segmentation"] = {"language": "zh", "runs": conv.segmenter is not None}
        steps["zh_segmentation"].update({"by": _pkuseg_source()} if conv.segmenter is not None
                                        else {"skipped": "spacy_pkuseg not installed"})
    return steps


def _pkuseg_source() -> str:
    from spacy_pkuseg import config
    return f"spacy-pkuseg {_version('spacy-pkuseg')}, model {config.pkuseg_home}/spacy_ontonotes"
