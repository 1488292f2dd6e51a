"""Checkpoint resolution: an error from $CHATTERBOX_CKPT names the variable."""
import pytest

from parity.errors import ParityError
from parity.synthetic import resolve_checkpoint


def test_a_bad_checkpoint_from_the_environment_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATTERBOX_CKPT", str(tmp_path / "nowhere"))
    with pytest.raises(ParityError, match=r"not found: .*nowhere \(set by CHATTERBOX_CKPT\)"):
        resolve_checkpoint(None)


def test_an_explicit_path_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATTERBOX_CKPT", str(tmp_path / "env"))
    with pytest.raises(ParityError, match=r"not found: .*explicit$"):
        resolve_checkpoint(tmp_path / "explicit")
