"""PyTorch -> MLX weights of the S3 speech tokenizer (V2 as used by Chatterbox, and V1).

Source keys are the original module's state dict, without Chatterbox's `tokenizer.` prefix
(Chatterbox stores them inside s3gen.safetensors as `tokenizer.*`). Mapping:

  encoder.conv{1,2}.weight                  Conv1d (O, I, K)        -> (O, K, I)
  encoder.blocks.N.attn.fsmn_block.weight   depthwise Conv1d (C, 1, K) -> (C, K, 1)
  quantizer._codebook.*                     -> quantizer.codebook.*  (MLX hides `_` attributes)
  every other listed tensor                 unchanged (Linear keeps torch's (out, in) layout)

Ignored, with reason: `_mel_filters` and `window`, the Chatterbox subclass's buffers (librosa mel
filters, hann window), recomputed at init by the MLX module; the original loads with strict=False
because they are usually not stored.
"""
from __future__ import annotations

import re
from typing import Dict

import numpy as np

from .common import ConversionError, Weights, check_all_consumed, conv1d, take

IGNORED = {
    "_mel_filters": "librosa mel filterbank buffer, recomputed at init (mlx_impl.s3tokenizer.utils.mel_filters)",
    "window": "hann window buffer, recomputed at init (mlx_impl.s3tokenizer.utils.hann_window)",
}

_CONV = re.compile(r"^encoder\.conv[12]\.weight$")
_FSMN = re.compile(r"^encoder\.blocks\.\d+\.attn\.fsmn_block\.weight$")
_PLAIN = re.compile(
    r"^encoder\.conv[12]\.bias$"
    r"|^encoder\.positional_embedding$"
    r"|^encoder\.blocks\.\d+\.attn\.(query|value|out)\.(weight|bias)$"
    r"|^encoder\.blocks\.\d+\.attn\.key\.weight$"
    r"|^encoder\.blocks\.\d+\.(attn_ln|mlp_ln)\.(weight|bias)$"
    r"|^encoder\.blocks\.\d+\.mlp\.[02]\.(weight|bias)$"
)
_CODEBOOK = re.compile(r"^quantizer\._codebook\.(project_down\.weight|project_down\.bias|embed)$")


def sanitize(state: Dict[str, np.ndarray], verbose: bool = False) -> Weights:
    """Original S3TokenizerV2 / S3Tokenizer (V1) state dict -> MLX weights for
    mlx_impl.s3tokenizer (model_v2.S3TokenizerV2, s3tokenizer.S3Tokenizer, model.S3Tokenizer).
    Raises ConversionError naming any key it does not know."""
    out: Weights = {}
    consumed = set()
    for key in sorted(state):
        if key in IGNORED:
            continue
        if _CONV.match(key):
            w = take(state, key, consumed)
            if w.ndim != 3:
                raise ConversionError(f"'{key}': Conv1d weight must be (O, I, K), got shape {w.shape}")
            out[key] = conv1d(np.asarray(w, dtype=np.float32))
        elif _FSMN.match(key):
            w = take(state, key, consumed)
            if w.ndim != 3 or w.shape[1] != 1:
                raise ConversionError(f"'{key}': depthwise Conv1d weight must be (C, 1, K), got shape {w.shape}")
            out[key] = conv1d(np.asarray(w, dtype=np.float32))
        elif _PLAIN.match(key):
            out[key] = np.asarray(take(state, key, consumed), dtype=np.float32)
        elif _CODEBOOK.match(key):
            out[key.replace("quantizer._codebook.", "quantizer.codebook.")] = np.asarray(
                take(state, key, consumed), dtype=np.float32)
        else:
            raise ConversionError(f"s3tokenizer: unexpected source tensor '{key}'")
    check_all_consumed(state, consumed, ignored_prefixes=tuple(IGNORED), what="s3tokenizer")
    if verbose:
        n_ignored = sum(k in IGNORED for k in state)
        print(f"s3tokenizer: {len(consumed)} tensors converted, {n_ignored} ignored ({sorted(IGNORED)})")
    return out


def strip_prefix(state: Dict[str, np.ndarray], prefix: str = "tokenizer.") -> Dict[str, np.ndarray]:
    """The tokenizer's tensors of a larger state dict (e.g. s3gen.safetensors), prefix removed."""
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise ConversionError(f"no tensor starts with '{prefix}'")
    return sub
