"""The pack's Chatterbox Turbo tiny set: tiny, seeded ORIGINAL Turbo modules (T3 on a small GPT-2,
VoiceEncoder, S3Gen with MeanFlow), the project's Turbo export (reference.export_turbo.export_turbo_case)
run on them, so the tensors are the registry's `turbo.*`, and MLX models of the same sizes that reproduce
it through the Turbo stage runners (parity/stages/turbo_*.py). The builder interface is pack_tiny.py's.

Sizes: the English tiny set's VoiceEncoder and S3Gen sizes (pack_tiny.VE_CONFIG, S3GEN_CONFIG) with
MeanFlow; T3 as ChatterboxTurboTTS.from_local configures it (no perceiver, no emotion input, no position
embeddings of its own, 6563 speech ids, a 375-token prompt) on a GPT-2 of 2 layers, 64 wide, with a
512-row text table: the synthetic GPT-2 tokenizer's (reference/gpt2_tokenizer.py) byte and merge ids are
below 366, so an English text fits; its tags (ids 50257 on) do not, and make_fixture refuses such a text.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Dict

import numpy as np

from .errors import ParityError
from .pack_tiny import (S3GEN_CONFIG, VE_CONFIG, patched_attrs, perturb_t3, constant, load_weights,
                        mlx_s3token2wav, mlx_voice_encoder, registered_backbone, save_state, tiny_s3gen,
                        tiny_voice_encoder)

SET_NAME = "tiny_turbo"
MODEL = "turbo"
FOLDER = "tiny_turbo"
TORCH_FILES = ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors")
STAGES = ("turbo_ve", "turbo_s3tok", "turbo_embed_ref", "turbo_t3_cond", "turbo_t3_decode", "turbo_t3_greedy",
          "turbo_flow", "turbo_hift")
NOT_INCLUDED = {
    "turbo_text": "no weights: Turbo's punc_norm + the GPT-2 tokenizer are the same at any model size; use the "
                  "turbo_espeak case's turbo_text component (with its assets/ tokenizer files)",
    "turbo_audio": "no weights: loading, loudness and resampling are the same at any model size; use a Turbo "
                   "case's turbo_audio component",
}
GPT2_SIZES = dict(n_embd=64, hidden_size=64, n_head=4, n_layer=2, n_positions=1024, n_ctx=1024, vocab_size=8)
CONFIG = {
    "t3": {"gpt2": GPT2_SIZES, "gpt2_config_name": "GPT2_tiny_pack", "text_tokens_dict_size": 512,
           "gpt2_vocab_size": "8: GPT2Model's own token table (wte) is unused (T3 feeds input embeddings; "
                              "from_local deletes it), as LLaMA's vocab_size 8"},
    "ve": VE_CONFIG,
    **S3GEN_CONFIG,
    # the F0 classifier's bias (pack_tiny.perturb_s3gen): at the English set's -30 every frame of this
    # clip's flow output is voiced (F0 = |classifier| 21-43 Hz, the scaled classifier's w.x -13 to 9); at -3
    # F0 has voiced (> 10 Hz) and unvoiced frames
    "hift": {**S3GEN_CONFIG["hift"], "f0_classifier_bias": -3.0},
    "meanflow": True,
    "case": {"base": "turbo_espeak", "max_gen_len": 12},
    "seed": 0,
}
NOTES = ("Tiny ORIGINAL Chatterbox Turbo modules (seeded, sizes in `config`), run through the project's Turbo "
         "export (reference.export_turbo.export_turbo_case) on the turbo_espeak clip; component tensors have the "
         "registry's turbo.* names. Runtime substitutions in the original (and, for the check, in mlx_impl): "
         "LLAMA_CONFIGS gets the tiny GPT-2 (T3's hyper-parameters otherwise from_local's, the text table 512 "
         "rows); S3Gen(meanflow=True) as the English tiny set's S3Gen (its sub-module constructors at the tiny "
         "sizes, PreLookaheadLayer and Upsample1D at flow.encoder_fixed_width), the MeanFlow time mixer's r half "
         "random (the synthetic Turbo checkpoint's init fix). T3 per-step logits: every step is kept.")


def tiny_gpt2(cfg: dict) -> dict:
    """The original's GPT-2 medium dict with the tiny sizes of cfg["t3"]["gpt2"]."""
    from chatterbox.models.t3 import llama_configs

    gpt2 = copy.deepcopy(llama_configs.GPT2_MEDIUM_CONFIG)
    gpt2.update(cfg["t3"]["gpt2"])
    return gpt2


# ----------------------------------------------------------------------------- tiny ORIGINAL modules
def tiny_turbo_t3(cfg: dict, seed: int):
    """The ORIGINAL T3 with from_local's Turbo hyper-parameters on the tiny GPT-2, seeded and perturbed."""
    import torch
    from chatterbox.models.t3 import T3
    from reference.synth_turbo_checkpoint import turbo_hp

    hp = turbo_hp()
    hp.text_tokens_dict_size = cfg["t3"]["text_tokens_dict_size"]
    hp.llama_config_name = cfg["t3"]["gpt2_config_name"]
    with registered_backbone(hp.llama_config_name, tiny_gpt2(cfg)):
        torch.manual_seed(seed)
        t3 = T3(hp).eval()
    perturb_t3(t3, seed)
    return t3


