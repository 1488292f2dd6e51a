"""The pack's English tiny set: tiny, seeded ORIGINAL ChatterboxTTS modules (T3 on a small LLaMA,
VoiceEncoder, S3Gen: S3 tokenizer, CAMPPlus, flow, HiFT), the project's export run on them, and MLX
models of the same sizes that reproduce it through the parity stage runners (parity/pack.py's
verify_tiny). The helpers that size the original classes at runtime (and mlx_impl's the same way) are
shared with the Turbo and multilingual tiny sets (pack_tiny_turbo.py, pack_tiny_mtl.py).

A tiny builder module gives pack.py: SET_NAME, MODEL, FOLDER, CONFIG, STAGES, NOT_INCLUDED, NOTES,
TORCH_FILES (the hub layout's weight files), make_fixture(work, log) -> (fixture, checkpoint folder),
mlx_weights(checkpoint folder) -> {file: weights}, mlx_models(weights folder, config) and
runners_with(models) (the stage runners with their model loaders returning the tiny models).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import shutil
from pathlib import Path
from typing import Dict

import numpy as np

SET_NAME = "tiny"
MODEL = "tts"
FOLDER = "tiny"
TINY_SEED = 0
TINY_BASE_CASE = "espeak_22k"
TORCH_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors")
STAGES = ("ve", "s3tok", "embed_ref", "t3_cond", "t3_decode", "t3_greedy", "flow", "hift")
NOT_INCLUDED = {
    "text": "no weights: punc_norm + the BPE tokenizer are the same at any model size; use a case's text component "
            "(with assets/tokenizer.json)",
    "audio": "no weights: loading and resampling are the same at any model size; use a case's audio component",
}
# S3Gen's small sizes: the English, Turbo (MeanFlow) and multilingual tiny sets share them.
S3GEN_CONFIG = {
    "s3tokenizer": {"n_audio_state": 128, "n_audio_head": 2, "n_audio_layer": 1},
    "campplus": {"growth_rate": 8, "bn_size": 2, "init_channels": 32, "embedding_size": 192},
    "flow": {"input_size": 64,
             "encoder": dict(input_size=64, output_size=64, attention_heads=2, linear_units=128, num_blocks=1),
             "encoder_fixed_width": 64,
             "estimator": dict(channels=[64], attention_head_dim=32, n_blocks=1, num_mid_blocks=1, num_heads=2)},
    "hift": {"base_channels": 32, "f0_cond_channels": 32},
}
VE_CONFIG = {"ve_hidden_size": 32, "speaker_embed_size": 256}
# Small sizes of the tiny ORIGINAL modules (and of the MLX ones that reproduce them).
CONFIG = {
    "t3": {"llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         head_dim=16, intermediate_size=128),
           "llama_config_name": "Llama_tiny_pack", "text_tokens_dict_size": 704,
           "perceiver": "pre_attention_query_size = embedding_dim = hidden_size (the original hard-codes 1024)"},
    "ve": VE_CONFIG,
    **S3GEN_CONFIG,
    "case": {"base": TINY_BASE_CASE, "max_new_tokens": 12, "clip_seconds": 3.0},
    "seed": TINY_SEED,
}
NOTES = ("Tiny ORIGINAL modules (seeded, sizes in `config`), run through the project's export "
         "(reference.export.export_case) on the case clip; component tensors have the registry's names. "
         "Runtime substitutions in the original (and, for the check, in mlx_impl): LLAMA_CONFIGS gets "
         "the tiny LLaMA; T3CondEnc's Perceiver (hard-coded 1024) takes the hidden width; "
         "UpsampleConformerEncoder's PreLookaheadLayer and Upsample1D (hard-coded 512) take "
         "flow.encoder_fixed_width; S3Token2Mel's sub-module constructors get the tiny sizes. "
         "T3 per-step logits: every step is kept.")


# ----------------------------------------------------------------------------- tiny ORIGINAL modules
@contextlib.contextmanager
def patched_attrs(patches):
    """patches: [(obj, attr, new)], restored in reverse order on exit."""
    saved = []
    try:
        for obj, attr, new in patches:
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, new)
        yield
    finally:
        for obj, attr, old in reversed(saved):
            setattr(obj, attr, old)


def overriding(cls, **over):
    """A stand-in for `cls` whose keyword arguments `over` replace the caller's."""
    def make(*a, **kw):
        return cls(*a, **{**kw, **over})
    return make


