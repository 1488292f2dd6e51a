"""What mlx_impl's command-line entry points (`python -m mlx_impl.generate`, `python -m
mlx_impl.convert`) share: where the model folder comes from, and how a command ends on an error
(one line `error: ...`, exit status 2; `--debug` adds the traceback; Ctrl-C: exit status 130)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from .validate import UsageError

MODEL_ENV = "CHATTERBOX_CKPT"
FROM_ENV = f"set by {MODEL_ENV}"


@dataclass
class DefaultFolder:
    """The folder a command uses when neither its option nor $CHATTERBOX_CKPT names one (none in
    mlx_impl; the parity harness's CLI passes its synthetic checkpoint), or that a name stands for
    (the harness's `--model turbo`): its path, `ensure()`, which makes it exist (called only once the
    cheap checks passed), and the model it holds ("tts", "turbo" or "mtl"), known before it exists."""
    path: Path
    ensure: Callable[[], None]
    kind: str = "tts"


def pick_folder(value, option: str, default: Optional[DefaultFolder],
                named: Optional[Dict[str, DefaultFolder]] = None) -> Tuple[str, str, Optional[DefaultFolder]]:
    """folder_source, where `value` may also be one of the `named` folders' names: (the folder or
    repo id, where it came from, the DefaultFolder to ensure() before use or None)."""
    if value is not None and str(value) in (named or {}):
        folder = named[str(value)]
        return str(folder.path), f"{option} {value}", folder
    path, source = folder_source(value, option, default)
    return path, source, default if source == "default" else None


def folder_source(value, option: str, default: Optional[DefaultFolder]) -> Tuple[str, str]:
    """(the folder, or a hub repo id, named by `option`, else $CHATTERBOX_CKPT, else `default`;
    where it came from: the option's name, FROM_ENV or "default")."""
    if value:
        return str(value), option
    env = os.environ.get(MODEL_ENV)
    if env:
        return env, FROM_ENV
    if default is None:
        raise UsageError(f"no model folder: pass {option} or set {MODEL_ENV}")
    return str(default.path), "default"


def run_command(fn, args, *, debug: bool, errors=(UsageError,)) -> int:
    """fn(args) -> exit status: 0, 2 after one `error: ...` line for a user-facing error (`errors`),
    130 on Ctrl-C; `debug` prints the traceback first."""
    try:
        fn(args)
    except errors as e:
        _traceback(debug)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _traceback(debug)
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    return 0


def _traceback(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()


def standalone_parser(prog: str, description: str, add_arguments) -> "argparse.ArgumentParser":
    """The parser of a standalone entry point: the command's options and --debug."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(p)
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    return p


def main_of(build_parser, argv=None) -> int:
    """A standalone entry point: parse `argv` (default sys.argv[1:]) with build_parser() (which
    has a --debug flag) and run the parsed command (`args.fn`)."""
    args = build_parser().parse_args(argv)
    return run_command(args.fn, args, debug=args.debug)
