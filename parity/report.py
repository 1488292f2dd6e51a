"""`chatterbox-parity report`: the parity report of the latest run, with history and regressions.

Reads reports/out/latest.json (written by every parity run), appends it to the history
(reports/history.jsonl), flags regressions (parity/regressions.py: any move outside the measured
run-to-run spread of the baseline of this machine and checkpoint, even inside tolerance, a lost
bit-exactness, a new error, expected failure or shape mismatch), shows each loose tolerance beside
its recorded measurement, and writes a self-contained HTML page and a Markdown summary with plots.
`chatterbox-parity baseline` records the baseline from repeat runs in the history.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Dict, List

import numpy as np

from . import ROOT, registry
from .errors import ParityError
from .fixtures import write_text_atomic
from .summary import load_run
from .regressions import BASELINE, baseline_for, describe, find_regressions, load_baseline, slim_result

OUT_DIR = ROOT / "reports" / "out"
HISTORY = ROOT / "reports" / "history.jsonl"
STATUS_COLOURS = {"passed": "#c8efc8", "failed": "#f6b8b8", "error": "#f6b8b8", "not implemented": "#e6e6e6",
                  "regressed": "#ffd98a"}


def load_history(path: Path = HISTORY) -> List[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_history(run: dict, path: Path = HISTORY) -> bool:
    """Appends `run` unless the history holds it already (the same meta: a second `report` of one
    run); says whether it appended."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if any(past["meta"] == run["meta"] for past in load_history(path)):
        return False
    slim = {"meta": run["meta"], "results": [slim_result(r) for r in run["results"]]}
    with open(path, "a") as f:
        f.write(json.dumps(slim, default=float) + "\n")
    return True


# ----------------------------------------------------------------------------- plots
def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_snr_by_checkpoint(run: dict) -> str:
    plt = _plt()
    reg = registry.load()
    order = [c.name for c in reg.ordered() if c.kind == "float" and not c.random]
    cases = sorted({r["case"] for r in run["results"]})
    fig, ax = plt.subplots(figsize=(12, 4))
    for case in cases:
        ys = []
        for name in order:
            r = next((r for r in run["results"] if r["case"] == case and r["checkpoint"] == name), None)
            v = (r.get("metrics") or {}).get("snr_db") if r else None
            ys.append(min(v, 200) if v is not None else np.nan)
        ax.plot(range(len(order)), ys, "o-", label=case, ms=4)
    goals = [reg[n].tolerance(run["meta"].get("precision", "fp32")).snr_db or np.nan for n in order]
    ax.step(range(len(order)), goals, "k--", where="mid", label="tolerance")
    ax.set_xticks(range(len(order)), order, rotation=75, fontsize=7)
    ax.set_ylabel("SNR dB (inf shown as 200)")
    ax.set_title("error along the pipeline (isolated mode)")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_trend(history: List[dict], case: str, name: str) -> str:
    plt = _plt()
    ys = []
    for past in history:
        r = next((r for r in past["results"] if r["case"] == case and r["checkpoint"] == name), None)
        v = (r or {}).get("metrics", {}).get("snr_db") if r else None
        ys.append(min(v, 200) if v is not None else np.nan)
    fig, ax = plt.subplots(figsize=(3, 1.1))
    ax.plot(ys, "o-", ms=3)
    ax.set_xticks([])
    ax.tick_params(labelsize=6)
    return _png(fig)


