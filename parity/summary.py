"""The parity summary: a table for the terminal and a JSON record for the report."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

from . import ROOT, registry
from .errors import ParityError
from .fixtures import write_text_atomic

RESULTS_DIR = ROOT / "reports" / "out"


def _measured(res) -> str:
    if res.metrics is None:
        return res.message.splitlines()[0][:60] if res.message else "-"
    return res.metrics.headline(registry.load()[res.checkpoint.rpartition(":")[2]].kind)


def load_run(path: Path) -> dict:
    """A parity run's results (reports/out/latest.json by default)."""
    if not Path(path).is_file():
        raise ParityError(f"no parity results at {path}: run the parity tests first (make test / pytest tests/parity)")
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ParityError(f"malformed results file {path}: {e}") from None


def summary_table(session) -> list:
    rows = [("case", "checkpoint", "status", "measured", "tolerance")]
    order = {c.name: i for i, c in enumerate(registry.load().ordered())}

    def sort_key(kv):
        case, label = kv[0]
        mode, _, name = label.rpartition(":")
        return (case, mode, order[name])

    for (case, name), res in sorted(session.results.items(), key=sort_key):
        rows.append((case, name, res.status, _measured(res), res.tolerance))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    counts = {}
    for res in session.results.values():
        counts[res.status] = counts.get(res.status, 0) + 1
    lines.append("totals: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return lines


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_metadata(session) -> dict:
    import mlx.core as mx

    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "cpu_model": cpu_model()},
        "mlx": mx.__version__, "mlx_device": str(mx.default_device()),
        "precision": session.precision,
        "checkpoint": {"path": str(session.ckpt.path), "identity": session.ckpt.identity()},
        "fixtures": str(session.fx_root),
    }


PLOTTED = ("flow.output_mel", "hift.wav", "t3.logits_raw", "t3.speech_tokens", "t3_greedy.speech_tokens",
           "s3tok.prompt_tokens")


def write_plot_tensors(session, out_dir: Path) -> None:
    """Reference and MLX tensors of the plotted checkpoints, per case, for the report's figures."""
    from safetensors.numpy import save_file
    import numpy as np

    from .stages import providers

    out_dir.mkdir(parents=True, exist_ok=True)
    for case in sorted({c for c, _ in session.results}):
        tensors = {}
        for name in PLOTTED:
            runner = providers().get(name)
            out = session.outputs.get((case, runner.__name__)) if runner else None
            if isinstance(out, dict) and name in out and case in session.fixtures:
                tensors[f"ref/{name}"] = np.ascontiguousarray(session.fixtures[case].tensor(name))
                tensors[f"mlx/{name}"] = np.ascontiguousarray(np.asarray(out[name]))
        if tensors:
            save_file(tensors, str(out_dir / f"{case}.safetensors"))


def write_results(session, path: Path = None) -> Path:
    """Atomically write this run's results (reports/out/latest.json by default)."""
    path = Path(path or RESULTS_DIR / "latest.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"meta": run_metadata(session), "results": [r.as_dict() for r in session.results.values()]}
    write_text_atomic(path, json.dumps(record, indent=1, default=float) + "\n")
    write_plot_tensors(session, path.parent / "tensors")
    return path