def fixed_width_layers(module, width: int):
    """UpsampleConformerEncoder builds PreLookaheadLayer(channels=512) and Upsample1D(512, 512), hard-coded
    in the original and in mlx_impl: the tiny flow sizes them to the encoder width."""
    pre, up = module.PreLookaheadLayer, module.Upsample1D
    return [(module, "PreLookaheadLayer", lambda channels, pre_lookahead_len=1: pre(channels=width, pre_lookahead_len=pre_lookahead_len)),
            (module, "Upsample1D", lambda channels, out_channels, stride=2: up(width, width, stride))]


def original_s3gen_patches(cfg: dict) -> list:
    """S3Token2Mel/S3Token2Wav's sub-module constructors (and the S3TokenizerV2 default config) at the tiny
    sizes of `cfg` (S3GEN_CONFIG's keys), for patched_attrs."""
    from chatterbox.models.s3gen import s3gen as s3gen_mod
    from chatterbox.models.s3gen.transformer import upsample_encoder as ue
    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

    fl, hf = cfg["flow"], cfg["hift"]
    assert S3TokenizerV2.__init__.__defaults__ is not None
    return [
        (S3TokenizerV2.__init__, "__defaults__", (ModelConfig(**cfg["s3tokenizer"]),)),
        (s3gen_mod, "CAMPPlus", overriding(s3gen_mod.CAMPPlus, **cfg["campplus"])),
        (s3gen_mod, "UpsampleConformerEncoder", overriding(s3gen_mod.UpsampleConformerEncoder, **fl["encoder"])),
        (s3gen_mod, "ConditionalDecoder", overriding(s3gen_mod.ConditionalDecoder, **fl["estimator"])),
        (s3gen_mod, "CausalMaskedDiffWithXvec", overriding(s3gen_mod.CausalMaskedDiffWithXvec, input_size=fl["input_size"])),
        (s3gen_mod, "HiFTGenerator", overriding(s3gen_mod.HiFTGenerator, base_channels=hf["base_channels"])),
        (s3gen_mod, "ConvRNNF0Predictor", overriding(s3gen_mod.ConvRNNF0Predictor, cond_channels=hf["f0_cond_channels"])),
        *fixed_width_layers(ue, fl["encoder_fixed_width"]),
    ]


@contextlib.contextmanager
def registered_backbone(name: str, config: dict):
    """The original's LLAMA_CONFIGS with `config` under `name` for the duration of the block (T3 reads it)."""
    from chatterbox.models.t3 import llama_configs

    llama_configs.LLAMA_CONFIGS[name] = config
    try:
        yield config
    finally:
        llama_configs.LLAMA_CONFIGS.pop(name, None)


def tiny_llama(t3_cfg: dict) -> dict:
    """The original's LLaMA 520M dict with the tiny sizes of `t3_cfg["llama"]`."""
    from chatterbox.models.t3 import llama_configs

    llama = copy.deepcopy(llama_configs.LLAMA_520M_CONFIG_DICT)
    llama.update(t3_cfg["llama"])
    return llama


@contextlib.contextmanager
def tiny_original_classes(cfg: dict = CONFIG):
    """The ORIGINAL T3 classes sized small for the duration of the block (runtime only): a tiny LLaMA in
    LLAMA_CONFIGS, the Perceiver at the hidden width (tiny_s3gen sizes S3Gen's sub-modules)."""
    from chatterbox.models.t3.modules import cond_enc, perceiver

    llama = tiny_llama(cfg["t3"])
    hidden = llama["hidden_size"]
    perceiver_patch = (cond_enc, "Perceiver",
                       functools.partial(perceiver.Perceiver, pre_attention_query_size=hidden, embedding_dim=hidden))
    with registered_backbone(cfg["t3"]["llama_config_name"], llama), patched_attrs([perceiver_patch]):
        yield llama


