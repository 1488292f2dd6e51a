"""Where MLX's free-running T3 tokens first leave the reference's, with both distributions there:

    python -m parity.stages.explain_tokens FIXTURE_DIR CHECKPOINT_DIR [--greedy]

(t3_decode.explain_divergence: replayed draws; with --greedy t3_greedy.explain_divergence).
Exit status 0 when the tokens are identical, 1 otherwise. Not a stage runner (no PROVIDES)."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from parity.checkpoint_dir import CheckpointDir
    from parity.fixtures import Fixture

    from . import t3_decode, t3_greedy

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("fixture_dir")
    ap.add_argument("checkpoint_dir")
    ap.add_argument("--greedy", action="store_true", help="the t3_greedy stage instead")
    args = ap.parse_args(argv)
    fx, ckpt = Fixture.open(args.fixture_dir), CheckpointDir.open(args.checkpoint_dir)
    stage = t3_greedy if args.greedy else t3_decode
    return 0 if stage.explain_divergence(fx, ckpt) is None else 1


if __name__ == "__main__":
    sys.exit(main())
