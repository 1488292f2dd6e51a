"""Loading a Chatterbox model folder into the MLX pipeline.

Two layouts are understood:
  - the MLX single-file layout: model.safetensors (prefixes ve., t3., s3gen., s3_tokenizer.),
    config.json, tokenizer.json, optional conds.safetensors / conds.pt;
  - the hub's PyTorch layout: ve.safetensors, t3_cfg.safetensors, s3gen.safetensors,
    tokenizer.json, optional conds.pt — converted on the fly.
Chatterbox Turbo's and Chatterbox Multilingual's folders are named as such (tts_turbo.py and
mtl_tts.py load them).
Loading is strict: missing and unexpected keys are reported by name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import mlx.core as mx
import numpy as np

from .convert.common import ConversionError, load_strict
from .validate import UsageError

PREFIXES = ("ve.", "t3.", "s3gen.", "s3_tokenizer.")
HUB_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json")


class ModelLoadError(UsageError):
    """A model folder or file is missing or malformed; the message names it (a UsageError: the
    command line prints it as one line, exit status 2)."""


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
                         f"(missing: {', '.join(missing)}){turbo_note(model_dir)}{mtl_note(model_dir)}")


TURBO_FILES = ("t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors")
TURBO_MODEL_TYPE = "chatterbox_turbo"  # config.json's model_type in Turbo's MLX layout


def turbo_note(model_dir: Path) -> str:
    """What an error about a missing file adds when the folder holds Chatterbox Turbo's files."""
    found = [f for f in TURBO_FILES if (model_dir / f).is_file()]
    if not found:
        return ""
    return (f"; it holds Chatterbox Turbo's {', '.join(found)}: a Turbo checkpoint, which this loader does not "
            "read (load it with mlx_impl.tts_turbo.ChatterboxTurboTTS)")


MTL_T3_FILE = "t3_mtl23ls_v2.safetensors"  # Chatterbox Multilingual's T3 (mtl_tts.py reads its folders)
MTL_MODEL_TYPE = "chatterbox_multilingual"  # config.json's model_type in the multilingual MLX layout


def mtl_note(model_dir: Path) -> str:
    """What an error about a missing file adds when the folder holds Chatterbox Multilingual's T3."""
    if not (model_dir / MTL_T3_FILE).is_file():
        return ""
    return (f"; it holds Chatterbox Multilingual's {MTL_T3_FILE}: a multilingual checkpoint, which this loader "
            "does not read (load it with ChatterboxMultilingualTTS)")


def refuse_mtl_config(model_dir: Path, config: dict) -> None:
    """An MLX-layout folder converted from Chatterbox Multilingual is named as such to the English loader."""
    if config.get("model_type") == MTL_MODEL_TYPE:
        raise ModelLoadError(f"{model_dir / 'config.json'}: model_type {MTL_MODEL_TYPE!r}, a Chatterbox Multilingual "
                             "folder, which this loader does not read (load it with ChatterboxMultilingualTTS)")


def refuse_turbo_config(model_dir: Path, config: dict) -> None:
    """An MLX-layout folder converted from Chatterbox Turbo is named as such to the English and VC
    loaders (its T3 is GPT-2, its S3Gen MeanFlow: loading would fail key by key)."""
    if config.get("model_type") == TURBO_MODEL_TYPE:
        raise ModelLoadError(f"{model_dir / 'config.json'}: model_type {TURBO_MODEL_TYPE!r}, a Chatterbox Turbo "
                             "folder, which this loader does not read (load it with "
                             "mlx_impl.tts_turbo.ChatterboxTurboTTS)")


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


def read_config(model_dir: Path) -> dict:
    """config.json of the MLX layout ({} when absent); a malformed one is an error naming it."""
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        return {}
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"malformed config file {cfg_path}: {e}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"malformed config file {cfg_path}: a JSON object expected, not {type(config).__name__}")
    q = config.get("quantization", {})
    q = q.get("t3") if isinstance(q, dict) else q
    if q and not (isinstance(q, dict) and isinstance(q.get("group_size"), int) and q.get("bits") in (2, 3, 4, 6, 8)):
        raise ModelLoadError(f"malformed config file {cfg_path}: quantization.t3 must be {{\"group_size\": int, "
                             f"\"bits\": 2|3|4|6|8}}, not {q!r}")
    t3 = config.get("t3", {})
    if not isinstance(t3, dict) or not isinstance(t3.get("text_tokens_dict_size", 704), int):
        raise ModelLoadError(f"malformed config file {cfg_path}: t3.text_tokens_dict_size must be an integer")
    return config


def load_mlx_layout(model_dir: Path, modules=None):
    """Modules from model.safetensors + config.json (strict: missing/unexpected keys named);
    `modules`: (ve, t3, s3gen) to fill, else the English model's, built from config.json."""
    import mlx.nn as nn

    config = read_config(model_dir)
    parts = split_prefixes(_read_safetensors(model_dir / "model.safetensors"), str(model_dir / "model.safetensors"))
    ve, t3, s3gen = modules if modules is not None else build_modules(config)
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
    keep_front_end_float32(ve, s3gen)
    return ve, t3, s3gen


