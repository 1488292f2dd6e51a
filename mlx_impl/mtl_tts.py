"""Chatterbox Multilingual (mirrors chatterbox/mtl_tts.py): the 23 languages, `punc_norm` and the
language check of `generate`. The model class (`ChatterboxMultilingualTTS`) is not ported yet;
the text front end is `mlx_impl.tokenizers.MTLTokenizer`.
"""
from __future__ import annotations

from typing import Optional

from .validate import UsageError
from .tts import SENTENCE_ENDERS, normalize_punctuation

REPO_ID = "ResembleAI/chatterbox"

# Supported languages for the multilingual model
SUPPORTED_LANGUAGES = {
    "ar": "Arabic",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "ms": "Malay",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "sv": "Swedish",
    "sw": "Swahili",
    "tr": "Turkish",
    "zh": "Chinese",
}

# The hub files from_local reads (from_pretrained downloads these and Cangjie5_TC.json)
T3_WEIGHTS = "t3_mtl23ls_v2.safetensors"
TOKENIZER_FILE = "grapheme_mtl_merged_expanded_v1.json"


class UnsupportedLanguageError(UsageError):
    """A language_id outside SUPPORTED_LANGUAGES (the original's generate raises a ValueError)."""


def check_language_id(language_id: Optional[str]) -> Optional[str]:
    """The original generate()'s check, same message; returns the id lower-cased as it passes it on.
    A falsy id passes (no language tag), as in the original."""
    if language_id and language_id.lower() not in SUPPORTED_LANGUAGES:
        supported_langs = ", ".join(SUPPORTED_LANGUAGES.keys())
        raise UnsupportedLanguageError(
            f"Unsupported language_id '{language_id}'. "
            f"Supported languages: {supported_langs}"
        )
    return language_id.lower() if language_id else None


# the English sentence enders plus the CJK ones
MTL_SENTENCE_ENDERS = SENTENCE_ENDERS + ("、", "，", "。", "？", "！")


def punc_norm(text: str) -> str:
    """Quick cleanup of punctuation from LLMs or characters rarely seen in the dataset (the English
    punc_norm plus the CJK sentence enders)."""
    return normalize_punctuation(text, sentence_enders=MTL_SENTENCE_ENDERS)
