"""Synthetic checkpoint: the ORIGINAL T3(), S3Gen(), VoiceEncoder() instantiated with a fixed seed
and saved in the hub's file layout (ve.safetensors, t3_cfg.safetensors, s3gen.safetensors,
tokenizer.json, conds.pt), so that `ChatterboxTTS.from_local(DIR, "cpu")` loads it unmodified.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from parity import ROOT
from parity.fixtures import staged_dir

from .tokenizer_json import write_tokenizer_json

DEFAULT_VOICE = ROOT / "fixtures" / "inputs" / "espeak_22k_mono.wav"
# Buffers the released s3gen.safetensors does not hold (the original loads it with strict=False
# and recomputes them): S3Token2Wav.ignore_state_dict_missing.
NOT_STORED = ("tokenizer._mel_filters", "tokenizer.window")
SYNTH_MANIFEST = "synthetic.json"
DEFAULT_INIT = "exercised"

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


# ----------------------------------------------------------------------------- the "exercised" init
# Random init leaves parts of the network idle (reference/activation_stats.py measures it): T3's
# next-token distributions are flat (top-1 probability ~0.002 over 8194 tokens, the stop token never
# drawn), attention is uniform (normalised entropy ~0.99), the VoiceEncoder and CAMPPlus map every
# voice to the same embedding (cosine > 0.99). The recipe below changes the seeded weights
# deterministically, module family by module family; synthetic.json records it.
INIT_VERSION = 2
VE_INPUT_GAIN, VE_RECURRENT_GAIN = 8.0, 4.0
T3_HEAD_GAIN, T3_QK_GAIN = 7.0, 2.5
T3_STOP_NORM, T3_STOP_RAMP, T3_STOP_RAMP_STEPS, T3_STOP_RAMP_CAP = 4.0, 10.0, 200.0, 1.5
T3_STOP_DIRECTION_SEED = 1000  # + the checkpoint's seed
XVECTOR_CENTERING = 0.9
CALIBRATION_WINDOW_S, CALIBRATION_HOP_S = 2.0, 1.0
CONSTANT_BIAS_STD, CONSTANT_GAIN_STD = 0.05, 0.1
CONSTANTS_SEED = 2000  # + the checkpoint's seed
# modules whose init leaves biases at 0 and norm gains at 1 (every one of them: a port that drops a
# bias or a norm weight, e.g. the flow estimator's 56 attn1.to_out.0.bias, would match the original)
CONSTANT_MODULES = {"t3": ("tfmr", "cond_enc.perceiver"), "s3gen": ("flow.encoder", "flow.decoder", "tokenizer")}

INIT_RECIPES = {
    "default": "the modules' own random init (plus INIT_FIXES)",
    "exercised": "the modules' own random init, then the changes in EXERCISED (plus INIT_FIXES)",
}
EXERCISED = {
    "ve.lstm": (f"weight_ih_l0 *= {VE_INPUT_GAIN:g}; weight_ih_l1/l2 and weight_hh_l* *= {VE_RECURRENT_GAIN:g}. "
                "With PyTorch's uniform(+-1/16) init the mel input barely moves the state: every voice, and a "
                "copy with 13 dB noise, gave the same embedding (cosine > 0.9998)."),
    "t3.speech_head": (f"weight *= {T3_HEAD_GAIN:g}: logits with a spread like a trained head's (top-1 probability "
                       "~0.4 at temperature 0.8 instead of ~0.002, uniform being 1/8194)."),
    "t3.tfmr.layers.*.self_attn.{q,k}_proj": (f"weight *= {T3_QK_GAIN:g} (scores *= {T3_QK_GAIN ** 2:g}): attention "
                                               "that is not uniform (normalised entropy ~0.99 before)."),
    "t3 stop token": (f"speech_head.weight[6562] = {T3_STOP_NORM:g} u and speech_pos_emb.emb.weight[i] += "
                      f"{T3_STOP_RAMP:g} min(i / {T3_STOP_RAMP_STEPS:g}, {T3_STOP_RAMP_CAP:g}) u, u a unit vector "
                      f"(torch.Generator seed {T3_STOP_DIRECTION_SEED} + seed): the stop token's probability rises "
                      "along the speech positions, so T3 stops by itself (before: never within min-p's set)."),
    "constant biases and norm gains": (
        f"in {', '.join(f'{k}.{m}' for k, ms in CONSTANT_MODULES.items() for m in ms)}: every parameter that the "
        f"init left constant, a bias at 0 (+= N(0, {CONSTANT_BIAS_STD:g}^2)) or a 1-D norm weight at 1 "
        f"(+= N(0, {CONSTANT_GAIN_STD:g}^2)), drawn in parameter order (torch.Generator seed {CONSTANTS_SEED} + seed): "
        "trained weights have neither, and with them a port that drops a bias or a norm weight (the flow "
        "estimator's 56 attn1.to_out.0.bias, 371 zero biases in all) matched the original exactly. Not in "
        "CAMPPlus (see its BatchNorm below) nor HiFT (its F0 fix and Snake alphas are set apart)."),
    "s3gen.speaker_encoder.xvector.dense.nonlinear.batchnorm": (
        f"running_mean = {XVECTOR_CENTERING:g} x the mean and running_var = the variance of its input over "
        f"{CALIBRATION_WINDOW_S:g} s windows (hop {CALIBRATION_HOP_S:g} s) of the cases' clips at 16 kHz "
        "(librosa, as prepare_conditionals; computed in float64): the population statistics a trained BatchNorm holds, so that the "
        "x-vector is not one shared direction (cosine > 0.993 between voices before). Only this last BatchNorm: "
        "calibrating all 122 made the network amplify a 140 dB input perturbation to 94 dB."),
}


def _exercise_ve(ve) -> None:
    import torch

    with torch.no_grad():
        for name, p in ve.lstm.named_parameters():
            if name == "weight_ih_l0":
                p.mul_(VE_INPUT_GAIN)
            elif name.startswith(("weight_ih", "weight_hh")):
                p.mul_(VE_RECURRENT_GAIN)


def _constant_parameters(module):
    """(name, parameter) of the biases still at 0 and the 1-D weights still at 1, in parameter order."""
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if p.numel() > 1 and leaf == "bias" and not p.any():
            yield name, p, CONSTANT_BIAS_STD
        elif p.numel() > 1 and leaf == "weight" and p.dim() == 1 and bool((p == 1).all()):
            yield name, p, CONSTANT_GAIN_STD


def _exercise_constants(root, prefixes, seed: int) -> int:
    import torch

    g = torch.Generator().manual_seed(CONSTANTS_SEED + seed)
    n = 0
    with torch.no_grad():
        for prefix in prefixes:
            for _, p, std in _constant_parameters(root.get_submodule(prefix)):
                p.add_((std * torch.randn(p.shape, generator=g, dtype=torch.float64)).float())
                n += 1
    return n


def _exercise_t3(t3, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(T3_STOP_DIRECTION_SEED + seed)
    u = torch.randn(t3.dim, generator=g, dtype=torch.float64)
    u = u / u.norm()
    with torch.no_grad():
        t3.speech_head.weight.mul_(T3_HEAD_GAIN)
        t3.speech_head.weight[t3.hp.stop_speech_token] = (T3_STOP_NORM * u).float()
        pos = t3.speech_pos_emb.emb.weight
        ramp = torch.clamp(torch.arange(pos.shape[0], dtype=torch.float64) / T3_STOP_RAMP_STEPS, max=T3_STOP_RAMP_CAP)
        pos.copy_((pos.double() + T3_STOP_RAMP * ramp[:, None] * u[None, :]).float())
        for layer in t3.tfmr.layers:
            layer.self_attn.q_proj.weight.mul_(T3_QK_GAIN)
            layer.self_attn.k_proj.weight.mul_(T3_QK_GAIN)
    _exercise_constants(t3, CONSTANT_MODULES["t3"], seed)


def calibration_clips():
    """The cases' clips as prepare_conditionals reads them (librosa, 24 kHz, then 16 kHz)."""
    import librosa

    from parity.cases import load_cases

    clips = {}
    for name, case in sorted(load_cases().items()):
        wav_24k, _ = librosa.load(str(case.audio_path), sr=24000)
        clips[case.audio] = librosa.resample(wav_24k, orig_sr=24000, target_sr=16000)
    return clips