def perturb_t3(model, seed: int) -> None:
    """Seeded weights away from the default init (norm gains and biases too; a peaked speech head so
    that sampling is not uniform)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("norm.weight") or k.split(".")[-2].startswith("ln_"):  # LLaMA's RMSNorms, GPT-2's ln_*
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif k.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "emb" in k.split(".")[0] or k == "cond_enc.perceiver.pre_attention_query":
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                gain = 3.0 if k == "speech_head.weight" else 1.0
                conv1d = getattr(model, "is_gpt", False) and k.startswith("tfmr.h.")  # GPT-2's (in, out) Conv1D
                fan_in = p.shape[0] if conv1d else p.shape[-1]
                p.copy_(gain * torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def perturb_s3gen(s3, seed: int, f0_bias: float = -30.0) -> None:
    """Biases, norm gains, Snake alphas, weight-norm gains and BatchNorm statistics away from their
    default (0 / 1) values; the S3 tokenizer's FSQ projection widened so tokens spread over the codebook;
    the F0 classifier scaled (weight x 300, bias `f0_bias`; the synthetic checkpoint does the like) so that
    F0 (|classifier|) has voiced (> 10 Hz) and unvoiced frames."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in s3.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.startswith("tokenizer."):
                continue
            if name.endswith("alpha") or name.endswith("original0"):
                p.mul_(0.75 + 0.5 * torch.rand(p.shape, generator=g))
            elif name.endswith("bias") and "pos_bias" not in name:
                p.add_(0.05 * noise)
            elif "pos_bias" in name:
                p.copy_(0.2 * noise)
            elif name.startswith("flow.") and ("norm" in name or ".block.2." in name):
                p.copy_(1.0 + 0.1 * noise)
        for m in s3.speaker_encoder.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(1000)
        w = s3.tokenizer.quantizer._codebook.project_down.weight
        w.copy_(torch.randn(w.shape, generator=g) * (3.0 / np.sqrt(w.shape[1])))
        clf = s3.mel2wav.f0_predictor.classifier
        clf.weight.mul_(300.0)
        clf.bias.fill_(f0_bias)


def tiny_voice_encoder(cfg: dict, seed: int):
    """The ORIGINAL VoiceEncoder at the sizes of cfg["ve"], seeded."""
    import torch
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.models.voice_encoder.config import VoiceEncConfig

    hp = VoiceEncConfig()
    for k, v in cfg["ve"].items():
        setattr(hp, k, v)
    torch.manual_seed(seed)
    return VoiceEncoder(hp).eval()


def tiny_s3gen(cfg: dict, seed: int, meanflow: bool = False):
    """The ORIGINAL S3Gen (S3Token2Wav) at the sizes of `cfg`, seeded and perturbed (perturb_s3gen)."""
    import torch
    from chatterbox.models.s3gen import S3Gen

    with patched_attrs(original_s3gen_patches(cfg)):
        torch.manual_seed(seed)
        s3 = S3Gen(meanflow=meanflow).eval()
    perturb_s3gen(s3, seed, cfg["hift"].get("f0_classifier_bias", -30.0))
    return s3


def build_tiny_original(tokenizer_json: Path, cfg: dict = CONFIG):
    """A ChatterboxTTS of tiny, seeded ORIGINAL modules (T3, S3Gen, VoiceEncoder), on the CPU."""
    import torch
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.tokenizers import EnTokenizer
    from chatterbox.tts import ChatterboxTTS

    torch.set_grad_enabled(False)
    seed = cfg["seed"]
    ve = tiny_voice_encoder(cfg, seed)
    t3 = tiny_llama_t3(cfg, seed + 1, T3Config.english_only())
    s3 = tiny_s3gen(cfg, seed + 2)
    return ChatterboxTTS(t3, s3, ve, EnTokenizer(str(tokenizer_json)), "cpu")


def tiny_llama_t3(cfg: dict, seed: int, hp):
    """The ORIGINAL T3 of hyper-parameters `hp` on the tiny LLaMA of cfg["t3"], seeded and perturbed."""
    import torch
    from chatterbox.models.t3 import T3

    hp.llama_config_name = cfg["t3"]["llama_config_name"]
    with tiny_original_classes(cfg):
        torch.manual_seed(seed)
        t3 = T3(hp).eval()
    perturb_t3(t3, seed)
    return t3


