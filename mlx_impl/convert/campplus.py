"""CAMPPlus weights: s3gen.safetensors `speaker_encoder.*` (prefix removed) -> mlx_impl.s3gen.xvector.CAMPPlus.

MLX keys are the original's (the MLX modules keep the PyTorch child names); layouts change by
module type, decided from the key's module path (never from the shape):
  head.{conv1,conv2}, head.layerN.M.{conv1,conv2,shortcut.0}     Conv2d  (O,I,H,W) -> (O,H,W,I)
  head.{bn1,bn2}, head.layerN.M.{bn1,bn2,shortcut.1}             BatchNorm2d
  xvector.**.{linear,linear1,linear2,linear_local}               Conv1d  (O,I,K) -> (O,K,I)
  xvector.**.batchnorm                                           BatchNorm1d (affine or not)
  xvector.**.prelu                                               PReLU (not in the released config)
BatchNorm running_mean / running_var become MLX BatchNorm's running_mean / running_var.
"""
from __future__ import annotations

from .common import ConversionError, Weights, check_all_consumed, conv1d, conv2d, take

# Source tensors dropped on purpose, by parameter name, with the reason.
IGNORED = {
    "num_batches_tracked": "BatchNorm's training step counter (used only for momentum=None averaging "
                           "in training); inference uses running_mean/running_var alone",
}

_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def module_type(module_path: str) -> str:
    """The original module type of `module_path` (a key without its parameter name)."""
    last = module_path.rsplit(".", 1)[-1]
    if module_path.startswith("head."):
        if last in ("conv1", "conv2") or module_path.endswith(".shortcut.0"):
            return "conv2d"
        if last in ("bn1", "bn2") or module_path.endswith(".shortcut.1"):
            return "batchnorm"
    elif module_path.startswith("xvector."):
        if last in ("linear", "linear1", "linear2", "linear_local"):
            return "conv1d"
        if last == "batchnorm":
            return "batchnorm"
        if last == "prelu":
            return "prelu"
    raise ConversionError(f"campplus: unknown module '{module_path}'")


def ignored_keys(state: Weights) -> list:
    return sorted(k for k in state if k.rsplit(".", 1)[-1] in IGNORED)


def sanitize(state: Weights) -> Weights:
    consumed: set = set(ignored_keys(state))
    out: Weights = {}
    for key in sorted(state):
        if key in consumed:
            continue
        path, param = key.rsplit(".", 1)
        kind = module_type(path)
        value = take(state, key, consumed)
        if kind in ("conv1d", "conv2d") and param == "weight":
            ndim = 3 if kind == "conv1d" else 4
            if value.ndim != ndim:
                raise ConversionError(f"campplus: '{key}' ({kind}) has shape {value.shape}, expected {ndim} dims")
            out[key] = conv1d(value) if kind == "conv1d" else conv2d(value)
        elif (kind in ("conv1d", "conv2d") and param == "bias") or (kind == "batchnorm" and param in _BN_PARAMS) \
                or (kind == "prelu" and param == "weight"):
            out[key] = value
        else:
            raise ConversionError(f"campplus: unexpected parameter '{key}' of a {kind}")
    check_all_consumed(state, consumed, what="campplus")
    return out


def load_campplus(state: Weights):
    """A CAMPPlus with the converted weights, in eval mode (BatchNorm on running statistics)."""
    from ..s3gen.xvector import CAMPPlus
    from .common import load_strict

    model = CAMPPlus(memory_efficient=False)
    load_strict(model, sanitize(state), what="campplus")
    model.eval()
    return model
