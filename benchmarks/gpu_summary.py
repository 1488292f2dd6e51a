"""Renders the committed GPU benchmark records (reports/bench/, copied back from the `device`
machine; one per benchmark and GPU kind) as Markdown: reports/out/bench_gpu_steps.md (the report
includes it) and the tables of docs/BENCH_GPU.md between its markers. CI has no GPU; these files
are the record. Usage:
    python benchmarks/gpu_summary.py

Records read (stable names, the latest run of each benchmark on each GPU kind replaces the file):
    bench_pipeline_gpu_<gpu>.json      benchmarks/bench_pipeline.py --device gpu --expert
    bench_t3_steps_gpu_<gpu>.json      benchmarks/bench_t3_steps.py --device gpu
    bench_t3_ops_sweep_gpu_<gpu>.json  MLX_MAX_OPS_PER_BUFFER on the T3 steps
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "reports" / "bench"
DOC = ROOT / "docs" / "BENCH_GPU.md"
BEGIN, END = "<!-- tables: benchmarks/gpu_summary.py -->", "<!-- /tables -->"


def gpu_of(d: dict, path: Path) -> str:
    """The GPU a record was measured on: its `gpu` field, else the GPU kind in its file name."""
    if d.get("gpu"):
        return d["gpu"].removeprefix("NVIDIA ")
    return path.stem.rsplit("_gpu_", 1)[-1].upper() if "_gpu_" in path.stem else "?"


def step_rows():
    rows = []
    for path in sorted(BENCH.glob("bench_t3_steps_gpu_*.json")):
        d = json.loads(path.read_text())
        for r in d["results"]:
            rounds = "/".join(f"{t:.0f}" for t in r.get("rounds_tokens_per_s", []))
            rows.append("| {} | {} | {} | {} | {:.1f} | {} | {} | {:.2f} | {:.1f} | {:.1f} |".format(
                gpu_of(d, path), d["time"][:16], d.get("max_ops_per_buffer", "?"), r["variant"], r["tokens_per_s"],
                rounds or "-", r.get("kernels", "-"), r.get("kernel_ms", float("nan")), r["host_queue_ms"],
                r["step_wall_ms"]))
    head = ["| GPU | time | kernels per graph | variant | T3 tokens/s (median) | rounds | kernels per step | kernel ms | host ms to queue | step ms |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    return head + rows


def sweep_rows():
    out = []
    for path in sorted(BENCH.glob("bench_t3_ops_sweep_gpu_*.json")):
        d = json.loads(path.read_text())
        out += [f"{gpu_of(d, path)} ({d['time'][:16]}), `{path.name}`: one process per setting, 200 tokens, 3 rounds; "
                "then settings alternating, several processes each", "",
                "| MLX_MAX_OPS_PER_BUFFER | step | T3 tokens/s (median) | rounds | kernels per step | kernel ms | host ms to queue |",
                "|---|---|---|---|---|---|---|"]
        for ops in sorted(d.get("sweep", {}), key=int):
            for step, r in d["sweep"][ops].items():
                out.append("| {} | {} | {:.1f} | {} | {} | {:.2f} | {:.1f} |".format(
                    ops, step, r["tokens_per_s"], "/".join(f"{t:.0f}" for t in r["rounds_tokens_per_s"]),
                    r["kernels"], r["kernel_ms"], r["host_queue_ms"]))
        by_ops: dict = {}
        for r in d.get("alternating", []):
            by_ops.setdefault(r["max_ops_per_buffer"], []).append(r["tokens_per_s"])
        for ops in sorted(by_ops, key=int):
            v = by_ops[ops]
            out.append("| {} | graph, alternating ({} processes) | {:.1f} | {} | - | - | - |".format(
                ops, len(v), statistics.median(v), "/".join(f"{t:.0f}" for t in v)))
        out.append("")
    return out


def pipeline_tables():
    out = []
    for path in sorted(BENCH.glob("bench_pipeline_gpu_*.json")):
        out += [f"#### {path.name}", "", *pipeline_table(json.loads(path.read_text())), ""]
    return out


def pipeline_sides(d: dict) -> list:
    """The record's sides in order: original, MLX (then MLX in other dtypes), experts."""
    keys = [k for k in d if isinstance(d[k], dict) and "runs" in d[k] and k.partition("_")[0] in ("original", "mlx", "expert")]
    rank = lambda k: ("original", "mlx", "expert").index(k.partition("_")[0])  # noqa: E731
    return sorted(keys, key=lambda k: (rank(k), k != k.partition("_")[0], k))


def pipeline_table(d: dict):
    sides = pipeline_sides(d)
    names = {"original": "original", "mlx": "MLX", "expert": "PyTorch expert"}
    dtypes = d.get("dtypes", {})
    name = lambda s: names[s.partition("_")[0]] + (f" {dtypes[s]}" if s in dtypes else "")  # noqa: E731
    differ = "; ".join(f"{name(s)} tokens from the original's at step {d[s]['tokens_differ_from']}"
                       for s in sides if d[s].get("tokens_differ_from") is not None)
    out = [f"{d['device']} ({d['time']}); case {d['case']}; {d['t3_tokens']} T3 steps, CFG; medians of {d['rounds']} alternating "
           f"runs; identical tokens original/MLX: {d['same_tokens']}" + (f" (differ: {differ})" if differ else ""), "",
           "| metric | " + " | ".join(name(s) for s in sides) + " | MLX / original |", "|---|" + "---|" * (len(sides) + 1)]
    for k, label in (("t3_tokens_per_s", "T3 tokens/s"), ("s3gen_s_per_audio_s", "S3Gen s per audio s"),
                     ("pipeline_rtf", "pipeline real-time factor"), ("gpu_peak_mb", "peak GPU MB")):
        out.append(f"| {label} | " + " | ".join(f"{d[s][k]:.3f}" for s in sides)
                   + f" | {d['mlx'][k] / d['original'][k]:.2f} |")
        if k == "t3_tokens_per_s" and all("t3_tokens_per_s_by_round" in d[s] for s in sides):
            out.append("| T3 tokens/s, rounds | " + " | ".join(
                "/".join(f"{v:.0f}" for v in d[s]["t3_tokens_per_s_by_round"]) for s in sides) + " | |")
    return out


def main():
    tables = ["### Whole pipeline (benchmarks/bench_pipeline.py --device gpu --expert)", "", *pipeline_tables(),
              "### T3 decode steps (benchmarks/bench_t3_steps.py)", "", *step_rows(), ""]
    sweep = sweep_rows()
    if sweep:
        tables += ["### Operations per CUDA graph (MLX_MAX_OPS_PER_BUFFER)", "", *sweep]
    while tables and tables[-1] == "":
        tables.pop()
    md = "\n".join(["## GPU benchmarks (from reports/bench/)", "", *tables]) + "\n"
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
