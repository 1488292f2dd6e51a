"""The Turbo synthetic checkpoint's GPT-2-style tokenizer (reference/gpt2_tokenizer.py): the shape
ChatterboxTurboTTS.from_local expects (len 50276, `<|endoftext|>` at 50256, 19 tags at 50257-50275),
loaded by the original's AutoTokenizer call, deterministic."""
from __future__ import annotations

import json

import pytest

from reference import gpt2_tokenizer as g


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("turbo_tok")
    g.write_gpt2_tokenizer(d)
    return d


def test_turbo_tokenizer_files_are_deterministic(tok_dir, tmp_path):
    g.write_gpt2_tokenizer(tmp_path)
    for f in g.FILES:
        assert (tok_dir / f).read_bytes() == (tmp_path / f).read_bytes(), f


def test_turbo_tokenizer_has_the_released_shape(tok_dir):
    vocab = json.loads((tok_dir / "vocab.json").read_text())
    added = json.loads((tok_dir / "added_tokens.json").read_text())
    assert len(vocab) == 50257 and vocab["<|endoftext|>"] == 50256
    assert sorted(vocab.values()) == list(range(50257))
    assert sorted(added.values()) == list(range(50257, 50276)) and "[clear throat]" in added
    assert list(vocab)[:3] == ["!", '"', "#"]  # GPT-2's byte order (bytes_to_unicode)
    merges = (tok_dir / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) > 50


def test_turbo_tokenizer_loads_like_from_local_does(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert len(tok) == 50276  # from_local warns otherwise
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ids = tok("Hello there [laugh], it's a test [clear throat].", return_tensors="np", padding=True,
              truncation=True).input_ids[0]
    added = json.loads((tok_dir / "added_tokens.json").read_text())
    assert added["[laugh]"] in ids and added["[clear throat]"] in ids
    assert ids.max() < 50276 and ids.min() >= 0
    assert tok.decode(ids) == "Hello there [laugh], it's a test [clear throat]."
