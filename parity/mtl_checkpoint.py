"""A Chatterbox Multilingual checkpoint folder in the hub's layout (ResembleAI/chatterbox's multilingual files,
real or synthetic), read offline: what the multilingual cases' fixtures are made with and compared on.

Files: ve.pt, t3_mtl23ls_v2.safetensors, s3gen.pt, grapheme_mtl_merged_expanded_v1.json, and the optional
conds.pt and Cangjie5_TC.json. The folder is $CHATTERBOX_MTL_CKPT, else the synthetic one
(checkpoints/synthetic-mtl-s0, reference/mtl_synth_checkpoint.py), built when missing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import ROOT
from .checkpoint_dir import CheckpointDir
from .errors import ParityError

DEFAULT_MTL_CKPT = ROOT / "checkpoints" / "synthetic-mtl-s0"
MTL_WEIGHT_FILES = {"ve": "ve.pt", "t3": "t3_mtl23ls_v2.safetensors", "s3gen": "s3gen.pt"}
MTL_TOKENIZER_FILE = "grapheme_mtl_merged_expanded_v1.json"
MTL_OPTIONAL_FILES = ("conds.pt", "Cangjie5_TC.json")
PKUSEG_DIR = "pkuseg"  # the synthetic folder's $PKUSEG_HOME (reference/mtl_synth_checkpoint.py)
ENV = "CHATTERBOX_MTL_CKPT"


class MtlCheckpointDir(CheckpointDir):
    """CheckpointDir's interface (path, file_hashes, identity) on the multilingual layout. The weights are
    read by the original (from_local) and by mlx_impl's own loader, not through `state`."""

    @classmethod
    def open(cls, path) -> "MtlCheckpointDir":
        path = Path(path)
        if not path.is_dir():
            raise ParityError(f"multilingual checkpoint folder not found: {path}")
        missing = [n for n in (*MTL_WEIGHT_FILES.values(), MTL_TOKENIZER_FILE) if not (path / n).is_file()]
        if missing:
            raise ParityError(f"not a Chatterbox Multilingual checkpoint folder, missing {', '.join(missing)}: {path}")
        return cls(path=path)

    def state(self, component: str):
        raise NotImplementedError("the multilingual folder's weights are read by from_local / mlx_impl, not here")

    def file_hashes(self):
        from .checkpoint_dir import sha256_file

        if not self._hashes:
            names = [*MTL_WEIGHT_FILES.values(), MTL_TOKENIZER_FILE]
            names += [n for n in MTL_OPTIONAL_FILES if (self.path / n).is_file()]
            self._hashes = {n: sha256_file(self.path / n) for n in names}
        return self._hashes

    def validate(self) -> None:
        """The files are opened by the original's from_local, whose failure names the folder."""

    @property
    def pkuseg_home(self):
        """The folder's $PKUSEG_HOME for spacy-pkuseg's model (the synthetic folder has one), or None."""
        p = self.path / PKUSEG_DIR
        return p if p.is_dir() else None


def is_mtl_dir(path) -> bool:
    return path is not None and (Path(path) / MTL_WEIGHT_FILES["t3"]).is_file()


def resolve_mtl_checkpoint(path=None, create_synthetic: bool = True) -> MtlCheckpointDir:
    """The multilingual folder `path`, else $CHATTERBOX_MTL_CKPT (an error names the variable), else the
    synthetic one, built (seed 0) when missing or out of date and `create_synthetic`."""
    if path is None and os.environ.get(ENV):
        try:
            return MtlCheckpointDir.open(os.environ[ENV])
        except ParityError as e:
            raise ParityError(f"{e} (set by {ENV})") from None
    if path is None:
        path = DEFAULT_MTL_CKPT
        if create_synthetic:
            from reference.mtl_synth_checkpoint import ensure_mtl_checkpoint

            if not (Path(path) / "synthetic.json").is_file():
                print(f"creating the synthetic multilingual checkpoint {path} (seed 0)", file=sys.stderr)
            ensure_mtl_checkpoint(path)
    return MtlCheckpointDir.open(path)