def _exercise_campplus(campplus) -> None:
    import torch
    from chatterbox.models.s3gen.xvector import extract_feature

    win, hop = int(CALIBRATION_WINDOW_S * 16000), int(CALIBRATION_HOP_S * 16000)
    segs = [torch.from_numpy(w[s:s + win]) for w in calibration_clips().values()
            for s in range(0, len(w) - win + 1, hop)]
    feats, _, _ = extract_feature(segs)
    bn = campplus.xvector.dense.nonlinear.batchnorm
    seen = []
    handle = bn.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().double()))
    with torch.no_grad():  # in float64: the statistics do not depend on the machine's thread count or kernels
        campplus.double()(feats.double())
        campplus.float()
        handle.remove()
        x = seen[0]
        bn.running_mean.copy_((XVECTOR_CENTERING * x.mean(0)).float())
        bn.running_var.copy_(x.var(0, unbiased=False).float())


# One module's init after its seeded construction, per recipe: the builders of every model's checkpoint
# (English, multilingual) call these, so that their recipes cannot drift apart.
def init_voice_encoder(ve, init: str):
    if init == "exercised":
        _exercise_ve(ve)
    return ve


def init_t3(t3, init: str, seed: int):
    if init == "exercised":
        _exercise_t3(t3, seed)
    return t3


