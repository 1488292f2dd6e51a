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
    except Exception as e:  # numpy has no bfloat16: read the file's bytes here, bfloat16 widened to float32
        try:
            state = _read_widening_bfloat16(path)
        except Exception:
            raise ParityError(f"malformed safetensors file {path}: {e}") from None
    if not state:
        raise ParityError(f"safetensors file holds no tensors: {path}")
    # where a package has registered a numpy bfloat16 (ml_dtypes), load_file returns it: widen it too
    return {k: v.astype(np.float32) if v.dtype.name == "bfloat16" else v for k, v in state.items()}


_NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                 "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _read_widening_bfloat16(path: Path) -> Dict[str, np.ndarray]:
    """A safetensors file (8-byte header length, JSON header, data) as numpy arrays; a bfloat16
    tensor becomes the float32 with the same upper 16 bits (exact)."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + n])
    body = memoryview(data)[8 + n:]
    state = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        if t["dtype"] == "BF16":
            a = (np.frombuffer(body[begin:end], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(body[begin:end], dtype=np.dtype(_NUMPY_DTYPES[t["dtype"]]).newbyteorder("<"))
        state[name] = a.reshape(t["shape"]).copy()
    return state