def save_state(module, path: Path, drop=()) -> None:
    """A module's state dict as a safetensors file (the hub's weight files), less the keys `drop`."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items() if k not in drop}
    save_file(state, str(path))


def save_tiny_checkpoint(tts, out_dir: Path, tokenizer_json: Path) -> Path:
    """The tiny modules' state dicts in the hub's layout (what ChatterboxTTS.from_local reads)."""
    from reference.synth_checkpoint import NOT_STORED

    out_dir.mkdir(parents=True)
    for fname, module, drop in zip(TORCH_FILES, (tts.ve, tts.t3, tts.s3gen), ((), (), NOT_STORED)):
        save_state(module, out_dir / fname, drop)
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    return out_dir


def mlx_weights(ckpt_dir: Path) -> Dict[str, Dict[str, np.ndarray]]:
    """The tiny checkpoint converted by the project's sanitize functions (MLX layout)."""
    from mlx_impl.convert import s3gen as s3gen_conv
    from mlx_impl.convert import t3 as t3_conv
    from mlx_impl.convert import voice_encoder as ve_conv

    from .checkpoint_dir import CheckpointDir

    ck = CheckpointDir.open(ckpt_dir)
    return {"ve.safetensors": ve_conv.sanitize(ck.state("ve")), "t3.safetensors": t3_conv.sanitize(ck.state("t3")),
            "s3gen.safetensors": s3gen_conv.sanitize(ck.state("s3gen"))}


def make_fixture(work: Path, log=print):
    """Run the project's export on the tiny ChatterboxTTS: returns (fixture, checkpoint folder)."""
    import soundfile as sf
    from reference.export import export_case

    from .cases import get_case
    from .checkpoint_dir import CheckpointDir
    from .fixtures import Fixture
    from .synthetic import resolve_checkpoint

    tok = resolve_checkpoint(None).file("tokenizer.json")
    tts = build_tiny_original(tok)
    ckpt_dir = save_tiny_checkpoint(tts, work / "tiny-ckpt", tok)
    cc = CONFIG["case"]
    base = get_case(cc["base"])
    audio, sr = sf.read(str(base.audio_path), dtype="float32", always_2d=True)
    excerpt = work / f"{base.name}_first_{cc['clip_seconds']:g}s.wav"
    sf.write(str(excerpt), audio[: int(cc["clip_seconds"] * sr)], sr, subtype="FLOAT")
    case = dataclasses.replace(base, name="tiny", audio=str(excerpt),
                               about=f"tiny seeded modules on the first {cc['clip_seconds']:g} s of {base.audio}",
                               params={**base.params, "max_new_tokens": cc["max_new_tokens"]})
    out = export_case(CheckpointDir.open(ckpt_dir), case, out_root=work / "fx", tts=tts, log=log)
    return Fixture.open(out), ckpt_dir


