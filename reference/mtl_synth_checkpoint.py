"""Synthetic Chatterbox Multilingual checkpoint: the ORIGINAL modules of
`ChatterboxMultilingualTTS.from_local` instantiated with a fixed seed and saved in the
ResembleAI/chatterbox multilingual file layout, so that `from_local(DIR, "cpu")` loads it unmodified:

  ve.pt                                 VoiceEncoder() state dict (torch.save; from_local torch.loads it)
  t3_mtl23ls_v2.safetensors             T3(T3Config.multilingual()): the English T3 with a 2454-entry text table
  s3gen.pt                              S3Gen() state dict, every tensor (loaded strictly, the tokenizer's
                                        mel filters and window included, unlike the English s3gen.safetensors)
  grapheme_mtl_merged_expanded_v1.json  the tokenizer stand-in (reference/mtl_tokenizer_json.py)
  Cangjie5_TC.json + models--ResembleAI--chatterbox/
                                        the Cangjie stand-in, beside the tokenizer and in the hub cache
                                        inside the folder where the original reads it (reference/mtl_data.py)
  pkuseg/                               not in the hub layout: a $PKUSEG_HOME with spacy-pkuseg's model
                                        stand-in; point PKUSEG_HOME at it (reference.mtl_data.pkuseg_home)
                                        wherever spacy-pkuseg is installed and the hub is out of reach
  conds.pt                              the built-in voice: the original's prepare_conditionals
  synthetic.json                        seeds, tensor counts, init recipe

Weights and init recipes are the English synthetic checkpoint's (reference/synth_checkpoint.py: same
seeds per module, INIT_FIXES, the "exercised" changes), so that the two differ only where the
models do (the text table and the file formats), plus MTL_INIT_FIXES: speech ids that a trained T3
never draws get zero logits, because the multilingual generate() would pass them on to S3Gen.
"""
from __future__ import annotations

import gc
import json
from pathlib import Path

from parity import ROOT
from parity.fixtures import staged_dir

from .mtl_data import CANGJIE_FILE, pkuseg_home, write_front_end_files, write_pkuseg_home
from .mtl_tokenizer_json import FILE_NAME as TOKENIZER_FILE
from .synth_checkpoint import (DEFAULT_INIT, DEFAULT_VOICE, INIT_FIXES, SYNTH_MANIFEST, _init_manifest, _save,
                               clip_label, init_s3gen, init_t3, init_voice_encoder, write_manifest)

DEFAULT_MTL_CKPT = ROOT / "checkpoints" / "synthetic-mtl-s0"
T3_FILE = "t3_mtl23ls_v2.safetensors"
PKUSEG_DIR = "pkuseg"
BUILD_VERSION = 1  # of this file's own steps; a folder built by another version is rebuilt
MTL_INIT_FIXES = {
    "t3.speech_head rows 6561 and 6563-8193": (
        "weight = 0: ids a trained model never draws (the start token, and the table's unused tail). The "
        "multilingual generate() lacks the English one's `speech_tokens < 6561` filter, so with random rows "
        "a drawn id >= 6563 reaches S3Gen's token embedding (IndexError), and a second start token breaks "
        "drop_invalid_tokens. A zero row's logit is 0 for every state: far below min-p's cut wherever the "
        "distribution is peaked (the exercised init); with the default init's flat distributions it still "
        "passes now and then."
    ),
}


def _torch_save(module, path: Path) -> int:
    """The state dict as the hub's .pt files hold it (torch.save; from_local torch.loads it)."""
    import torch

    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    torch.save(state, str(path))
    path.chmod(0o644)
    return len(state)


def _apply_mtl_init_fixes(t3) -> None:
    import torch

    with torch.no_grad():
        head = t3.speech_head.weight
        head[t3.hp.start_speech_token].zero_()
        head[t3.hp.stop_speech_token + 1:].zero_()


def make_synthetic_mtl_checkpoint(out_dir=DEFAULT_MTL_CKPT, seed: int = 0, voice_clip: Path = DEFAULT_VOICE,
                                  init: str = DEFAULT_INIT) -> Path:
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    out_dir = Path(out_dir)
    init_manifest = _init_manifest(init)
    with staged_dir(out_dir) as tmp:
        counts = {}
        torch.manual_seed(seed)
        ve = init_voice_encoder(VoiceEncoder().eval(), init)
        counts["ve.pt"] = _torch_save(ve, tmp / "ve.pt")
        del ve
        torch.manual_seed(seed + 1)
        t3 = init_t3(T3(T3Config.multilingual()).eval(), init, seed)
        _apply_mtl_init_fixes(t3)
        counts[T3_FILE] = _save(t3, tmp / T3_FILE)
        del t3
        gc.collect()
        torch.manual_seed(seed + 2)
        s3gen = init_s3gen(S3Gen().eval(), init, seed)
        counts["s3gen.pt"] = _torch_save(s3gen, tmp / "s3gen.pt")
        del s3gen
        gc.collect()
        write_front_end_files(tmp)
        write_pkuseg_home(tmp / PKUSEG_DIR)

        with pkuseg_home(tmp / PKUSEG_DIR):
            tts = ChatterboxMultilingualTTS.from_local(tmp, "cpu")  # the original's loader, unmodified
        if not tts.tokenizer.cangjie_converter.word2cj:
            raise RuntimeError(f"the original did not read {CANGJIE_FILE} from {tmp}'s hub cache")
        torch.manual_seed(seed + 3)
        tts.prepare_conditionals(str(voice_clip), exaggeration=0.5)
        tts.conds.save(tmp / "conds.pt")
        (tmp / "conds.pt").chmod(0o644)
        del tts
        gc.collect()

        manifest = {
            "kind": "synthetic",
            "model": "mtl (ChatterboxMultilingualTTS, ResembleAI/chatterbox multilingual layout)",
            "build_version": BUILD_VERSION,
            "seed": seed,
            "seeds": {"ve": seed, "t3": seed + 1, "s3gen": seed + 2, "conds": seed + 3},
            "tensor_counts": counts,
            "init_fixes": {**{f"s3gen.pt: {k}": v for k, v in INIT_FIXES.items()},
                           **{f"{T3_FILE}: {k}": v for k, v in MTL_INIT_FIXES.items()}},
            "init": init_manifest,
            "built_in_voice": clip_label(voice_clip),
            "tokenizer": f"{TOKENIZER_FILE}: BPE over the 23 languages' scripts, 2454 entries, language tags and "
                         "Cangjie tokens added (reference/mtl_tokenizer_json.py)",
            "cangjie": f"{CANGJIE_FILE}: made-up codes for U+4E00-U+9FFF (reference/mtl_data.py)",
            "pkuseg": f"{PKUSEG_DIR}/: a $PKUSEG_HOME with spacy-pkuseg's default model trained on a fixed corpus",
        }
        write_manifest(tmp, manifest)
    return out_dir


def ensure_mtl_checkpoint(path=DEFAULT_MTL_CKPT) -> Path:
    """The synthetic multilingual checkpoint folder, built (seed 0, the default init) when missing or
    built by another version of this file or of the init recipe."""
    path = Path(path)
    if not _is_current(path / SYNTH_MANIFEST):
        make_synthetic_mtl_checkpoint(path, seed=0)
    return path


def _is_current(manifest_path: Path) -> bool:
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    return manifest.get("build_version") == BUILD_VERSION and manifest.get("init") == _init_manifest(DEFAULT_INIT)


if __name__ == "__main__":
    import sys

    print(make_synthetic_mtl_checkpoint(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MTL_CKPT))
