from .tokenizer import (EOT, SOT, SPACE, SPECIAL_TOKENS, UNK, ChineseSegmenterError, EnTokenizer, MTLTokenizer,
                        UncoveredTextError, optional_steps)
