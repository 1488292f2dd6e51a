"""English text tokenizer of T3 (mirrors the EnTokenizer of chatterbox/models/tokenizers/tokenizer.py).

Built on the `tokenizers` library with the checkpoint's tokenizer.json. Spaces are spelled [SPACE]
before encoding; no [START]/[STOP] are added here (the caller pads them). Token arrays are numpy.
The multilingual tokenizer of the same original file is not ported.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

# Special tokens
SOT = "[START]"
EOT = "[STOP]"
UNK = "[UNK]"
SPACE = "[SPACE]"
SPECIAL_TOKENS = [SOT, EOT, UNK, SPACE, "[PAD]", "[SEP]", "[CLS]", "[MASK]"]


class EnTokenizer:
    def __init__(self, vocab_file_path):
        self.tokenizer: Tokenizer = Tokenizer.from_file(str(vocab_file_path))
        self.check_vocabset_sot_eot()

    def check_vocabset_sot_eot(self) -> None:
        voc = self.tokenizer.get_vocab()
        assert SOT in voc
        assert EOT in voc

    def text_to_tokens(self, text: str) -> np.ndarray:
        """(1, n) int32 token ids."""
        return np.asarray(self.encode(text), dtype=np.int32).reshape(1, -1)

    def encode(self, txt: str) -> list:
        """replace ' ' by [SPACE], then encode with the tokenizer."""
        txt = txt.replace(" ", SPACE)
        return self.tokenizer.encode(txt).ids

    def decode(self, seq: Sequence[int]) -> str:
        seq = [int(t) for t in np.asarray(seq).reshape(-1)]
        txt: str = self.tokenizer.decode(seq, skip_special_tokens=False)
        txt = txt.replace(" ", "")
        txt = txt.replace(SPACE, " ")
        txt = txt.replace(EOT, "")
        txt = txt.replace(UNK, "")
        return txt
