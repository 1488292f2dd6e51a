"""Checks of user input, shared by the MLX pipeline and its command line (`tts`, `convert`).

Every decoding path (T3's step-by-step mirror loop, fast_decode, ChatterboxTTS.generate, the `tts`
command) checks its sampling options with `check_sampling`, against the one table `RULES`; the
ranges are the ones the original can meaningfully run (a temperature of 0 divides the logits by
0, cfg_weight <= 0 makes its generate() build a one-row batch that its decoding loop cannot
concatenate with the CFG pair's start token, HF's warpers reject min_p outside [0, 1] and top_p
outside (0, 1]). The position and vocabulary bounds of T3's embedding tables are checked on the
host before any lookup (MLX's gather reads past a table instead of failing).

Nothing here changes a computation: the checks read values and raise `UsageError`, a ValueError
whose message names the argument or file and what is wrong (the command line prints it as one
line, exit status 2). Importing this module is cheap (numpy only), so that the command line can
validate before it loads anything heavy.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np


class UsageError(ValueError):
    """A bad argument or input file. The message names it and says what is wrong; the command line
    prints it as one line and exits with status 2."""


# ----------------------------------------------------------------------------- sampling options


@dataclass(frozen=True)
class Range:
    lo: Optional[float] = None
    lo_open: bool = False
    hi: Optional[float] = None
    hi_open: bool = False
    why: str = ""

    def contains(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return "finite"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# The valid range of every sampling option, on every decoding path.
RULES: Dict[str, Range] = {
    "temperature": Range(lo=0.0, lo_open=True, why="the logits are divided by it"),
    "min_p": Range(lo=0.0, hi=1.0, why="a fraction of the top token's probability"),
    "top_p": Range(lo=0.0, lo_open=True, hi=1.0, why="a cumulative probability; 1 turns top-p off"),
    "repetition_penalty": Range(lo=0.0, lo_open=True, why="seen tokens' logits are divided or multiplied by it; 1 turns it off"),
    "cfg_weight": Range(lo=0.0, lo_open=True,
                        why="the original's decoding always runs the CFG pair; at 0 it fails"),
    "exaggeration": Range(lo=0.0, why="the emotion conditioning's intensity"),
}

# The original generate()'s defaults (chatterbox/tts.py); max_new_tokens: the 1000 it hard-codes.
DEFAULTS = {"temperature": 0.8, "min_p": 0.05, "top_p": 1.0, "repetition_penalty": 1.2, "cfg_weight": 0.5,
            "exaggeration": 0.5, "max_new_tokens": 1000}


def option_name(name: str, cli: bool) -> str:
    return "--" + name.replace("_", "-") if cli else name


def check_sampling(values: Dict[str, object], *, cli: bool = False) -> None:
    """Each value in its RULES range (a real, finite number); raises UsageError naming the first bad one."""
    for name, value in values.items():
        rule = RULES[name]
        try:
            v = float(value)
            ok = not isinstance(value, bool) and rule.contains(v)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UsageError(f"{option_name(name, cli)} {value}: must be {rule.describe()} ({rule.why})")


def help_range(name: str) -> str:
    """'must be > 0; default 0.8'-style text for an option's --help."""
    return f"{RULES[name].describe()}; default %(default)s"


# ----------------------------------------------------------------------------- T3's tables


# Rows of T3's text and speech position tables in the (English) T3Config, for the checks made before
# any model is built (importing T3 takes seconds); tests/unit/test_cli_validation.py ties them to
# T3Config and to T3's own tables.
TEXT_POSITIONS = 2048 + 2
SPEECH_POSITIONS = 4096 + 2 + 2


def position_tables(hp) -> Tuple[int, int]:
    """Rows of T3's text and speech position tables for config `hp`, as T3.__init__ builds them
    (without building the model)."""
    return hp.max_text_tokens + 2, hp.max_speech_tokens + 2 + 2


def max_new_tokens_limit(speech_positions: int) -> int:
    """The most decoding steps the speech position table allows: step i embeds position i + 1 (the
    original computes it at every step, the last one included)."""
    return speech_positions - 1


