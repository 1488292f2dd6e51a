"""Which checkpoint a command runs on: the one named, else $CHATTERBOX_CKPT, else the synthetic one
(the original modules, seeded; created from the reference stack when missing)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import ROOT
from .checkpoint_dir import CheckpointDir
from .errors import ParityError

DEFAULT_CKPT = ROOT / "checkpoints" / "synthetic-s0"
# the synthetic checkpoint's init recipes (reference/synth_checkpoint.py INIT_RECIPES), the default first
INIT_CHOICES = ("exercised", "default")


def resolve_checkpoint(path, create_synthetic: bool = True) -> CheckpointDir:
    """The checkpoint folder `path`, else $CHATTERBOX_CKPT (an error names the variable), else the
    synthetic one, created when missing and `create_synthetic`."""
    if path is None and os.environ.get("CHATTERBOX_CKPT"):
        env = os.environ["CHATTERBOX_CKPT"]
        try:
            return CheckpointDir.open(env)
        except ParityError as e:
            raise ParityError(f"{e} (set by CHATTERBOX_CKPT)") from None
    if path is None:
        path = DEFAULT_CKPT
        if create_synthetic and not Path(path).exists():
            from reference.synth_checkpoint import make_synthetic_checkpoint

            print(f"creating the synthetic checkpoint {path} (seed 0)", file=sys.stderr)
            make_synthetic_checkpoint(path, seed=0)
    return CheckpointDir.open(path)
