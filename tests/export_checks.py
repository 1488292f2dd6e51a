"""What the reference exports' tests check alike (test_export.py, test_vc.py, test_turbo_parity.py,
test_mtl_parity.py): two exports of a case byte for byte the same, and `chatterbox-parity export` on bad
input failing with one error line and no fixture left behind."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Optional

CLI = [sys.executable, "-m", "parity.cli"]


def export_twice(load_original, export_case, ckpt, case, tmp_path_factory, prefix: str) -> List[Path]:
    """`case` exported twice with one original model (`load_original(ckpt)`, released after), each into a
    fresh folder: the two fixture folders."""
    tts = load_original(ckpt)
    out = [export_case(ckpt, case, out_root=tmp_path_factory.mktemp(f"{prefix}{i}"), tts=tts, log=lambda m: None)
           for i in range(2)]
    del tts
    gc.collect()
    return out


def assert_same_bytes(a: Path, b: Path, files: Iterable[str]) -> None:
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f"{f} differs between two exports"


def assert_one_file_per_stage_and_same_bytes(a: Path, b: Path, model: str) -> None:
    """Two exports of a `model` case: the manifest and one file per registered stage each, byte for byte equal."""
    from parity import registry

    stages = registry.load().models[model]
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(["manifest.json"] + [f"{s}.safetensors" for s in stages])
    assert_same_bytes(a, b, files)


def linked_checkpoint(src: Path, tmp_path: Path, drop: Optional[str] = None, corrupt: Optional[str] = None) -> Path:
    """tmp_path/ckpt: `src`'s files as links, without `drop`, with `corrupt` replaced by a broken safetensors file."""
    d = tmp_path / "ckpt"
    d.mkdir()
    for f in src.iterdir():
        if f.name == drop:
            continue
        if f.name == corrupt:
            (d / f.name).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage" + bytes(64))
        else:
            (d / f.name).symlink_to(f)
    return d


def run_without_warnings(argv: List[str], cwd: Path) -> subprocess.CompletedProcess:
    """`argv` in a subprocess with Python's warnings off (stderr is the command's own), its output captured."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)


def assert_one_error_line_and_no_fixture(r: subprocess.CompletedProcess, expect: str, out: Path) -> None:
    """stderr is one line, `error: ...` naming `expect`, and `out` holds no fixture."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], r.stderr
    assert not out.exists() or not any(out.iterdir()), "a partial fixture folder was left behind"
