"""Text (+ a voice clip) -> 24 kHz speech (WAV or FLAC) with the MLX pipeline, like mlx-lm's
`python -m mlx_lm.generate`:

    python -m mlx_impl.generate --model DIR|REPO --text "Hello there." --out out.wav [--voice ref.wav]

The model: --model (a folder in the MLX layout from `python -m mlx_impl.convert` or in the hub's
layout, or a hub repo id), else $CHATTERBOX_CKPT. `chatterbox-parity tts` is this command with the
harness's synthetic checkpoint as the default.

Every argument and input file is checked before the weights load (`check_tts_args`, with the rules
of mlx_impl/validate.py): a bad one is one error line naming it (validate.UsageError, exit status
2), and nothing is written. The output appears only when synthesis succeeds (written beside it
under a hidden name, then renamed into place).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

from .cli import FROM_ENV, MODEL_ENV, DefaultFolder, folder_source, main_of, standalone_parser
from .validate import (
    DEFAULTS,
    SPEECH_POSITIONS,
    TEXT_POSITIONS,
    UsageError,
    check_audio_out,
    check_max_new_tokens,
    check_sampling,
    check_text_length,
    check_token_ids,
    check_voice,
    help_range,
    max_new_tokens_limit,
)

SAMPLING_OPTIONS = ("exaggeration", "cfg_weight", "temperature", "repetition_penalty", "min_p", "top_p")
SEED_RANGE = (0, 2**64 - 1)


@dataclass
class TTSPlan:
    """What check_tts_args found: the model folder's checked files, the output format, the voice."""
    model_dir: Path
    files: object  # load.ModelFiles
    out_format: str
    voice: Optional[Path]


def check_tts_args(args, default: Optional[DefaultFolder] = None) -> TTSPlan:
    """Every check that needs no weights, cheapest first; raises UsageError naming what is wrong.
    The model folder: --model, else $CHATTERBOX_CKPT, else `default` (made to exist here)."""
    from .load import check_model_dir, resolve_model_dir
    from .tts import punc_norm

    if not args.text.strip():
        raise UsageError("--text is empty")
    check_sampling({k: getattr(args, k) for k in SAMPLING_OPTIONS}, cli=True)
    check_max_new_tokens(args.max_new_tokens, SPEECH_POSITIONS, cli=True)
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise UsageError(f"--seed {args.seed}: must be an integer in [0, 2**64 - 1]")
    out_format = check_audio_out(args.out, cli=True)
    if args.voice is not None:
        _, warnings = check_voice(args.voice, cli=True)
        if Path(args.out).resolve() == Path(args.voice).resolve():
            raise UsageError(f"--out {args.out}: is the --voice file; write the speech elsewhere")
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)

    model_dir, source = folder_source(args.model, "--model", default)
    if source == "default":
        default.ensure()
    try:
        model_dir = resolve_model_dir(model_dir)
        files = check_model_dir(model_dir)
    except UsageError as e:
        raise UsageError(f"{e} ({source})" if source == FROM_ENV else str(e)) from None
    if args.voice is None and files.conds is None:
        raise UsageError(f"{model_dir} has no built-in voice (conds.pt / conds.safetensors): pass --voice")
    tokens = files.tokenizer.text_to_tokens(punc_norm(args.text))
    check_text_length(int(tokens.shape[-1]), TEXT_POSITIONS, cli=True)
    check_token_ids(tokens, vocab=files.text_vocab, positions=TEXT_POSITIONS,
                    what=f"--text (tokenised with {model_dir / 'tokenizer.json'})")
    return TTSPlan(model_dir, files, out_format, args.voice)


def cmd_tts(args, default: Optional[DefaultFolder] = None):
    plan = check_tts_args(args, default)

    import mlx.core as mx
    import numpy as np
    from tqdm import tqdm

    from . import load
    from .t3.inference.sampling import GreedyDraw, MLXDraw
    from .tts import ChatterboxTTS

    t0 = time.time()
    tts = load.load_pipeline(plan.model_dir, ChatterboxTTS, files=plan.files)
    if plan.voice is not None:
        tts.prepare_conditionals(str(plan.voice), exaggeration=args.exaggeration)
    mx.random.seed(args.seed)
    stop = tts.t3.hp.stop_speech_token
    bar = tqdm(total=args.max_new_tokens, desc="T3 tokens", unit="tok", disable=args.quiet)
    t3_time = []

    def on_token(step: int, token: int) -> None:
        bar.update(1)
        if token == stop or step + 1 >= args.max_new_tokens:  # T3 is done: the bar ends here, at 100%
            bar.total = step + 1
            bar.close()
            t3_time.append(time.time())

    t_gen = time.time()
    try:
        wav = tts.generate(
            args.text, exaggeration=args.exaggeration, cfg_weight=args.cfg_weight, temperature=args.temperature,
            repetition_penalty=args.repetition_penalty, min_p=args.min_p, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, draw=GreedyDraw() if args.greedy else MLXDraw(), on_token=on_token)
    finally:
        bar.close()
    audio = np.asarray(wav, dtype=np.float32).reshape(-1)
    write_audio(args.out, audio, tts.sr, plan.out_format)
    t_end = time.time()
    t3_end = t3_time[0] if t3_time else t_end
    print(f"wrote {args.out}: {len(audio) / tts.sr:.2f} s at {tts.sr} Hz in {t_end - t0:.1f} s "
          f"(T3 {bar.n} tokens {t3_end - t_gen:.1f} s, S3Gen {t_end - t3_end:.1f} s)")


