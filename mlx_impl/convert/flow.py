"""S3Gen flow weights (keys under `flow.` of s3gen.safetensors, passed WITHOUT that prefix) -> MLX.

Renames (the original's nn.Sequential / ModuleList indices become named attributes):
  *.block.0.* -> *.conv.*   (Block1D / CausalBlock1D convolution)
  *.block.1.* -> *.norm.*   (Block1D GroupNorm)
  *.block.2.* -> *.norm.*   (CausalBlock1D LayerNorm)
  *.mlp.1.*   -> *.mlp.*    (ResnetBlock1D: Mish then Linear)
  {down,mid,up}_blocks.i.0 / .1.j / .2 -> .resnet / .transformer_blocks.j / .downsample|.upsample
  attn1.to_out.0 -> attn1.to_out;  ff.net.0 -> ff.act;  ff.net.2 -> ff.proj_out
  encoder.{embed,up_embed}.out.0 / .out.1 -> .linear / .norm
Layouts, by the module each key belongs to (never by shape): Conv1d / CausalConv1d weights
(O, I, K) -> (O, K, I); the matcha Upsample1D's ConvTranspose1d (I, O, K) -> (O, K, I).
No source tensor is ignored.
"""
from __future__ import annotations

import re

from .common import ConversionError, Weights, check_all_consumed, conv1d, conv_transpose1d, take

IGNORED_PREFIXES: tuple = ()  # nothing of the flow is left out

_RENAMES = [
    (re.compile(r"^(decoder\.estimator\.down_blocks\.\d+)\.0\."), r"\1.resnet."),
    (re.compile(r"^(decoder\.estimator\.down_blocks\.\d+)\.1\.(\d+)\."), r"\1.transformer_blocks.\2."),
    (re.compile(r"^(decoder\.estimator\.down_blocks\.\d+)\.2\."), r"\1.downsample."),
    (re.compile(r"^(decoder\.estimator\.mid_blocks\.\d+)\.0\."), r"\1.resnet."),
    (re.compile(r"^(decoder\.estimator\.mid_blocks\.\d+)\.1\.(\d+)\."), r"\1.transformer_blocks.\2."),
    (re.compile(r"^(decoder\.estimator\.up_blocks\.\d+)\.0\."), r"\1.resnet."),
    (re.compile(r"^(decoder\.estimator\.up_blocks\.\d+)\.1\.(\d+)\."), r"\1.transformer_blocks.\2."),
    (re.compile(r"^(decoder\.estimator\.up_blocks\.\d+)\.2\."), r"\1.upsample."),
    (re.compile(r"\.block\.0\."), ".conv."),
    (re.compile(r"\.block\.[12]\."), ".norm."),
    (re.compile(r"\.mlp\.1\."), ".mlp."),
    (re.compile(r"\.attn1\.to_out\.0\."), ".attn1.to_out."),
    (re.compile(r"\.ff\.net\.0\."), ".ff.act."),
    (re.compile(r"\.ff\.net\.2\."), ".ff.proj_out."),
    (re.compile(r"^(encoder\.(?:up_)?embed)\.out\.0\."), r"\1.linear."),
    (re.compile(r"^(encoder\.(?:up_)?embed)\.out\.1\."), r"\1.norm."),
]

# (MLX key pattern, layout) for every convolution weight of the flow
_CONV1D = re.compile(
    r"^(encoder\.pre_lookahead_layer\.conv[12]"
    r"|encoder\.up_layer\.conv"
    r"|decoder\.estimator\..*\.block[12]\.conv"
    r"|decoder\.estimator\.final_block\.conv"
    r"|decoder\.estimator\..*\.res_conv"
    r"|decoder\.estimator\.final_proj"
    r"|decoder\.estimator\.down_blocks\.\d+\.downsample(\.conv)?"  # CausalConv1d / Conv1d / Downsample1D.conv
    r"|decoder\.estimator\.up_blocks\.\d+\.upsample"  # CausalConv1d / Conv1d (last up block)
    r")\.weight$"
)
_CONV_TRANSPOSE1D = re.compile(r"^decoder\.estimator\.up_blocks\.\d+\.upsample\.conv\.weight$")  # matcha Upsample1D


def mlx_key(key: str) -> str:
    for pattern, repl in _RENAMES:
        key = pattern.sub(repl, key)
    return key


def sanitize(state: Weights) -> Weights:
    """Original flow state dict (without the `flow.` prefix) -> MLX weights for
    mlx_impl.s3gen.flow.CausalMaskedDiffWithXvec. Raises ConversionError naming any bad key."""
    if any(k.startswith("flow.") for k in state):
        raise ConversionError("flow sanitize: pass the keys without their 'flow.' prefix")
    out: Weights = {}
    consumed: set = set()
    for key in sorted(state):
        if key.startswith(IGNORED_PREFIXES):
            continue
        w = take(state, key, consumed)
        new = mlx_key(key)
        if _CONV_TRANSPOSE1D.match(new):
            if w.ndim != 3:
                raise ConversionError(f"'{key}': ConvTranspose1d weight must be 3-D, got {w.shape}")
            w = conv_transpose1d(w)
        elif _CONV1D.match(new):
            if w.ndim != 3:
                raise ConversionError(f"'{key}': Conv1d weight must be 3-D, got {w.shape}")
            w = conv1d(w)
        elif w.ndim == 3:
            raise ConversionError(f"'{key}': 3-D tensor of no known convolution")
        if new in out:
            raise ConversionError(f"'{key}' maps to '{new}', already assigned")
        out[new] = w
    check_all_consumed(state, consumed, IGNORED_PREFIXES, what="flow")
    return out
