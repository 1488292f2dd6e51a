"""Chatterbox Multilingual in MLX (mirrors chatterbox/mtl_tts.py): the 23 languages, `punc_norm`, the
language check of `generate`, and `ChatterboxMultilingualTTS`: the reference clip -> conditionals
(as the English model's); text + language -> MTLTokenizer -> the multilingual T3 (text table 2454,
its AlignmentStreamAnalyzer) -> speech tokens -> S3Gen -> waveform at 24 kHz. No watermark is
applied (as in mlx_impl/tts.py). Loading a folder: `from_pretrained` (check_mtl_dir / load_mtl below).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .validate import UsageError
from .tts import SENTENCE_ENDERS, ChatterboxTTS, drop_invalid_tokens, normalize_punctuation, use_conditionals

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
HUB_FILES = ("ve.pt", T3_WEIGHTS, "s3gen.pt", TOKENIZER_FILE)
CANGJIE_FILE = "Cangjie5_TC.json"
HUB_CACHE_DIR = "models--ResembleAI--chatterbox"  # where the tokenizer looks the Cangjie file up
MLX_MODEL_TYPE = "chatterbox_multilingual"  # config.json's model_type in the multilingual MLX layout (load.py's)
TEXT_VOCAB = 2454  # T3Config.multilingual()
SPEECH_VOCAB_SIZE = 6561


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


# ----------------------------------------------------------------------------- loading


@dataclass
class MTLFiles:
    """What `check_mtl_dir` read: the cheap parts of a multilingual folder, checked before the weights load."""
    path: Path
    kind: str  # "mlx" (model.safetensors from `python -m mlx_impl.convert`) or "hub"
    tokenizer: object
    conds: object  # Conditionals or None
    text_vocab: int  # rows of T3's text token table


def is_mtl_dir(model_dir: Path) -> bool:
    """The folder holds Chatterbox Multilingual: the hub's t3_mtl23ls_v2.safetensors or multilingual
    tokenizer, or an MLX layout whose config.json names model_type chatterbox_multilingual."""
    from .load import read_config

    model_dir = Path(model_dir)
    if (model_dir / "model.safetensors").is_file():
        return read_config(model_dir).get("model_type") == MLX_MODEL_TYPE
    return (model_dir / T3_WEIGHTS).is_file() or (model_dir / TOKENIZER_FILE).is_file()


def check_mtl_dir(model_dir: Path) -> MTLFiles:
    """Every file of a multilingual folder checked without loading the weights: the weight files present
    (an English or Turbo folder is named as such), the safetensors headers against their sizes, the
    .pt files' archives, T3's text table, the tokenizer, the built-in voice. One ModelLoadError naming
    the file."""
    from .load import ModelLoadError, load_conds

    model_dir = Path(model_dir)
    kind = "mlx" if (model_dir / "model.safetensors").is_file() else "hub"
    try:
        text_vocab = _check_mlx_layout(model_dir) if kind == "mlx" else _check_hub_layout(model_dir)
    except ModelLoadError:
        raise
    except UsageError as e:
        raise ModelLoadError(str(e)) from None
    tokenizer = load_mtl_tokenizer(model_dir / TOKENIZER_FILE)
    conds = None
    for name in ("conds.safetensors", "conds.pt"):
        if (model_dir / name).is_file():
            conds = load_conds(model_dir / name)
            break
    return MTLFiles(model_dir, kind, tokenizer, conds, text_vocab)


def _check_hub_layout(model_dir: Path) -> int:
    from .load import ModelLoadError, turbo_note
    from .validate import safetensors_header, tensor_shape

    missing = [f for f in HUB_FILES if not (model_dir / f).is_file()]
    if missing:
        english = [f for f in ("t3_cfg.safetensors", "ve.safetensors") if (model_dir / f).is_file()]
        note = (f"; it holds the English Chatterbox's {', '.join(english)}: load it with ChatterboxTTS"
                if english else turbo_note(model_dir))
        raise ModelLoadError(f"{model_dir}: not a Chatterbox Multilingual folder, missing {', '.join(missing)}{note}")
    for name in ("ve.pt", "s3gen.pt"):
        if not zipfile.is_zipfile(model_dir / name):
            raise ModelLoadError(f"malformed weight file {model_dir / name}: not a torch.save archive")
    path = model_dir / T3_WEIGHTS
    return _check_text_vocab(tensor_shape(safetensors_header(path), "text_emb.weight", path)[0], path)


def _check_mlx_layout(model_dir: Path) -> int:
    from .load import ModelLoadError, read_config
    from .validate import safetensors_header, tensor_shape

    config = read_config(model_dir)
    if config.get("model_type") != MLX_MODEL_TYPE:
        raise ModelLoadError(f"{model_dir / 'config.json'}: model_type {config.get('model_type')!r}, not "
                             f"{MLX_MODEL_TYPE!r}: not a Chatterbox Multilingual folder (load an English one with "
                             "ChatterboxTTS, a Turbo one with ChatterboxTurboTTS)")
    path = model_dir / "model.safetensors"
    return _check_text_vocab(tensor_shape(safetensors_header(path), "t3.text_emb.weight", path)[0], path)


def _check_text_vocab(rows: int, path: Path) -> int:
    from .load import ModelLoadError

    if rows != TEXT_VOCAB:
        raise ModelLoadError(f"{path}: T3's text table has {rows} rows; the multilingual T3 has {TEXT_VOCAB} "
                             "(T3Config.multilingual())")
    return int(rows)


def load_mtl_tokenizer(path: Path):
    """MTLTokenizer from the folder's grapheme_mtl_merged_expanded_v1.json (its Cangjie mapping from the
    hub cache inside the folder, as the original looks it up); a missing or malformed file is an error
    naming it."""
    from .load import ModelLoadError
    from .tokenizers import MTLTokenizer
    from .tokenizers.tokenizer import ChineseSegmenterError

    if not path.is_file():
        raise ModelLoadError(f"tokenizer file missing: {path}")
    try:
        return MTLTokenizer(path)
    except ChineseSegmenterError:
        raise
    except AssertionError:
        raise ModelLoadError(f"malformed tokenizer file {path}: no [START] / [STOP] token in its vocabulary") from None
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise ModelLoadError(f"malformed tokenizer file {path}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def read_pt_state_dict(path: Path) -> dict:
    """A state dict saved with torch.save (ve.pt, s3gen.pt) as numpy arrays, read without torch."""
    from . import torch_pickle
    from .load import ModelLoadError

    try:
        state = torch_pickle.load(path)
    except Exception as e:
        raise ModelLoadError(f"malformed weight file {path}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ModelLoadError(f"malformed weight file {path}: not a state dict of tensors")
    return {k: np.asarray(v, dtype=np.float32) if v.dtype in (np.float16, np.float64) else v for k, v in state.items()}


def convert_pt_file(loader, path: Path):
    """`loader` applied to the state dict of a .pt file; a conversion error names the file."""
    from .convert.common import ConversionError
    from .load import ModelLoadError

    try:
        return loader(read_pt_state_dict(path))
    except ConversionError as e:
        raise ModelLoadError(f"{path}: {e}") from None
    except KeyError as e:
        raise ModelLoadError(f"{path}: missing source tensor {e}") from None


def load_hub_weights(model_dir: Path):
    """ve, the multilingual T3 and S3Gen from the hub's files, converted strictly."""
    from .convert.s3gen import load_s3gen
    from .convert.t3 import load_t3
    from .convert.voice_encoder import load_voice_encoder
    from .load import convert_file
    from .t3 import T3Config

    ve = convert_pt_file(load_voice_encoder, model_dir / "ve.pt")
    t3 = convert_file(lambda state: load_t3(state, T3Config.multilingual()), model_dir / T3_WEIGHTS)
    s3gen = convert_pt_file(load_s3gen, model_dir / "s3gen.pt")
    return ve, t3, s3gen


