"""Synthetic checkpoint: the ORIGINAL T3(), S3Gen(), VoiceEncoder() instantiated with a fixed seed
and saved in the hub's file layout (ve.safetensors, t3_cfg.safetensors, s3gen.safetensors,
tokenizer.json, conds.pt), so that `ChatterboxTTS.from_local(DIR, "cpu")` loads it unmodified.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from parity import ROOT
from parity.fixtures import replace_dir

from .tokenizer_json import write_tokenizer_json

DEFAULT_VOICE = ROOT / "fixtures" / "inputs" / "espeak_22k_mono.wav"
# Buffers the released s3gen.safetensors does not hold (the original loads it with strict=False
# and recomputes them): S3Token2Wav.ignore_state_dict_missing.
NOT_STORED = ("tokenizer._mel_filters", "tokenizer.window")
SYNTH_MANIFEST = "synthetic.json"

# Where the modules' default random init is degenerate for parity purposes, what we change.
# Checked by the export's activation sanity check (finite, not all-zero, not constant).
INIT_FIXES = {
    "mel2wav.f0_predictor.classifier": (
        "weight *= 3000, bias = 40. With the default init the F0 predictor outputs < 0.1 Hz "
        "everywhere, below SineGen's voiced threshold (10 Hz), so the vocoder's sine branch would "
        "never run (uv = 0). After the fix F0 spans ~0-300 Hz with voiced and unvoiced frames."
    ),
}


def _apply_init_fixes(s3gen) -> None:
    import torch

    with torch.no_grad():
        clf = s3gen.mel2wav.f0_predictor.classifier
        clf.weight.mul_(3000.0)
        clf.bias.fill_(40.0)


def _save(module, path: Path, drop=()) -> int:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items() if k not in drop}
    save_file(state, str(path))
    path.chmod(0o644)
    return len(state)


def make_synthetic_checkpoint(out_dir, seed: int = 0, voice_clip: Path = DEFAULT_VOICE,
                              conds_from: Path = None) -> Path:
    """`conds_from`: copy that conds.pt as the built-in voice instead of running the original's
    prepare_conditionals (for machines without librosa, e.g. the GPU benchmark's)."""
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts import ChatterboxTTS

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        counts = {}
        torch.manual_seed(seed)
        counts["ve.safetensors"] = _save(VoiceEncoder().eval(), tmp / "ve.safetensors")
        torch.manual_seed(seed + 1)
        counts["t3_cfg.safetensors"] = _save(T3().eval(), tmp / "t3_cfg.safetensors")
        torch.manual_seed(seed + 2)
        s3gen = S3Gen().eval()
        _apply_init_fixes(s3gen)
        counts["s3gen.safetensors"] = _save(s3gen, tmp / "s3gen.safetensors", drop=NOT_STORED)
        del s3gen
        write_tokenizer_json(tmp / "tokenizer.json")

        if conds_from is not None:
            shutil.copyfile(conds_from, tmp / "conds.pt")
        else:  # built-in voice: the original's own prepare_conditionals on the default clip
            tts = ChatterboxTTS.from_local(tmp, "cpu")
            torch.manual_seed(seed + 3)
            tts.prepare_conditionals(str(voice_clip), exaggeration=0.5)
            tts.conds.save(tmp / "conds.pt")

        manifest = {
            "kind": "synthetic",
            "seed": seed,
            "seeds": {"ve": seed, "t3": seed + 1, "s3gen": seed + 2, "conds": seed + 3},
            "tensor_counts": counts,
            "not_stored": list(NOT_STORED),
            "built_in_voice": (f"copied from {conds_from}" if conds_from is not None else
                               str(Path(voice_clip).relative_to(ROOT)) if Path(voice_clip).is_relative_to(ROOT)
                               else str(voice_clip)),
            "init_fixes": INIT_FIXES,
            "init_check": "every other checkpoint: finite, non-constant activations with the default init "
                          "(each fixture manifest's 'sanity')",
            "tokenizer": "BPE over characters, 704 entries, [STOP]=0 [UNK]=1 [SPACE]=2 [START]=255 "
                         "(reference/tokenizer_json.py)",
        }
        (tmp / SYNTH_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
