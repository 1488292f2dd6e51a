"""Renders the committed GPU benchmark results (reports/bench/*.json, copied back from the `device`
machine) as Markdown: reports/out/bench_gpu_steps.md (the report includes it) and the tables of
docs/BENCH_GPU.md between its markers. CI has no GPU; these files are the record. Usage:
    python benchmarks/gpu_summary.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "reports" / "bench"
DOC = ROOT / "docs" / "BENCH_GPU.md"
BEGIN, END = "<!-- tables: benchmarks/gpu_summary.py -->", "<!-- /tables -->"


def gpu_of(d: dict, path: Path) -> str:
    """The GPU a result was measured on: recorded since session 3; the earlier files are the H100's."""
    return d.get("gpu") or ("H200" if "h200" in path.stem else "H100")


def step_rows():
    rows = []
    for path in sorted(BENCH.glob("bench_t3_steps_gpu*.json")):
        d = json.loads(path.read_text())
        for r in d["results"]:
            rounds = "/".join(f"{t:.0f}" for t in r.get("rounds_tokens_per_s", []))
            rows.append("| {} | {} | {} | {} | {} | {:.1f} | {} | {} | {:.2f} | {:.1f} | {:.1f} |".format(
                path.stem.replace("bench_t3_steps_gpu", "").strip("_") or "-", gpu_of(d, path), d["time"][:16],
                d.get("max_ops_per_buffer", "?"), r["variant"], r["tokens_per_s"], rounds or "-", r.get("kernels", "-"),
                r.get("kernel_ms", float("nan")), r["host_queue_ms"], r["step_wall_ms"]))
    head = ["| run | GPU | time | kernels per graph | variant | T3 tokens/s (median) | rounds | kernels per step | kernel ms | host ms to queue | step ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    return head + rows


def pipeline_tables():
    out = []
    for path in sorted(BENCH.glob("bench_gpu*.json")):
        out += [f"#### {path.name}", "", *pipeline_table(json.loads(path.read_text())), ""]
    return out


def pipeline_table(d: dict):
    sides = [s for s in ("original", "mlx", "expert") if s in d]
    names = {"original": "original", "mlx": "MLX", "expert": "PyTorch expert"}
    out = [f"{d['device']} ({d['time']}); case {d['case']}; {d['t3_tokens']} T3 steps, CFG; medians of {d['rounds']} alternating "
           f"runs; identical tokens original/MLX: {d['same_tokens']}", "",
           "| metric | " + " | ".join(names[s] for s in sides) + " | MLX / original |", "|---|" + "---|" * (len(sides) + 1)]
    for k, label in (("t3_tokens_per_s", "T3 tokens/s"), ("s3gen_s_per_audio_s", "S3Gen s per audio s"),
                     ("pipeline_rtf", "pipeline real-time factor"), ("gpu_peak_mb", "peak GPU MB")):
        out.append(f"| {label} | " + " | ".join(f"{d[s][k]:.3f}" for s in sides)
                   + f" | {d['mlx'][k] / d['original'][k]:.2f} |")
    return out


def main():
    tables = ["### Whole pipeline (benchmarks/bench_pipeline.py --device gpu --expert)", "", *pipeline_tables(),
              "### T3 decode variants (benchmarks/bench_t3_steps.py)", "", *step_rows()]
    md = "\n".join(["## GPU benchmarks (H100 and H200, from reports/bench/)", "", *tables]) + "\n"
    out = ROOT / "reports" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu_steps.md").write_text(md)
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"{DOC}: markers {BEGIN} ... {END} missing")
    head, rest = doc.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + "\n" + "\n".join(tables) + "\n" + END + rest.split(END, 1)[1])
    print(md)


if __name__ == "__main__":
    main()
