"""Synthetic Chatterbox Turbo checkpoint: the ORIGINAL modules of `ChatterboxTurboTTS.from_local`
instantiated with a fixed seed and saved in the ResembleAI/chatterbox-turbo file layout, so that
`ChatterboxTurboTTS.from_local(DIR, "cpu")` loads it unmodified:

  ve.safetensors              VoiceEncoder()
  t3_turbo_v1.safetensors     T3(turbo_hp()): GPT-2 medium backbone (24 layers, 1024 wide), text table 50276,
                              speech table 6563, no perceiver, no emotion input (tfmr.wte included: from_local
                              loads it strictly, then deletes it)
  s3gen_meanflow.safetensors  S3Gen(meanflow=True), every tensor (from_local loads it with strict=True: the
                              tokenizer's mel filters and window too, unlike the English s3gen.safetensors)
  vocab.json, merges.txt, added_tokens.json, special_tokens_map.json, tokenizer_config.json
                              a GPT-2-style byte-level BPE of 50276 entries (reference/gpt2_tokenizer.py)
  conds.pt                    the built-in voice: the original's prepare_conditionals on very_long_16k.wav (47 s:
                              the full 375-token T3 prompt)
  synthetic.json              seeds, tensor counts, init fixes

The English init fix applies (reference/synth_checkpoint.py INIT_FIXES): without it the F0 predictor
leaves SineGen's sine branch unexercised. MeanFlow adds one (TURBO_INIT_FIXES): the decoder's
time_embed_mixer is initialised to [I | 0], which ignores the end time r entirely, so a port that
dropped r would match; its r half gets random weights.
"""
from __future__ import annotations

import gc
from pathlib import Path

from parity import ROOT
from parity.fixtures import staged_dir

from .gpt2_tokenizer import write_gpt2_tokenizer
from .synth_checkpoint import INIT_FIXES, SYNTH_MANIFEST, _apply_init_fixes, _save, clip_label, write_manifest

DEFAULT_TURBO_CKPT = ROOT / "checkpoints" / "synthetic-turbo-s0"
# the built-in voice: longer than Turbo's 15 s T3 prompt (375 tokens, ENC_COND_LEN) and 10 s S3Gen cut
DEFAULT_TURBO_VOICE = ROOT / "fixtures" / "inputs" / "very_long_16k.wav"
TURBO_INIT_FIXES = {
    "flow.decoder.estimator.time_embed_mixer": (
        "weight[:, D:] ~ N(0, 1/D) (D = 1024, the time embedding width). The original's init "
        "(intmeanflow.get_intmeanflow_time_mixer) is [I | 0]: the mixer passes t's embedding through and "
        "ignores r's, so MeanFlow's end time r would be unexercised by parity."
    ),
}


def _apply_turbo_init_fixes(s3gen) -> None:
    import torch

    with torch.no_grad():
        mixer = s3gen.flow.decoder.estimator.time_embed_mixer
        d = mixer.weight.shape[0]
        mixer.weight[:, d:] = torch.randn(d, d) / d ** 0.5
WEIGHT_FILES = ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors")


def turbo_hp():
    """The T3Config that ChatterboxTurboTTS.from_local builds (chatterbox/tts_turbo.py)."""
    from chatterbox.models.t3.modules.t3_config import T3Config

    hp = T3Config(text_tokens_dict_size=50276)
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    return hp


def make_synthetic_turbo_checkpoint(out_dir=DEFAULT_TURBO_CKPT, seed: int = 0,
                                    voice_clip: Path = DEFAULT_TURBO_VOICE) -> Path:
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        counts = {}
        torch.manual_seed(seed)
        counts["ve.safetensors"] = _save(VoiceEncoder().eval(), tmp / "ve.safetensors")
        torch.manual_seed(seed + 1)
        counts["t3_turbo_v1.safetensors"] = _save(T3(turbo_hp()).eval(), tmp / "t3_turbo_v1.safetensors")
        gc.collect()
        torch.manual_seed(seed + 2)
        s3gen = S3Gen(meanflow=True).eval()
        _apply_init_fixes(s3gen)
        _apply_turbo_init_fixes(s3gen)
        counts["s3gen_meanflow.safetensors"] = _save(s3gen, tmp / "s3gen_meanflow.safetensors")
        del s3gen
        gc.collect()
        tokenizer_parts = write_gpt2_tokenizer(tmp)

        tts = ChatterboxTurboTTS.from_local(tmp, "cpu")  # the original's loader, unmodified
        torch.manual_seed(seed + 3)
        tts.prepare_conditionals(str(voice_clip))
        tts.conds.save(tmp / "conds.pt")
        (tmp / "conds.pt").chmod(0o644)
        del tts
        gc.collect()

        manifest = {
            "kind": "synthetic",
            "model": "turbo (ChatterboxTurboTTS, ResembleAI/chatterbox-turbo layout)",
            "seed": seed,
            "seeds": {"ve": seed, "t3": seed + 1, "s3gen": seed + 2, "conds": seed + 3},
            "tensor_counts": counts,
            "init_fixes": {f"s3gen_meanflow.safetensors: {k}": v for k, v in {**INIT_FIXES, **TURBO_INIT_FIXES}.items()},
            "built_in_voice": clip_label(voice_clip),
            "tokenizer": {"kind": "GPT-2 byte-level BPE (reference/gpt2_tokenizer.py)", "entries": tokenizer_parts,
                          "total": sum(tokenizer_parts.values())},
        }
        write_manifest(tmp, manifest)
    return out_dir


def ensure_turbo_checkpoint(path=DEFAULT_TURBO_CKPT) -> Path:
    """The synthetic Turbo checkpoint folder, built (seed 0) when missing."""
    path = Path(path)
    if not (path / SYNTH_MANIFEST).is_file():
        make_synthetic_turbo_checkpoint(path, seed=0)
    return path


if __name__ == "__main__":
    import sys

    print(make_synthetic_turbo_checkpoint(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TURBO_CKPT))