def plot_tensors(case: str, tensors_dir: Path) -> List[tuple]:
    """Reference vs MLX plots from the tensors the parity run saved for `case`."""
    from safetensors.numpy import load_file

    path = tensors_dir / f"{case}.safetensors"
    if not path.is_file():
        return []
    t = load_file(str(path))
    plt = _plt()
    figs = []
    if "ref/flow.output_mel" in t and "mlx/flow.output_mel" in t:
        ref, out = t["ref/flow.output_mel"][0], t["mlx/flow.output_mel"][0]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3))
        for ax, img, title in zip(axes, (ref, out, out - ref), ("reference mel", "MLX mel", "MLX - reference")):
            im = ax.imshow(img, aspect="auto", origin="lower")
            ax.set_title(title, fontsize=9)
            fig.colorbar(im, ax=ax)
        figs.append(("output mel (flow.output_mel)", _png(fig)))
    if "ref/hift.wav" in t and "mlx/hift.wav" in t:
        ref, out = t["ref/hift.wav"].reshape(-1), t["mlx/hift.wav"].reshape(-1)
        n = min(len(ref), len(out))
        fig, ax = plt.subplots(figsize=(13, 2.5))
        ax.plot(ref[:n], lw=0.5, label="reference")
        ax.plot(out[:n], lw=0.5, alpha=0.7, label="MLX")
        ax.plot(out[:n] - ref[:n], lw=0.5, label="difference")
        ax.legend(fontsize=7)
        figs.append(("waveform overlay (hift.wav)", _png(fig)))
    if "ref/t3.logits_raw" in t and "mlx/t3.logits_raw" in t:
        ref, out = t["ref/t3.logits_raw"].astype(np.float64), t["mlx/t3.logits_raw"].astype(np.float64)
        n = min(len(ref), len(out))
        err = ((out[:n] - ref[:n]) ** 2).reshape(n, -1).sum(1) / (ref[:n] ** 2).reshape(n, -1).sum(1)
        fig, ax = plt.subplots(figsize=(13, 2.5))
        ax.plot(-10 * np.log10(np.maximum(err, 1e-30)), ".-", ms=3)
        ax.set_xlabel("decoding step")
        ax.set_ylabel("SNR dB")
        ax.set_title("T3 teacher-forced logits: error per step", fontsize=9)
        figs.append(("T3 logit error per step", _png(fig)))
    for name in ("t3.speech_tokens", "t3_greedy.speech_tokens", "s3tok.prompt_tokens"):
        if f"ref/{name}" in t and f"mlx/{name}" in t:
            ref, out = t[f"ref/{name}"].reshape(-1), t[f"mlx/{name}"].reshape(-1)
            n = max(len(ref), len(out))
            agree = np.zeros(n)
            m = min(len(ref), len(out))
            agree[:m] = ref[:m] == out[:m]
            fig, ax = plt.subplots(figsize=(13, 0.8))
            ax.imshow(agree[None], aspect="auto", cmap="RdYlGn", vmin=0, vmax=1)
            ax.set_yticks([])
            ax.set_title(f"token agreement {name}: {agree.mean():.1%} (green = same)", fontsize=9)
            figs.append((f"token agreement strip ({name})", _png(fig)))
    return figs


# ----------------------------------------------------------------------------- pages
def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.4g}"
    return str(v)


def _measured(r: dict) -> str:
    m = r.get("metrics") or {}
    if m.get("length_mismatch"):
        return f"shape {m['shape_out']} vs {m['shape_ref']}"
    if m.get("exact") is not None:
        return f"exact {_fmt(m['exact'])}" + (f", first mismatch {m['first_mismatch']}" if m.get("first_mismatch") is not None else "")
    if m.get("snr_db") is not None:
        return f"SNR {_fmt(m['snr_db'])} dB, max abs {_fmt(m['max_abs'])}, cos {m['cosine']:.9f}"
    return (r.get("message") or "-").splitlines()[0][:80]


def _sorted_results(run: dict) -> List[dict]:
    order = {c.name: i for i, c in enumerate(registry.load().ordered())}

    def key(r):
        mode, _, name = r["checkpoint"].rpartition(":")
        return (mode, order.get(name, 999), r["case"])

    return sorted(run["results"], key=key)


def extra_sections() -> List[tuple]:
    """Other reports that live beside this one (benchmarks, precision matrix, coverage, resamplers)."""
    out = []
    for path in sorted(OUT_DIR.glob("*.md")):
        if path.name in ("report.md", "mutations.md"):  # mutations: a section of its own
            continue
        out.append((path.stem, path.read_text()))
    return out


def mutation_section() -> tuple:
    """(Markdown, HTML) of the latest mutation run (`chatterbox-parity mutate`): the score and, per
    mutation, whether it was caught and by which checkpoint first."""
    from .mutate import load_record, markdown

    rec = load_record()
    if rec is None:
        text = "no mutation run yet (`chatterbox-parity mutate`)"
        return f"## Mutation score\n\n{text}", f"<h2>Mutation score</h2><p>{text}</p>"
    s = rec["score"]
    head = (f"{s['caught']} / {s['total']} caught ({s['invisible']} numerically invisible; missed: "
            f"{', '.join(s['missed']) or 'none'}), {rec['meta']['seconds'] / 60:.1f} min")
    rows = "".join(
        f'<tr style="background:{STATUS_COLOURS["passed" if o["caught"] else ("not implemented" if o["invisible"] else "failed")]}">'
        f"<td>{html.escape(o['name'])}</td><td>{o['case']}</td><td>{'yes' if o['caught'] else ('invisible' if o['invisible'] else 'MISSED')}</td>"
        f"<td>{html.escape(o['first_failing_checkpoint'] or '-')}</td><td>{html.escape(o['measured'] or o['invisible'] or o['moved'] or '-')}</td>"
        f"<td>{html.escape(o['tolerance'] or '-')}</td><td>{html.escape(o['bisect'])}</td><td>{html.escape(o['source'])}</td></tr>"
        for o in rec["mutations"])
    page = (f"<h2>Mutation score: {s['caught']} / {s['total']}</h2><p>{html.escape(head)}</p><table><tr><th>mutation</th>"
            "<th>case</th><th>caught</th><th>first failing checkpoint</th><th>measured</th><th>tolerance</th>"
            f"<th>bisect</th><th>source</th></tr>{rows}</table>")
    return markdown(rec), page


