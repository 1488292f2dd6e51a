"""The pack's Chatterbox Multilingual tiny set: tiny, seeded ORIGINAL ChatterboxMultilingualTTS modules (the
multilingual T3 on a small LLaMA, the English VoiceEncoder and S3Gen at the English tiny sizes), the project's
multilingual export (reference.export_mtl.export_mtl_case) run on them, so the tensors are the registry's
`mtl.*`, and MLX models of the same sizes that reproduce it through the multilingual stage runners
(parity/stages/mtl_*.py). The builder interface is pack_tiny.py's.

The AlignmentStreamAnalyzer reads the attention of (layer, head) = (12, 15), (13, 11), (9, 2)
(LLAMA_ALIGNED_HEADS of chatterbox/models/t3/inference/alignment_stream_analyzer.py): the tiny LLaMA has 14
layers of 16 heads (64 wide, head_dim 4), so the heads it watches exist and the analyzer runs as in the full
model. The text table keeps its 2454 rows: T3Config.is_multilingual is `text_tokens_dict_size == 2454`, which
is what turns the analyzer on, in the original and in mlx_impl.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import Dict

import numpy as np

from .pack_tiny import (S3GEN_CONFIG, VE_CONFIG, patched_attrs, constant, load_weights, mlx_s3token2wav,
                        mlx_voice_encoder, save_state, tiny_llama, tiny_llama_t3, tiny_s3gen, tiny_voice_encoder)

SET_NAME = "tiny_mtl"
MODEL = "mtl"
FOLDER = "tiny_mtl"
# The hub's ve.pt and s3gen.pt (torch.save'd state dicts) are stored as safetensors of the same state dicts.
TORCH_FILES = ("ve.safetensors", "t3_mtl23ls_v2.safetensors", "s3gen.safetensors")
HUB_PICKLES = {"ve.safetensors": "ve.pt", "s3gen.safetensors": "s3gen.pt"}
STAGES = ("mtl_ve", "mtl_s3tok", "mtl_embed_ref", "mtl_t3_cond", "mtl_t3_decode", "mtl_t3_greedy", "mtl_flow",
          "mtl_hift")
NOT_INCLUDED = {
    "mtl_text": "no weights: the multilingual punc_norm + MTLTokenizer are the same at any model size; use the "
                "mtl_de case's mtl_text component (with its assets/grapheme_mtl_merged_expanded_v1.json)",
    "mtl_audio": "no weights: loading and resampling are the same at any model size; use a multilingual case's "
                 "mtl_audio component",
}
CONFIG = {
    "t3": {"llama": dict(hidden_size=64, num_hidden_layers=14, num_attention_heads=16, num_key_value_heads=16,
                         head_dim=4, intermediate_size=128),
           "llama_config_name": "Llama_tiny_mtl_pack", "text_tokens_dict_size": 2454,
           "perceiver": "pre_attention_query_size = embedding_dim = hidden_size (the original hard-codes 1024)",
           "analyzer": "LLAMA_ALIGNED_HEADS (12, 15), (13, 11), (9, 2) exist: 14 layers of 16 heads",
           "speech_head": "rows 6561 and 6563-8193 zero, as the synthetic multilingual checkpoint "
                          "(reference/mtl_synth_checkpoint.py MTL_INIT_FIXES): generate() passes T3's ids to S3Gen "
                          "unfiltered"},
    "ve": VE_CONFIG,
    **S3GEN_CONFIG,
    "case": {"base": "mtl_de", "max_new_tokens": 24, "clip_seconds": 3.0},
    "seed": 0,
}
NOTES = ("Tiny ORIGINAL Chatterbox Multilingual modules (seeded, sizes in `config`), run through the project's "
         "multilingual export (reference.export_mtl.export_mtl_case) on the first seconds of the mtl_de clip with its "
         "German text; component tensors have the registry's mtl.* names. Runtime substitutions as the English tiny "
         "set's (LLAMA_CONFIGS gets the tiny 14-layer LLaMA, the Perceiver the hidden width, S3Gen's sub-modules the "
         "tiny sizes). The AlignmentStreamAnalyzer runs as in the full model (the heads it reads exist); its decisions "
         "per step are mtl.t3.analysis / mtl.t3_greedy.analysis (columns: parity/stages/mtl_common.py "
         "ANALYSIS_COLUMNS). The hub's ve.pt and s3gen.pt are stored as safetensors of the same state dicts. "
         "T3 per-step logits: every step is kept.")


# ----------------------------------------------------------------------------- tiny ORIGINAL modules
def build_tiny_original(tokenizer_json: Path, cfg: dict = CONFIG):
    """A ChatterboxMultilingualTTS of tiny, seeded ORIGINAL modules, on the CPU."""
    import torch
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.tokenizers import MTLTokenizer
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS
    from reference.mtl_synth_checkpoint import _apply_mtl_init_fixes

    torch.set_grad_enabled(False)
    seed = cfg["seed"]
    ve = tiny_voice_encoder(cfg, seed)
    t3 = tiny_llama_t3(cfg, seed + 1, T3Config.multilingual())
    _apply_mtl_init_fixes(t3)
    s3 = tiny_s3gen(cfg, seed + 2)
    return ChatterboxMultilingualTTS(t3, s3, ve, MTLTokenizer(str(tokenizer_json)), "cpu")


def save_tiny_checkpoint(tts, out_dir: Path) -> Path:
    """The tiny modules in the multilingual hub layout (ve.pt and s3gen.pt torch.save'd, every tensor, as
    from_local loads them strictly; t3_mtl23ls_v2.safetensors), plus the pickles' safetensors copies."""
    import torch

    for fname, module in zip(TORCH_FILES, (tts.ve, tts.t3, tts.s3gen)):
        save_state(module, out_dir / fname)
        if fname in HUB_PICKLES:
            torch.save({k: v.detach().contiguous().clone() for k, v in module.state_dict().items()},
                       str(out_dir / HUB_PICKLES[fname]))
    return out_dir


