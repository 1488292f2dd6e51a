"""Activation statistics of a checkpoint (`chatterbox-parity checkpoint stats`): what the ORIGINAL
modules leave idle on the parity cases (reference/activation_stats.py measures it), and the
report's before/after table.

reports/activations_before.json: the synthetic checkpoint with the modules' own init (`--init default`);
reports/activations.json: the synthetic checkpoint built with `--init exercised`;
reports/out/activations.json: the latest `checkpoint stats` run.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from . import ROOT
from .fixtures import write_text_atomic

OUT = ROOT / "reports" / "out" / "activations.json"
BEFORE = ROOT / "reports" / "activations_before.json"
AFTER = ROOT / "reports" / "activations.json"


def _span(values: List[float], fmt: str = "{:.3f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)} .. {fmt.format(hi)}"


def _cases(rec: dict, key: str) -> List:
    return [c["t3"][key] if key in c.get("t3", {}) else c.get(key) for c in rec["cases"].values()]


def _stopped(rec: dict) -> str:
    out = [f"{c['t3']['stopped_at_step']}" if c["t3"]["stopped_at_step"] is not None else f"no ({c['t3']['steps']})"
           for c in rec["cases"].values()]
    return ", ".join(out)


def _attention(rec: dict, comp: str, key: str) -> str:
    a = rec["summary"].get(comp, {}).get(key)
    return "-" if a is None else f"{a['min']:.3f} .. {a['max']:.3f} (median {a['median']:.3f})"


def _component(rec: dict, comp: str) -> str:
    s = rec["summary"].get(comp)
    if s is None:
        return "-"
    sat = "" if s["saturated_share_max"] is None else f"; saturated <= {s['saturated_share_max']:.3f}"
    return f"dead <= {s['dead_share_max']:.3f}{sat}; idle modules {len(s['idle_modules'])} of {s['modules']}"


def _embeddings(rec: dict, which: str) -> str:
    e = rec["speaker_embeddings"][which]
    return f"voices {e['voices_min']:.4f} .. {e['voices_max']:.4f}; 13 dB noisy copy {e['noisy_copy']:.6f}"


ROWS: List[Tuple[str, Callable[[dict], str]]] = [
    ("T3 top-1 probability at temperature 0.8 (median over steps, per case)", lambda r: _span(_cases(r, "top1_median"))),
    ("T3 next-token entropy / log(8194) (median over steps)", lambda r: _span(_cases(r, "entropy_median"))),
    ("T3 stop token: highest probability", lambda r: _span(_cases(r, "stop_probability_max"), "{:.2e}")),
    ("T3 stop token: share of steps inside min-p's set", lambda r: _span(_cases(r, "stop_within_min_p_share"))),
    ("T3 stopped at step", _stopped),
    ("T3 attention entropy (per layer, prefill)", lambda r: _attention(r, "t3", "attention_entropy_t3")),
    ("flow encoder attention entropy", lambda r: _attention(r, "flow", "attention_entropy_flow_encoder")),
    ("flow decoder attention entropy", lambda r: _attention(r, "flow", "attention_entropy_flow_decoder")),
    ("VoiceEncoder cosine", lambda r: _embeddings(r, "voice_encoder")),
    ("CAMPPlus x-vector cosine", lambda r: _embeddings(r, "campplus")),
    ("HiFT F0 voiced share (> 10 Hz)", lambda r: _span(_cases(r, "f0_voiced_share"))),
    ("HiFT magnitude at its clip (100)", lambda r: _span(_cases(r, "hift_magnitude_clipped_share"), "{:.2e}")),
] + [(f"{comp}: worst module", (lambda c: lambda r: _component(r, c))(comp))
     for comp in ("ve", "s3tok", "campplus", "t3", "flow", "hift")]


def load(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def table(before: Optional[dict], after: Optional[dict]) -> List[Tuple[str, str, str]]:
    """(statistic, before, after) rows; '-' where a record is missing."""
    return [(label, fn(before) if before else "-", fn(after) if after else "-") for label, fn in ROWS]


def _init_name(rec: Optional[dict]) -> str:
    if not rec:
        return "none"
    init = rec["checkpoint"].get("init") or {}
    return init.get("recipe", "default") if isinstance(init, dict) else str(init)


def section(before: Optional[dict] = None, after: Optional[dict] = None) -> Tuple[str, str]:
    """(Markdown, HTML) of the report's activation section: the committed before/after records,
    the latest `checkpoint stats` run standing in for a missing after-record."""
    before = before if before is not None else load(BEFORE)
    after = after if after is not None else (load(AFTER) or load(OUT))
    title = "Synthetic checkpoint: what the weights exercise"
    if before is None and after is None:
        text = "no activation statistics yet (`chatterbox-parity checkpoint stats`)"
        return f"## {title}\n\n{text}", f"<h2>{title}</h2><p>{text}</p>"
    head = (f"before: init `{_init_name(before)}`, after: init `{_init_name(after)}` "
            "(reference/activation_stats.py; definitions in the records' `definitions`)")
    rows = table(before, after)
    md = [f"## {title}", "", head, "", "| statistic | before | after |", "|---|---|---|"]
    md += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    page = (f"<h2>{html.escape(title)}</h2><p>{html.escape(head)}</p><table><tr><th>statistic</th><th>before</th>"
            "<th>after</th></tr>" + "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td>"
                                             f"<td>{html.escape(c)}</td></tr>" for a, b, c in rows) + "</table>")
    return "\n".join(md), page


def cmd_stats(args) -> None:
    from .cases import get_case, load_cases
    from .synthetic import resolve_checkpoint
    from reference.activation_stats import measure

    ckpt = resolve_checkpoint(args.checkpoint)
    names = list(load_cases()) if args.case == "all" else args.case.split(",")
    rec = measure(ckpt, [get_case(n) for n in names], t3_steps=args.t3_steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    for label, value, _ in table(rec, None):
        print(f"{label}: {value}")
    print(f"wrote {args.out}")


def register_stats(ck) -> None:
    """`checkpoint stats`, under the `checkpoint` command's subparsers."""
    p = ck.add_parser("stats", help="run the ORIGINAL modules on the cases and measure what the weights leave idle "
                                    "(dead / saturated units, attention entropy, T3's next-token distributions, "
                                    "speaker-embedding cosines, F0 voiced share)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint folder (default: $CHATTERBOX_CKPT or the synthetic one)")
    p.add_argument("--case", default="all", help="case name(s) from fixtures/cases.toml, comma-separated, or 'all'")
    p.add_argument("--t3-steps", type=int, default=None, metavar="N",
                   help="bound T3's decoding (default: the case's max_new_tokens)")
    p.add_argument("--out", type=Path, default=OUT, help="JSON record to write (default: %(default)s)")
    p.set_defaults(fn=cmd_stats)
