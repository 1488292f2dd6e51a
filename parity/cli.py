"""`chatterbox-parity`: one command-line entry point, with subcommands.

Every error meant for the user (a ParityError, or mlx_impl's UsageError for a bad argument or input
file) is printed as one line, exit status 2; `--debug` shows its traceback too. Ctrl-C: exit 130.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import ROOT
from .activations import register_stats
from .errors import ParityError
from .synthetic import DEFAULT_CKPT, INIT_CHOICES, resolve_checkpoint

DEFAULT_TURBO_CKPT = ROOT / "checkpoints" / "synthetic-turbo-s0"  # reference/synth_turbo_checkpoint.py's
DEFAULT_MTL_CKPT = ROOT / "checkpoints" / "synthetic-mtl-s0"  # reference/mtl_synth_checkpoint.py's


def _ckpt_arg(p):
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint folder in the hub's layout (default: $CHATTERBOX_CKPT or the synthetic one, "
                        f"{DEFAULT_CKPT.relative_to(ROOT)}, created if missing)")


def cmd_checkpoint_synth(args):
    if args.model == "turbo":
        from reference.synth_turbo_checkpoint import make_synthetic_turbo_checkpoint as make
    elif args.model == "mtl":
        from reference.mtl_synth_checkpoint import make_synthetic_mtl_checkpoint as make
    else:
        from reference.synth_checkpoint import make_synthetic_checkpoint as make

    if args.model == "turbo":
        out = make(args.out, seed=args.seed)
    else:
        out = make(args.out, seed=args.seed, init=args.init)
    print(f"wrote synthetic {args.model} checkpoint {out}" + (f" (init: {args.init})" if args.model != "turbo" else ""))


def cmd_export(args):
    import dataclasses
    import shutil
    import tempfile

    from parity.fixtures import Fixture, diff_fixtures, fixture_dir
    from parity.session import all_cases, case_model, staleness
    from parity.turbo_checkpoint import is_turbo_dir, resolve_turbo_checkpoint
    from reference.export import export_case, load_original, validate_case_inputs
    from parity.mtl_checkpoint import is_mtl_dir, resolve_mtl_checkpoint
    from reference.export_mtl import export_mtl_case, load_original_mtl, validate_mtl_case_inputs
    from reference.export_turbo import export_turbo_case, load_original_turbo, validate_turbo_case_inputs
    from reference.export_vc import export_vc_case, load_original_vc, validate_vc_case_inputs

    known = all_cases()
    names = list(known) if args.case == "all" else [args.case]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ParityError(f"--case {unknown[0]}: unknown case (known: {', '.join(known)}, all)")
    cases = [known[n] for n in names]
    if args.text is not None or args.audio is not None:
        if len(cases) != 1:
            raise ParityError("--text/--audio override one case: name it with --case")
        if case_model(cases[0]) == "vc":
            raise ParityError(f"--text/--audio override an English or a Turbo case; '{cases[0].name}' is a voice-conversion case")
        cases = [dataclasses.replace(cases[0], text=args.text if args.text is not None else cases[0].text,
                                     audio=str(args.audio.resolve()) if args.audio else cases[0].audio)]
    if args.max_new_tokens is not None:
        bound = {"tts": "max_new_tokens", "turbo": "max_gen_len", "mtl": "max_new_tokens"}  # T3's step bound, per model
        cases = [dataclasses.replace(c, params={**c.params, bound[case_model(c)]: args.max_new_tokens})
                 if case_model(c) in bound else c for c in cases]
    validate = {"vc": validate_vc_case_inputs, "turbo": validate_turbo_case_inputs, "mtl": validate_mtl_case_inputs}
    for case in cases:
        validate.get(case_model(case), validate_case_inputs)(case)
    # Turbo cases run on a Turbo folder: --checkpoint where it is one (or where only Turbo cases are asked
    # for), else $CHATTERBOX_TURBO_CKPT or the synthetic one; the other cases on the English folder
    turbo_only = {case_model(c) for c in cases} == {"turbo"}
    ckpts = {}
    if {case_model(c) for c in cases} & {"tts", "vc"}:
        other = is_turbo_dir(args.checkpoint) or is_mtl_dir(args.checkpoint)
        ckpts["tts"] = ckpts["vc"] = resolve_checkpoint(None if other else args.checkpoint)
    if any(case_model(c) == "turbo" for c in cases):
        use = args.checkpoint is not None and (turbo_only or is_turbo_dir(args.checkpoint))
        ckpts["turbo"] = resolve_turbo_checkpoint(args.checkpoint if use else None)
    if any(case_model(c) == "mtl" for c in cases):  # as Turbo: --checkpoint where it is a multilingual folder
        ckpts["mtl"] = resolve_mtl_checkpoint(args.checkpoint if is_mtl_dir(args.checkpoint) else None)
    for ckpt in {id(c): c for c in ckpts.values()}.values():
        ckpt.validate()
    tts = vc = turbo = mtl = None
    for case in cases:
        ckpt = ckpts[case_model(case)]
        target = fixture_dir(args.out, case.name)
        why = staleness(args.out or target.parent, case, ckpt)
        if why is None and not args.regen:
            print(f"[{case.name}] fixture up to date: {target} (--regen rewrites it)")
            continue
        old_copy = None
        if args.regen and (target / "manifest.json").is_file():
            old_copy = Path(tempfile.mkdtemp(prefix="fixture-old-")) / case.name
            shutil.copytree(target, old_copy)
        try:
            if case_model(case) == "vc":
                tts = turbo = None  # one original model at a time (memory)
                vc = vc or load_original_vc(ckpt)
                out = export_vc_case(ckpt, case, out_root=args.out, vc=vc)
            elif case_model(case) == "turbo":
                tts = vc = None
                turbo = turbo or load_original_turbo(ckpt)
                out = export_turbo_case(ckpt, case, out_root=args.out, tts=turbo)
            elif case_model(case) == "mtl":
                tts = vc = turbo = None
                mtl = mtl or load_original_mtl(ckpt)
                out = export_mtl_case(ckpt, case, out_root=args.out, tts=mtl)
            else:
                vc = turbo = None
                tts = tts or load_original(ckpt)
                out = export_case(ckpt, case, out_root=args.out, tts=tts)
            if old_copy is not None:
                print(f"[{case.name}] changes against the previous fixture:")
                for line in diff_fixtures(Fixture.open(old_copy), Fixture.open(out)):
                    print("  " + line)
        finally:
            if old_copy is not None:
                shutil.rmtree(old_copy.parent, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="chatterbox-parity", description=__doc__.splitlines()[0])
    ap.add_argument("--debug", action="store_true",
                    help="show the Python traceback of an error (also accepted after the subcommand)")
    sub = ap.add_subparsers(dest="command", required=True)

    ck = sub.add_parser("checkpoint", help="checkpoint utilities").add_subparsers(dest="sub", required=True)
    p = ck.add_parser("synth", help="write a synthetic checkpoint (the original modules, seeded) in the hub's layout")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="checkpoint folder to write (ve.safetensors, t3_cfg.safetensors, s3gen.safetensors, "
                        "tokenizer.json, conds.pt)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="torch seed of the random weights; default %(default)s")
    p.add_argument("--model", choices=("tts", "turbo", "mtl"), default="tts",
                   help="tts: ChatterboxTTS's files (default); turbo: ChatterboxTurboTTS's (ve.safetensors, "
                        "t3_turbo_v1.safetensors, s3gen_meanflow.safetensors, a GPT-2-style tokenizer, conds.pt; "
                        "reference/synth_turbo_checkpoint.py); mtl: ChatterboxMultilingualTTS's (ve.pt, "
                        "t3_mtl23ls_v2.safetensors, s3gen.pt, the multilingual tokenizer and Cangjie stand-ins, "
                        "conds.pt; reference/mtl_synth_checkpoint.py). Voice conversion reads the tts files.")
    p.add_argument("--init", choices=INIT_CHOICES, default=INIT_CHOICES[0],
                   help="(tts, mtl) 'exercised': the seeded init changed so that every part of the network works "
                        "(peaked T3 distributions, distinct speaker embeddings; reference/synth_checkpoint.py "
                        "EXERCISED); 'default': the modules' own init; default %(default)s")
    p.set_defaults(fn=cmd_checkpoint_synth)
    register_stats(ck)

    p = sub.add_parser("export", help="run the ORIGINAL model on a case and write its reference fixtures")
    _ckpt_arg(p)
    p.add_argument("--case", default="all",
                   help="case name from fixtures/cases.toml (an English, a voice-conversion vc_*, a Turbo turbo_* "
                        "or a multilingual mtl_* case), or 'all'")
    p.add_argument("--out", type=Path, default=None, help="fixture root (default: fixtures/)")
    p.add_argument("--text", default=None, help="override the case's text")
    p.add_argument("--audio", type=Path, default=None, help="override the case's reference audio file")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="override the case's T3 step bound (a Turbo case's max_gen_len)")
    p.add_argument("--regen", action="store_true",
                   help="rewrite fixtures that are up to date, and print what changed (which tensors, by how much)")
    p.add_argument("--only-stale", action="store_true", help="(the default) export only missing or stale fixtures")
    p.set_defaults(fn=cmd_export)

    _register_optional(sub)
    return ap


def _register_optional(sub):
    """Subcommands living in their own modules register themselves here; `convert`, `tts` and `vc`
    are mlx_impl's standalone commands (`python -m mlx_impl.convert`, `python -m mlx_impl.generate`,
    `python -m mlx_impl.vc_cli`) with the synthetic checkpoint as their default folder."""
    import importlib

    from mlx_impl import generate, vc_cli
    from mlx_impl.cli import DefaultFolder
    from mlx_impl.convert import cli as convert

    for mod_name in ("parity.report", "parity.tolerance_notes", "parity.bisect", "parity.pack", "parity.coverage",
                     "parity.precision", "parity.mutate"):
        importlib.import_module(mod_name).register(sub)
    synthetic = DefaultFolder(DEFAULT_CKPT, ensure=lambda: resolve_checkpoint(None))
    named = {"tts": synthetic, "turbo": synthetic_turbo(), "mtl": synthetic_mtl()}  # `tts --model turbo`, ...
    for name, command in (("convert", convert), ("tts", generate), ("vc", vc_cli)):
        p = sub.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(p, synthetic, default_help="$CHATTERBOX_CKPT or the synthetic checkpoint, created if missing",
                              **({"named": named} if name != "vc" else {}))


def synthetic_turbo():
    """The synthetic Turbo checkpoint (reference/synth_turbo_checkpoint.py), built when first used."""
    from mlx_impl.cli import DefaultFolder

    def ensure():
        from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

        ensure_turbo_checkpoint(DEFAULT_TURBO_CKPT)

    return DefaultFolder(DEFAULT_TURBO_CKPT, ensure=ensure, kind="turbo")


def synthetic_mtl():
    """The synthetic multilingual checkpoint (reference/mtl_synth_checkpoint.py), built when first used;
    its pkuseg/ is spacy-pkuseg's model folder ($PKUSEG_HOME, unless set) for the Chinese front end."""
    from mlx_impl.cli import DefaultFolder

    def ensure():
        import os

        from reference.mtl_synth_checkpoint import PKUSEG_DIR, ensure_mtl_checkpoint

        ensure_mtl_checkpoint(DEFAULT_MTL_CKPT)
        os.environ.setdefault("PKUSEG_HOME", str(DEFAULT_MTL_CKPT / PKUSEG_DIR))

    return DefaultFolder(DEFAULT_MTL_CKPT, ensure=ensure, kind="mtl")


def main(argv=None) -> int:
    from mlx_impl.cli import run_command
    from mlx_impl.validate import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    return run_command(args.fn, args, debug=debug, errors=(ParityError, UsageError))


if __name__ == "__main__":
    sys.exit(main())