def init_s3gen(s3gen, init: str, seed: int):
    """`seed`: the checkpoint's (the module was built under seed + 2)."""
    _apply_init_fixes(s3gen)
    if init == "exercised":
        _exercise_constants(s3gen, CONSTANT_MODULES["s3gen"], seed + 2)
        _exercise_campplus(s3gen.speaker_encoder)
    return s3gen


def _init_manifest(init: str) -> dict:
    if init not in INIT_RECIPES:
        raise ValueError(f"unknown init recipe {init!r} (one of {', '.join(INIT_RECIPES)})")
    out = {"recipe": init, "about": INIT_RECIPES[init]}
    if init == "exercised":
        out.update(version=INIT_VERSION, changes=EXERCISED,
                   calibration_clips={k: _sha256(ROOT / k) for k in sorted(calibration_clips())})
    return out


def _sha256(path: Path) -> str:
    from parity.checkpoint_dir import sha256_file

    return sha256_file(path)


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / SYNTH_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def clip_label(voice_clip) -> str:
    """A clip's path relative to the repository where it lies inside it."""
    path = Path(voice_clip)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _save(module, path: Path, drop=()) -> int:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items() if k not in drop}
    save_file(state, str(path))
    path.chmod(0o644)
    return len(state)


def make_synthetic_checkpoint(out_dir, seed: int = 0, voice_clip: Path = DEFAULT_VOICE,
                              conds_from: Path = None, init: str = DEFAULT_INIT) -> Path:
    """`conds_from`: copy that conds.pt as the built-in voice instead of running the original's
    prepare_conditionals (for machines without librosa, e.g. the GPU benchmark's). `init`: a recipe
    of INIT_RECIPES."""
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts import ChatterboxTTS

    out_dir = Path(out_dir)
    init_manifest = _init_manifest(init)
    with staged_dir(out_dir) as tmp:
        counts = {}
        torch.manual_seed(seed)
        ve = init_voice_encoder(VoiceEncoder().eval(), init)
        counts["ve.safetensors"] = _save(ve, tmp / "ve.safetensors")
        torch.manual_seed(seed + 1)
        t3 = init_t3(T3().eval(), init, seed)
        counts["t3_cfg.safetensors"] = _save(t3, tmp / "t3_cfg.safetensors")
        del t3
        torch.manual_seed(seed + 2)
        s3gen = init_s3gen(S3Gen().eval(), init, seed)
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
                               clip_label(voice_clip)),
            "init_fixes": INIT_FIXES,
            "init": init_manifest,
            "init_check": "every other checkpoint: finite, non-constant activations with the default init "
                          "(each fixture manifest's 'sanity')",
            "tokenizer": "BPE over characters, 704 entries, [STOP]=0 [UNK]=1 [SPACE]=2 [START]=255 "
                         "(reference/tokenizer_json.py)",
        }
        write_manifest(tmp, manifest)
    return out_dir