def load_mtl(model_dir: Path, cls, files: Optional[MTLFiles] = None):
    """The cheap checks first (files, headers, tokenizer, built-in voice), then the weights: the MLX
    layout's model.safetensors, or the hub's files converted on the fly; q/k/v and gate/up fused."""
    from .load import is_quantized, load_mlx_layout

    files = files if files is not None else check_mtl_dir(Path(model_dir))
    ve, t3, s3gen = load_mlx_layout(files.path) if files.kind == "mlx" else load_hub_weights(files.path)
    if not is_quantized(t3.tfmr):
        t3.fuse_projections()
    return cls(t3, s3gen, ve, files.tokenizer, conds=files.conds)


# ----------------------------------------------------------------------------- ChatterboxMultilingualTTS
S3_SR = 16_000
S3GEN_SR = 24_000


class ChatterboxMultilingualTTS:
    """The multilingual Chatterbox pipeline in MLX (chatterbox.mtl_tts.ChatterboxMultilingualTTS)."""

    ENC_COND_LEN = 6 * S3_SR
    DEC_COND_LEN = 10 * S3GEN_SR

    def __init__(self, t3, s3gen, ve, tokenizer, conds=None):
        self.sr = S3GEN_SR
        self.t3, self.s3gen, self.ve, self.tokenizer, self.conds = t3, s3gen, ve, tokenizer, conds

    @classmethod
    def get_supported_languages(cls):
        """Return dictionary of supported language codes and names."""
        return SUPPORTED_LANGUAGES.copy()

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str = REPO_ID) -> "ChatterboxMultilingualTTS":
        """A local folder (the multilingual MLX layout from `python -m mlx_impl.convert`, or the hub's
        layout: ve.pt, t3_mtl23ls_v2.safetensors, s3gen.pt, grapheme_mtl_merged_expanded_v1.json, conds.pt
        optional), or a hub repo id resolved through huggingface_hub's cache. Applies MLX's settings
        first (backend.apply_mlx_defaults)."""
        from .backend import apply_mlx_defaults
        from .load import resolve_model_dir

        apply_mlx_defaults()
        return load_mtl(resolve_model_dir(path_or_repo_id), cls)

    # the English model's, unchanged (the original's two methods are the same code)
    prepare_conditionals = ChatterboxTTS.prepare_conditionals

    def text_tokens(self, text: str, language_id: Optional[str]) -> np.ndarray:
        """punc_norm, tokenize with the language, CFG copy, [START]/[STOP] padding, as generate() does (2, n + 2)."""
        tokens = np.asarray(self.tokenizer.text_to_tokens(
            punc_norm(text), language_id=language_id.lower() if language_id else None)).reshape(1, -1)
        tokens = np.concatenate([tokens, tokens], axis=0)
        sot, eot = self.t3.hp.start_text_token, self.t3.hp.stop_text_token
        return np.pad(np.pad(tokens, ((0, 0), (1, 0)), constant_values=sot), ((0, 0), (0, 1)), constant_values=eot)

    def generate(self, text, language_id, audio_prompt_path=None, exaggeration=0.5, cfg_weight=0.5, temperature=0.8,
                 repetition_penalty=2.0, min_p=0.05, top_p=1.0, max_new_tokens: int = 1000, draw=None, flow_noise=None,
                 sine_phase=None, sine_noise=None, on_token: Optional[Callable[[int, int], None]] = None,
                 trace: Optional[dict] = None):
        """(1, L) waveform at 24 kHz. `draw` / `flow_noise` / `sine_phase` / `sine_noise` replay the
        original's random draws; `on_token(step, token)` reports T3 progress; `trace` gets t3_tokens
        and, per T3 step, the analyzer's decisions (`analysis`). The language is checked first (the
        original's ValueError is an UnsupportedLanguageError here), then every other argument."""
        from .validate import check_sampling

        check_language_id(language_id)
        check_sampling(dict(exaggeration=exaggeration))
        self.t3.check_decode_args(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                                  repetition_penalty=repetition_penalty, cfg_weight=cfg_weight)
        text_tokens = self.text_tokens(text, language_id)
        self.t3.check_text_tokens(text_tokens)
        use_conditionals(self, audio_prompt_path, exaggeration)
        analysis = []
        speech_tokens = self.t3.inference(
            t3_cond=self.conds.t3, text_tokens=text_tokens, max_new_tokens=max_new_tokens, temperature=temperature,
            cfg_weight=cfg_weight, repetition_penalty=repetition_penalty, min_p=min_p, top_p=top_p, draw=draw,
            on_token=on_token, on_step=(lambda i, out: analysis.append(out["analysis"])) if trace is not None else None)
        # Extract only the conditional batch; no `< 6561` filter here (the English generate() has one)
        speech_tokens = drop_invalid_tokens(speech_tokens[0])
        check_s3gen_tokens(speech_tokens)
        if trace is not None:
            trace.update(t3_tokens=speech_tokens, analysis=analysis)
        wav, _ = self.s3gen.inference(speech_tokens[None], ref_dict=self.conds.gen, flow_noise=flow_noise,
                                      sine_phase=sine_phase, sine_noise=sine_noise, trace=trace)
        return wav


class SpeechTokenRangeError(UsageError):
    """T3 drew a speech id that S3Gen has no embedding for (the original fails in torch's embedding)."""


def check_s3gen_tokens(speech_tokens: np.ndarray) -> None:
    """The multilingual generate() hands every id between the start and stop tokens to S3Gen, whose
    embedding table has 6561 rows: torch raises an IndexError on a larger id; MLX's gather would read
    past the table, so the id is refused here, by name."""
    bad = np.asarray(speech_tokens)[np.asarray(speech_tokens) >= SPEECH_VOCAB_SIZE]
    if bad.size:
        raise SpeechTokenRangeError(f"T3 drew speech token {int(bad[0])} (>= {SPEECH_VOCAB_SIZE}), which S3Gen cannot "
                                    "embed; the original fails here too (IndexError in S3Gen's embedding)")