def keep_front_end_float32(ve, s3gen) -> None:
    """A half-precision layout (`convert --dtype float16|bfloat16`) runs T3, the flow and the vocoder in its
    dtype; the VoiceEncoder, the S3 tokenizer and CAMPPlus compute in float32 (their kernels take float32
    only: set_half_precision's split), also where an older layout stored them in half precision."""
    for module in (ve, s3gen.tokenizer, s3gen.speaker_encoder):
        module.set_dtype(mx.float32)


def read_state_dict(path: Path) -> Dict[str, np.ndarray]:
    """One of the hub's weight files as numpy arrays, bfloat16 tensors widened to float32 (numpy
    has no bfloat16); a malformed or empty file is an error naming it."""
    weights = _read_safetensors(path)
    if not weights:
        raise ModelLoadError(f"safetensors file holds no tensors: {path}")
    return {k: np.asarray(v.astype(mx.float32) if v.dtype == mx.bfloat16 else v) for k, v in weights.items()}


def convert_file(loader, path: Path):
    """`loader` (a converter of the hub's state dict) applied to the weight file `path`; a conversion
    error or a missing tensor is an error naming the file."""
    try:  # the loader holds the only reference to the state dict, so that it can release it
        return loader(read_state_dict(path))
    except ConversionError as e:
        raise ModelLoadError(f"{path}: {e}") from None
    except KeyError as e:
        raise ModelLoadError(f"{path}: missing source tensor {e}") from None


def load_hub_layout(model_dir: Path):
    """Modules from the hub's PyTorch files, converted on the fly."""
    from .convert.s3gen import load_s3gen
    from .convert.t3 import load_t3
    from .convert.voice_encoder import load_voice_encoder

    ve = convert_file(load_voice_encoder, model_dir / "ve.safetensors")
    t3 = convert_file(load_t3, model_dir / "t3_cfg.safetensors")
    s3gen = convert_file(load_s3gen, model_dir / "s3gen.safetensors")
    return ve, t3, s3gen


def is_quantized(module) -> bool:
    import mlx.nn as nn

    return any(isinstance(m, nn.QuantizedLinear) for _, m in module.named_modules())


def set_half_precision(t3, s3gen, dtype) -> None:
    """T3, the flow and the vocoder in `dtype` (the precision matrix's fp16/bf16 setting); the
    speech tokenizer, CAMPPlus and the VoiceEncoder stay float32."""
    for module in (t3, s3gen.flow, s3gen.mel2wav):
        cast_in_place(module, dtype)