def check_max_new_tokens(value, speech_positions: int, *, cli: bool = False) -> int:
    limit = max_new_tokens_limit(speech_positions)
    name = option_name("max_new_tokens", cli)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= limit:
        raise UsageError(f"{name} {value}: must be an integer in [1, {limit}] (T3's speech position table has "
                         f"{speech_positions} rows; step i embeds position i + 1)")
    return int(value)


def check_token_ids(tokens, *, vocab: int, positions: int, what: str) -> None:
    """Host-side bounds of an embedding lookup: every id in [0, vocab), the sequence length (last
    axis) within the position table."""
    tokens = np.asarray(tokens)
    n = tokens.shape[-1] if tokens.ndim else 1
    if n > positions:
        raise UsageError(f"{what} is {n} tokens long; T3's position table for it has {positions} rows")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab):
        bad = int(tokens.max()) if tokens.max() >= vocab else int(tokens.min())
        raise UsageError(f"{what} holds token id {bad}, outside the embedding table's [0, {vocab})")


def check_text_length(n_tokens: int, text_positions: int, *, cli: bool = False) -> None:
    """n_tokens: the text's tokens without [START]/[STOP]; the table holds them plus those two."""
    if n_tokens + 2 > text_positions:
        raise UsageError(f"{option_name('text', cli)} is {n_tokens} tokens after tokenisation; the model's text "
                         f"position table holds at most {text_positions - 2} (+ [START]/[STOP]): shorten it")


# ----------------------------------------------------------------------------- the voice clip

# S3Gen's reference mel (n_fft 1920, reflect padding 720 each side at 24 kHz) needs more than 720
# samples at 24 kHz; the original fails below that too ("Padding size should be less than ...").
MIN_VOICE_SAMPLES_24K = 721
SHORT_VOICE_S = 1.0  # a warning below this: the conditioning uses up to 6 s (T3) and 10 s (S3Gen)


