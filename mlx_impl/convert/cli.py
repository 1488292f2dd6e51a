"""`chatterbox-parity convert`: the hub's PyTorch files -> the single-file MLX layout.

Output folder: model.safetensors (prefixes ve., t3., s3gen., s3_tokenizer.), config.json,
tokenizer.json, conds.safetensors (the built-in voice, when the checkpoint has conds.pt).
Strict: every source tensor is consumed or in a named ignore list (with its reason), every MLX
parameter is assigned, shapes are checked. See docs/CONVERTER.md for the key layout and how it
differs from the published mlx-community files.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict

import mlx.core as mx
import numpy as np

from . import s3gen as s3gen_conv
from . import t3 as t3_conv
from . import voice_encoder as ve_conv
from .common import ConversionError, load_strict

PUBLISHED_COUNTS = {"ve.": 13, "t3.": 293, "s3gen.": 2131, "s3_tokenizer.": 96}
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
QUANT_GROUP_SIZE = 64


def convert_state(states: Dict[str, Dict[str, np.ndarray]]):
    """(weights by target key, ignored source keys -> reason) from the three source state dicts."""
    weights: Dict[str, np.ndarray] = {}
    weights.update({"ve." + k: v for k, v in ve_conv.sanitize(states["ve"]).items()})
    weights.update({"t3." + k: v for k, v in t3_conv.sanitize(states["t3"]).items()})
    for k, v in s3gen_conv.sanitize(states["s3gen"]).items():
        weights[("s3_tokenizer." + k[len("tokenizer."):]) if k.startswith("tokenizer.") else "s3gen." + k] = v
    ignored = {"s3gen." + k: why for k, why in s3gen_conv.ignored(states["s3gen"]).items()}
    for k in states["ve"]:
        if k in getattr(ve_conv, "IGNORED", {}):
            ignored["ve." + k] = ve_conv.IGNORED[k]
    n_source = sum(len(s) for s in states.values())
    return weights, ignored, n_source


def check_assignment(weights: Dict[str, np.ndarray], text_vocab: int, renamed: Dict[str, str] = None):
    """Build the MLX modules and assign every weight strictly (raises naming any gap, with the
    source tensor's own name where conversion renamed it)."""
    try:
        return _assign(weights, text_vocab)
    except ConversionError as e:
        msg = str(e)
        for target, source in (renamed or {}).items():
            if f"'{target}'" in msg:
                msg += f" (source tensor 's3gen.safetensors:{source}')"
        raise ConversionError(msg) from None


def _assign(weights: Dict[str, np.ndarray], text_vocab: int):
    from ..load import build_modules, split_prefixes

    parts = split_prefixes(weights, "converted weights")
    ve, t3, s3gen = build_modules({"t3": {"text_tokens_dict_size": text_vocab}})
    s3 = dict(parts["s3gen."])
    s3.update({"tokenizer." + k: v for k, v in parts["s3_tokenizer."].items()})
    load_strict(ve, parts["ve."], what="ve")
    load_strict(t3, parts["t3."], what="t3")
    load_strict(s3gen, s3, what="s3gen")
    return t3


def quantized_t3(t3, bits: int) -> Dict[str, mx.array]:
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    nn.quantize(t3.tfmr, group_size=QUANT_GROUP_SIZE, bits=bits)
    return {"t3." + k: v for k, v in tree_flatten(t3.parameters())}


def cmd_convert(args):
    from parity.cli import resolve_checkpoint
    from parity.errors import ParityError

    ckpt = resolve_checkpoint(args.checkpoint)
    states = {c: ckpt.state(c) for c in ("ve", "t3", "s3gen")}
    try:
        weights, ignored, n_source = convert_state(states)
        text_vocab = int(weights["t3.text_emb.weight"].shape[0])
        t3 = check_assignment(weights, text_vocab, s3gen_conv.source_names(states["s3gen"]))
    except ConversionError as e:
        raise ParityError(f"conversion of {ckpt.path} failed: {e}") from None

    dtype = DTYPES[args.dtype]
    out: Dict[str, mx.array] = {k: mx.array(v).astype(dtype) if np.issubdtype(v.dtype, np.floating) else mx.array(v)
                                for k, v in weights.items()}
    quant = None
    if args.quantize_t3:
        t3.update(_tree({k[3:]: v for k, v in out.items() if k.startswith("t3.")}))
        out = {k: v for k, v in out.items() if not k.startswith("t3.")}
        out.update(quantized_t3(t3, args.quantize_t3))
        quant = {"group_size": QUANT_GROUP_SIZE, "bits": args.quantize_t3}

    config = {
        "model_type": "chatterbox", "format": "chatterbox-parity mlx single-file layout, version 1",
        "dtype": args.dtype, "quantization": {"t3": quant} if quant else {},
        "t3": {"text_tokens_dict_size": text_vocab, "speech_tokens_dict_size": 8194, "llama_config_name": "Llama_520M"},
        "sample_rates": {"s3_tokenizer": 16000, "s3gen": 24000},
        "conditioning_lengths": {"t3_prompt_samples_16k": 6 * 16000, "s3gen_reference_samples_24k": 10 * 24000},
        "source": {"checkpoint": str(ckpt.path), "files_sha256": ckpt.file_hashes()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), out, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        shutil.copyfile(ckpt.file("tokenizer.json"), tmp / "tokenizer.json")
        if ckpt.conds_path is not None:
            from ..tts import Conditionals

            Conditionals.load(ckpt.conds_path).save(tmp / "conds.safetensors")
        from parity.fixtures import replace_dir

        tmp.chmod(0o755)
        replace_dir(tmp, args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_summary(out, ignored, n_source, args, config)


def _tree(flat: Dict[str, mx.array]):
    from mlx.utils import tree_unflatten

    return tree_unflatten(list(flat.items()))


def print_summary(out, ignored, n_source, args, config):
    counts = Counter(next(p for p in PUBLISHED_COUNTS if k.startswith(p)) for k in out)
    size = (args.out / "model.safetensors").stat().st_size
    print(f"converted {n_source} source tensors -> {len(out)} MLX tensors in {args.out / 'model.safetensors'} "
          f"({size / 2**20:.1f} MiB, {args.dtype}{', T3 %d-bit' % args.quantize_t3 if args.quantize_t3 else ''})")
    print("tensors per prefix (published mlx-community file in brackets; docs/CONVERTER.md explains the differences):")
    for p, n in PUBLISHED_COUNTS.items():
        print(f"  {p:15s} {counts[p]:5d}  [{n}]")
    reasons = Counter(ignored.values())
    print(f"ignored source tensors: {len(ignored)}")
    for why, n in reasons.items():
        print(f"  {n:4d} x {why}")
    print("unassigned MLX parameters: 0, unconsumed source tensors outside the ignore list: 0")


def register(sub):
    p = sub.add_parser("convert", help="convert the hub's PyTorch checkpoint to the single-file MLX layout")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (hub layout); default: synthetic")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--quantize-t3", type=int, choices=(4, 8), default=None, help="quantize T3's transformer")
    p.set_defaults(fn=cmd_convert)