def cast_in_place(module, dtype) -> None:
    """module.set_dtype(dtype) (its floating-point parameters), one leaf module at a time, each cast
    evaluated before the next: cast whole, a model's weights would be held in both dtypes at once.
    The last set_dtype casts what modules with children hold themselves (arrays already in `dtype`
    are left as they are)."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    for _, leaf in tree_flatten(module.leaf_modules(), is_leaf=lambda m: isinstance(m, nn.Module)):
        leaf.set_dtype(dtype)
        mx.eval(leaf.parameters())
    module.set_dtype(dtype)
    mx.eval(module.parameters())


def load_tokenizer(path: Path):
    """EnTokenizer from a tokenizer.json; a missing or malformed one is an error naming it."""
    from .tokenizers import EnTokenizer

    if not path.is_file():
        raise ModelLoadError(f"tokenizer file missing: {path}")
    try:
        tokenizer = EnTokenizer(str(path))
    except AssertionError:
        raise ModelLoadError(f"malformed tokenizer file {path}: no [START] / [STOP] token in its vocabulary") from None
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise ModelLoadError(f"malformed tokenizer file {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    return tokenizer


def load_conds(path: Path):
    """The built-in voice (conds.safetensors or the original's conds.pt); a malformed one is an
    error naming it."""
    from .conditionals import Conditionals

    try:
        conds = Conditionals.load(path)
        t3, gen = conds.t3, conds.gen
        missing = [f"t3.{k}" for k in ("speaker_emb", "cond_prompt_speech_tokens") if getattr(t3, k, None) is None]
        missing += [f"gen.{k}" for k in ("prompt_token", "prompt_feat", "embedding") if gen.get(k) is None]
    except Exception as e:
        raise ModelLoadError(f"malformed conds file {path}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if missing:
        raise ModelLoadError(f"malformed conds file {path}: missing {', '.join(missing)}")
    return conds


@dataclass
class ModelFiles:
    """What `check_model_dir` read: the cheap parts of a model folder, checked before the weights load."""
    path: Path
    kind: str  # "mlx" or "hub"
    tokenizer: object
    conds: object  # Conditionals or None
    text_vocab: int  # rows of T3's text token table


def check_model_dir(model_dir: Path) -> ModelFiles:
    """Every file of a model folder checked without loading the weights (seconds instead of a
    minute): the layout, config.json, the safetensors headers against their files' sizes, the
    tokenizer, the built-in voice. Each error names its file."""
    from .validate import safetensors_header, tensor_shape

    model_dir = Path(model_dir)
    kind = layout(model_dir)
    try:
        if kind == "mlx":
            refuse_turbo_config(model_dir, read_config(model_dir))
            refuse_mtl_config(model_dir, read_config(model_dir))
            path = model_dir / "model.safetensors"
            header = safetensors_header(path)
            text_vocab = tensor_shape(header, "t3.text_emb.weight", path)[0]
        else:
            for name in HUB_FILES[:3]:
                header = safetensors_header(model_dir / name)
                if name == "t3_cfg.safetensors":
                    text_vocab = tensor_shape(header, "text_emb.weight", model_dir / name)[0]
    except ModelLoadError:
        raise
    except UsageError as e:
        raise ModelLoadError(str(e)) from None
    tokenizer = load_tokenizer(model_dir / "tokenizer.json")
    conds = None
    for name in ("conds.safetensors", "conds.pt"):
        if (model_dir / name).is_file():
            conds = load_conds(model_dir / name)
            break
    return ModelFiles(model_dir, kind, tokenizer, conds, int(text_vocab))


def load_pipeline(model_dir: Path, cls, files: Optional[ModelFiles] = None):
    files = files if files is not None else check_model_dir(model_dir)
    ve, t3, s3gen = load_mlx_layout(model_dir) if files.kind == "mlx" else load_hub_layout(model_dir)
    if not is_quantized(t3.tfmr):
        t3.fuse_projections()
    return cls(t3, s3gen, ve, files.tokenizer, conds=files.conds)


# ----------------------------------------------------------------------------- voice conversion
# ChatterboxVC.from_local reads s3gen.safetensors (+ an optional conds.pt, whose `gen` part is the
# built-in target voice); an MLX-layout folder serves too (its s3gen. and s3_tokenizer. tensors).
VC_HUB_FILE = "s3gen.safetensors"


@dataclass
class VCModelFiles:
    """What `check_vc_model_dir` read: the layout and the built-in target voice (or None)."""
    path: Path
    kind: str  # "mlx" or "hub"
    ref_dict: Optional[dict]


def check_vc_model_dir(model_dir: Path) -> VCModelFiles:
    """A VC model folder checked without loading the weights: the weight file's header against its
    size, the built-in voice. Each error names its file."""
    from .validate import safetensors_header

    model_dir = Path(model_dir)
    if (model_dir / "model.safetensors").is_file():
        kind, path = "mlx", model_dir / "model.safetensors"
    elif (model_dir / VC_HUB_FILE).is_file():
        kind, path = "hub", model_dir / VC_HUB_FILE
    else:
        raise ModelLoadError(f"{model_dir}: neither model.safetensors (MLX layout) nor {VC_HUB_FILE} (the hub's layout)"
                             f"{turbo_note(model_dir)}{mtl_note(model_dir)}")
    try:
        header = safetensors_header(path)
    except UsageError as e:
        raise ModelLoadError(str(e)) from None
    if kind == "mlx":
        refuse_turbo_config(model_dir, read_config(model_dir))
    if kind == "mlx" and not any(k.startswith("s3gen.") for k in header):
        raise ModelLoadError(f"{path}: no s3gen. tensors (S3Gen is what voice conversion runs)")
    conds = None
    for name in ("conds.safetensors", "conds.pt"):
        if (model_dir / name).is_file():
            conds = load_conds(model_dir / name)
            break
    return VCModelFiles(model_dir, kind, conds.gen if conds is not None else None)


def load_s3gen_only(model_dir: Path, kind: str):
    """The MLX S3Token2Wav (S3 tokenizer included) of a model folder, strictly."""
    from .convert.s3gen import load_s3gen
    from .s3gen.s3gen import S3Token2Wav

    if kind == "hub":
        return convert_file(load_s3gen, model_dir / VC_HUB_FILE)
    path = model_dir / "model.safetensors"
    parts = split_prefixes(_read_safetensors(path), str(path))
    weights = dict(parts["s3gen."])
    weights.update({"tokenizer." + k: v for k, v in parts["s3_tokenizer."].items()})
    s3gen = S3Token2Wav()
    try:
        load_strict(s3gen, {k: np.asarray(v) if v.dtype != mx.bfloat16 else v for k, v in weights.items()}, what="s3gen")
    except ConversionError as e:
        raise ModelLoadError(f"{path}: {e}") from None
    s3gen.eval()
    return s3gen


def load_vc(model_dir: Path, cls, files: Optional[VCModelFiles] = None):
    files = files if files is not None else check_vc_model_dir(model_dir)
    return cls(load_s3gen_only(model_dir, files.kind), ref_dict=files.ref_dict)
