"""A source clip -> the same speech in a target voice (24 kHz WAV or FLAC), with the MLX ChatterboxVC:

    python -m mlx_impl.vc_cli --source in.wav --target-voice voice.wav --out out.wav [--model DIR|REPO]

The model: --model (a folder in the hub's layout, s3gen.safetensors + optional conds.pt, or in the
MLX layout from `python -m mlx_impl.convert`; or a hub repo id), else $CHATTERBOX_CKPT.
`chatterbox-parity vc` is this command with the harness's synthetic checkpoint as the default.
Without --target-voice the model's built-in voice (conds.pt) is the target; a model without one
is an error.

Every argument and input file is checked before the weights load: a bad one is one error line
naming it (validate.UsageError, exit status 2), and nothing is written. The output appears only
when the conversion succeeds (written under a hidden name, then renamed into place).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

from .cli import FROM_ENV, MODEL_ENV, DefaultFolder, folder_source, main_of, standalone_parser
from .generate import SEED_RANGE, write_audio
from .validate import UsageError, check_audio_out, check_source, check_voice

STAGES = ("target voice", "tokens", "waveform")


@dataclass
class VCPlan:
    """What check_vc_args found: the model folder's checked files, the output format."""
    model_dir: Path
    files: object  # load.VCModelFiles
    out_format: str


def check_vc_args(args, default: Optional[DefaultFolder] = None) -> VCPlan:
    """Every check that needs no weights, cheapest first; raises UsageError naming what is wrong."""
    from .load import check_vc_model_dir, resolve_model_dir

    check_source(args.source, cli=True)
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise UsageError(f"--seed {args.seed}: must be an integer in [0, 2**64 - 1]")
    out_format = check_audio_out(args.out, cli=True)
    inputs = [("--source", args.source)]
    if args.target_voice is not None:
        _, warnings = check_voice(args.target_voice, cli=True, option="target_voice")
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        inputs.append(("--target-voice", args.target_voice))
    for option, path in inputs:
        if Path(args.out).resolve() == Path(path).resolve():
            raise UsageError(f"--out {args.out}: is the {option} file; write the converted speech elsewhere")

    model_dir, source = folder_source(args.model, "--model", default)
    if source == "default":
        default.ensure()
    try:
        model_dir = resolve_model_dir(model_dir)
        files = check_vc_model_dir(model_dir)
    except UsageError as e:
        raise UsageError(f"{e} ({source})" if source == FROM_ENV else str(e)) from None
    if args.target_voice is None and files.ref_dict is None:
        raise UsageError(f"no target voice: pass --target-voice ({model_dir} has no built-in voice, "
                         "conds.pt / conds.safetensors)")
    return VCPlan(model_dir, files, out_format)


def cmd_vc(args, default: Optional[DefaultFolder] = None):
    plan = check_vc_args(args, default)

    import mlx.core as mx
    import numpy as np
    from tqdm import tqdm

    from . import load
    from .vc import ChatterboxVC

    t0 = time.time()
    vc = load.load_vc(plan.model_dir, ChatterboxVC, files=plan.files)
    mx.random.seed(args.seed)
    stages = STAGES if args.target_voice is not None else STAGES[1:]
    bar = tqdm(total=len(stages), desc="VC", unit="stage", disable=args.quiet)

    def on_stage(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        wav = vc.generate(str(args.source), target_voice_path=str(args.target_voice) if args.target_voice else None,
                          on_stage=on_stage)
    finally:
        bar.close()
    audio = np.asarray(wav, dtype=np.float32).reshape(-1)
    write_audio(args.out, audio, vc.sr, plan.out_format)
    print(f"wrote {args.out}: {len(audio) / vc.sr:.2f} s at {vc.sr} Hz in {time.time() - t0:.1f} s")


HELP = "convert a clip to another voice with the MLX ChatterboxVC (24 kHz WAV or FLAC)"
DESCRIPTION = ("A source clip -> the same speech in a target voice, at 24 kHz, with the MLX ChatterboxVC (S3 tokens "
               "of the source, S3Gen with the target's reference). Every argument and file is checked before the "
               "model loads; an error is one line, exit status 2, and nothing is written.")


def add_arguments(p, default: Optional[DefaultFolder] = None, default_help: str = f"${MODEL_ENV}") -> None:
    """The command's options on parser `p`; `default` is the model folder where neither --model nor
    $CHATTERBOX_CKPT names one (`default_help` says what that is)."""
    p.add_argument("--source", type=Path, required=True, metavar="AUDIO",
                   help="the clip to convert, any format libsndfile reads, at least 40 ms (one speech token), finite "
                        "samples; loaded at 16 kHz")
    p.add_argument("--target-voice", type=Path, default=None, metavar="AUDIO",
                   help="a clip of the target voice, longer than 30 ms; its first 10 s are used (default: the model's "
                        "built-in voice, conds.pt)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="output file, .wav or .flac (16-bit PCM, 24 kHz); replaced only when the conversion succeeds")
    p.add_argument("--model", "--checkpoint", dest="model", default=None, metavar="DIR|REPO",
                   help="model folder (the hub's layout, s3gen.safetensors [+ conds.pt], or the MLX layout from "
                        f"`convert`) or hub repo id (default: {default_help})")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="MLX random seed of the flow-matching noise and the vocoder's source, in [0, 2**64 - 1]; "
                        "default %(default)s")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=partial(cmd_vc, default=default))


def build_parser():
    return standalone_parser("python -m mlx_impl.vc_cli", DESCRIPTION, add_arguments)


def main(argv=None) -> int:
    return main_of(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
