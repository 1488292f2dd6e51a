"""Text (+ a voice clip) -> 24 kHz speech (WAV or FLAC) with the MLX pipeline, like mlx-lm's
`python -m mlx_lm.generate`:

    python -m mlx_impl.generate --model DIR|REPO --text "Hello there." --out out.wav [--voice ref.wav]

The model: --model (a folder in the MLX layout from `python -m mlx_impl.convert` or in the hub's
layout, or a hub repo id), else $CHATTERBOX_CKPT. The folder's files say which model it is: the
English ChatterboxTTS, ChatterboxTurboTTS (t3_turbo_v1.safetensors / s3gen_meanflow.safetensors,
or an MLX config.json of model_type chatterbox_turbo) or ChatterboxMultilingualTTS
(t3_mtl23ls_v2.safetensors, or model_type chatterbox_multilingual; it needs --language), each run
with its own generate()'s options and defaults (an option the model does not have is an error).
`chatterbox-parity tts` is this command with the harness's synthetic checkpoints: the English one
by default, `--model turbo` for Turbo's, `--model mtl` for the multilingual one.

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
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .cli import FROM_ENV, MODEL_ENV, DefaultFolder, main_of, pick_folder, standalone_parser
from .load import check_model_dir, resolve_model_dir
from .mtl_tts import SUPPORTED_LANGUAGES, check_language_id, check_mtl_dir
from .tts_turbo import check_turbo_dir
from .validate import (
    DEFAULTS,
    RULES,
    SPEECH_POSITIONS,
    TEXT_POSITIONS,
    UsageError,
    check_audio_out,
    check_max_new_tokens,
    check_sampling,
    check_text_length,
    check_token_ids,
    check_voice,
    max_new_tokens_limit,
    option_name,
)

SAMPLING_OPTIONS = ("exaggeration", "cfg_weight", "temperature", "repetition_penalty", "min_p", "top_p")
SEED_RANGE = (0, 2**64 - 1)
# Chatterbox Turbo: no CFG, no emotion input, no min-p (its generate() warns and ignores them); top-k.
ENGLISH_ONLY = {"exaggeration": "emotion exaggeration", "cfg_weight": "classifier-free guidance", "min_p": "min-p"}
# ChatterboxTurboTTS.generate()'s defaults; max_new_tokens: its max_gen_len 1000 steps after the first draw
TURBO_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 1000, "repetition_penalty": 1.2, "max_new_tokens": 1001}
TURBO_MIN_VOICE_S = 5.0  # the original asserts a longer clip
# ChatterboxMultilingualTTS.generate()'s defaults where they differ from the English one's
MTL_DEFAULTS = {**DEFAULTS, "repetition_penalty": 2.0, "max_new_tokens": 1000}


@dataclass
class TTSPlan:
    """What check_tts_args found: the model folder's checked files, the output format, the voice, the
    model ("tts": the English ChatterboxTTS, "turbo": ChatterboxTurboTTS, "mtl":
    ChatterboxMultilingualTTS) and the options it runs with."""
    model_dir: Path
    files: object  # load.ModelFiles, tts_turbo.TurboFiles or mtl_tts.MTLFiles
    out_format: str
    voice: Optional[Path]
    kind: str = "tts"
    options: dict = field(default_factory=dict)


def check_tts_args(args, default: Optional[DefaultFolder] = None,
                   named: Optional[Dict[str, DefaultFolder]] = None) -> TTSPlan:
    """Every check that needs no weights, cheapest first; raises UsageError naming what is wrong.
    The model folder: --model (or one of the `named` folders), else $CHATTERBOX_CKPT, else `default`
    (made to exist here); its files tell the English model from Chatterbox Turbo."""
    if not args.text.strip():
        raise UsageError("--text is empty")
    check_sampling({k: getattr(args, k) for k in SAMPLING_OPTIONS if getattr(args, k) is not None}, cli=True)
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise UsageError(f"--seed {args.seed}: must be an integer in [0, 2**64 - 1]")
    out_format = check_audio_out(args.out, cli=True)
    voice, warnings = None, []
    if args.voice is not None:
        voice, warnings = check_voice(args.voice, cli=True)
        if Path(args.out).resolve() == Path(args.voice).resolve():
            raise UsageError(f"--out {args.out}: is the --voice file; write the speech elsewhere")

    path, source, folder = pick_folder(args.model, "--model", default, named)
    with naming_the_source(source):
        kind = folder.kind if folder is not None else model_kind(path)
    options = {"turbo": turbo_options, "mtl": mtl_options}.get(kind, lambda a, v: english_options(a))(args, voice)
    for w in warnings if kind != "turbo" else ():
        print(f"warning: {w}", file=sys.stderr)
    if folder is not None:
        folder.ensure()
    with naming_the_source(source):
        model_dir = resolve_model_dir(path)
        files = {"turbo": check_turbo_dir, "mtl": check_mtl_dir}.get(kind, check_model_dir)(model_dir)
    if args.voice is None and files.conds is None:
        raise UsageError(f"{model_dir} has no built-in voice (conds.pt / conds.safetensors): pass --voice")
    if kind == "turbo":
        check_turbo_text(args.text, files, options["max_new_tokens"], voice is not None)
    elif kind == "mtl":
        check_mtl_text(args.text, options["language"], files, model_dir)
    else:
        check_english_text(args.text, files, model_dir)
    return TTSPlan(model_dir, files, out_format, args.voice, kind, options)


@contextmanager
def naming_the_source(source: str):
    """A folder error says where the folder came from when $CHATTERBOX_CKPT named it."""
    try:
        yield
    except UsageError as e:
        raise UsageError(f"{e} ({source})" if source == FROM_ENV else str(e)) from None


def model_kind(path) -> str:
    """"turbo" for a Chatterbox Turbo folder, "mtl" for a Chatterbox Multilingual one (their files or
    their MLX config), else "tts"."""
    from .mtl_tts import is_mtl_dir
    from .tts_turbo import is_turbo_dir

    model_dir = resolve_model_dir(path)
    return "turbo" if is_turbo_dir(model_dir) else "mtl" if is_mtl_dir(model_dir) else "tts"


def refuse_language(args, model: str) -> None:
    if args.language is not None:
        raise UsageError(f"--language {args.language}: {model} speaks English only; --language is Chatterbox "
                         "Multilingual's (a folder with t3_mtl23ls_v2.safetensors): leave it out")


def english_options(args) -> dict:
    """The English model's options: the ones given, the original generate()'s defaults elsewhere."""
    refuse_language(args, "the English Chatterbox")
    return sampling_options(args, DEFAULTS)


def sampling_options(args, defaults: dict) -> dict:
    """The English and the multilingual model's options: the ones given, `defaults` elsewhere."""
    if args.top_k is not None:
        raise UsageError(f"--top-k {args.top_k}: the English model has no top-k sampling (Chatterbox Turbo's); "
                         "leave it out")
    options = {k: defaults[k] if getattr(args, k) is None else getattr(args, k)
               for k in SAMPLING_OPTIONS + ("max_new_tokens",)}
    check_max_new_tokens(options["max_new_tokens"], SPEECH_POSITIONS, cli=True)
    return options


