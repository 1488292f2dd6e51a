"""Name maps and output adapters between the ORIGINAL module trees and the MLX ones, for
`chatterbox-parity bisect` (parity/bisect.py).

A name map takes a sub-module name of the original (relative to the stage's root module, as
`named_modules()` gives it) and returns the MLX sub-module's name, or None when the MLX tree has no
counterpart (the original module is then not compared: e.g. nn.ReLU / Dropout modules that MLX
applies as functions). Names the map returns that the MLX tree lacks are simply unmatched.

Output adapters turn a module's raw output into the tensor that is compared, where the two
frameworks return different things by design (e.g. torch.nn.LSTM's (output, (h, c)) against the MLX
wrapper's final hidden state).
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Optional

NameMap = Callable[[str], Optional[str]]

# original sub-modules that are never compared: weight-norm parametrizations (called whenever the
# conv's `weight` is read, not part of the data flow)
_SKIP = re.compile(r"(^|\.)parametrizations(\.|$)")


def skip_original(name: str) -> bool:
    return bool(_SKIP.search(name))


def identity(name: str) -> Optional[str]:
    return name


def s3tokenizer(name: str) -> Optional[str]:
    """The quantizer's `_codebook` is `codebook` in MLX (MLX hides `_` attributes), as
    mlx_impl/convert/s3tokenizer.py renames its keys."""
    return re.sub(r"(^|\.)_codebook(\.|$)", r"\1codebook\2", name)


def flow_encoder(name: str) -> Optional[str]:
    """The flow encoder's names through mlx_impl/convert/flow.py's own rename rules (mlx_key works on
    parameter keys of the flow: `encoder.<module>.<param>`)."""
    from mlx_impl.convert.flow import mlx_key

    if name == "":
        return ""
    return mlx_key(f"encoder.{name}.x")[len("encoder."):-len(".x")]


# CausalBlock1D's Sequential (S3Gen's estimator is causal throughout): CausalConv1d, Transpose, LayerNorm,
# Transpose, Mish; MLX has `conv` and `norm` and applies the rest as functions. (The parameter renames
# map block.1 to `norm` too: Block1D's GroupNorm, which a module-name map must not do here.)
_CAUSAL_BLOCK = re.compile(r"\.block\.(\d+)$")
_CAUSAL_BLOCK_MLX = {"0": "conv", "2": "norm"}


def flow(name: str) -> Optional[str]:
    """The whole flow's module names (encoder.*, decoder.estimator.*) through mlx_impl/convert/flow.py's
    rename rules, as its parameter keys are renamed; CausalBlock1D's Sequential children by position;
    no counterpart for the Sequentials whose MLX name is their child's."""
    from mlx_impl.convert.flow import mlx_key

    if name == "":
        return ""
    if name.endswith(".mlp"):  # ResnetBlock1D's Sequential(Mish, Linear): MLX's `mlp` is the Linear (mlp.1)
        return None
    m = _CAUSAL_BLOCK.search(name)
    if m is not None:
        child = _CAUSAL_BLOCK_MLX.get(m.group(1))
        return None if child is None else flow(name[:m.start()]) + "." + child
    return mlx_key(f"{name}.x")[:-len(".x")]


def voice_encoder(name: str) -> Optional[str]:
    return name  # `lstm` and `proj` keep their names; MLX adds `lstm.layers.N` (no original module)


# ------------------------------------------------------------------------------ output adapters
def _lstm_final_hidden(out):
    """torch.nn.LSTM -> (output, (h_n, c_n)): the last layer's final hidden state h_n[-1] (B, H), what
    the MLX LSTM wrapper returns (and what VoiceEncoder.forward projects)."""
    return out[1][0][-1]


ORIGINAL_OUTPUT_ADAPTERS: Dict[str, Dict[str, Callable]] = {
    "ve": {"lstm": _lstm_final_hidden},
}
MLX_OUTPUT_ADAPTERS: Dict[str, Dict[str, Callable]] = {}
