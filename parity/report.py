"""`chatterbox-parity report`: the parity report of the latest run, with history and regressions.

Reads reports/out/latest.json (written by every parity run), appends it to the history
(reports/history.jsonl), flags regressions (a metric worse than the best recorded for the same
case, checkpoint and precision by more than a margin, even while inside tolerance), and writes a
self-contained HTML page and a Markdown summary with plots.
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

OUT_DIR = ROOT / "reports" / "out"
HISTORY = ROOT / "reports" / "history.jsonl"
# tracked metric (higher is better) -> regression margin (the SNR margin is --margin-db)
TRACKED = {"snr_db": 3.0, "cosine": 1e-6, "exact": 0.0}
# An SNR at or above this is float32 rounding (a few ulps of relative error: one rounding of
# float32 is ~-138 dB): a drop that stays above it is a change of summation order, not a regression
# (ve.speaker_emb moved 142.9 -> 139.3 dB between sessions 2 and 3 with no change to its code).
FLOAT32_NOISE_DB = 130.0
STATUS_COLOURS = {"passed": "#c8efc8", "failed": "#f6b8b8", "error": "#f6b8b8", "not implemented": "#e6e6e6",
                  "regressed": "#ffd98a"}


def load_run(path: Path) -> dict:
    if not Path(path).is_file():
        raise ParityError(f"no parity results at {path}: run the parity tests first (make test / pytest tests/parity)")
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ParityError(f"malformed results file {path}: {e}") from None


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
    slim = {"meta": run["meta"], "results": [
        {k: r[k] for k in ("case", "checkpoint", "status")} | {"metrics": _tracked_metrics(r)} for r in run["results"]]}
    with open(path, "a") as f:
        f.write(json.dumps(slim, default=float) + "\n")
    return True


def _tracked_metrics(r: dict) -> dict:
    m = r.get("metrics") or {}
    return {k: m.get(k) for k in TRACKED if m.get(k) is not None}


def _capped(v: float) -> float:
    return min(v, 300.0)  # an infinite SNR (bit-exact) counts as 300 dB


def find_regressions(run: dict, history: List[dict], margin_db: float = 3.0) -> List[dict]:
    """Metrics of `run` worse than the best of `history` (same case, checkpoint, precision) by more
    than the metric's margin, whether or not still inside tolerance. A checkpoint's tolerance may
    set its own SNR margin (`regression_margin_db`, with the measured spread that justifies it)."""
    prec = run["meta"].get("precision", "fp32")
    best: Dict[tuple, float] = {}
    for past in history:
        if past["meta"].get("precision", "fp32") != prec:
            continue
        for r in past["results"]:
            for metric, v in (r.get("metrics") or {}).items():
                key = (r["case"], r["checkpoint"], metric)
                if metric in TRACKED and v is not None:
                    best[key] = max(best.get(key, -math.inf), _capped(v))
    out = []
    reg = registry.load()
    for r in run["results"]:
        tol = reg.tolerance_of(r["checkpoint"], prec)
        snr_margin = tol.regression_margin_db if tol is not None and tol.regression_margin_db is not None else margin_db
        for metric, v in _tracked_metrics(r).items():
            b = best.get((r["case"], r["checkpoint"], metric))
            margin = snr_margin if metric == "snr_db" else TRACKED[metric]
            if metric == "snr_db" and v >= FLOAT32_NOISE_DB:
                continue
            if b is not None and _capped(v) < b - margin:
                out.append({"case": r["case"], "checkpoint": r["checkpoint"], "metric": metric, "value": v, "best": b})
    return out


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
        if path.name in ("report.md",):
            continue
        out.append((path.stem, path.read_text()))
    return out


def write_report(run: dict, history: List[dict], regressions: List[dict], out_dir: Path = OUT_DIR) -> Path:
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
    if regressions:
        md += ["", "## Regressions (worse than the best recorded, beyond the margin)", ""]
        md += [f"- {g['case']} / {g['checkpoint']}: {g['metric']} {_fmt(g['value'])} (best {_fmt(g['best'])})"
               for g in regressions]

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
    if regressions:
        page.append("<h2>Regressions</h2><ul>" + "".join(
            f"<li>{g['case']} / {g['checkpoint']}: {g['metric']} {_fmt(g['value'])} (best recorded {_fmt(g['best'])})</li>"
            for g in regressions) + "</ul>")
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


def cmd_report(args):
    run = load_run(args.results)
    history = load_history(args.history)
    regressions = find_regressions(run, history, margin_db=args.margin_db)
    if not args.no_history:
        append_history(run, args.history)
        history = load_history(args.history)
    path = write_report(run, history, regressions, out_dir=args.out)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    for g in regressions:
        print(f"REGRESSION {g['case']}/{g['checkpoint']}: {g['metric']} {_fmt(g['value'])} (best {_fmt(g['best'])})")
    if regressions and args.fail_on_regression:
        raise SystemExit(1)


def register(sub):
    p = sub.add_parser("report", help="HTML/Markdown parity report of the latest run, with history and regressions")
    p.add_argument("--results", type=Path, default=OUT_DIR / "latest.json")
    p.add_argument("--history", type=Path, default=HISTORY)
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.add_argument("--margin-db", type=float, default=3.0, help="SNR drop below the best recorded that is a regression")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found")
    p.add_argument("--no-history", action="store_true", help="do not append this run to the history")
    p.set_defaults(fn=cmd_report)
