"""A tokenizer.json of the same kind as the released Chatterbox English one.

The released file is a `tokenizers` BPE model over characters with 704 entries, special tokens
[STOP]=0, [UNK]=1, [SPACE]=2 and [START]=255, and [PAD] [SEP] [CLS] [MASK] at the end. This builds
one like it, deterministically: characters first, then BPE merges learnt by pair counting on a
fixed English corpus until the vocabulary is full.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

VOCAB_SIZE = 704
START_ID = 255
LEADING_SPECIALS = ["[STOP]", "[UNK]", "[SPACE]"]
TRAILING_SPECIALS = ["[PAD]", "[SEP]", "[CLS]", "[MASK]"]
CHARS = list("!'(),-.:;?\"") + list("0123456789") + [chr(c) for c in range(ord("A"), ord("Z") + 1)] \
    + [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("àâçèéêëîïôûùüÿñæœ&$%/+=@#*")

CORPUS = """
the quick brown fox jumps over the lazy dog while the sun sets slowly behind the hills
please call stella and ask her to bring these things with her from the store
six spoons of fresh snow peas five thick slabs of blue cheese and maybe a snack for her brother
she sells sea shells by the sea shore and the shells she sells are surely seashells
there was a time when every morning started with a cup of tea and the news on the radio
speech synthesis turns written text into sound and a good voice sounds natural and clear
the weather was mild today and the trains were late again as they usually are on wednesday
we would like to thank everyone who helped with this project during the last three months
reading and writing are the foundations of learning and they open the doors to other worlds
in the beginning the model knows nothing but after training it can speak in many voices
what time is it now and where are we going tonight after the concert in the old theatre
thousands of people gathered in the square to celebrate the end of a long and cold winter
""".split()


def pair_counts(words: Counter, splits: Dict[str, List[str]]) -> Counter:
    """How often each adjacent pair of symbols occurs over the corpus's words."""
    pairs = Counter()
    for w, n in words.items():
        s = splits[w]
        for a, b in zip(s, s[1:]):
            pairs[(a, b)] += n
    return pairs


def apply_merge(splits: Dict[str, List[str]], pair: Tuple[str, str]) -> None:
    """Joins each adjacent occurrence of `pair` in every word's symbols, left to right."""
    for w, s in splits.items():
        out, i = [], 0
        while i < len(s):
            if i + 1 < len(s) and (s[i], s[i + 1]) == pair:
                out.append(s[i] + s[i + 1])
                i += 2
            else:
                out.append(s[i])
                i += 1
        splits[w] = out


def _learn_merges(n_merges: int) -> List[Tuple[str, str]]:
    words = Counter(CORPUS)
    splits = {w: list(w) for w in words}
    merges = []
    while len(merges) < n_merges:
        pairs = pair_counts(words, splits)
        if not pairs:  # corpus fully merged: fill up with letter pairs, in alphabetical order
            return merges + _letter_pairs(merges, n_merges - len(merges))
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # ties broken deterministically
        merges.append(best)
        apply_merge(splits, best)
    return merges


def _letter_pairs(taken, n):
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    have = {"".join(m) for m in taken}
    pairs = [(a, b) for a in letters for b in letters if a + b not in have]
    return pairs[:n]


def assemble_vocab(body: List[str], trailing: List[str] = TRAILING_SPECIALS) -> Dict[str, int]:
    """The released files' id layout: LEADING_SPECIALS, then `body` with [START] at START_ID, then
    `trailing` (the four BERT-style specials last, in the English file)."""
    vocab: Dict[str, int] = {}
    i = 0
    for t in list(LEADING_SPECIALS) + list(body):
        if i == START_ID:
            vocab["[START]"] = i
            i += 1
        if t in vocab:
            raise RuntimeError(f"duplicate token {t!r}")
        vocab[t] = i
        i += 1
    for t in trailing:
        vocab[t] = i
        i += 1
    return vocab


def build_vocab() -> Tuple[Dict[str, int], List[Tuple[str, str]]]:
    n_merges = VOCAB_SIZE - len(LEADING_SPECIALS) - len(CHARS) - 1 - len(TRAILING_SPECIALS)
    merges = _learn_merges(n_merges)
    vocab = assemble_vocab(CHARS + ["".join(m) for m in merges])
    assert len(vocab) == VOCAB_SIZE and vocab["[START]"] == START_ID and vocab["[STOP]"] == 0
    return vocab, merges


def bpe_json_text(vocab: Dict[str, int], merges: List[Tuple[str, str]], specials: List[str]) -> str:
    """A `tokenizers` JSON: character BPE with [UNK], whitespace pre-tokenisation, `specials` added."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    return json.dumps(json.loads(tok.to_str()), indent=2, ensure_ascii=False) + "\n"


def write_tokenizer_json(path: Path) -> None:
    vocab, merges = build_vocab()
    Path(path).write_text(bpe_json_text(vocab, merges, LEADING_SPECIALS + ["[START]"] + TRAILING_SPECIALS))
