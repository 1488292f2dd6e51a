"""A stand-in for the multilingual tokenizer, `grapheme_mtl_merged_expanded_v1.json`, built offline.

What the original needs of it (chatterbox/models/tokenizers/tokenizer.py, MTLTokenizer): a
`tokenizers` JSON with [START] and [STOP], ids below T3Config.multilingual()'s 2454 text tokens
([START] = 255, [STOP] = 0 as T3 pads them), the language tags "[xx]" that encode() prepends and
the Cangjie tokens "[cj_x]" that the Chinese front end writes, matched whole (added tokens).

This builds one of that shape, deterministically, with the English stand-in's layout and helpers
(reference/tokenizer_json.py): [STOP] [UNK] [SPACE], then the characters of the scripts of the 23
languages (whole Unicode blocks, so a sentence's characters are covered in any front-end
environment: with or without pykakasi, NFKD or not), the 23 tags and the Cangjie tokens, BPE merges
learnt by pair counting on the test sentences and the English corpus, and [PAD] [SEP] [CLS] [MASK]
last: 2454 entries. Scripts left out on purpose (Thai, Georgian, Hangul syllables, CJK ideographs,
emoji) are what "text the tokenizer does not cover" means in the tests. The released file's
contents beyond that shape are not published in the package; nothing here claims to match them.
"""
from __future__ import annotations

import os
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

from .tokenizer_json import (CORPUS, LEADING_SPECIALS, TRAILING_SPECIALS, START_ID, _letter_pairs, apply_merge,
                             assemble_vocab, bpe_json_text, pair_counts)

FILE_NAME = "grapheme_mtl_merged_expanded_v1.json"
VOCAB_SIZE = 2454  # T3Config.multilingual().text_tokens_dict_size

# One real sentence per supported language, in its own script (chatterbox/mtl_tts.py's table).
SENTENCES = {
    "ar": "مرحبا، كيف حالك اليوم؟ الطقس جميل جدا.",
    "da": "Hej, hvordan har du det i dag? Vejret er dejligt, og søen er blå.",
    "de": "Guten Morgen! Die Straße ist heute für Fußgänger gesperrt.",
    "el": "Καλημέρα! Πώς είσαι σήμερα; Ο καιρός είναι υπέροχος.",
    "en": "Hello there, how are you doing today?",
    "es": "¿Dónde está la biblioteca? Mañana iremos al parque.",
    "fi": "Hyvää huomenta! Sää on tänään kaunis ja järvi on jäässä.",
    "fr": "Où est la bibliothèque ? Ça m'a été très utile, merci beaucoup.",
    "he": "שלום, מה שלומך היום? מזג האוויר נעים מאוד.",
    "hi": "नमस्ते, आप आज कैसे हैं? मौसम बहुत सुहावना है।",
    "it": "Buongiorno! Perché il caffè è già freddo? È così.",
    "ja": "母は東京タワーへ行きました。カタカナもひらがなも読めます。",
    "ko": "안녕하세요, 오늘 날씨가 정말 좋네요. 한국어를 배우고 있어요.",
    "ms": "Selamat pagi, apa khabar? Saya suka makan nasi lemak.",
    "nl": "Goedemorgen! Het weer is vandaag prachtig, zullen we fietsen?",
    "no": "God morgen! Været er fint i dag, og vi går på tur til fjellet.",
    "pl": "Dzień dobry! Zażółć gęślą jaźń, proszę bardzo.",
    "pt": "Bom dia! A informação está no coração da cidade, não é?",
    "ru": "Здравствуйте! Сегодня хорошая погода, и мы идём в парк.",
    "sv": "God morgon! Vädret är vackert idag, ska vi åka till sjön?",
    "sw": "Habari za asubuhi? Leo hali ya hewa ni nzuri sana.",
    "tr": "Günaydın! Bugün hava çok güzel, İstanbul'a gidelim mi?",
    "zh": "今天天气很好，我们一起去公园散步吧。你喜欢学习中文吗？",
}
LANGUAGES = sorted(SENTENCES)
LANGUAGE_TAGS = [f"[{lang}]" for lang in LANGUAGES]
# ChineseCangjieConverter writes "[cj_<c>]" per character of a code (letters, then the index digits
# of a shared code) and "[cj_.]" after each glyph.
CANGJIE_TOKENS = [f"[cj_{c}]" for c in "abcdefghijklmnopqrstuvwxyz0123456789."]