# ----------------------------------------------------------------------------- tiny MLX modules
def load_weights(wdir: Path, *names: str):
    """The MLX-layout weight files `names` of a tiny set; one that is missing or unreadable is one
    ParityError naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from .errors import ParityError

    out = []
    for n in names:
        path = Path(wdir) / f"{n}.safetensors"
        try:
            out.append(load_file(str(path)))
        except (OSError, SafetensorError) as e:
            raise ParityError(f"tiny weights {path}: not a readable safetensors file ({e})") from None
    return out


def mlx_voice_encoder(cfg: dict, weights: dict):
    from mlx_impl.convert.common import load_strict
    from mlx_impl.voice_encoder import VoiceEncConfig, VoiceEncoder

    ve = VoiceEncoder(VoiceEncConfig(**cfg["ve"]))
    load_strict(ve, weights, what="tiny ve")
    return ve


def mlx_s3gen_parts(cfg: dict, s3_w: dict, meanflow: bool = False) -> dict:
    """The MLX S3 tokenizer, CAMPPlus, flow and HiFT at the sizes of `cfg`, with the MLX-layout S3Gen
    weights `s3_w` loaded strictly: {"tokenizer", "campplus", "flow", "hift"}."""
    from dataclasses import replace

    from mlx_impl.convert.common import load_strict
    from mlx_impl.s3gen import xvector
    from mlx_impl.s3gen.configs import CFM_PARAMS
    from mlx_impl.s3gen.decoder import ConditionalDecoder
    from mlx_impl.s3gen.f0_predictor import ConvRNNF0Predictor
    from mlx_impl.s3gen.flow import CausalMaskedDiffWithXvec
    from mlx_impl.s3gen.flow_matching import CausalConditionalCFM
    from mlx_impl.s3gen.hifigan import HiFTConfig, HiFTGenerator
    from mlx_impl.s3gen.transformer import upsample_encoder as ue
    from mlx_impl.s3tokenizer.model_v2 import ModelConfig
    from mlx_impl.s3tokenizer.s3tokenizer import S3Tokenizer

    def part(prefix):
        return {k[len(prefix):]: v for k, v in s3_w.items() if k.startswith(prefix)}

    tok = S3Tokenizer("speech_tokenizer_v2_25hz", config=ModelConfig(**cfg["s3tokenizer"]))
    load_strict(tok, part("tokenizer."), what="tiny s3tokenizer")
    cam = xvector.CAMPPlus(**cfg["campplus"])
    load_strict(cam, part("speaker_encoder."), what="tiny campplus")
    fl = cfg["flow"]
    with patched_attrs(fixed_width_layers(ue, fl["encoder_fixed_width"])):
        encoder = ue.UpsampleConformerEncoder(**{**dict(
            output_size=512, attention_heads=8, linear_units=2048, num_blocks=6, dropout_rate=0.1,
            positional_dropout_rate=0.1, attention_dropout_rate=0.1, normalize_before=True, input_layer="linear",
            pos_enc_layer_type="rel_pos_espnet", selfattention_layer_type="rel_selfattn", input_size=512,
            use_cnn_module=False, macaron_style=False), **fl["encoder"]})
    estimator = ConditionalDecoder(**{**dict(in_channels=320, out_channels=80, causal=True, channels=[256], dropout=0.0,
                                             attention_head_dim=64, n_blocks=4, num_mid_blocks=12, num_heads=8,
                                             act_fn="gelu", meanflow=meanflow), **fl["estimator"]})
    flow = CausalMaskedDiffWithXvec(input_size=fl["input_size"], encoder=encoder,
                                    decoder=CausalConditionalCFM(spk_emb_dim=80, cfm_params=CFM_PARAMS, estimator=estimator))
    load_strict(flow, part("flow."), what="tiny flow")
    hift = HiFTGenerator(replace(HiFTConfig.s3gen(), base_channels=cfg["hift"]["base_channels"]),
                         f0_predictor=ConvRNNF0Predictor(cond_channels=cfg["hift"]["f0_cond_channels"]))
    load_strict(hift, part("mel2wav."), what="tiny hift")
    hift.eval()
    return {"tokenizer": tok, "campplus": cam, "flow": flow, "hift": hift}


def mlx_s3token2wav(cfg: dict, s3_w: dict, meanflow: bool = False):
    """mlx_impl's S3Token2Wav, its sub-modules those of mlx_s3gen_parts (tiny, loaded strictly)."""
    import mlx_impl.s3gen.s3gen as s3mod

    parts = mlx_s3gen_parts(cfg, s3_w, meanflow=meanflow)
    with patched_attrs([(s3mod, "S3Tokenizer", lambda name: parts["tokenizer"]),
                         (s3mod, "CAMPPlus", lambda: parts["campplus"]),
                         (s3mod, "build_causal_flow", lambda meanflow: parts["flow"]),
                         (s3mod, "ConvRNNF0Predictor", lambda: None),
                         (s3mod, "HiFTGenerator", lambda config, f0_predictor: parts["hift"])]):
        return s3mod.S3Token2Wav(meanflow=meanflow)


def mlx_models(wdir: Path, cfg: dict) -> dict:
    """MLX models of the tiny sizes with the pack's MLX-layout weights (folder `wdir`), loaded strictly."""
    from mlx_impl.convert.common import load_strict
    from mlx_impl.t3 import T3, T3Config

    ve_w, t3_w, s3_w = load_weights(wdir, "ve", "t3", "s3gen")
    t3 = T3(T3Config(cfg["t3"]["text_tokens_dict_size"], llama_config=tiny_llama(cfg["t3"])))
    load_strict(t3, t3_w, what="tiny t3")
    t3.eval()
    return {"ve": mlx_voice_encoder(cfg, ve_w), "t3": t3, **mlx_s3gen_parts(cfg, s3_w)}


def constant(model):
    """A checkpoint loader that returns `model` whatever checkpoint it is given."""
    return lambda ckpt: model


@contextlib.contextmanager
def runners_with(models: dict):
    """The English MLX stage runners of parity/stages, with their checkpoint loaders returning `models`."""
    from .stages import embed_ref_speaker, embed_ref_tokens, flow, hift, s3tok, t3_cond, ve

    with patched_attrs([
        (ve, "load_ve_model", constant(models["ve"])),
        (s3tok, "load_tokenizer", constant(models["tokenizer"])),
        (embed_ref_tokens, "load_tokenizer", constant(models["tokenizer"])),
        (embed_ref_speaker, "load_campplus_model", constant(models["campplus"])),
        (t3_cond, "load_t3_model", constant(models["t3"])),
        (flow, "load_flow", constant(models["flow"])),
        (hift, "model", constant(models["hift"])),
    ]):
        yield