def write_audio(out: Path, audio, sr: int, fmt: str) -> None:
    """16-bit PCM in `fmt` (WAV/FLAC), atomically: a hidden file beside `out`, renamed into place;
    removed on any failure (Ctrl-C included)."""
    import soundfile as sf

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create its folder ({e.strerror or e})") from None
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        sf.write(str(tmp), audio, sr, subtype="PCM_16", format=fmt)
        os.replace(tmp, out)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write it ({e.strerror or e})") from None
    except (RuntimeError, sf.LibsndfileError) as e:
        raise UsageError(f"--out {out}: cannot write it ({e})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


HELP = "synthesise speech with the MLX pipeline (24 kHz WAV or FLAC)"
DESCRIPTION = ("Text (+ a reference voice clip) -> speech at 24 kHz with the MLX pipeline. Every argument and file "
               "is checked before the model loads; an error is one line, exit status 2, and nothing is written.")


def add_arguments(p, default: Optional[DefaultFolder] = None, default_help: str = f"${MODEL_ENV}") -> None:
    """The command's options on parser `p`; it runs with `default` as the model folder where neither
    --model nor $CHATTERBOX_CKPT names one (`default_help` says what that is)."""
    d = DEFAULTS
    p.add_argument("--text", required=True,
                   help=f"the text to speak (at most {TEXT_POSITIONS - 2} tokens after tokenisation: the model's text "
                        "position table)")
    p.add_argument("--voice", type=Path, default=None, metavar="AUDIO",
                   help="reference clip, any format libsndfile reads (WAV, FLAC, OGG, MP3), longer than 30 ms, "
                        "finite samples; up to 6 s (T3) and 10 s (S3Gen) of it are used (default: the model's "
                        "built-in voice)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="output file, .wav or .flac (16-bit PCM, 24 kHz); replaced only when synthesis succeeds")
    p.add_argument("--model", "--checkpoint", dest="model", default=None, metavar="DIR|REPO",
                   help="model folder (MLX layout from `convert`, or the hub's layout) or hub repo id (default: "
                        f"{default_help})")
    p.add_argument("--exaggeration", type=float, default=d["exaggeration"], metavar="X",
                   help=f"emotion exaggeration, {help_range('exaggeration')}")
    p.add_argument("--cfg-weight", type=float, default=d["cfg_weight"], metavar="W",
                   help=f"classifier-free guidance weight, {help_range('cfg_weight')} (the original cannot run 0)")
    p.add_argument("--temperature", type=float, default=d["temperature"], metavar="T",
                   help=f"sampling temperature, {help_range('temperature')}")
    p.add_argument("--repetition-penalty", type=float, default=d["repetition_penalty"], metavar="R",
                   help=f"penalty on tokens already drawn, {help_range('repetition_penalty')} (1: none)")
    p.add_argument("--min-p", type=float, default=d["min_p"], metavar="P",
                   help=f"drop tokens below this fraction of the top token's probability, {help_range('min_p')}")
    p.add_argument("--top-p", type=float, default=d["top_p"], metavar="P",
                   help=f"nucleus sampling mass, {help_range('top_p')} (1: off)")
    limit = max_new_tokens_limit(SPEECH_POSITIONS)
    p.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"], metavar="N",
                   help=f"most T3 speech tokens (25 per second of audio), in [1, {limit}]; default %(default)s "
                        "(the original's generate() hard-codes 1000)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="MLX random seed for the sampling, in [0, 2**64 - 1]; default %(default)s")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=partial(cmd_tts, default=default))


def build_parser() -> argparse.ArgumentParser:
    return standalone_parser("python -m mlx_impl.generate", DESCRIPTION, add_arguments)


def main(argv=None) -> int:
    return main_of(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
