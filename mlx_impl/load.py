"""Loading a Chatterbox model folder into the MLX pipeline.

Two layouts are understood:
  - the MLX single-file layout: model.safetensors (prefixes ve., t3., s3gen., s3_tokenizer.),
    config.json, tokenizer.json, optional conds.safetensors / conds.pt;
  - the hub's PyTorch layout: ve.safetensors, t3_cfg.safetensors, s3gen.safetensors,
    tokenizer.json, optional conds.pt — converted on the fly.
Loading is strict: missing and unexpected keys are reported by name.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import mlx.core as mx
import numpy as np

from .convert.common import ConversionError, load_strict

PREFIXES = ("ve.", "t3.", "s3gen.", "s3_tokenizer.")
HUB_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json")


class ModelLoadError(Exception):
    """A model folder or file is missing or malformed; the message names it."""


def resolve_model_dir(path_or_repo_id) -> Path:
    """A local folder as is; otherwise a hub repo id through huggingface_hub (its cache first,
    then a download where a network exists)."""
    p = Path(path_or_repo_id).expanduser()
    if p.is_dir():
        return p
    if p.exists() or str(path_or_repo_id).startswith((".", "/", "~")) or str(path_or_repo_id).count("/") != 1:
        raise ModelLoadError(f"model folder not found: {path_or_repo_id}")
    try:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(path_or_repo_id), local_files_only=True))
        except Exception:
            return Path(snapshot_download(str(path_or_repo_id)))
    except Exception as e:
        raise ModelLoadError(
            f"'{path_or_repo_id}' is neither a local folder nor a hub repo in the huggingface_hub cache, "
            f"and it could not be downloaded ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def layout(model_dir: Path) -> str:
    if (model_dir / "model.safetensors").is_file():
        return "mlx"
    if all((model_dir / f).is_file() for f in HUB_FILES):
        return "hub"
    missing = [f for f in HUB_FILES if not (model_dir / f).is_file()]
    raise ModelLoadError(f"{model_dir}: neither model.safetensors (MLX layout) nor the hub's files "
                         f"(missing: {', '.join(missing)})")


def split_prefixes(weights: Dict[str, mx.array], source: str) -> Dict[str, Dict[str, mx.array]]:
    parts: Dict[str, Dict[str, mx.array]] = {p: {} for p in PREFIXES}
    unknown = []
    for k, v in weights.items():
        prefix = next((p for p in PREFIXES if k.startswith(p)), None)
        if prefix is None:
            unknown.append(k)
        else:
            parts[prefix][k[len(prefix):]] = v
    if unknown:
        raise ModelLoadError(f"{source}: {len(unknown)} keys outside {PREFIXES}: {unknown[:10]}")
    return parts


def _read_safetensors(path: Path) -> Dict[str, mx.array]:
    try:
        return mx.load(str(path))
    except Exception as e:
        raise ModelLoadError(f"malformed safetensors file {path}: {e}") from None


def build_modules(config: dict):
    from .s3gen.s3gen import S3Token2Wav
    from .t3 import T3, T3Config
    from .voice_encoder import VoiceEncoder

    t3 = T3(T3Config(text_tokens_dict_size=int(config.get("t3", {}).get("text_tokens_dict_size", 704))))
    return VoiceEncoder(), t3, S3Token2Wav()


def load_mlx_layout(model_dir: Path):
    """Modules from model.safetensors + config.json (strict: missing/unexpected keys named)."""
    import mlx.nn as nn

    cfg_path = model_dir / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    parts = split_prefixes(_read_safetensors(model_dir / "model.safetensors"), str(model_dir / "model.safetensors"))
    ve, t3, s3gen = build_modules(config)
    q = config.get("quantization", {}).get("t3")
    if q:
        nn.quantize(t3.tfmr, group_size=q["group_size"], bits=q["bits"])
    s3gen_weights = dict(parts["s3gen."])
    s3gen_weights.update({"tokenizer." + k: v for k, v in parts["s3_tokenizer."].items()})
    for name, module, w in (("ve", ve, parts["ve."]), ("t3", t3, parts["t3."]), ("s3gen", s3gen, s3gen_weights)):
        try:
            load_strict(module, {k: np.asarray(v) if v.dtype != mx.bfloat16 else v for k, v in w.items()}, what=name)
        except ConversionError as e:
            raise ModelLoadError(f"{model_dir / 'model.safetensors'}: {e}") from None
        module.eval()
    return ve, t3, s3gen


def load_hub_layout(model_dir: Path):
    """Modules from the hub's PyTorch files, converted on the fly."""
    from parity.checkpoint_dir import read_safetensors

    from .convert.s3gen import load_s3gen
    from .convert.t3 import load_t3
    from .convert.voice_encoder import load_voice_encoder

    try:
        ve = load_voice_encoder(read_safetensors(model_dir / "ve.safetensors"))
        t3 = load_t3(read_safetensors(model_dir / "t3_cfg.safetensors"))
        s3gen = load_s3gen(read_safetensors(model_dir / "s3gen.safetensors"))
    except ConversionError as e:
        raise ModelLoadError(f"{model_dir}: {e}") from None
    except Exception as e:
        if type(e).__name__ == "ParityError":
            raise ModelLoadError(str(e)) from None
        raise
    return ve, t3, s3gen


def is_quantized(module) -> bool:
    import mlx.nn as nn

    return any(isinstance(m, nn.QuantizedLinear) for _, m in module.named_modules())


def set_half_precision(t3, s3gen, dtype) -> None:
    """T3, the flow and the vocoder in `dtype` (the precision matrix's fp16/bf16 setting); the
    speech tokenizer, CAMPPlus and the VoiceEncoder stay float32."""
    for module in (t3, s3gen.flow, s3gen.mel2wav):
        module.set_dtype(dtype)


def load_pipeline(model_dir: Path, cls):
    from .tokenizers import EnTokenizer
    from .tts import Conditionals

    kind = layout(model_dir)
    ve, t3, s3gen = load_mlx_layout(model_dir) if kind == "mlx" else load_hub_layout(model_dir)
    if not is_quantized(t3.tfmr):
        t3.fuse_projections()
    tok_path = model_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise ModelLoadError(f"tokenizer file missing: {tok_path}")
    tokenizer = EnTokenizer(str(tok_path))
    conds = None
    for name in ("conds.safetensors", "conds.pt"):
        if (model_dir / name).is_file():
            conds = Conditionals.load(model_dir / name)
            break
    return cls(t3, s3gen, ve, tokenizer, conds=conds)
