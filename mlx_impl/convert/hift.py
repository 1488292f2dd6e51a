"""HiFTGenerator weights (s3gen.safetensors keys under `mel2wav.`, passed without the prefix) -> MLX.

Module types decide the layout (never shapes):
  ConvTranspose1d  ups.N                                              (I, O, K) -> (O, K, I)
  Conv1d           conv_pre, conv_post, source_downs.N, f0_predictor.condnet.N,
                   [source_]resblocks.N.convs{1,2}.M                  (O, I, K) -> (O, K, I)
  Linear           m_source.l_linear, f0_predictor.classifier         as is
  Snake            [source_]resblocks.N.activations{1,2}.M.alpha      as is
weight_norm parametrizations (original0 = g, original1 = v) are folded: w = g * v / ||v||.
"""
from __future__ import annotations

import re
from typing import Dict

import numpy as np

from .common import ConversionError, Weights, check_all_consumed, conv1d, conv_transpose1d, take, weight_norm

_RESBLOCK_CONV = r"(?:source_)?resblocks\.\d+\.convs[12]\.\d+"
_MODULES = [  # (regex of the module path, type)
    (r"ups\.\d+", "conv_transpose1d"),
    (r"conv_pre|conv_post|source_downs\.\d+|f0_predictor\.condnet\.\d+|" + _RESBLOCK_CONV, "conv1d"),
    (r"m_source\.l_linear|f0_predictor\.classifier", "linear"),
    (r"(?:source_)?resblocks\.\d+\.activations[12]\.\d+", "snake"),
]
_WN_G = ".parametrizations.weight.original0"
_WN_V = ".parametrizations.weight.original1"

# buffers and attributes of the original that are not in its state dict, for the record:
# stft_window (a plain tensor attribute), trim_fade (S3Token2Wav, persistent=False).
IGNORED: Dict[str, str] = {}


def _module_type(module: str) -> str:
    for pattern, kind in _MODULES:
        if re.fullmatch(pattern, module):
            return kind
    raise ConversionError(f"hift: unexpected source module '{module}'")


def _modules(state: Weights):
    """Module paths in the state dict, with how their weight is stored."""
    out = {}
    for key in state:
        if key.endswith(_WN_G) or key.endswith(_WN_V):
            out[key[: -len(_WN_G)]] = "weight_norm"
        elif key.endswith(".weight") or key.endswith(".bias"):
            out.setdefault(key.rsplit(".", 1)[0], "plain")
        elif key.endswith(".alpha"):
            out[key[: -len(".alpha")]] = "alpha"
        else:
            raise ConversionError(f"hift: unexpected source tensor '{key}'")
    return out


def sanitize(state: Weights) -> Weights:
    """Original HiFTGenerator state dict (keys relative to mel2wav) -> MLX HiFTGenerator weights."""
    consumed: set = set()
    out: Weights = {}
    for module, storage in sorted(_modules(state).items()):
        kind = _module_type(module)
        if kind == "snake":
            if storage != "alpha":
                raise ConversionError(f"hift: Snake '{module}' without alpha")
            alpha = take(state, f"{module}.alpha", consumed)
            if alpha.ndim != 1:
                raise ConversionError(f"hift: '{module}.alpha' has shape {alpha.shape}, expected (C,)")
            out[f"{module}.alpha"] = alpha.astype(np.float32)
            continue
        if storage == "weight_norm":
            g = take(state, module + _WN_G, consumed)
            v = take(state, module + _WN_V, consumed)
            if g.shape != (v.shape[0],) + (1,) * (v.ndim - 1):
                raise ConversionError(f"hift: '{module + _WN_G}' has shape {g.shape} for v of shape {v.shape}")
            w = weight_norm(g.astype(np.float32), v.astype(np.float32))
        else:
            w = take(state, f"{module}.weight", consumed).astype(np.float32)
        if kind == "linear":
            if w.ndim != 2:
                raise ConversionError(f"hift: Linear '{module}.weight' has shape {w.shape}")
            out[f"{module}.weight"] = w
        else:
            if w.ndim != 3:
                raise ConversionError(f"hift: convolution '{module}' weight has shape {w.shape}, expected 3-D")
            out[f"{module}.weight"] = conv_transpose1d(w) if kind == "conv_transpose1d" else conv1d(w)
        bias_key = f"{module}.bias"
        if bias_key in state:
            out[bias_key] = take(state, bias_key, consumed).astype(np.float32)
    check_all_consumed(state, consumed, what="hift")
    return out


def strip_prefix(state: Weights, prefix: str = "mel2wav.") -> Weights:
    """The HiFT part of a full s3gen state dict, keys without `prefix`."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def build_hift(state: Weights):
    """The S3Gen vocoder (HiFTGenerator as S3Token2Wav builds it, with its ConvRNNF0Predictor) with
    `state` (keys relative to mel2wav) loaded strictly."""
    from ..s3gen.f0_predictor import ConvRNNF0Predictor
    from ..s3gen.hifigan import HiFTConfig, HiFTGenerator
    from .common import load_strict

    model = HiFTGenerator(HiFTConfig.s3gen(), f0_predictor=ConvRNNF0Predictor())
    load_strict(model, sanitize(state), what="hift")
    model.eval()
    return model
