"""Timing of two implementations run in alternation (torch, mlx, torch, mlx, ...), so that load from
other processes hits both alike; wall time and process CPU time per run, summarised per side."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional


def alternate(runs: Dict[str, Callable[[], object]], repeats: int, before_each: Optional[Callable[[], None]] = None):
    """Runs each of `runs` once per round, `repeats` rounds, in the dict's order. Returns
    (wall seconds per name, CPU seconds per name, the last output per name)."""
    times = {name: [] for name in runs}
    cpu_times = {name: [] for name in runs}
    outs = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            if before_each is not None:
                before_each()
            t0, c0 = time.perf_counter(), time.process_time()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.process_time() - c0)
    return times, cpu_times, outs


def side_summary(wall: list, cpu: list, audio_s: float) -> dict:
    """One side's record: its runs' seconds, min and median, and per second of audio."""
    return {
        "seconds": [round(t, 3) for t in wall],
        "min_s": round(min(wall), 3), "median_s": round(statistics.median(wall), 3),
        "s_per_audio_s_min": round(min(wall) / audio_s, 3),
        "s_per_audio_s_median": round(statistics.median(wall) / audio_s, 3),
        "cpu_seconds": [round(t, 3) for t in cpu],
        "cpu_s_per_audio_s_median": round(statistics.median(cpu) / audio_s, 3),
    }


def ratios(times: dict, cpu_times: dict, num: str = "mlx", den: str = "torch") -> dict:
    """num over den: min and median wall time, median CPU time."""
    med = statistics.median
    return {
        f"{num}_over_{den}_min": round(min(times[num]) / min(times[den]), 3),
        f"{num}_over_{den}_median": round(med(times[num]) / med(times[den]), 3),
        f"{num}_over_{den}_cpu_median": round(med(cpu_times[num]) / med(cpu_times[den]), 3),
    }


def add_common_arguments(ap) -> None:
    """The options every alternating S3Gen benchmark takes: rounds, checkpoint, seed."""
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ckpt", default=None, help="checkpoint folder (default: seeded random weights)")
    ap.add_argument("--seed", type=int, default=0)
