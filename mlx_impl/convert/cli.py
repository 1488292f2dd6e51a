"""The hub's PyTorch files -> the single-file MLX layout:

    python -m mlx_impl.convert --checkpoint DIR --out DIR [--force] [--dtype float16] [--quantize-t3 4]

The checkpoint: --checkpoint, else $CHATTERBOX_CKPT. `chatterbox-parity convert` is this command
with the harness's synthetic checkpoint as the default.

Output folder: model.safetensors (prefixes ve., t3., s3gen., s3_tokenizer.), config.json,
tokenizer.json, conds.safetensors (the built-in voice, when the checkpoint has conds.pt). A Chatterbox
Turbo checkpoint (t3_turbo_v1.safetensors, s3gen_meanflow.safetensors) gives Turbo's MLX layout:
the same prefixes, config.json with model_type "chatterbox_turbo", the GPT-2 tokenizer's files in
tokenizer/ (convert/turbo.py). A Chatterbox Multilingual checkpoint (ve.pt, t3_mtl23ls_v2.safetensors,
s3gen.pt, grapheme_mtl_merged_expanded_v1.json) gives the multilingual MLX layout: the same prefixes
(the English converters: the modules are the English ones, T3's text table 2454 rows), config.json with
model_type "chatterbox_multilingual", the tokenizer JSON, Cangjie5_TC.json and the hub cache folder the
tokenizer reads the Cangjie mapping from, copied unchanged.
Strict: every source tensor is consumed or in a named ignore list (with its reason), every MLX
parameter is assigned, shapes are checked. See docs/CONVERTER.md for the key layout and how it
differs from the published mlx-community files.

Safe: the output folder must be new or empty unless --force is given (then its contents are
replaced, only once the new folder is complete); the copied files (tokenizer.json, conds.pt) are
loaded first; every error is one line naming the file (validate.UsageError, exit status 2), and
nothing is left behind.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Dict, Optional

import mlx.core as mx
import numpy as np

from . import s3gen as s3gen_conv
from . import t3 as t3_conv
from . import voice_encoder as ve_conv
from ..cli import MODEL_ENV, DefaultFolder, main_of, pick_folder, standalone_parser
from ..load import HUB_FILES, TURBO_FILES, build_modules, load_conds, load_tokenizer, read_state_dict, split_prefixes
from ..validate import UsageError, check_out_dir, safetensors_header
from .common import ConversionError, in_source_file, load_strict

PUBLISHED_COUNTS = {"ve.": 13, "t3.": 293, "s3gen.": 2131, "s3_tokenizer.": 96}
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
QUANT_GROUP_SIZE = 64
FORMAT = "chatterbox-parity mlx single-file layout, version 1"
SOURCE_FILES = {"ve": "ve.safetensors", "t3": "t3_cfg.safetensors", "s3gen": "s3gen.safetensors"}


MTL_SOURCE_FILES = {"ve": "ve.pt", "t3": "t3_mtl23ls_v2.safetensors", "s3gen": "s3gen.pt"}


def convert_state(states: Dict[str, Dict[str, np.ndarray]], source_files: Dict[str, str] = SOURCE_FILES):
    """(weights by target key, ignored source keys -> reason) from the three source state dicts
    (`source_files`: their file names, for the errors)."""
    def in_file(component: str, fn, *a):
        return in_source_file(source_files[component], fn, *a)

    weights: Dict[str, np.ndarray] = {}
    weights.update({"ve." + k: v for k, v in in_file("ve", ve_conv.sanitize, states["ve"]).items()})
    weights.update({"t3." + k: v for k, v in in_file("t3", t3_conv.sanitize, states["t3"]).items()})
    for k, v in in_file("s3gen", s3gen_conv.sanitize, states["s3gen"]).items():
        weights[("s3_tokenizer." + k[len("tokenizer."):]) if k.startswith("tokenizer.") else "s3gen." + k] = v
    if "t3.text_emb.weight" not in weights:
        raise ConversionError(f"{source_files['t3']}: missing source tensor 'text_emb.weight'")
    ignored = {"s3gen." + k: why for k, why in s3gen_conv.ignored(states["s3gen"]).items()}
    for k in states["ve"]:
        if k in getattr(ve_conv, "IGNORED", {}):
            ignored["ve." + k] = ve_conv.IGNORED[k]
    n_source = sum(len(s) for s in states.values())
    return weights, ignored, n_source


def check_assignment(weights: Dict[str, np.ndarray], text_vocab: int, renamed: Dict[str, str] = None,
                     source_files: Dict[str, str] = SOURCE_FILES):
    """Build the MLX modules and assign every weight strictly (raises naming any gap, with the
    source tensor's own name where conversion renamed it)."""
    try:
        return _assign(weights, text_vocab, source_files)
    except ConversionError as e:
        msg = str(e)
        for target, source in (renamed or {}).items():
            if f"'{target}'" in msg:
                msg += f" (source tensor '{source_files['s3gen']}:{source}')"
        raise ConversionError(msg) from None


def _assign(weights: Dict[str, np.ndarray], text_vocab: int, source_files: Dict[str, str]):
    parts = split_prefixes(weights, "converted weights")
    ve, t3, s3gen = build_modules({"t3": {"text_tokens_dict_size": text_vocab}})
    s3 = dict(parts["s3gen."])
    s3.update({"tokenizer." + k: v for k, v in parts["s3_tokenizer."].items()})
    load_strict(ve, parts["ve."], what=f"ve ({source_files['ve']})")
    load_strict(t3, parts["t3."], what=f"t3 ({source_files['t3']})")
    load_strict(s3gen, s3, what=f"s3gen ({source_files['s3gen']})")
    return t3


def quantized_t3(t3, bits: int) -> Dict[str, mx.array]:
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    nn.quantize(t3.tfmr, group_size=QUANT_GROUP_SIZE, bits=bits)
    return {"t3." + k: v for k, v in tree_flatten(t3.parameters())}


def checkpoint_folder(args, default: Optional[DefaultFolder] = None,
                      named: Optional[Dict[str, DefaultFolder]] = None) -> Path:
    """The checkpoint folder: --checkpoint (or one of the `named` folders), else $CHATTERBOX_CKPT, else
    `default` (made to exist here); --out is checked first, against it. Errors say where its path
    came from."""
    path, source, folder = pick_folder(args.checkpoint, "--checkpoint", default, named)
    check_out_dir(args.out, force=args.force, protect=[Path(path)], cli=True)
    if folder is not None:
        folder.ensure()
    try:
        return open_checkpoint(Path(path))
    except UsageError as e:
        raise UsageError(f"{e} ({source})" if source != "--checkpoint" else str(e)) from None


def open_checkpoint(path: Path) -> Path:
    """`path`, a folder holding the hub's files (conds.pt optional): the English model's, or
    Chatterbox Turbo's (checked by cmd_convert_turbo)."""
    if not path.is_dir():
        raise UsageError(f"checkpoint folder not found: {path}")
    if is_turbo_checkpoint(path) or is_mtl_checkpoint(path):
        return path
    for name in HUB_FILES:
        if not (path / name).is_file():
            raise UsageError(f"checkpoint file missing: {path / name}")
    return path


def is_turbo_checkpoint(ckpt: Path) -> bool:
    return any((ckpt / f).is_file() for f in TURBO_FILES)


def is_mtl_checkpoint(ckpt: Path) -> bool:
    return (ckpt / MTL_SOURCE_FILES["t3"]).is_file()


def conds_file(ckpt: Path) -> Optional[Path]:
    return ckpt / "conds.pt" if (ckpt / "conds.pt").is_file() else None


def check_sources(ckpt: Path):
    """Every file read before any conversion work: the weight files' headers against their sizes,
    the tokenizer.json and conds.pt that are copied (each must load)."""
    for name in SOURCE_FILES.values():
        safetensors_header(ckpt / name)
    load_tokenizer(ckpt / "tokenizer.json")
    return load_conds(conds_file(ckpt)) if conds_file(ckpt) is not None else None


def file_hashes(ckpt: Path, names=HUB_FILES) -> Dict[str, str]:
    """sha256 of each source file (the converted folder's config.json records them)."""
    names = list(names) + (["conds.pt"] if conds_file(ckpt) is not None else [])
    return {n: _sha256(ckpt / n) for n in names}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cmd_convert(args, default: Optional[DefaultFolder] = None, named: Optional[Dict[str, DefaultFolder]] = None):
    ckpt = checkpoint_folder(args, default, named)
    if is_turbo_checkpoint(ckpt):
        return cmd_convert_turbo(args, ckpt)
    if is_mtl_checkpoint(ckpt):
        return cmd_convert_mtl(args, ckpt)
    conds = check_sources(ckpt)
    states = {c: read_state_dict(ckpt / name) for c, name in SOURCE_FILES.items()}
    try:
        weights, ignored, n_source = convert_state(states)
        text_vocab = int(weights["t3.text_emb.weight"].shape[0])
        t3 = check_assignment(weights, text_vocab, s3gen_conv.source_names(states["s3gen"]))
    except ConversionError as e:
        raise UsageError(f"conversion of {ckpt} failed: {e}") from None

    out, quant = output_weights(weights, t3, args)
    config = {
        "model_type": "chatterbox", "format": FORMAT,
        "dtype": args.dtype, "quantization": {"t3": quant} if quant else {},
        "t3": {"text_tokens_dict_size": text_vocab, "speech_tokens_dict_size": 8194, "llama_config_name": "Llama_520M"},
        "sample_rates": {"s3_tokenizer": 16000, "s3gen": 24000},
        "conditioning_lengths": {"t3_prompt_samples_16k": 6 * 16000, "s3gen_reference_samples_24k": 10 * 24000},
        "source": {"checkpoint": str(ckpt), "files_sha256": file_hashes(ckpt)},
    }
    write_folder(args.out, ckpt / "tokenizer.json", out, config, conds)
    print_summary(out, ignored, n_source, args, config)


def cmd_convert_turbo(args, ckpt: Path):
    """Chatterbox Turbo's hub files -> Turbo's MLX layout (convert/turbo.py), as strict as the English one."""
    from ..tts_turbo import MLX_TOKENIZER_DIR, TURBO_WEIGHTS, check_turbo_dir
    from . import turbo

    files = check_turbo_dir(ckpt)  # the weight headers, the GPT-2 tokenizer and conds.pt load first
    states = {c: read_state_dict(ckpt / name) for c, name in turbo.SOURCE_FILES.items()}
    try:
        weights, ignored, counts = turbo.convert_turbo_state(states)
        modules = turbo.check_turbo_assignment(weights)
    except ConversionError as e:
        raise UsageError(f"conversion of {ckpt} failed: {e}") from None
    del states, weights  # the modules hold the converted weights: one copy of the model in memory from here

    out, quant = output_weights(turbo.module_weights(*modules), modules[1], args)
    config = {**turbo.turbo_config(files.text_vocab), "format": FORMAT, "dtype": args.dtype,
              "quantization": {"t3": quant} if quant else {},
              "source": {"checkpoint": str(ckpt), "files_sha256": file_hashes(ckpt, TURBO_WEIGHTS)}}
    write_folder(args.out, turbo.tokenizer_files(ckpt), out, config, files.conds, tokenizer_dir=MLX_TOKENIZER_DIR)
    print(headline(out, sum(counts["source"].values()), args))
    for line in turbo.summary_lines(out, ignored, counts):
        print(line)


def cmd_convert_mtl(args, ckpt: Path):
    """Chatterbox Multilingual's hub files -> the multilingual MLX layout, with the English converters."""
    from ..mtl_tts import CANGJIE_FILE, HUB_CACHE_DIR, MLX_MODEL_TYPE, TOKENIZER_FILE, check_mtl_dir, read_pt_state_dict

    files = check_mtl_dir(ckpt)  # the weight files' headers and archives, the tokenizer and conds.pt load first
    states = {"ve": read_pt_state_dict(ckpt / MTL_SOURCE_FILES["ve"]),
              "t3": read_state_dict(ckpt / MTL_SOURCE_FILES["t3"]),
              "s3gen": read_pt_state_dict(ckpt / MTL_SOURCE_FILES["s3gen"])}
    try:
        weights, ignored, n_source = convert_state(states, MTL_SOURCE_FILES)
        t3 = check_assignment(weights, files.text_vocab, s3gen_conv.source_names(states["s3gen"]), MTL_SOURCE_FILES)
    except ConversionError as e:
        raise UsageError(f"conversion of {ckpt} failed: {e}") from None
    counts = {c: len(s) for c, s in states.items()}
    del states

    out, quant = output_weights(weights, t3, args)
    config = {
        "model_type": MLX_MODEL_TYPE, "format": FORMAT,
        "dtype": args.dtype, "quantization": {"t3": quant} if quant else {},
        "t3": {"text_tokens_dict_size": files.text_vocab, "speech_tokens_dict_size": 8194,
               "llama_config_name": "Llama_520M"},
        "sample_rates": {"s3_tokenizer": 16000, "s3gen": 24000},
        "conditioning_lengths": {"t3_prompt_samples_16k": 6 * 16000, "s3gen_reference_samples_24k": 10 * 24000},
        "source": {"checkpoint": str(ckpt), "files_sha256": file_hashes(ckpt, list(MTL_SOURCE_FILES.values()) +
                                                                          [TOKENIZER_FILE])},
    }
    copied = [ckpt / TOKENIZER_FILE] + [ckpt / f for f in (CANGJIE_FILE, HUB_CACHE_DIR) if (ckpt / f).exists()]
    write_folder(args.out, copied, out, config, files.conds)
    print(headline(out, n_source, args))
    print("source tensors per file: " + ", ".join(f"{MTL_SOURCE_FILES[c]} {n}" for c, n in counts.items()))
    print("MLX tensors per prefix: " + ", ".join(f"{p} {n}" for p, n in
                                                 Counter(k.split(".", 1)[0] + "." for k in out).items()))
    print(f"ignored source tensors: {len(ignored)}")
    for why in sorted(set(ignored.values())):
        names = sorted(k for k, w in ignored.items() if w == why)
        print(f"  {len(names):4d} x {why}: {', '.join(names)}")
    print("unassigned MLX parameters: 0, unconsumed source tensors outside the ignore list: 0")


# the VoiceEncoder, the S3 tokenizer and CAMPPlus compute in float32 whatever --dtype says (their kernels
# take float32 only; load.keep_front_end_float32): their file copy stays float32, not rounded
FLOAT32_PREFIXES = ("ve.", "s3_tokenizer.", "s3gen.speaker_encoder.")


def output_weights(weights: Dict[str, object], t3, args):
    """(the weights to save, in --dtype (the front end's float32: FLOAT32_PREFIXES), T3's transformer
    quantized with --quantize-t3; the quantization entry of config.json or None). `t3`: the module
    the weights were assigned to."""
    out: Dict[str, mx.array] = {}
    for k, v in weights.items():
        a = v if isinstance(v, mx.array) else mx.array(v)
        dtype = mx.float32 if k.startswith(FLOAT32_PREFIXES) else DTYPES[args.dtype]
        out[k] = a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) and a.dtype != dtype else a
    if not args.quantize_t3:
        return out, None
    t3.update(_tree({k[3:]: v for k, v in out.items() if k.startswith("t3.")}))
    out = {k: v for k, v in out.items() if not k.startswith("t3.")}
    out.update(quantized_t3(t3, args.quantize_t3))
    return out, {"group_size": QUANT_GROUP_SIZE, "bits": args.quantize_t3}


