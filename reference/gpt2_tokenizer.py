"""A GPT-2-style tokenizer of the Chatterbox Turbo hub layout, built offline and deterministically.

The released ResembleAI/chatterbox-turbo tokenizer is GPT-2's byte-level BPE (50257 entries,
`<|endoftext|>` = 50256) plus 19 paralinguistic tags in `added_tokens.json` (ids 50257-50275):
50276 entries, T3's text table (`T3Config(text_tokens_dict_size=50276)`), and what
`ChatterboxTurboTTS.from_local` checks (`len(tokenizer) != 50276` prints a warning).

This builds one of the same shape: the 256 byte symbols in GPT-2's order (`bytes_to_unicode`), BPE
merges learnt by pair counting on a fixed English corpus (GPT-2's pre-tokenisation, so words carry
their leading space as "Ġ"), unused filler entries up to id 50255, `<|endoftext|>` at 50256, then the
19 tags. Files: vocab.json, merges.txt, added_tokens.json, special_tokens_map.json,
tokenizer_config.json (tokenizer_class GPT2Tokenizer), read by `AutoTokenizer.from_pretrained(DIR)`.
The tag order here is ours (the released file's order is not published in the package).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

from .tokenizer_json import CORPUS, apply_merge, pair_counts

BASE_VOCAB = 50257  # GPT-2's byte-level BPE, <|endoftext|> last
EOT = "<|endoftext|>"
TAGS = ["[laugh]", "[chuckle]", "[gasp]", "[cough]", "[sigh]", "[groan]", "[sniff]", "[shush]", "[clear throat]",
        "[angry]", "[crying]", "[dramatic]", "[fear]", "[happy]", "[narration]", "[sarcastic]", "[surprised]",
        "[whispering]", "[advertisement]"]
TOTAL = BASE_VOCAB + len(TAGS)  # 50276
N_MERGES = 1500
FILES = ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's map of the 256 bytes to printable characters (openai/gpt-2 encoder.py), in its order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _words() -> Counter:
    """The corpus as GPT-2 pre-tokenises a running text: words with their leading space ("Ġ")."""
    from tokenizers import pre_tokenizers

    text = " ".join(CORPUS)
    text = text[0].upper() + text[1:] + ". Hello there, how are you? It's fine!"
    pieces = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text)
    return Counter(p for p, _ in pieces)


def learn_merges(n_merges: int = N_MERGES) -> List[Tuple[str, str]]:
    """Most frequent adjacent pair first (ties: the smaller pair), until n_merges or no pair occurs twice."""
    words = _words()
    splits = {w: list(w) for w in words}
    merges = []
    while len(merges) < n_merges:
        pairs = pair_counts(words, splits)
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        apply_merge(splits, best)
    return merges


def build_vocab(merges: List[Tuple[str, str]]) -> Dict[str, int]:
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    n_fill = BASE_VOCAB - 1 - len(vocab)
    for k in range(n_fill):  # entries no merge produces: the table keeps GPT-2's size
        vocab[f"<|unused_{k}|>"] = len(vocab)
    vocab[EOT] = BASE_VOCAB - 1
    assert len(vocab) == BASE_VOCAB and sorted(vocab.values()) == list(range(BASE_VOCAB))
    return vocab


def write_gpt2_tokenizer(out_dir: Path) -> Dict[str, int]:
    """The five tokenizer files in `out_dir`; returns the number of entries of each part."""
    out_dir = Path(out_dir)
    merges = learn_merges()
    vocab = build_vocab(merges)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (out_dir / "added_tokens.json").write_text(json.dumps({t: BASE_VOCAB + i for i, t in enumerate(TAGS)}, indent=1) + "\n")
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=1) + "\n")
    added_decoder = {str(BASE_VOCAB - 1): _added(EOT, special=True)}
    added_decoder.update({str(BASE_VOCAB + i): _added(t, special=False) for i, t in enumerate(TAGS)})
    config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "errors": "replace",
              "model_max_length": 1024, **special, "added_tokens_decoder": added_decoder}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    for f in FILES:
        (out_dir / f).chmod(0o644)
    return {"bytes": 256, "merges": len(merges), "filler": BASE_VOCAB - 1 - 256 - len(merges), "endoftext": 1,
            "tags": len(TAGS)}


def _added(content: str, special: bool) -> dict:
    return {"content": content, "lstrip": False, "normalized": not special, "rstrip": False, "single_word": False,
            "special": special}