@dataclass
class VoiceInfo:
    path: Path
    sample_rate: int
    samples: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def check_voice(path, *, cli: bool = False, option: str = "voice") -> Tuple[VoiceInfo, List[str]]:
    """The reference clip readable by soundfile, non-empty, finite and long enough for the
    conditioning. Returns its description and warnings (a very short clip the original accepts).
    `option`: the argument that named it (voice; target_voice for voice conversion)."""
    name = option_name(option, cli)
    info = read_clip(path, name)
    n24 = -(-info.samples * 24000 // info.sample_rate)  # librosa's resampled length (ceil)
    if n24 < MIN_VOICE_SAMPLES_24K:
        raise UsageError(f"{name} {info.path}: {info.seconds * 1000:.1f} ms is too short; the conditioning needs more "
                         f"than {(MIN_VOICE_SAMPLES_24K - 1) / 24:.0f} ms (S3Gen's reference mel)")
    warnings = []
    if info.seconds < SHORT_VOICE_S:
        warnings.append(f"{name} {info.path} is only {info.seconds:.2f} s long; the conditioning uses up to 6 s (T3 "
                        f"prompt) and 10 s (S3Gen reference), so the voice match will be weak")
    return info, warnings


# Voice conversion's source clip: at least one S3 token (25 per second: 4 log-mel frames of 160
# samples at 16 kHz), else S3Gen has nothing to convert.
MIN_SOURCE_SAMPLES_16K = 640


def check_source(path, *, cli: bool = False) -> VoiceInfo:
    """The clip to convert (ChatterboxVC.generate's `audio`): readable, non-empty, finite, at least
    one speech token long."""
    name = option_name("audio" if not cli else "source", cli)
    info = read_clip(path, name)
    n16 = -(-info.samples * 16000 // info.sample_rate)
    if n16 < MIN_SOURCE_SAMPLES_16K:
        raise UsageError(f"{name} {info.path}: {info.seconds * 1000:.1f} ms is too short; voice conversion needs at "
                         f"least {MIN_SOURCE_SAMPLES_16K / 16:.0f} ms (one speech token)")
    return info


def read_clip(path, name: str) -> VoiceInfo:
    """An audio file readable by soundfile, with samples, all finite; errors name it as `name`."""
    import soundfile as sf

    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{name} {p}: is a folder, not an audio file")
    if not p.exists():
        raise UsageError(f"{name} {p}: file not found")
    try:
        with sf.SoundFile(str(p)) as f:
            sr, channels = f.samplerate, f.channels
            y = f.read(frames=-1, dtype=np.float32, always_2d=True)
    except (sf.LibsndfileError, sf.SoundFileRuntimeError, RuntimeError, OSError) as e:
        raise UsageError(f"{name} {p}: not an audio file soundfile can read ({_first_line(e)})") from None
    info = VoiceInfo(p, int(sr), int(y.shape[0]), int(channels))
    if info.samples == 0:
        raise UsageError(f"{name} {p}: has no samples (0 s of audio)")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        raise UsageError(f"{name} {p}: {bad} samples are NaN or infinite")
    return info


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


# ----------------------------------------------------------------------------- output paths

AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def check_writable_parent(path: Path, name: str) -> None:
    """`path`'s folder exists as a writable folder, or can be created (its nearest existing
    ancestor is a writable folder). Nothing is created."""
    parent = path.parent
    anc = _nearest_existing(parent)
    if not anc.is_dir():
        raise UsageError(f"{name} {path}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UsageError(f"{name} {path}: folder {anc} is not writable")


def check_audio_out(path, *, cli: bool = False) -> str:
    """An output audio path: format from the extension (.wav or .flac), not a folder, its folder
    writable. Returns soundfile's format name."""
    name = option_name("out", cli)
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{name} {p}: is a folder; give a file name ending in .wav or .flac")
    fmt = AUDIO_FORMATS.get(p.suffix.lower())
    if fmt is None:
        what = f"'{p.suffix}'" if p.suffix else "no extension"
        raise UsageError(f"{name} {p}: unsupported output format ({what}); use .wav or .flac")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{name} {p}: exists and is not writable")
    check_writable_parent(p, name)
    return fmt


def check_out_dir(path, *, force: bool, protect: Iterable[Path] = (), cli: bool = False) -> None:
    """An output folder that will be written as a whole: a new or empty folder, or (with force) a
    folder to replace; never a file, never a folder holding (or inside) one of `protect`."""
    name = option_name("out", cli)
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{name} {p}: is a file, not a folder")
    rp = p.resolve()
    for q in protect:
        q = Path(q).resolve()
        if rp == q or rp in q.parents:
            what = "is" if rp == q else "holds"
            raise UsageError(f"{name} {p}: {what} the input folder {q}; choose another output folder")
    if p.is_dir() and any(p.iterdir()) and not force:
        raise UsageError(f"{name} {p}: folder exists and is not empty; pass --force to replace its contents")
    check_writable_parent(p, name)


# ----------------------------------------------------------------------------- model files


def safetensors_header(path) -> Dict[str, dict]:
    """The tensor table of a safetensors file (name -> {dtype, shape, data_offsets}), checked
    against the file's size: a truncated or malformed file fails here, naming it, without reading
    the data."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a safetensors header")
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                raise ValueError(f"header length {n} does not fit the file's {size} bytes")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        header.pop("__metadata__", None)
        end = 0
        for k, v in header.items():
            lo, hi = v["data_offsets"]
            if not 0 <= lo <= hi:
                raise ValueError(f"tensor '{k}' has data offsets {lo}..{hi}")
            end = max(end, hi)
        if 8 + n + end != size:
            raise ValueError(f"the tensors need {8 + n + end} bytes, the file has {size} (truncated?)")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"malformed safetensors file {p}: {_first_line(e)}") from None
    if not header:
        raise UsageError(f"safetensors file holds no tensors: {p}")
    return header


def tensor_shape(header: Dict[str, dict], key: str, path) -> Tuple[int, ...]:
    if key not in header:
        raise UsageError(f"{path}: missing tensor '{key}'")
    return tuple(int(d) for d in header[key]["shape"])
