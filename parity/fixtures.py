"""Fixture folders: one per case, `manifest.json` plus one safetensors file per stage.

The safetensors files hold plain tensors (no metadata needed), loadable by numpy, MLX and MLX
Swift's `loadArrays`. Folders are written atomically: built in a temporary sibling, then renamed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from . import registry
from .errors import ParityError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def tensor_sha256(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(str(a.dtype).encode() + str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def tensor_stats(a: np.ndarray) -> dict:
    f = a.astype(np.float64)
    finite = f[np.isfinite(f)]
    if finite.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None, "n_nonfinite": int(f.size)}
    return {
        "min": float(finite.min()), "max": float(finite.max()),
        "mean": float(finite.mean()), "std": float(finite.std()),
        "n_nonfinite": int(f.size - finite.size),
    }


@dataclass
class Fixture:
    """A written fixture folder, read lazily."""

    root: Path
    manifest: dict
    _files: Dict[str, dict] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, root) -> "Fixture":
        root = Path(root)
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise ParityError(f"fixture manifest missing: {mpath}")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise ParityError(f"malformed fixture manifest {mpath}: {e}") from None
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise ParityError(f"{mpath}: schema_version {manifest.get('schema_version')} != {SCHEMA_VERSION}")
        return cls(root=root, manifest=manifest)

    @property
    def case(self) -> dict:
        return self.manifest["case"]

    @property
    def params(self) -> dict:
        return self.manifest["case"]["params"]

    @property
    def name(self) -> str:
        return self.manifest["case"]["name"]

    def has(self, name: str) -> bool:
        return name in self.manifest["tensors"]

    def tensor(self, name: str) -> np.ndarray:
        from safetensors.numpy import load_file

        try:
            entry = self.manifest["tensors"][name]
        except KeyError:
            raise ParityError(f"fixture {self.root} has no tensor '{name}'") from None
        fname = entry["file"]
        if fname not in self._files:
            self._files[fname] = load_file(str(self.root / fname))
        return self._files[fname][name]

    def audio_path(self) -> Path:
        from . import ROOT

        return ROOT / self.case["audio"]


class RenamedFixture:
    """A fixture read under another model's checkpoint names: `rename(name)` is the name stored in
    `fx` (e.g. "turbo." + name); everything else (case, params, manifest) as `fx` has it."""

    def __init__(self, fx, rename):
        self.fx, self.rename = fx, rename

    def __getattr__(self, name):
        return getattr(self.fx, name)

    def tensor(self, name: str) -> np.ndarray:
        return self.fx.tensor(self.rename(name))

    def has(self, name: str) -> bool:
        return self.fx.has(self.rename(name))


class FixtureWriter:
    """Collects tensors of one case, then writes the folder atomically."""

    def __init__(self):
        self.tensors: Dict[str, np.ndarray] = {}

    def add(self, name: str, value) -> None:
        reg = registry.load()
        if name not in reg.checkpoints:
            raise KeyError(f"'{name}' is not a registered checkpoint (parity/checkpoints.toml)")
        if name in self.tensors:
            raise KeyError(f"checkpoint '{name}' recorded twice")
        a = _to_numpy(value)
        self.tensors[name] = a

    def write(self, out_dir: Path, meta: dict) -> Path:
        from safetensors.numpy import save_file

        reg = registry.load()
        out_dir = Path(out_dir)
        with staged_dir(out_dir) as tmp:
            entries = {}
            by_stage: Dict[str, Dict[str, np.ndarray]] = {}
            for name, a in self.tensors.items():
                by_stage.setdefault(reg[name].stage, {})[name] = a
            for stage, tensors in sorted(by_stage.items()):
                fname = f"{stage}.safetensors"
                save_file({k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())}, str(tmp / fname))
                (tmp / fname).chmod(0o644)
                for name, a in tensors.items():
                    entries[name] = {
                        "stage": stage, "file": fname, "shape": list(a.shape), "dtype": str(a.dtype),
                        "sha256": tensor_sha256(a), **tensor_stats(a),
                        "random": reg[name].random, "source": reg[name].source,
                    }
            manifest = {"schema_version": SCHEMA_VERSION, **meta,
                        "tensors": {k: entries[k] for k in sorted(entries, key=_registry_order)}}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
        return out_dir


def _registry_order(name: str):
    reg = registry.load()
    names = [c.name for c in reg.ordered()]
    return names.index(name)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: readers see the
    old file or the new one, never half of it."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def staged_dir(out_dir: Path):
    """A temporary folder beside `out_dir` to write a folder in: it replaces `out_dir` when the block
    ends, and is removed when the block fails (nothing half-written)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap `tmp` into place as `final` (rename; the old folder is removed only after)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old.{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (reference/ writes them), through its own methods
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() == 2:  # bfloat16 / float16: numpy reads float32
            value = value.float()
        value = value.contiguous().numpy()
    a = np.asarray(value)
    if a.dtype == np.int64:
        a = a.astype(np.int32)
    return np.ascontiguousarray(a).copy()


def default_fixture_root() -> Path:
    from . import ROOT

    return Path(os.environ.get("CHATTERBOX_PARITY_FIXTURES", ROOT / "fixtures"))


def fixture_dir(root: Optional[Path], case: str) -> Path:
    return Path(root or default_fixture_root()) / case


def diff_fixtures(old: Fixture, new: Fixture) -> list:
    """What changed between two fixtures of a case: manifest fields, and each tensor that differs
    (shape, or SNR / max abs of the new against the old)."""
    from .metrics import compare

    lines = []
    for key in ("export_version", "checkpoint", "versions", "case"):
        if old.manifest.get(key) != new.manifest.get(key):
            lines.append(f"manifest '{key}' changed")
    ot, nt = old.manifest["tensors"], new.manifest["tensors"]
    for name in sorted(set(ot) - set(nt)):
        lines.append(f"removed {name}")
    for name in sorted(set(nt) - set(ot)):
        lines.append(f"added {name} {nt[name]['shape']}")
    reg = registry.load()
    for name in [n for n in nt if n in ot]:
        if ot[name]["sha256"] == nt[name]["sha256"]:
            continue
        kind = reg[name].kind if name in reg.checkpoints else "float"
        m = compare(old.tensor(name), new.tensor(name), kind)
        lines.append(f"changed {name}: {m.headline(kind)}")
    unchanged = sum(1 for n in nt if n in ot and ot[n]["sha256"] == nt[n]["sha256"])
    lines.append(f"{unchanged} of {len(nt)} tensors bit-identical")
    return lines
