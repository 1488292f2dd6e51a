"""Regressions of a parity run: against the baseline of its machine and checkpoint, else its history.

A regression is any move outside a checkpoint's measured run-to-run spread, even inside tolerance.
The spread is measured by repeat runs on one machine with one checkpoint (`chatterbox-parity
baseline` records them in reports/baseline.json); a run is compared with the baseline of the same
machine key, checkpoint identity and precision:
  metric        an SNR, cosine or token agreement below the baseline's lowest value by more than its
                spread (max - min over the repeat runs; 0 where the runs were bit-identical)
  bit-exactness an SNR that was infinite (bit-identical to the reference) in every baseline run and
                is finite now, at any level
  new error     "failed" or "error" where the baseline passed
  new expected failure  "not implemented" where the baseline passed
  shape mismatch  a shape that differs from the reference where the baseline's matched
Without a baseline for the run's machine and checkpoint, the run is compared with the history of the
same machine and checkpoint: the status checks against the latest such run, metrics against the best
by a margin (3 dB, or the checkpoint's `regression_margin_db`, which states the spread between
machines and code versions that justifies it).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import Dict, List, Optional

from . import ROOT, registry
from .errors import ParityError
from .fixtures import write_text_atomic

BASELINE = ROOT / "reports" / "baseline.json"
# tracked metric (higher is better) -> history margin (the SNR margin is the report's --margin-db)
TRACKED = {"snr_db": 3.0, "cosine": 1e-6, "exact": 0.0}
# History mode only: an SNR at or above this is float32 rounding (one rounding of float32 is about
# -138 dB); a drop that stays above it is a change of summation order between machines or versions.
# Against a baseline every move beyond the measured spread counts.
FLOAT32_NOISE_DB = 130.0
PASSED = "passed"
EXPECTED_FAILURES = ("not implemented",)
FAILURES = ("failed", "error")


def machine_key(meta: dict) -> str:
    """What makes two runs comparable bit for bit: CPU model and count, platform, MLX and its device."""
    m = meta.get("machine", {})
    ident = {k: m.get(k) for k in ("cpu_model", "processor", "cpus", "platform")}
    ident.update(mlx=meta.get("mlx"), mlx_device=meta.get("mlx_device"))
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def run_key(meta: dict) -> tuple:
    return machine_key(meta), meta.get("checkpoint", {}).get("identity"), meta.get("precision", "fp32")


def slim_result(r: dict) -> dict:
    """What the history and the baseline keep of a result."""
    m = r.get("metrics") or {}
    out = {k: r[k] for k in ("case", "checkpoint", "status")}
    out["metrics"] = {k: m.get(k) for k in TRACKED if m.get(k) is not None}
    out["shape_mismatch"] = bool(m.get("length_mismatch"))
    return out


def _capped(v: float) -> float:
    return min(v, 300.0)  # an infinite SNR (bit-exact) counts as 300 dB


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


# ----------------------------------------------------------------------------- baseline file
def load_baseline(path: Path = BASELINE) -> dict:
    if not Path(path).is_file():
        return {"schema": 1, "entries": []}
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ParityError(f"malformed baseline file {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ParityError(f"malformed baseline file {path}: expected {{'schema': 1, 'entries': [...]}}")
    return data


def baseline_for(meta: dict, baseline: dict) -> Optional[dict]:
    key = run_key(meta)
    for e in baseline["entries"]:
        if (e["machine_key"], e["checkpoint_identity"], e["precision"]) == key:
            return e
    return None


def build_baseline_entry(runs: List[dict]) -> dict:
    """One baseline entry from repeat runs (history records) of one machine, checkpoint and precision:
    per result, the status and shape of the runs (which must agree) and every tracked value."""
    if not runs:
        raise ParityError("no runs to make a baseline from")
    keys = {run_key(r["meta"]) for r in runs}
    if len(keys) != 1:
        raise ParityError("the runs of a baseline must share machine, checkpoint and precision")
    results: Dict[str, dict] = {}
    for run in runs:
        for r in run["results"]:
            s = slim_result(r) if "shape_mismatch" not in r else r
            label = f"{s['case']}|{s['checkpoint']}"
            e = results.setdefault(label, {"status": s["status"], "shape_mismatch": s.get("shape_mismatch", False),
                                           "values": {}, "runs": 0})
            e["runs"] += 1
            if s["status"] != e["status"]:
                e["status"] = "unstable"  # statuses that differ between repeat runs: recorded, never passed
            for metric, v in s["metrics"].items():
                e["values"].setdefault(metric, []).append(v)
    meta = runs[-1]["meta"]
    mkey, ident, prec = run_key(meta)
    return {"machine_key": mkey, "machine": meta.get("machine", {}), "mlx": meta.get("mlx"),
            "mlx_device": meta.get("mlx_device"), "checkpoint_identity": ident, "precision": prec,
            "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "runs": [{"time": r["meta"].get("time"), "git_commit": r["meta"].get("git_commit")} for r in runs],
            "results": results}


def record_baseline(runs: List[dict], path: Path = BASELINE) -> dict:
    """Writes (atomically) the baseline entry of `runs`, replacing the one of the same key."""
    entry = build_baseline_entry(runs)
    data = load_baseline(path)
    key = (entry["machine_key"], entry["checkpoint_identity"], entry["precision"])
    data["entries"] = [e for e in data["entries"]
                       if (e["machine_key"], e["checkpoint_identity"], e["precision"]) != key] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1, default=float) + "\n")
    return entry


def spread_table(entry: dict) -> List[dict]:
    """Per result of a baseline entry, the spread (max - min) of each metric over the repeat runs."""
    out = []
    for label, e in sorted(entry["results"].items()):
        case, checkpoint = label.split("|", 1)
        for metric, vals in e["values"].items():
            finite = [v for v in vals if not math.isinf(v)]
            spread = (max(finite) - min(finite)) if len(finite) == len(vals) else (0.0 if not finite else math.inf)
            out.append({"case": case, "checkpoint": checkpoint, "metric": metric, "min": min(vals), "max": max(vals),
                        "spread": spread, "runs": len(vals)})
    return out


# ----------------------------------------------------------------------------- comparison
def _flag(kind: str, r: dict, metric=None, value=None, best=None, detail: str = "") -> dict:
    return {"kind": kind, "case": r["case"], "checkpoint": r["checkpoint"], "metric": metric, "value": value,
            "best": best, "detail": detail}


def _status_flags(r: dict, was_status: str, was_shape_mismatch: bool, against: str) -> List[dict]:
    out = []
    shape_mismatch = bool((r.get("metrics") or {}).get("length_mismatch"))
    if shape_mismatch and not was_shape_mismatch:
        out.append(_flag("shape mismatch", r, detail=f"the shape differs from the reference (matched in {against})"))
    if was_status == PASSED and r["status"] in FAILURES:
        out.append(_flag("new error", r, detail=f"{r['status']} (passed in {against}): "
                                                f"{(r.get('message') or '').splitlines()[0][:160] if r.get('message') else ''}"))
    if was_status == PASSED and r["status"] in EXPECTED_FAILURES:
        out.append(_flag("new expected failure", r, detail=f"{r['status']} (passed in {against})"))
    return out


def against_baseline(run: dict, entry: dict) -> List[dict]:
    out = []
    for r in run["results"]:
        b = entry["results"].get(f"{r['case']}|{r['checkpoint']}")
        if b is None:
            continue  # a checkpoint the baseline did not run: nothing to compare
        out += _status_flags(r, b["status"], b["shape_mismatch"], "the baseline")
        for metric, v in slim_result(r)["metrics"].items():
            vals = b["values"].get(metric)
            if not vals:
                continue
            if metric == "snr_db" and all(math.isinf(x) and x > 0 for x in vals) and not math.isinf(v):
                out.append(_flag("bit-exactness", r, metric, v, math.inf,
                                 "bit-identical to the reference in every baseline run, not now"))
                continue
            lo, hi = _capped(min(vals)), _capped(max(vals))
            if _capped(v) < lo - (hi - lo):
                out.append(_flag("metric", r, metric, v, max(vals),
                                 f"below the baseline's {_fmt(min(vals))}..{_fmt(max(vals))} "
                                 f"(spread {_fmt(hi - lo)} over {len(vals)} runs)"))
    return out


def against_history(run: dict, history: List[dict], margin_db: float = 3.0) -> List[dict]:
    key = run_key(run["meta"])
    same = [h for h in history if run_key(h["meta"]) == key]
    best: Dict[tuple, float] = {}
    for past in same:
        for r in past["results"]:
            for metric, v in (r.get("metrics") or {}).items():
                if metric in TRACKED and v is not None:
                    k = (r["case"], r["checkpoint"], metric)
                    best[k] = max(best.get(k, -math.inf), _capped(v))
    last = {(r["case"], r["checkpoint"]): r for r in same[-1]["results"]} if same else {}
    reg = registry.load()
    out = []
    for r in run["results"]:
        prev = last.get((r["case"], r["checkpoint"]))
        if prev is not None:
            out += _status_flags(r, prev["status"], prev.get("shape_mismatch", False), "the last run")
        tol = reg.tolerance_of(r["checkpoint"], key[2])
        snr_margin = tol.regression_margin_db if tol is not None and tol.regression_margin_db is not None else margin_db
        for metric, v in slim_result(r)["metrics"].items():
            b = best.get((r["case"], r["checkpoint"], metric))
            if b is None:
                continue
            if metric == "snr_db" and b >= 300.0 and not math.isinf(v):
                out.append(_flag("bit-exactness", r, metric, v, math.inf, "bit-identical in an earlier run, not now"))
                continue
            if metric == "snr_db" and v >= FLOAT32_NOISE_DB:
                continue
            margin = snr_margin if metric == "snr_db" else TRACKED[metric]
            if _capped(v) < b - margin:
                out.append(_flag("metric", r, metric, v, b, f"below the best recorded by more than {_fmt(margin)}"))
    return out


def find_regressions(run: dict, history: List[dict], baseline: Optional[dict] = None,
                     margin_db: float = 3.0) -> List[dict]:
    """Every regression of `run` (see the module's docstring): against its baseline entry when
    `baseline` has one for the run's key, else against the history."""
    entry = baseline_for(run["meta"], baseline) if baseline else None
    if entry is not None:
        return against_baseline(run, entry)
    return against_history(run, history, margin_db)


def describe(g: dict) -> str:
    what = f"{g['metric']} {_fmt(g['value'])}" if g["metric"] else ""
    return f"{g['kind']}: {g['case']} / {g['checkpoint']}" + (f": {what}" if what else "") + \
        (f" ({g['detail']})" if g["detail"] else "")
