"""The registry's loose tolerances beside what the latest run measured, and the command that keeps
their `measured` notes current.

Every tolerance looser than its default carries `measured` (what was measured) and `reason` (why the
gap is inherent) in parity/checkpoints.toml. `chatterbox-parity tolerances` lists them with this
run's values; `--refresh` rewrites each `measured` note from the latest run (reports/out/latest.json),
in place, keeping the rest of the file as it is (atomic write). The reason stays the author's.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Dict, List

from . import registry
from .errors import ParityError
from .fixtures import write_text_atomic
from .summary import RESULTS_DIR, load_run

_HEADER = re.compile(r'^\[(tolerances\.fp32|cumulative\.(\w+))\."([^"]+)"\]\s*$')
_MEASURED = re.compile(r'^measured\s*=\s*"((?:[^"\\]|\\.)*)"\s*$')


def loose_labels() -> List[tuple]:
    """(result label, tolerance) of every tolerance that carries a `measured` note, in file order:
    the label is the checkpoint (isolated, fp32) or "<mode>:<checkpoint>" (cumulative)."""
    reg = registry.load()
    out = []
    for cp in reg.ordered():
        tol = cp.tolerance("fp32")
        if tol.measured is not None:
            out.append((cp.name, tol))
    for mode, entries in reg.cumulative.items():
        for name, tol in entries.items():
            if tol.measured is not None:
                out.append((f"{mode}:{name}", tol))
    return out


def _value(r: dict) -> str:
    m = r.get("metrics") or {}
    if r["status"] not in ("passed", "failed"):
        return r["status"]
    if m.get("length_mismatch"):
        return f"shape {m.get('shape_out')} vs {m.get('shape_ref')}"
    if m.get("exact") is not None:
        first = m.get("first_mismatch")
        return f"exact {m['exact']:.4f}" + ("" if first is None else f" (first mismatch {first})")
    snr = m.get("snr_db")
    if snr is None:
        return "-"
    text = "bit-identical" if math.isinf(snr) else f"{snr:.1f} dB"
    if m.get("nonfinite_mismatch"):
        text += f", {m['nonfinite_mismatch']} filtered on one side"
    return text


def measured_by_label(run: dict) -> Dict[str, Dict[str, str]]:
    """label -> case -> this run's value, as text."""
    out: Dict[str, Dict[str, str]] = {}
    for r in run["results"]:
        out.setdefault(r["checkpoint"], {})[r["case"]] = _value(r)
    return out


def note_for(label: str, run: dict) -> str:
    """The `measured` note of `label` from `run`: date, commit, machine, per-case values."""
    values = measured_by_label(run).get(label)
    if not values:
        raise ParityError(f"the latest run has no result for '{label}': run the whole parity suite first")
    meta = run["meta"]
    cpu = meta.get("machine", {}).get("cpu_model") or meta.get("machine", {}).get("processor", "?")
    cases = ", ".join(f"{case} {v}" for case, v in sorted(values.items()))
    return f"{meta['time'][:10]}, commit {meta['git_commit'][:10]}, {cpu}: {cases}"


def refresh_text(text: str, notes: Dict[str, str]) -> tuple:
    """`text` (the registry) with the `measured` value of each table in `notes` replaced by a one-line
    note (a multi-line one included); returns (new text, labels replaced). A table's label is its
    checkpoint, or "<mode>:<checkpoint>"."""
    out, done, label, skipping = [], [], None, False
    for line in text.splitlines(keepends=True):
        if skipping:  # the rest of a replaced multi-line note
            skipping = '"""' not in line
            continue
        h = _HEADER.match(line.strip())
        if h:
            label = h.group(3) if h.group(2) is None else f"{h.group(2)}:{h.group(3)}"
        elif line.startswith("["):
            label = None
        if label in notes and re.match(r"measured\s*=", line):
            value = line.split("=", 1)[1].strip()
            if value.startswith('"""'):
                skipping = value.count('"""') == 1
            elif not _MEASURED.match(line.strip()):
                raise ParityError(f"{registry.REGISTRY_FILE}: cannot read the measured note of '{label}'")
            line = f"measured = {json.dumps(notes[label], ensure_ascii=False)}\n"
            done.append(label)
        out.append(line)
    return "".join(out), done


def refresh(run: dict, path: Path = registry.REGISTRY_FILE) -> List[str]:
    notes = {label: note_for(label, run) for label, _ in loose_labels()}
    new, done = refresh_text(Path(path).read_text(), notes)
    missing = sorted(set(notes) - set(done))
    if missing:
        raise ParityError(f"{path}: no one-line measured note found for {missing}")
    write_text_atomic(Path(path), new)
    registry.load.cache_clear()
    return done


def table(run: dict) -> List[tuple]:
    """(label, tolerance, recorded note, this run's values) of every loose tolerance."""
    values = measured_by_label(run)
    return [(label, tol.describe(), tol.measured,
             ", ".join(f"{c} {v}" for c, v in sorted(values.get(label, {}).items())) or "not run")
            for label, tol in loose_labels()]


def cmd_tolerances(args):
    run = load_run(args.results)
    if args.refresh:
        for label in refresh(run):
            print(f"refreshed the measured note of {label}")
        return
    for label, tol, note, now in table(run):
        print(f"{label}: {tol}\n  recorded: {note}\n  this run: {now}")


def register(sub):
    p = sub.add_parser("tolerances", help="the loose tolerances beside this run's values; --refresh rewrites their "
                                          "`measured` notes in parity/checkpoints.toml from the latest run")
    p.add_argument("--results", type=Path, default=RESULTS_DIR / "latest.json",
                   help="parity results to read (default: %(default)s, written by every parity run)")
    p.add_argument("--refresh", action="store_true", help="rewrite the measured notes from these results")
    p.set_defaults(fn=cmd_tolerances)