def activation_section() -> tuple:
    """(Markdown, HTML): what the synthetic checkpoint's weights exercise, before and after its init
    recipe (parity/activations.py)."""
    from .activations import section

    return section()


def _loose_tolerance_rows(run: dict) -> List[tuple]:
    from .tolerance_notes import table

    return table(run)


def write_report(run: dict, history: List[dict], regressions: List[dict], out_dir: Path = OUT_DIR,
                 compared_with: str = "") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = run["meta"]
    regressed = {(g["case"], g["checkpoint"]) for g in regressions}
    counts: Dict[str, int] = {}
    for r in run["results"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    cases = sorted({r["case"] for r in run["results"]})

    md = [f"# Parity report", "",
          f"commit `{meta['git_commit'][:12]}` · {meta['time']} · MLX {meta['mlx']} on {meta['mlx_device']} · "
          f"precision {meta['precision']} · checkpoint `{meta['checkpoint']['identity'][:12]}`", "",
          "totals: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) +
          f" · regressions: {len(regressions)}", "",
          "| checkpoint | case | status | measured | tolerance |", "|---|---|---|---|---|"]
    rows = []
    for r in _sorted_results(run):
        status = r["status"] + (" (regressed)" if (r["case"], r["checkpoint"]) in regressed else "")
        md.append(f"| {r['checkpoint']} | {r['case']} | {status} | {_measured(r)} | {r['tolerance']} |")
        colour = STATUS_COLOURS["regressed" if (r["case"], r["checkpoint"]) in regressed else r["status"]]
        trend = ""
        if len(history) > 1 and (r.get("metrics") or {}).get("snr_db") is not None:
            trend = f'<img src="data:image/png;base64,{plot_trend(history, r["case"], r["checkpoint"])}">'
        rows.append(f'<tr style="background:{colour}"><td>{html.escape(r["checkpoint"])}</td><td>{r["case"]}</td>'
                    f'<td>{html.escape(status)}</td><td>{html.escape(_measured(r))}</td>'
                    f'<td>{html.escape(r["tolerance"])}</td><td>{trend}</td></tr>')
    md += ["", "## Regressions", "", compared_with, ""]
    md += [f"- {describe(g)}" for g in regressions] or ["none"]
    loose = _loose_tolerance_rows(run)
    md += ["", "## Loose tolerances beside their recorded measurement", "",
           "| checkpoint | tolerance | recorded (`measured` in the registry) | this run |", "|---|---|---|---|"]
    md += [f"| {label} | {tol} | {note} | {now} |" for label, tol, note, now in loose]

    mutation_md, mutation_html = mutation_section()
    md += ["", mutation_md]
    activation_md, activation_html = activation_section()
    md += ["", activation_md]

    figs = [("error along the pipeline", plot_snr_by_checkpoint(run))]
    for case in cases:
        figs += [(f"{case}: {title}", png) for title, png in plot_tensors(case, out_dir / "tensors")]
    extras = extra_sections()
    for title, text in extras:
        md += ["", text]

    page = ["<!doctype html><html><head><meta charset='utf-8'><title>chatterbox-parity report</title>",
            "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #bbb;padding:2px 6px;text-align:left}h2{margin-top:1.5em}pre{background:#f4f4f4;padding:8px}</style>",
            "</head><body>", "<h1>chatterbox-parity report</h1>",
            f"<p>commit <code>{meta['git_commit'][:12]}</code> · {meta['time']} · MLX {meta['mlx']} on "
            f"{html.escape(meta['mlx_device'])} · machine {html.escape(meta['machine']['platform'])} "
            f"({meta['machine']['cpus']} cpus) · precision {meta['precision']} · checkpoint "
            f"<code>{meta['checkpoint']['identity'][:12]}</code> ({html.escape(meta['checkpoint']['path'])})</p>",
            "<p>" + " · ".join(f'<span style="background:{STATUS_COLOURS.get(k, "#fff")};padding:2px 6px">{v} {k}</span>'
                               for k, v in sorted(counts.items())) + f" · <b>{len(regressions)} regressions</b></p>"]
    page.append(f"<h2>Regressions</h2><p>{html.escape(compared_with)}</p><ul>" +
                ("".join(f"<li>{html.escape(describe(g))}</li>" for g in regressions) or "<li>none</li>") + "</ul>")
    page.append("<h2>Loose tolerances beside their recorded measurement</h2><table><tr><th>checkpoint</th>"
                "<th>tolerance</th><th>recorded (<code>measured</code> in the registry)</th><th>this run</th></tr>" +
                "".join(f"<tr><td>{html.escape(label)}</td><td>{html.escape(tol)}</td><td>{html.escape(note)}</td>"
                        f"<td>{html.escape(now)}</td></tr>" for label, tol, note, now in loose) + "</table>")
    page.append(mutation_html)
    page.append(activation_html)
    page.append("<h2>Checkpoints, in pipeline order</h2><table><tr><th>checkpoint</th><th>case</th><th>status</th>"
                "<th>measured</th><th>tolerance</th><th>SNR trend</th></tr>" + "".join(rows) + "</table>")
    for title, png in figs:
        page.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{png}'>")
    for title, text in extras:
        page.append(f"<h2>{html.escape(title)}</h2><pre>{html.escape(text)}</pre>")
    page.append("</body></html>")

    write_text_atomic(out_dir / "report.md", "\n".join(md) + "\n")
    write_text_atomic(out_dir / "report.html", "\n".join(page))
    return out_dir / "report.html"


def comparison_note(run: dict, baseline: dict, history: List[dict]) -> str:
    from .regressions import machine_key, run_key

    entry = baseline_for(run["meta"], baseline)
    if entry is not None:
        return (f"Compared with the baseline of this machine ({machine_key(run['meta'])}) and checkpoint: "
                f"{len(entry['runs'])} repeat runs recorded {entry['recorded']}; any move outside their spread is flagged.")
    n = sum(1 for h in history if run_key(h["meta"]) == run_key(run["meta"]))
    return (f"No baseline for this machine ({machine_key(run['meta'])}) and checkpoint in {BASELINE.name}: compared "
            f"with the {n} earlier runs of both in the history (metrics by their regression margin; record a "
            "baseline with `chatterbox-parity baseline` after repeat runs).")


def cmd_report(args):
    run = load_run(args.results)
    history = load_history(args.history)
    baseline = load_baseline(args.baseline)
    regressions = find_regressions(run, history, baseline, margin_db=args.margin_db)
    note = comparison_note(run, baseline, history)
    if not args.no_history:
        append_history(run, args.history)
        history = load_history(args.history)
    path = write_report(run, history, regressions, out_dir=args.out, compared_with=note)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    print(note)
    for g in regressions:
        print(f"REGRESSION {describe(g)}")
    if regressions and args.fail_on_regression:
        raise SystemExit(1)


def cmd_baseline(args):
    """The baseline of the latest run's machine and checkpoint, from its last repeat runs in the history."""
    from .regressions import record_baseline, run_key, spread_table

    latest = load_run(args.results)
    key = run_key(latest["meta"])
    commit = latest["meta"].get("git_commit")
    same = [h for h in load_history(args.history) if run_key(h["meta"]) == key and h["meta"].get("git_commit") == commit]
    if len(same) < args.runs:
        raise ParityError(f"{args.history} holds {len(same)} run(s) of this machine, checkpoint and commit "
                          f"({commit[:10]}); --runs {args.runs} needs more: run the parity suite and "
                          "`chatterbox-parity report` again")
    entry = record_baseline(same[-args.runs:], args.baseline)
    rows = spread_table(entry)
    moved = [r for r in rows if r["spread"] > 0]
    print(f"wrote the baseline of machine {entry['machine_key']} to {args.baseline}: {len(entry['results'])} results "
          f"from {args.runs} runs; {len(moved)} of {len(rows)} values moved between the runs")
    for r in moved:
        print(f"  {r['case']} / {r['checkpoint']} {r['metric']}: {r['min']:.4g}..{r['max']:.4g}")


def register(sub):
    p = sub.add_parser("report", help="HTML/Markdown parity report of the latest run, with history and regressions")
    p.add_argument("--results", type=Path, default=OUT_DIR / "latest.json", help="parity results (default: %(default)s)")
    p.add_argument("--history", type=Path, default=HISTORY, help="run history (default: %(default)s)")
    p.add_argument("--baseline", type=Path, default=BASELINE, help="measured spread per machine (default: %(default)s)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    p.add_argument("--margin-db", type=float, default=3.0,
                   help="without a baseline: SNR drop below the best recorded that is a regression (default: %(default)s)")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found")
    p.add_argument("--no-history", action="store_true", help="do not append this run to the history")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("baseline", help="record the run-to-run spread of this machine and checkpoint from the last "
                                        "repeat runs in the history (reports/baseline.json)")
    p.add_argument("--runs", type=int, default=2, help="repeat runs of the latest run's commit to use (default: %(default)s)")
    p.add_argument("--results", type=Path, default=OUT_DIR / "latest.json", help="the latest run (default: %(default)s)")
    p.add_argument("--history", type=Path, default=HISTORY, help="run history (default: %(default)s)")
    p.add_argument("--baseline", type=Path, default=BASELINE, help="baseline file to update (default: %(default)s)")
    p.set_defaults(fn=cmd_baseline)
