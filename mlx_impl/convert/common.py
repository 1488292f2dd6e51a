"""Strict conversion helpers shared by every component's `sanitize`.

Layouts are decided by module type (never by shape alone):
  Conv1d          torch (O, I, K)    -> mlx (O, K, I)
  ConvTranspose1d torch (I, O, K)    -> mlx (O, K, I)
  Conv2d          torch (O, I, H, W) -> mlx (O, H, W, I)
"""
from __future__ import annotations

from typing import Dict, Iterable

import numpy as np

Weights = Dict[str, np.ndarray]


class ConversionError(ValueError):
    """A source tensor is missing, unexpected or of the wrong shape; the message names it."""


def in_source_file(file_name: str, fn, *a):
    """fn(*a), its ConversionError (or a missing key) prefixed with the source file it is about."""
    try:
        return fn(*a)
    except ConversionError as e:
        raise ConversionError(f"{file_name}: {e}") from None
    except KeyError as e:
        raise ConversionError(f"{file_name}: missing source tensor {e}") from None


def conv1d(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, (0, 2, 1)))


def conv_transpose1d(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, (1, 2, 0)))


def conv2d(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, (0, 2, 3, 1)))


def weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """torch.nn.utils.parametrizations.weight_norm (dim=0): w = g * v / ||v||, norm over all axes but 0."""
    axes = tuple(range(1, v.ndim))
    norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=axes, keepdims=True))
    return (g.astype(np.float64) * v / norm).astype(v.dtype)


def take(weights: Weights, key: str, consumed: set) -> np.ndarray:
    if key not in weights:
        raise ConversionError(f"missing source tensor '{key}'")
    consumed.add(key)
    return weights[key]


def check_all_consumed(weights: Weights, consumed: Iterable[str], ignored_prefixes=(), what="") -> None:
    left = sorted(k for k in weights if k not in set(consumed) and not k.startswith(tuple(ignored_prefixes)))
    if left:
        raise ConversionError(f"{what}: {len(left)} source tensors not consumed: {left[:10]}")


def load_strict(model, weights: Weights, what: str = "") -> None:
    """Assign `weights` (MLX layout, flat keys) to `model`, emptying the dict; every parameter must
    be assigned once, with the right shape. Errors name the key (and leave `weights` as it was)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    params = dict(tree_flatten(model.parameters()))
    missing = sorted(set(params) - set(weights))
    unexpected = sorted(set(weights) - set(params))
    if missing or unexpected:
        raise ConversionError(
            f"{what}: {len(missing)} MLX parameters unassigned {missing[:10]}, "
            f"{len(unexpected)} unexpected {unexpected[:10]}"
        )
    for k, v in weights.items():
        if tuple(params[k].shape) != tuple(v.shape):
            raise ConversionError(f"{what}: '{k}' has shape {tuple(v.shape)}, model expects {tuple(params[k].shape)}")
    # `weights` is consumed key by key: each source array is released as its MLX copy is made (where
    # the caller holds no other reference), so that a model's weights are not held twice while loading
    model.load_weights([(k, mx.array(weights.pop(k))) for k in list(weights)], strict=True)
