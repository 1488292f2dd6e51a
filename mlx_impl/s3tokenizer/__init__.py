"""MLX port of the S3 speech tokenizer: the pip `s3tokenizer` package (model.py = V1, model_v2.py = V2,
utils.py) and Chatterbox's subclass (s3tokenizer.py, chatterbox/models/s3tokenizer/). Standalone: it
imports nothing of Chatterbox (on the CPU it uses `mlx_impl.backend` for GELU, LayerNorm, the
attention softmax and V2's FSMN depthwise convolution where built; see model.py).

Loading weights: `from_pretrained(path_or_repo_id)` reads a local folder or file, or a Hugging Face
repo already in the local cache (offline; nothing is downloaded).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import mlx.core as mx
import numpy as np

from .model import S3Tokenizer as S3TokenizerV1
from .model_v2 import ModelConfig, S3TokenizerV2
from .s3tokenizer import (S3_HOP, S3_SR, S3_TOKEN_HOP, S3_TOKEN_RATE, SPEECH_VOCAB_SIZE, S3Tokenizer)
from .utils import (load_audio, log_mel_spectrogram, make_non_pad_mask, mask_to_bias, merge_tokenized_segments,
                    padding)

SOS = SPEECH_VOCAB_SIZE
EOS = SPEECH_VOCAB_SIZE + 1

__all__ = [
    "S3_SR", "S3_HOP", "S3_TOKEN_HOP", "S3_TOKEN_RATE", "SPEECH_VOCAB_SIZE", "SOS", "EOS",
    "ModelConfig", "S3Tokenizer", "S3TokenizerV1", "S3TokenizerV2", "drop_invalid_tokens",
    "load_audio", "log_mel_spectrogram", "make_non_pad_mask", "mask_to_bias", "padding",
    "merge_tokenized_segments", "available_models", "fetch_from_hub", "from_pretrained",
]

_MODEL_NAMES = ("speech_tokenizer_v1", "speech_tokenizer_v1_25hz", "speech_tokenizer_v2_25hz")


def available_models():
    return list(_MODEL_NAMES)


def drop_invalid_tokens(x):
    """Chatterbox's drop_invalid_tokens: the tokens after the first SOS (if any) and before the first
    EOS (if any). x: (T,) or (1, T)."""
    x = np.asarray(x)
    assert x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1), "only batch size of one allowed for now"
    flat = x.reshape(-1)
    s = int(np.nonzero(flat == SOS)[0][0]) + 1 if (flat == SOS).any() else 0
    e = int(np.nonzero(flat == EOS)[0][0]) if (flat == EOS).any() else None
    return flat[s:e]


def fetch_from_hub(repo_id: str, revision: Optional[str] = None) -> Path:
    """The snapshot folder of `repo_id` in the local Hugging Face cache. Offline: raises
    FileNotFoundError (with what to do) when the repo is not cached."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError) as e:
        raise FileNotFoundError(
            f"'{repo_id}' is neither a local path nor a repo in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); download it first (e.g. `huggingface-cli download {repo_id}`) "
            f"or pass the folder. ({type(e).__name__})"
        ) from None


# Where a folder keeps the tokenizer, in the order looked for: (file, key prefix, layout).
# "pt": the original PyTorch state dict, converted by mlx_impl.convert.s3tokenizer.sanitize;
# "mlx": this package's parameter names and layouts (the project's single-file model.safetensors).
_SOURCES = (
    ("model.safetensors", "s3_tokenizer.", "mlx"),
    ("s3gen.safetensors", "tokenizer.", "pt"),
    ("{name}.safetensors", "", "pt"),
)


def _to_numpy(v: mx.array) -> np.ndarray:
    if v.dtype in (mx.bfloat16, mx.float16):
        v = v.astype(mx.float32)
    return np.asarray(v)


def _load_weights(path: Path, name: str):
    """-> (weights dict, layout) from a folder or a .safetensors file."""
    if path.is_file():
        files = [(path, p, layout) for f, p, layout in _SOURCES if path.name == f.format(name=name)]
        files = files or [(path, "", "pt")]
    else:
        files = [(path / f.format(name=name), p, layout) for f, p, layout in _SOURCES]
    for file, prefix, layout in files:
        if not file.is_file():
            continue
        state = mx.load(str(file))
        sub = {k[len(prefix):]: _to_numpy(v) for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub, layout, file
    tried = ", ".join(f"{f.name} ({p or 'no prefix'})" for f, p, _ in files)
    raise FileNotFoundError(f"no S3 tokenizer weights in {path}: looked for {tried}")


def from_pretrained(path_or_repo_id: Union[str, Path], name: str = "speech_tokenizer_v2_25hz",
                    config=None, chatterbox: bool = True):
    """Build a tokenizer and load its weights strictly.

    path_or_repo_id: a folder (Chatterbox checkpoint with s3gen.safetensors, a folder with the
    project's model.safetensors, or a folder with `<name>.safetensors`), a .safetensors file, or a
    Hugging Face repo id resolved offline through the local cache.
    name: speech_tokenizer_v2_25hz (-> the Chatterbox subclass S3Tokenizer when `chatterbox`, else
    S3TokenizerV2), speech_tokenizer_v1 or speech_tokenizer_v1_25hz (-> V1)."""
    from ..convert.common import load_strict
    from ..convert.s3tokenizer import sanitize

    if name not in _MODEL_NAMES:
        raise ValueError(f"unknown model name '{name}'; available: {available_models()}")
    path = Path(path_or_repo_id).expanduser()
    if not path.exists():
        path = fetch_from_hub(str(path_or_repo_id))
    weights, layout, file = _load_weights(path, name)
    if layout == "pt":
        weights = sanitize(weights)
    if "v1" in name:
        model = S3TokenizerV1(name, config)
    elif chatterbox:
        model = S3Tokenizer(name, config)
    else:
        model = S3TokenizerV2(name, config)
    load_strict(model, weights, what=f"s3tokenizer from {file}")
    model.eval()
    return model