def write_folder(dest: Path, tokenizer, out, config, conds, tokenizer_dir: str = "") -> None:
    """The converted folder written beside `dest` under a hidden name, then swapped into place (an
    existing `dest`, checked empty or --force, is removed only after); nothing left on failure.
    `tokenizer`: the tokenizer file (or files) copied unchanged, into `tokenizer_dir` when given."""
    made = [p for p in reversed(dest.parents) if not p.exists()]
    tmp = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        mx.save_safetensors(str(tmp / "model.safetensors"), out, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (tmp / tokenizer_dir).mkdir(exist_ok=True)
        for f in [tokenizer] if isinstance(tokenizer, (str, Path)) else tokenizer:
            if Path(f).is_dir():  # the multilingual tokenizer's hub cache (relative links kept)
                shutil.copytree(f, tmp / tokenizer_dir / Path(f).name, symlinks=True)
            else:
                shutil.copyfile(f, tmp / tokenizer_dir / Path(f).name)
        if conds is not None:
            conds.save(tmp / "conds.safetensors")
        tmp.chmod(0o755)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            if old is not None:
                os.rename(old, dest)
            raise
        tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(made):  # folders this call created, innermost first
            try:
                p.rmdir()
            except OSError:
                pass
        if isinstance(e, OSError):
            raise UsageError(f"--out {dest}: cannot write it ({e.strerror or e})") from None
        raise


def _tree(flat: Dict[str, mx.array]):
    from mlx.utils import tree_unflatten

    return tree_unflatten(list(flat.items()))


def headline(out, n_source: int, args) -> str:
    size = (args.out / "model.safetensors").stat().st_size
    return (f"converted {n_source} source tensors -> {len(out)} MLX tensors in {args.out / 'model.safetensors'} "
            f"({size / 2**20:.1f} MiB, {args.dtype}{', T3 %d-bit' % args.quantize_t3 if args.quantize_t3 else ''})")


def print_summary(out, ignored, n_source, args, config):
    counts = Counter(next(p for p in PUBLISHED_COUNTS if k.startswith(p)) for k in out)
    print(headline(out, n_source, args))
    print("tensors per prefix (published mlx-community file in brackets; docs/CONVERTER.md explains the differences):")
    for p, n in PUBLISHED_COUNTS.items():
        print(f"  {p:15s} {counts[p]:5d}  [{n}]")
    reasons = Counter(ignored.values())
    print(f"ignored source tensors: {len(ignored)}")
    for why, n in reasons.items():
        print(f"  {n:4d} x {why}")
    print("unassigned MLX parameters: 0, unconsumed source tensors outside the ignore list: 0")


HELP = "convert the hub's PyTorch checkpoint (English, Turbo or Multilingual) to the single-file MLX layout"
DESCRIPTION = ("The hub's PyTorch files -> model.safetensors + config.json + tokenizer.json (+ conds.safetensors) in "
               "the MLX layout (docs/CONVERTER.md). Every input file is checked first; an error is one line, exit "
               "status 2, and nothing is written.")


def add_arguments(p, default: Optional[DefaultFolder] = None, default_help: str = f"${MODEL_ENV}",
                  named: Optional[Dict[str, DefaultFolder]] = None) -> None:
    """The command's options on parser `p`; it runs with `default` as the checkpoint where neither
    --checkpoint nor $CHATTERBOX_CKPT names one (`default_help` says what that is), and `named`
    folders stand for their names given to --checkpoint."""
    names = f"; or one of the names {', '.join(named)}: " + ", ".join(
        f"{n} = {f.path}" for n, f in named.items()) if named else ""
    p.add_argument("--checkpoint", type=Path, default=None, metavar="DIR",
                   help=f"checkpoint folder in the hub's layout, the English model's, Chatterbox Turbo's or Chatterbox "
                        f"Multilingual's{names} "
                        f"(default: {default_help})")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder: new or empty (a non-empty one only with --force)")
    p.add_argument("--force", action="store_true",
                   help="replace the contents of a non-empty --out folder (only once the new one is complete)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="dtype of the floating-point weights; default %(default)s")
    p.add_argument("--quantize-t3", type=int, choices=(4, 8), default=None, metavar="{4,8}",
                   help=f"quantize T3's transformer to 4 or 8 bits (group size {QUANT_GROUP_SIZE}); default: not "
                        "quantized")
    p.set_defaults(fn=partial(cmd_convert, default=default, named=named))


def build_parser() -> argparse.ArgumentParser:
    return standalone_parser("python -m mlx_impl.convert", DESCRIPTION, add_arguments)


def main(argv=None) -> int:
    return main_of(build_parser, argv)

