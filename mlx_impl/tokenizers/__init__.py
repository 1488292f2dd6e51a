from .tokenizer import EOT, SOT, SPACE, SPECIAL_TOKENS, UNK, EnTokenizer
