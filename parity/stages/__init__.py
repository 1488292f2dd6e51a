"""MLX stage runners: what the parity tests compare against the reference fixtures.

Each module here defines
    STAGE = "<stage>"                      # a stage of parity/checkpoints.toml
    PROVIDES = ["<checkpoint>", ...]       # checkpoints it computes
    def run(fx: Fixture, ckpt: CheckpointDir) -> dict[str, np.ndarray]
In isolated mode (the default), `run` feeds every sub-stage with the reference's own inputs taken
from the fixture (and replays the recorded random draws), so an error is localised to one stage.
A checkpoint that the registry declares `implemented = false` is reported as "not implemented" (an
expected failure); one that no runner provides without that declaration fails, and so does any
exception a runner raises, NotImplementedError included (parity/session.py).
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Dict

from .. import registry


@lru_cache(maxsize=None)
def providers() -> Dict[str, object]:
    """checkpoint name -> runner module."""
    reg = registry.load()
    out = {}
    for info in pkgutil.iter_modules(__path__):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if not hasattr(mod, "PROVIDES"):
            continue
        for name in mod.PROVIDES:
            if name not in reg.checkpoints:
                raise ValueError(f"runner {info.name} provides unknown checkpoint '{name}'")
            if reg[name].stage != mod.STAGE:
                raise ValueError(f"runner {info.name}: '{name}' is not of stage {mod.STAGE}")
            if name in out:
                raise ValueError(f"checkpoint '{name}' provided twice ({out[name].__name__}, {info.name})")
            out[name] = mod
    return out
