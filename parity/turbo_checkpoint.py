"""A Chatterbox Turbo checkpoint folder in the hub's layout (ResembleAI/chatterbox-turbo, real or
synthetic), read offline: what the Turbo cases' fixtures are made with and compared on.

Files: ve.safetensors, t3_turbo_v1.safetensors, s3gen_meanflow.safetensors, the GPT-2 tokenizer
(vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json, added_tokens.json) and the
optional conds.pt. The folder is $CHATTERBOX_TURBO_CKPT, else the synthetic one
(checkpoints/synthetic-turbo-s0, reference/synth_turbo_checkpoint.py), built when missing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import ROOT
from .checkpoint_dir import CheckpointDir, read_safetensors
from .errors import ParityError

DEFAULT_TURBO_CKPT = ROOT / "checkpoints" / "synthetic-turbo-s0"
TURBO_WEIGHT_FILES = {"ve": "ve.safetensors", "t3": "t3_turbo_v1.safetensors", "s3gen": "s3gen_meanflow.safetensors"}
TURBO_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")  # what AutoTokenizer needs at least
TURBO_OPTIONAL_FILES = ("special_tokens_map.json", "added_tokens.json", "conds.pt")
ENV = "CHATTERBOX_TURBO_CKPT"


class TurboCheckpointDir(CheckpointDir):
    """CheckpointDir's interface (path, state, file_hashes, identity, validate) on the Turbo layout.
    `state` is not cached: the Turbo runners hold the loaded MLX models instead (memory)."""

    @classmethod
    def open(cls, path) -> "TurboCheckpointDir":
        path = Path(path)
        if not path.is_dir():
            raise ParityError(f"Turbo checkpoint folder not found: {path}")
        missing = [n for n in (*TURBO_WEIGHT_FILES.values(), *TURBO_TOKENIZER_FILES) if not (path / n).is_file()]
        if missing:
            english = " (it holds the English Chatterbox's t3_cfg.safetensors)" if (path / "t3_cfg.safetensors").is_file() else ""
            raise ParityError(f"not a Chatterbox Turbo checkpoint folder, missing {', '.join(missing)}: {path}{english}")
        return cls(path=path)

    def state(self, component: str):
        return read_safetensors(self.path / TURBO_WEIGHT_FILES[component])

    def file_hashes(self):
        from .checkpoint_dir import sha256_file

        if not self._hashes:
            names = [*TURBO_WEIGHT_FILES.values(), *TURBO_TOKENIZER_FILES]
            names += [n for n in TURBO_OPTIONAL_FILES if (self.path / n).is_file()]
            self._hashes = {n: sha256_file(self.path / n) for n in names}
        return self._hashes

    def validate(self) -> None:
        """The weight files' safetensors headers and the tokenizer files, as the MLX loader checks them
        (mlx_impl.tts_turbo.check_turbo_dir): a corrupt one fails here, with its name."""
        from mlx_impl.load import ModelLoadError
        from mlx_impl.tts_turbo import check_turbo_dir

        try:
            check_turbo_dir(self.path)
        except ModelLoadError as e:
            raise ParityError(str(e)) from None


def is_turbo_dir(path) -> bool:
    return path is not None and (Path(path) / TURBO_WEIGHT_FILES["t3"]).is_file()


def resolve_turbo_checkpoint(path=None, create_synthetic: bool = True) -> TurboCheckpointDir:
    """The Turbo folder `path`, else $CHATTERBOX_TURBO_CKPT (an error names the variable), else the
    synthetic one, built (seed 0) when missing and `create_synthetic`."""
    if path is None and os.environ.get(ENV):
        try:
            return TurboCheckpointDir.open(os.environ[ENV])
        except ParityError as e:
            raise ParityError(f"{e} (set by {ENV})") from None
    if path is None:
        path = DEFAULT_TURBO_CKPT
        if create_synthetic and not (Path(path) / "synthetic.json").is_file():
            from reference.synth_turbo_checkpoint import make_synthetic_turbo_checkpoint

            print(f"creating the synthetic Turbo checkpoint {path} (seed 0)", file=sys.stderr)
            make_synthetic_turbo_checkpoint(path, seed=0)
    return TurboCheckpointDir.open(path)