def mlx_weights(ckpt_dir: Path) -> Dict[str, Dict[str, np.ndarray]]:
    """The tiny multilingual checkpoint converted by the project's sanitize functions (MLX layout)."""
    from mlx_impl.convert import s3gen as s3gen_conv
    from mlx_impl.convert import t3 as t3_conv
    from mlx_impl.convert import voice_encoder as ve_conv

    from .checkpoint_dir import read_safetensors

    ve, t3, s3 = (read_safetensors(Path(ckpt_dir) / f) for f in TORCH_FILES)
    return {"ve.safetensors": ve_conv.sanitize(ve), "t3.safetensors": t3_conv.sanitize(t3),
            "s3gen.safetensors": s3gen_conv.sanitize(s3)}


def make_fixture(work: Path, log=print):
    """Run the project's multilingual export on the tiny ChatterboxMultilingualTTS: returns (fixture,
    checkpoint folder)."""
    import soundfile as sf
    from reference.export_mtl import export_mtl_case, offline_front_end
    from reference.mtl_tokenizer_json import FILE_NAME

    from .cases import load_mtl_cases
    from .fixtures import Fixture
    from .mtl_checkpoint import MtlCheckpointDir, resolve_mtl_checkpoint

    ckpt_dir = Path(work) / "tiny-mtl-ckpt"
    ckpt_dir.mkdir(parents=True)
    front = resolve_mtl_checkpoint()  # the multilingual folder's front end: tokenizer, Cangjie, pkuseg stand-ins
    shutil.copyfile(front.path / FILE_NAME, ckpt_dir / FILE_NAME)
    with offline_front_end(front):  # MTLTokenizer loads the Cangjie mapping and spacy-pkuseg's model
        tts = build_tiny_original(ckpt_dir / FILE_NAME)
    save_tiny_checkpoint(tts, ckpt_dir)
    ckpt = MtlCheckpointDir.open(ckpt_dir)
    cc = CONFIG["case"]
    base = load_mtl_cases()[cc["base"]]
    audio, sr = sf.read(str(base.audio_path), dtype="float32", always_2d=True)
    excerpt = Path(work) / f"{base.name}_first_{cc['clip_seconds']:g}s.wav"
    sf.write(str(excerpt), audio[: int(cc["clip_seconds"] * sr)], sr, subtype="FLOAT")
    case = dataclasses.replace(base, name=SET_NAME, audio=str(excerpt),
                               about=f"tiny seeded multilingual modules on the first {cc['clip_seconds']:g} s of "
                                     f"{base.audio}, {base.name}'s text",
                               params={**base.params, "max_new_tokens": cc["max_new_tokens"]})
    out = export_mtl_case(ckpt, case, out_root=Path(work) / "fx", tts=tts, log=log)
    return Fixture.open(out), ckpt_dir


# ----------------------------------------------------------------------------- tiny MLX modules
def mlx_models(wdir: Path, cfg: dict) -> dict:
    """The MLX ChatterboxMultilingualTTS of the tiny sizes with the pack's MLX-layout weights, loaded strictly,
    q/k/v and gate/up fused as load_mtl does (no tokenizer: the tiny set has no text component)."""
    from mlx_impl.convert.common import load_strict
    from mlx_impl.mtl_tts import ChatterboxMultilingualTTS
    from mlx_impl.t3 import T3, T3Config

    ve_w, t3_w, s3_w = load_weights(wdir, "ve", "t3", "s3gen")
    t3 = T3(T3Config(cfg["t3"]["text_tokens_dict_size"], llama_config=tiny_llama(cfg["t3"])))
    load_strict(t3, t3_w, what="tiny multilingual t3")
    t3.eval()
    t3.fuse_projections()
    return {"tts": ChatterboxMultilingualTTS(t3, mlx_s3token2wav(cfg, s3_w), mlx_voice_encoder(cfg, ve_w),
                                             tokenizer=None)}


@contextlib.contextmanager
def runners_with(models: dict):
    """The multilingual MLX stage runners with their pipeline the tiny one (the English runners they call get
    its modules through mtl_common.english_loaders)."""
    from .stages import mtl_common, mtl_t3_decode

    tts = models["tts"]
    with patched_attrs([(mtl_common, "pipeline", constant(tts)), (mtl_t3_decode, "pipeline", constant(tts))]):
        yield
