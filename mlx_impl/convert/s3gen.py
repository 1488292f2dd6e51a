"""s3gen.safetensors (S3Token2Wav's state dict) -> MLX weights of mlx_impl.s3gen.s3gen.S3Token2Wav.

The file holds four modules, each converted by its own sanitize; keys keep the original's
module path (`flow.*`, `mel2wav.*`, `speaker_encoder.*`, `tokenizer.*`). Any other key is an error.
"""
from __future__ import annotations

from typing import Dict, Tuple

from . import campplus, flow, hift, s3tokenizer
from .common import ConversionError, Weights, load_strict

PARTS: Tuple[Tuple[str, object], ...] = (
    ("flow.", flow),
    ("mel2wav.", hift),
    ("speaker_encoder.", campplus),
    ("tokenizer.", s3tokenizer),
)


def split(state: Weights) -> Dict[str, Weights]:
    parts: Dict[str, Weights] = {p: {} for p, _ in PARTS}
    for key, value in state.items():
        prefix = next((p for p, _ in PARTS if key.startswith(p)), None)
        if prefix is None:
            raise ConversionError(f"s3gen: source tensor '{key}' belongs to no known module")
        parts[prefix][key[len(prefix):]] = value
    for prefix, sub in parts.items():
        if not sub:
            raise ConversionError(f"s3gen: no source tensors under '{prefix}'")
    return parts


def sanitize(state: Weights) -> Weights:
    out: Weights = {}
    for prefix, sub in split(state).items():
        module = dict(PARTS)[prefix]
        out.update({prefix + k: v for k, v in module.sanitize(sub).items()})
    return out


def ignored(state: Weights) -> Dict[str, str]:
    """Source keys left out on purpose -> reason."""
    out = {}
    for prefix, sub in split(state).items():
        reasons = getattr(dict(PARTS)[prefix], "IGNORED", {})
        for k in sub:
            for name, why in reasons.items():
                if k == name or k.rsplit(".", 1)[-1] == name:
                    out[prefix + k] = why
    return out


def source_names(state: Weights) -> Dict[str, str]:
    """MLX key -> source key, where conversion renames (the flow's Sequential children)."""
    return {"flow." + flow.mlx_key(k): "flow." + k for k in split(state)["flow."] if flow.mlx_key(k) != k}


def load_s3gen(state: Weights, meanflow: bool = False):
    """S3Token2Wav from a state dict; meanflow: Chatterbox Turbo's s3gen_meanflow.safetensors."""
    from ..s3gen.s3gen import S3Token2Wav

    model = S3Token2Wav(meanflow=meanflow)
    weights = sanitize(state)
    del state  # the converted arrays' only holder from here (see load_strict)
    load_strict(model, weights, what="s3gen")
    model.eval()
    return model