def mtl_options(args, voice) -> dict:
    """Chatterbox Multilingual's options: --language (required, one of the 23 codes), then the English
    model's options with ChatterboxMultilingualTTS.generate()'s defaults (repetition penalty 2.0)."""
    if args.language is None:
        raise UsageError(f"--language is required by Chatterbox Multilingual: one of {', '.join(SUPPORTED_LANGUAGES)}")
    try:
        language = check_language_id(args.language)
    except UsageError as e:
        raise UsageError(f"--language {args.language}: {e}") from None
    return {**sampling_options(args, MTL_DEFAULTS), "language": language}


def turbo_options(args, voice) -> dict:
    """Chatterbox Turbo's options (the ones given, ChatterboxTurboTTS.generate()'s defaults elsewhere);
    the English model's own options are refused, the voice must be longer than 5 s."""
    refuse_language(args, "Chatterbox Turbo")
    for name, what in ENGLISH_ONLY.items():
        if getattr(args, name) is not None:
            raise UsageError(f"{option_name(name, True)} {getattr(args, name)}: Chatterbox Turbo has no {what} (its "
                             "generate() ignores it); leave it out")
    options = {k: TURBO_DEFAULTS[k] if getattr(args, k) is None else getattr(args, k) for k in TURBO_DEFAULTS}
    if options["top_k"] < 0:
        raise UsageError(f"--top-k {options['top_k']}: must be an integer >= 0 (0 turns top-k off)")
    if options["max_new_tokens"] < 1:
        raise UsageError(f"--max-new-tokens {options['max_new_tokens']}: must be an integer >= 1")
    if voice is not None and not -(-voice.samples * 24000 // voice.sample_rate) > TURBO_MIN_VOICE_S * 24000:
        raise UsageError(f"--voice {voice.path}: {voice.seconds:.2f} s; Chatterbox Turbo's voice clip must be longer "
                         f"than {TURBO_MIN_VOICE_S:.0f} s (the original asserts it)")
    return options


def check_english_text(text: str, files, model_dir: Path) -> None:
    from .tts import punc_norm

    tokens = files.tokenizer.text_to_tokens(punc_norm(text))
    check_text_length(int(tokens.shape[-1]), TEXT_POSITIONS, cli=True)
    check_token_ids(tokens, vocab=files.text_vocab, positions=TEXT_POSITIONS,
                    what=f"--text (tokenised with {model_dir / 'tokenizer.json'})")


def check_mtl_text(text: str, language: str, files, model_dir: Path) -> None:
    from .mtl_tts import TOKENIZER_FILE, punc_norm

    tokens = files.tokenizer.text_to_tokens(punc_norm(text), language_id=language)
    check_text_length(int(tokens.shape[-1]), TEXT_POSITIONS, cli=True)
    check_token_ids(tokens, vocab=files.text_vocab, positions=TEXT_POSITIONS,
                    what=f"--text (tokenised for '{language}' with {model_dir / TOKENIZER_FILE})")


def check_turbo_text(text: str, files, max_new_tokens: int, has_voice: bool) -> None:
    """The text within the GPT-2 tokenizer's length (generate() truncates silently past it) and T3's
    text table; the decoding steps within the backbone's position table after the prompt."""
    from .t3.llama_configs import GPT2_MEDIUM_CONFIG
    from .tts_turbo import punc_norm

    tokenizer = files.tokenizer
    ids = np.asarray(tokenizer(punc_norm(text), verbose=False).input_ids)[None]  # no warning: the length is checked here
    if ids.shape[-1] > tokenizer.model_max_length:
        raise UsageError(f"--text is {ids.shape[-1]} tokens after tokenisation; Chatterbox Turbo's tokenizer cuts it "
                         f"at {tokenizer.model_max_length} (the rest would not be spoken): shorten it")
    positions = GPT2_MEDIUM_CONFIG["n_positions"]
    check_token_ids(ids, vocab=files.text_vocab, positions=positions,
                    what=f"--text (tokenised with the GPT-2 tokenizer of {files.path})")
    n_prompt = 375 if has_voice else int(np.asarray(files.conds.t3.cond_prompt_speech_tokens).shape[-1])
    prompt = 1 + n_prompt + ids.shape[-1] + 1  # speaker, voice prompt, text, start of speech
    limit = positions - prompt + 1  # inference_turbo: max_gen_len (draws - 1) <= positions - prompt
    if max_new_tokens > limit:
        raise UsageError(f"--max-new-tokens {max_new_tokens}: must be an integer in [1, {limit}] (the GPT-2 backbone's "
                         f"{positions} positions less the prompt's {prompt}, + 1)")


def cmd_tts(args, default: Optional[DefaultFolder] = None, named: Optional[Dict[str, DefaultFolder]] = None):
    plan = check_tts_args(args, default, named)

    import mlx.core as mx
    from tqdm import tqdm

    from .t3.inference.sampling import GreedyDraw, MLXDraw

    t0 = time.time()
    tts = load_model(plan)
    if plan.voice is not None:
        if plan.kind == "turbo":
            tts.prepare_conditionals(str(plan.voice))
        else:
            tts.prepare_conditionals(str(plan.voice), exaggeration=plan.options["exaggeration"])
    mx.random.seed(args.seed)
    stop = tts.t3.hp.stop_speech_token
    max_new_tokens = plan.options["max_new_tokens"]
    bar = tqdm(total=max_new_tokens, desc="T3 tokens", unit="tok", disable=args.quiet)
    t3_time = []

    def on_token(step: int, token: int) -> None:
        bar.update(1)
        if token == stop or step + 1 >= max_new_tokens:  # T3 is done: the bar ends here, at 100%
            bar.total = step + 1
            bar.close()
            t3_time.append(time.time())

    t_gen = time.time()
    try:
        wav = synthesise(tts, plan, args.text, GreedyDraw() if args.greedy else MLXDraw(), on_token)
    finally:
        bar.close()
    audio = np.asarray(wav, dtype=np.float32).reshape(-1)
    write_audio(args.out, audio, tts.sr, plan.out_format)
    t_end = time.time()
    t3_end = t3_time[0] if t3_time else t_end
    print(f"wrote {args.out}: {len(audio) / tts.sr:.2f} s at {tts.sr} Hz in {t_end - t0:.1f} s "
          f"(T3 {bar.n} tokens {t3_end - t_gen:.1f} s, S3Gen {t_end - t3_end:.1f} s)")


def load_model(plan: TTSPlan):
    """The MLX pipeline of the planned model, from the files check_tts_args checked."""
    if plan.kind == "turbo":
        from . import tts_turbo

        return tts_turbo.load_turbo(plan.model_dir, tts_turbo.ChatterboxTurboTTS, files=plan.files)
    if plan.kind == "mtl":
        from . import mtl_tts

        return mtl_tts.load_mtl(plan.model_dir, mtl_tts.ChatterboxMultilingualTTS, files=plan.files)
    from . import load
    from .tts import ChatterboxTTS

    return load.load_pipeline(plan.model_dir, ChatterboxTTS, files=plan.files)


def synthesise(tts, plan: TTSPlan, text: str, draw, on_token):
    o = plan.options
    if plan.kind == "turbo":  # max_gen_len: the steps after the first draw
        return tts.generate(text, temperature=o["temperature"], top_k=o["top_k"], top_p=o["top_p"],
                            repetition_penalty=o["repetition_penalty"], max_gen_len=o["max_new_tokens"] - 1,
                            draw=draw, on_token=on_token)
    language = (o["language"],) if plan.kind == "mtl" else ()
    return tts.generate(text, *language, exaggeration=o["exaggeration"], cfg_weight=o["cfg_weight"],
                        temperature=o["temperature"], repetition_penalty=o["repetition_penalty"], min_p=o["min_p"],
                        top_p=o["top_p"], max_new_tokens=o["max_new_tokens"], draw=draw, on_token=on_token)


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


HELP = "synthesise speech with the MLX pipeline, English, Turbo or Multilingual (24 kHz WAV or FLAC)"
DESCRIPTION = ("Text (+ a reference voice clip) -> speech at 24 kHz with the MLX pipeline: the English Chatterbox, "
               "Chatterbox Turbo or Chatterbox Multilingual (--language), told apart by the model folder's files. "
               "Every argument and file is checked before the model loads; an error is one line, exit status 2, "
               "and nothing is written.")


def _sampling_help(what: str, name: str, turbo: str) -> str:
    """An English sampling option's help: what it is, its range, the English default, Turbo's use."""
    return f"{what}, {RULES[name].describe()}; default {DEFAULTS[name]} ({turbo})"


def add_arguments(p, default: Optional[DefaultFolder] = None, default_help: str = f"${MODEL_ENV}",
                  named: Optional[Dict[str, DefaultFolder]] = None) -> None:
    """The command's options on parser `p`; it runs with `default` as the model folder where neither
    --model nor $CHATTERBOX_CKPT names one (`default_help` says what that is), and `named` folders
    stand for their names given to --model."""
    limit = max_new_tokens_limit(SPEECH_POSITIONS)
    names = f"; or one of the names {', '.join(named)}: " + ", ".join(
        f"{n} = {f.path}" for n, f in named.items()) if named else ""
    p.add_argument("--text", required=True,
                   help=f"the text to speak (English model: at most {TEXT_POSITIONS - 2} tokens after tokenisation, "
                        "its text position table; Turbo: at most the GPT-2 tokenizer's 1024)")
    p.add_argument("--voice", type=Path, default=None, metavar="AUDIO",
                   help="reference clip, any format libsndfile reads (WAV, FLAC, OGG, MP3), longer than 30 ms, "
                        "finite samples; up to 6 s (T3) and 10 s (S3Gen) of it are used; Turbo: longer than 5 s, "
                        "up to 15 s (T3) and 10 s (S3Gen) used, loudness-normalised to -27 LUFS (default: the "
                        "model's built-in voice)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="output file, .wav or .flac (16-bit PCM, 24 kHz); replaced only when synthesis succeeds")
    p.add_argument("--model", "--checkpoint", dest="model", default=None, metavar="DIR|REPO",
                   help="model folder: the English model's, Chatterbox Turbo's (t3_turbo_v1.safetensors, "
                        "s3gen_meanflow.safetensors) or Chatterbox Multilingual's (t3_mtl23ls_v2.safetensors), in the "
                        f"hub's layout or the MLX layout from `convert`; or a hub repo id{names} (default: {default_help})")
    p.add_argument("--language", default=None, metavar="CODE",
                   help="(Chatterbox Multilingual, required there) the text's language, one of "
                        f"{', '.join(SUPPORTED_LANGUAGES)}; its repetition penalty defaults to "
                        f"{MTL_DEFAULTS['repetition_penalty']}")
    p.add_argument("--exaggeration", type=float, default=None, metavar="X",
                   help=_sampling_help("emotion exaggeration", "exaggeration", "Turbo has none"))
    p.add_argument("--cfg-weight", type=float, default=None, metavar="W",
                   help=_sampling_help("classifier-free guidance weight", "cfg_weight",
                                       "the original cannot run 0; Turbo has no CFG"))
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help=_sampling_help("sampling temperature", "temperature", f"Turbo: {TURBO_DEFAULTS['temperature']}"))
    p.add_argument("--repetition-penalty", type=float, default=None, metavar="R",
                   help=_sampling_help("penalty on tokens already drawn (1: none)", "repetition_penalty",
                                       f"Turbo: {TURBO_DEFAULTS['repetition_penalty']}"))
    p.add_argument("--min-p", type=float, default=None, metavar="P",
                   help=_sampling_help("drop tokens below this fraction of the top token's probability", "min_p",
                                       "Turbo has none"))
    p.add_argument("--top-p", type=float, default=None, metavar="P",
                   help=_sampling_help("nucleus sampling mass (1: off)", "top_p", f"Turbo: {TURBO_DEFAULTS['top_p']}"))
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help=f"(Turbo) keep the K most likely tokens before top-p, an integer >= 0 (0: off); default "
                        f"{TURBO_DEFAULTS['top_k']} (the English model has no top-k)")
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help=f"most T3 speech tokens (25 per second of audio); English model: in [1, {limit}], default "
                        f"{DEFAULTS['max_new_tokens']} (the original's generate() hard-codes 1000); Turbo: at most the "
                        f"GPT-2 backbone's 8196 positions less the prompt, default {TURBO_DEFAULTS['max_new_tokens']} "
                        "(its generate()'s max_gen_len 1000 steps after the first draw)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="MLX random seed for the sampling, in [0, 2**64 - 1]; default %(default)s")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=partial(cmd_tts, default=default, named=named))


def build_parser() -> argparse.ArgumentParser:
    return standalone_parser("python -m mlx_impl.generate", DESCRIPTION, add_arguments)


def main(argv=None) -> int:
    return main_of(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
