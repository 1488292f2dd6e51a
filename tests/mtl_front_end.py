"""The multilingual text front end kept offline, as the multilingual tests run it: the hub out of reach (the
stand-in Cangjie file must be the one read, never the real one downloaded) and spacy-pkuseg's model read
from a stand-in $PKUSEG_HOME (reference/mtl_data.py). The full-size tests (test_mtl_checkpoint.py,
test_mtl_generate.py) take the fixtures `ckpt` (checkpoints/synthetic-mtl-s0, built when missing) and
`offline_front_end` from here by importing them."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Dict, Iterator

import pytest


@contextlib.contextmanager
def hub_offline_with_pkuseg(home: Path) -> Iterator[None]:
    """huggingface_hub in offline mode and spacy-pkuseg's model from `home`, for the block."""
    from huggingface_hub import constants

    from reference.mtl_data import pkuseg_home

    with pytest.MonkeyPatch.context() as mp, pkuseg_home(home):
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        yield


def pkuseg_dir(ckpt: Path) -> Path:
    """The synthetic checkpoint's stand-in $PKUSEG_HOME."""
    from reference.mtl_synth_checkpoint import PKUSEG_DIR

    return ckpt / PKUSEG_DIR


def offline_env(ckpt: Path) -> Dict[str, str]:
    """This process's environment with the front end offline, for a command run in a subprocess."""
    return dict(os.environ, PKUSEG_HOME=str(pkuseg_dir(ckpt)), HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def ckpt() -> Path:
    """The synthetic multilingual checkpoint (reference/mtl_synth_checkpoint.py), built when missing."""
    from reference.mtl_synth_checkpoint import ensure_mtl_checkpoint

    return ensure_mtl_checkpoint()


@pytest.fixture(scope="module")
def offline_front_end(ckpt):
    """The hub out of reach, pkuseg's model from the checkpoint's folder, for the module."""
    with hub_offline_with_pkuseg(pkuseg_dir(ckpt)):
        yield