def build_tiny_original(tokenizer_dir: Path, cfg: dict = CONFIG):
    """A ChatterboxTurboTTS of tiny, seeded ORIGINAL modules, on the CPU, the GPT-2 tokenizer loaded as
    from_local loads it."""
    import torch
    from chatterbox.tts_turbo import ChatterboxTurboTTS
    from reference.synth_turbo_checkpoint import _apply_turbo_init_fixes
    from transformers import AutoTokenizer

    torch.set_grad_enabled(False)
    seed = cfg["seed"]
    ve = tiny_voice_encoder(cfg, seed)
    t3 = tiny_turbo_t3(cfg, seed + 1)
    s3 = tiny_s3gen(cfg, seed + 2, meanflow=True)
    _apply_turbo_init_fixes(s3)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return ChatterboxTurboTTS(t3, s3, ve, tokenizer, "cpu")


def save_tiny_checkpoint(tts, out_dir: Path) -> Path:
    """The tiny modules' state dicts in the Turbo hub layout (every tensor, as from_local loads them
    strictly: GPT-2's wte and the S3 tokenizer's mel filters and window too)."""
    for fname, module in zip(TORCH_FILES, (tts.ve, tts.t3, tts.s3gen)):
        save_state(module, out_dir / fname)
    return out_dir


def mlx_weights(ckpt_dir: Path) -> Dict[str, Dict[str, np.ndarray]]:
    """The tiny Turbo checkpoint converted by the project's sanitize functions (MLX layout)."""
    from mlx_impl.convert import s3gen as s3gen_conv
    from mlx_impl.convert import t3_turbo
    from mlx_impl.convert import voice_encoder as ve_conv

    from .turbo_checkpoint import TurboCheckpointDir

    ck = TurboCheckpointDir.open(ckpt_dir)
    return {"ve.safetensors": ve_conv.sanitize(ck.state("ve")), "t3.safetensors": t3_turbo.sanitize(ck.state("t3"))[0],
            "s3gen.safetensors": s3gen_conv.sanitize(ck.state("s3gen"))}


def check_text_fits(tts, case, rows: int) -> None:
    from chatterbox.tts_turbo import punc_norm

    ids = tts.tokenizer(punc_norm(case.text)).input_ids
    if max(ids) >= rows:
        raise ParityError(f"tiny Turbo set: the text of case '{case.name}' holds token id {max(ids)}, outside the "
                          f"tiny T3's {rows}-row text table (config t3.text_tokens_dict_size)")


def make_fixture(work: Path, log=print):
    """Run the project's Turbo export on the tiny ChatterboxTurboTTS: returns (fixture, checkpoint folder)."""
    from reference.export_turbo import export_turbo_case
    from reference.gpt2_tokenizer import write_gpt2_tokenizer

    from .cases import load_turbo_cases
    from .fixtures import Fixture
    from .turbo_checkpoint import TurboCheckpointDir

    ckpt_dir = Path(work) / "tiny-turbo-ckpt"
    ckpt_dir.mkdir(parents=True)
    write_gpt2_tokenizer(ckpt_dir)
    tts = build_tiny_original(ckpt_dir)
    save_tiny_checkpoint(tts, ckpt_dir)
    del tts.t3.tfmr.wte  # as from_local, after the strict load
    cc = CONFIG["case"]
    base = load_turbo_cases()[cc["base"]]
    case = dataclasses.replace(base, name=SET_NAME, about=f"tiny seeded Turbo modules on {base.audio}",
                               params={**base.params, "max_gen_len": cc["max_gen_len"]})
    check_text_fits(tts, case, CONFIG["t3"]["text_tokens_dict_size"])
    out = export_turbo_case(TurboCheckpointDir.open(ckpt_dir), case, out_root=Path(work) / "fx", tts=tts, log=log)
    return Fixture.open(out), ckpt_dir


# ----------------------------------------------------------------------------- tiny MLX modules
def mlx_models(wdir: Path, cfg: dict) -> dict:
    """The MLX ChatterboxTurboTTS of the tiny sizes with the pack's MLX-layout weights, loaded strictly
    (no tokenizer: the tiny set has no text component)."""
    from mlx_impl.convert.common import load_strict
    from mlx_impl.convert.t3_turbo import turbo_hp
    from mlx_impl.t3 import T3
    from mlx_impl.tts_turbo import ChatterboxTurboTTS

    ve_w, t3_w, s3_w = load_weights(wdir, "ve", "t3", "s3gen")
    hp = turbo_hp()
    hp.text_tokens_dict_size = cfg["t3"]["text_tokens_dict_size"]
    hp.llama_config = tiny_gpt2(cfg)
    t3 = T3(hp)
    load_strict(t3, t3_w, what="tiny Turbo t3")
    t3.eval()
    s3gen = mlx_s3token2wav(cfg, s3_w, meanflow=True)
    return {"tts": ChatterboxTurboTTS(t3, s3gen, mlx_voice_encoder(cfg, ve_w), tokenizer=None)}


@contextlib.contextmanager
def runners_with(models: dict):
    """The Turbo MLX stage runners with their pipeline (and the English HiFT runner's model) the tiny ones."""
    from .stages import (hift, turbo_embed_ref, turbo_flow, turbo_s3tok, turbo_t3_cond, turbo_t3_decode,
                         turbo_t3_greedy, turbo_ve)

    tts = models["tts"]
    runners = (turbo_ve, turbo_s3tok, turbo_embed_ref, turbo_t3_cond, turbo_t3_decode, turbo_t3_greedy, turbo_flow)
    with patched_attrs([(m, "pipeline", constant(tts)) for m in runners] +
                        [(hift, "model", constant(tts.s3gen.mel2wav))]):
        yield
