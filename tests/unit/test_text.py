"""punc_norm, drop_invalid_tokens and the English tokenizer against the ORIGINAL functions
(chatterbox.tts.punc_norm, chatterbox.models.s3tokenizer.drop_invalid_tokens,
chatterbox.models.tokenizers.EnTokenizer), exact."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from mlx_impl.tokenizers import EnTokenizer
from mlx_impl.tts import drop_invalid_tokens, punc_norm

TRICKY = [
    "",
    " ",
    "   ",
    "\t\n ",
    "hello",
    "Hello.",
    "hello world",
    "hello...",
    "hello... world",
    "wait… what",
    "…",
    "...",
    "....",
    "a: b",
    "a - b",
    "a-b",
    "a; b",
    "em—dash",
    "en–dash",
    "spaced — em dash",
    "“double curly”",
    "‘single curly’",
    "it’s fine",
    "lower case start",
    "1234",
    "3.14 is pi",
    "ends with comma,",
    "ends with dash -",
    "question?",
    "exclaim!",
    "multiple   spaces\tand\nnewlines",
    " leading space",
    "trailing space   ",
    "a , b",
    "ümlaut start",
    "éclair",
    "ß start",
    "ﬁne ligature",
    "ǆ digraph",
    "ΐ greek",
    "emoji 😀 inside",
    "ends with quote\"",
    "ends with colon:",
    "ends with semicolon;",
    " - ",
    "\u00a0non-breaking space",
    "ideographic\u3000space",
    "zero\u200bwidth",
    "hello there… this case checks “curly quotes” — and a missing final stop",
    "Stereo input: downmix first; then resample...   with  extra   spaces",
    "It’s a longer reference – over ten seconds, so both cuts apply!",
    "the long clip goes through the tokenizer's thirty-second windows - twice?",
    "MiXeD CaSe 42 [SPACE] literal [STOP] tokens [START]",
    "The quick brown fox jumps over the lazy dog. " * 120,
]


def test_table_is_big_enough():
    assert len(TRICKY) >= 30


@pytest.mark.parametrize("text", TRICKY, ids=[f"{i}" for i in range(len(TRICKY))])
def test_punc_norm_matches_original(text):
    from chatterbox.tts import punc_norm as original

    assert punc_norm(text) == original(text)


# ---------------------------------------------------------------- tokenizer

SPECIALS = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[START]": 255, "[PAD]": 256, "[SEP]": 257, "[CLS]": 258,
            "[MASK]": 259}


def checkpoint_tokenizer():
    """tokenizer.json of the checkpoint folder in use ($CHATTERBOX_CKPT or the synthetic default), if any."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    folder = Path(os.environ.get("CHATTERBOX_CKPT", root / "checkpoints" / "synthetic-s0"))
    path = folder / "tokenizer.json"
    return path if path.is_file() else None


