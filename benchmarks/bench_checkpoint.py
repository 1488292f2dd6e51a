"""The checkpoint the benchmarks run on when none is named: the synthetic one built with the modules'
own init (`checkpoint synth --init default`). The default synthetic checkpoint (`--init exercised`)
stops T3 by itself after 70-124 tokens, and a benchmark must decode the number of tokens it asks for;
the two inits cost the same time per token."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_CKPT = ROOT / "checkpoints" / "synthetic-s0-default"


def default_bench_checkpoint() -> Path:
    """checkpoints/synthetic-s0-default, built (seed 0, --init default) when missing."""
    if not (BENCH_CKPT / "synthetic.json").is_file():
        from reference.synth_checkpoint import make_synthetic_checkpoint

        print(f"creating the benchmark checkpoint {BENCH_CKPT} (seed 0, --init default)", file=sys.stderr)
        make_synthetic_checkpoint(BENCH_CKPT, seed=0, init="default")
    return BENCH_CKPT