# Unicode blocks of the 23 languages' scripts (unassigned code points skipped).
BLOCKS = [
    (0x0021, 0x007E),  # ASCII, less the space
    (0x00A1, 0x00FF),  # Latin-1
    (0x0100, 0x017F),  # Latin Extended-A (ł, ı, ő, ...)
    (0x0300, 0x036F),  # combining diacritics (what NFKD splits accents into)
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x04FF),  # Cyrillic
    (0x0591, 0x05F4),  # Hebrew, niqqud included
    (0x0600, 0x06FF),  # Arabic
    (0x0900, 0x097F),  # Devanagari
    (0x1100, 0x11FF),  # Hangul Jamo (korean_normalize and NFKD write these)
    (0x2010, 0x2026),  # dashes, quotes, ellipsis
    (0x3000, 0x303F),  # CJK punctuation
    (0x3041, 0x309F),  # Hiragana, with the combining (semi-)voiced marks NFKD splits off
    (0x30A0, 0x30FF),  # Katakana
]
SPECIAL_BRACKETS = ("[", "]")  # kept out: an unknown "[xx]" must not tokenize silently as letters


def characters() -> List[str]:
    chars = []
    for lo, hi in BLOCKS:
        for cp in range(lo, hi + 1):
            c = chr(cp)
            if unicodedata.category(c) not in ("Cn", "Cc", "Cs") and c not in SPECIAL_BRACKETS:
                chars.append(c)
    return chars


def corpus_words() -> Counter:
    """Words of the test sentences as the front end hands them on (lowercase, NFKD) and split as the
    whitespace pre-tokenizer splits them, and the English corpus: what the merges are learnt on."""
    from tokenizers import pre_tokenizers

    text = " ".join(unicodedata.normalize("NFKD", s.lower()) for s in SENTENCES.values())
    words = Counter(w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text))
    words.update(CORPUS)
    return words


def learn_merges(n_merges: int, alphabet: set) -> List[Tuple[str, str]]:
    """Most frequent adjacent pair first (ties: the larger pair, as the English builder), until
    n_merges; when the corpus is fully merged, letter pairs fill up (tokenizer_json._letter_pairs)."""
    words = Counter({w: n for w, n in corpus_words().items() if set(w) <= alphabet})
    splits = {w: list(w) for w in words}
    merges: List[Tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs = pair_counts(words, splits)
        if not pairs:
            return merges + _letter_pairs(merges, n_merges - len(merges))
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        apply_merge(splits, best)
    return merges


def build_vocab() -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    chars = characters()
    n_fixed = len(LEADING_SPECIALS) + 1 + len(chars) + len(LANGUAGE_TAGS) + len(CANGJIE_TOKENS) + len(TRAILING_SPECIALS)
    merges = learn_merges(VOCAB_SIZE - n_fixed, set(chars))
    merged = ["".join(m) for m in merges]
    vocab = assemble_vocab(chars + LANGUAGE_TAGS + CANGJIE_TOKENS + merged)
    assert len(vocab) == VOCAB_SIZE and vocab["[START]"] == START_ID and vocab["[STOP]"] == 0
    return vocab, merges


def added_tokens() -> List[str]:
    return LEADING_SPECIALS + ["[START]"] + TRAILING_SPECIALS + LANGUAGE_TAGS + CANGJIE_TOKENS


def write_mtl_tokenizer_json(path: Path) -> None:
    vocab, merges = build_vocab()
    write_utf8_atomic(path, bpe_json_text(vocab, merges, added_tokens()))


def write_utf8_atomic(path: Path, text: str) -> None:
    """UTF-8 whatever the locale, through a temporary file renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text.encode("utf-8"))
    os.replace(tmp, path)