@pytest.fixture(scope="module", params=["built", "checkpoint"])
def tokenizer_file(request, tmp_path_factory):
    """A small BPE over characters with the real file's special ids ([STOP]=0, [UNK]=1, [SPACE]=2,
    [START]=255), a Whitespace pre-tokenizer and a few merges; also the checkpoint's file if present."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    if request.param == "checkpoint":
        path = checkpoint_tokenizer()
        if path is None:  # the synthetic checkpoint's file, built the same deterministic way
            from reference.tokenizer_json import write_tokenizer_json

            path = tmp_path_factory.mktemp("ckpt_tok") / "tokenizer.json"
            write_tokenizer_json(path)
        return path

    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-")
    vocab = dict(SPECIALS)
    nxt = 3
    for c in chars:
        vocab[c] = nxt
        nxt += 1
    merges = [("t", "h"), ("th", "e"), ("e", "r"), ("i", "n"), ("in", "g"), ("o", "u"), ("l", "l"), ("he", "ll")]
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = nxt
            nxt += 1
    vocab["he"] = nxt
    assert nxt < 255
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("h", "e")] + merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIALS))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def both(tokenizer_file):
    from chatterbox.models.tokenizers import EnTokenizer as Original

    return Original(str(tokenizer_file)), EnTokenizer(tokenizer_file)


@pytest.mark.parametrize("text", TRICKY, ids=[f"{i}" for i in range(len(TRICKY))])
def test_tokenizer_matches_original(both, text):
    original, ours = both
    for t in (text, punc_norm(text)):
        ref = original.text_to_tokens(t)
        out = ours.text_to_tokens(t)
        assert out.dtype == np.int32 and out.shape == tuple(ref.shape)
        np.testing.assert_array_equal(out, ref.numpy())
        assert ours.encode(t) == original.encode(t)
        ids = ref[0]
        assert ours.decode(ids.numpy()) == original.decode(ids)
        if ids.numel():
            # with the stop token and an unknown id appended
            extra = torch.cat([ids, torch.tensor([1, 0], dtype=ids.dtype)])
            assert ours.decode(extra.numpy()) == original.decode(extra)


def test_tokenizer_special_tokens(both):
    _, ours = both
    if ours.tokenizer.get_vocab_size() > 300:  # the checkpoint's 704-entry file
        vocab = ours.tokenizer.get_vocab()
        assert (vocab["[STOP]"], vocab["[UNK]"], vocab["[SPACE]"], vocab["[START]"]) == (0, 1, 2, 255)
        ids = ours.encode("a b")
        assert ids[1] == 2 and len(ids) == 3 and ours.decode(ids) == "a b"
        return
    a, b = ours.tokenizer.token_to_id("a"), ours.tokenizer.token_to_id("b")
    assert ours.encode("a b") == [a, SPECIALS["[SPACE]"], b]
    assert ours.encode("é") == [1]
    assert ours.decode([255, a, 2, b, 0, 1]) == "[START]a b"


def test_tokenizer_requires_start_and_stop(tmp_path):
    from tokenizers import Tokenizer, models

    path = tmp_path / "bad.json"
    Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(str(path))
    with pytest.raises(AssertionError):
        EnTokenizer(path)


def test_text_stage_runner(tokenizer_file):
    from parity.stages import text as stage

    text = TRICKY[-6]
    fx = types.SimpleNamespace(case={"text": text})
    ckpt = types.SimpleNamespace(file=lambda name: tokenizer_file)
    out = stage.run(fx, ckpt)
    assert out["text.normalized_utf8"].dtype == np.uint8
    assert bytes(out["text.normalized_utf8"]).decode("utf-8") == punc_norm(text)
    assert out["text.tokens"].dtype == np.int32 and out["text.tokens"].shape[0] == 1
    from chatterbox.models.tokenizers import EnTokenizer as Original

    np.testing.assert_array_equal(out["text.tokens"], Original(str(tokenizer_file)).text_to_tokens(punc_norm(text)).numpy())


# ---------------------------------------------------------------- drop_invalid_tokens

DROP_CASES = [
    [1, 2, 3],
    [6561, 1, 2, 6562],
    [1, 6561, 2, 3],
    [1, 2, 6562, 3, 4],
    [6562],
    [6561],
    [],
    [5, 6561, 6562, 7],
    [6562, 6561, 3],
    [6561, 6561, 4],
    [4, 6562, 6562],
]


@pytest.mark.parametrize("case", DROP_CASES + [[c] for c in DROP_CASES if c], ids=lambda c: str(c))
def test_drop_invalid_tokens_matches_original(case):
    from chatterbox.models.s3tokenizer import drop_invalid_tokens as original

    x = torch.tensor(case, dtype=torch.long)
    try:
        ref = original(x).numpy()
    except Exception as e:  # the original rejects more than one SOS/EOS
        with pytest.raises(type(e)):
            drop_invalid_tokens(np.array(case))
        return
    out = drop_invalid_tokens(np.array(case, dtype=np.int64))
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)
