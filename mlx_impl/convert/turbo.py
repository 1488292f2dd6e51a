"""Chatterbox Turbo's hub files -> the single-file MLX layout (`python -m mlx_impl.convert` on a Turbo
folder; mlx_impl/convert/cli.py dispatches here).

Sources: ve.safetensors, t3_turbo_v1.safetensors (T3 on GPT-2 medium), s3gen_meanflow.safetensors
(S3Gen with MeanFlow, the S3 tokenizer inside), the GPT-2 tokenizer files, optional conds.pt.
Output: model.safetensors with the English layout's prefixes (ve., t3., s3gen., s3_tokenizer.),
config.json with model_type "chatterbox_turbo" (what the loaders tell the two models apart by), the
tokenizer files copied unchanged into tokenizer/ (AutoTokenizer reads them as from_local does; beside
config.json it would read that too), conds.safetensors.
Strict as the English conversion: every source tensor is converted or dropped by name with its
reason, every MLX parameter of Turbo's modules is assigned once with its shape.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

from . import gpt2
from . import s3gen as s3gen_conv
from . import t3_turbo
from . import voice_encoder as ve_conv
from .common import Weights, in_source_file, load_strict

SOURCE_FILES = {"ve": "ve.safetensors", "t3": "t3_turbo_v1.safetensors", "s3gen": "s3gen_meanflow.safetensors"}
PREFIXES = ("ve.", "t3.", "s3gen.", "s3_tokenizer.")


def _in_file(component: str, fn, *a):
    return in_source_file(SOURCE_FILES[component], fn, *a)


def gpt2_reason(key: str) -> str:
    """Why a `tfmr.*` source tensor of T3 is dropped (convert/gpt2.py's named ignore list)."""
    name = key[len("tfmr."):]
    return gpt2.IGNORED["wte.weight" if name == "wte.weight" else "attn." + name.rsplit(".attn.", 1)[-1]]


def convert_turbo_state(states: Dict[str, Weights]) -> Tuple[Weights, Dict[str, str], dict]:
    """(weights by target key, dropped source key -> reason, counts) from the three source state
    dicts; counts: source tensors per file, and T3's per component (its own, the GPT-2 backbone)."""
    weights: Weights = {"ve." + k: v for k, v in _in_file("ve", ve_conv.sanitize, states["ve"]).items()}
    t3, t3_counts = _in_file("t3", t3_turbo.sanitize, states["t3"])
    weights.update({"t3." + k: v for k, v in t3.items()})
    for k, v in _in_file("s3gen", s3gen_conv.sanitize, states["s3gen"]).items():
        weights[("s3_tokenizer." + k[len("tokenizer."):]) if k.startswith("tokenizer.") else "s3gen." + k] = v
    ignored = {"t3." + k: gpt2_reason(k) for k in t3_counts["dropped"]}
    ignored.update({"s3gen." + k: why for k, why in s3gen_conv.ignored(states["s3gen"]).items()})
    counts = dict(source={c: len(s) for c, s in states.items()}, t3_own=t3_counts["t3"],
                  t3_backbone=t3_counts["backbone"], t3_blocks=t3_counts["blocks"])
    return weights, ignored, counts


def check_turbo_assignment(weights: Weights):
    """Turbo's MLX modules built and every converted weight assigned strictly (raises naming any gap);
    returns them (ve, t3, s3gen)."""
    from ..load import split_prefixes
    from ..tts_turbo import turbo_modules

    parts = split_prefixes(weights, "converted weights")
    ve, t3, s3gen = turbo_modules()
    s3 = dict(parts["s3gen."])
    s3.update({"tokenizer." + k: v for k, v in parts["s3_tokenizer."].items()})
    load_strict(ve, parts["ve."], what=f"ve ({SOURCE_FILES['ve']})")
    load_strict(t3, parts["t3."], what=f"t3 ({SOURCE_FILES['t3']})")
    load_strict(s3gen, s3, what=f"s3gen ({SOURCE_FILES['s3gen']})")
    return ve, t3, s3gen


def module_weights(ve, t3, s3gen) -> dict:
    """The assigned modules' parameters under the layout's prefixes (the S3 tokenizer inside S3Gen
    under s3_tokenizer.): the arrays the modules hold, not copies."""
    from mlx.utils import tree_flatten

    out = {"ve." + k: v for k, v in tree_flatten(ve.parameters())}
    out.update({"t3." + k: v for k, v in tree_flatten(t3.parameters())})
    for k, v in tree_flatten(s3gen.parameters()):
        out[("s3_tokenizer." + k[len("tokenizer."):]) if k.startswith("tokenizer.") else "s3gen." + k] = v
    return out


def turbo_config(text_vocab: int) -> dict:
    """config.json's model part for Turbo (the loaders read model_type; the rest documents the layout)."""
    from ..load import TURBO_MODEL_TYPE
    from ..tts_turbo import S3_SR, S3GEN_SR, ChatterboxTurboTTS

    return {
        "model_type": TURBO_MODEL_TYPE,
        "t3": {"text_tokens_dict_size": text_vocab, "speech_tokens_dict_size": 6563, "llama_config_name": "GPT2_medium"},
        "s3gen": {"meanflow": True, "n_cfm_timesteps": 2},
        "sample_rates": {"s3_tokenizer": S3_SR, "s3gen": S3GEN_SR},
        "conditioning_lengths": {"t3_prompt_samples_16k": ChatterboxTurboTTS.ENC_COND_LEN,
                                 "s3gen_reference_samples_24k": ChatterboxTurboTTS.DEC_COND_LEN},
    }


def tokenizer_files(ckpt: Path):
    """The GPT-2 tokenizer files the folder holds (copied into the MLX layout unchanged)."""
    from ..tts_turbo import TOKENIZER_FILES

    return [ckpt / f for f in TOKENIZER_FILES if (ckpt / f).is_file()]


def count_by_prefix(weights) -> Dict[str, int]:
    counts = {p: 0 for p in PREFIXES}
    for k in weights:
        counts[next(p for p in PREFIXES if k.startswith(p))] += 1
    return counts


def summary_lines(out, ignored: Dict[str, str], counts: dict) -> list:
    """The per-component counts the converter prints (source files, T3's parts, MLX prefixes, drops)."""
    by_prefix = count_by_prefix(out)
    src = counts["source"]
    lines = [f"source tensors: {', '.join(f'{SOURCE_FILES[c]} {n}' for c, n in src.items())} "
             f"({sum(src.values())} in all)",
             f"T3: {counts['t3_own']} of its own + GPT-2 backbone {counts['t3_backbone']} "
             f"(3 + 12 x {counts['t3_blocks']} blocks)",
             "tensors per prefix:"]
    lines += [f"  {p:15s} {n:5d}" for p, n in by_prefix.items()]
    lines.append(f"dropped source tensors (by name): {len(ignored)}")
    by_reason: Dict[str, list] = {}
    for k, why in sorted(ignored.items()):
        by_reason.setdefault(why, []).append(k)
    for why, keys in by_reason.items():
        names = ", ".join(keys) if len(keys) <= 3 else f"{keys[0]}, ... ({len(keys)} tensors)"
        lines.append(f"  {len(keys):4d} x {why}: {names}")
    lines.append("unassigned MLX parameters: 0, unconsumed source tensors outside the ignore list: 0")
    return lines

