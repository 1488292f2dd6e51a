"""A Chatterbox checkpoint folder in the hub's layout (real snapshot or synthetic), read offline.

Files: ve.safetensors, t3_cfg.safetensors, s3gen.safetensors, tokenizer.json, conds.pt (optional).
Every error names the file at fault.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

import numpy as np

from .errors import ParityError

WEIGHT_FILES = {"ve": "ve.safetensors", "t3": "t3_cfg.safetensors", "s3gen": "s3gen.safetensors"}
TOKENIZER_FILE = "tokenizer.json"
CONDS_FILE = "conds.pt"
REQUIRED_FILES = tuple(WEIGHT_FILES.values()) + (TOKENIZER_FILE,)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class CheckpointDir:
    path: Path
    _states: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    _hashes: Dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path) -> "CheckpointDir":
        path = Path(path)
        if not path.is_dir():
            raise ParityError(f"checkpoint folder not found: {path}")
        for name in REQUIRED_FILES:
            if not (path / name).is_file():
                raise ParityError(f"checkpoint file missing: {path / name}")
        return cls(path=path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def conds_path(self):
        p = self.path / CONDS_FILE
        return p if p.is_file() else None

    def state(self, component: str) -> Dict[str, np.ndarray]:
        """The component's PyTorch state dict as float32/int numpy arrays ('ve', 't3', 's3gen')."""
        if component not in self._states:
            self._states[component] = read_safetensors(self.path / WEIGHT_FILES[component])
        return self._states[component]

    def file_hashes(self) -> Dict[str, str]:
        if not self._hashes:
            names = list(REQUIRED_FILES) + ([CONDS_FILE] if self.conds_path else [])
            self._hashes = {n: sha256_file(self.path / n) for n in names}
        return self._hashes

    def identity(self) -> str:
        """sha256 over the files' hashes: the checkpoint's identity in fixture manifests."""
        return hashlib.sha256(json.dumps(self.file_hashes(), sort_keys=True).encode()).hexdigest()

    def validate(self) -> None:
        """Open every file once so that a corrupt one fails here, with its name."""
        for comp in WEIGHT_FILES:
            self.state(comp)
        tok = self.path / TOKENIZER_FILE
        try:
            json.loads(tok.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ParityError(f"malformed tokenizer file {tok}: {e}") from None


def read_safetensors(path: Path) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ParityError(f"malformed safetensors file {path}: {e}") from None
    except Exception as e:  # bf16 tensors cannot be read by numpy: go through torch
        try:
            from safetensors.torch import load_file as load_torch

            state = {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in load_torch(str(path)).items()}
        except Exception:
            raise ParityError(f"malformed safetensors file {path}: {e}") from None
    if not state:
        raise ParityError(f"safetensors file holds no tensors: {path}")
    return state
