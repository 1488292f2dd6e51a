"""T3 hyper-parameters (mirrors chatterbox/models/t3/modules/t3_config.py)."""
from __future__ import annotations

from typing import Optional

from ..llama_configs import LLAMA_CONFIGS


class T3Config:
    def __init__(self, text_tokens_dict_size: int = 704, llama_config: Optional[dict] = None):
        self.start_text_token = 255
        self.stop_text_token = 0
        self.text_tokens_dict_size = text_tokens_dict_size
        self.max_text_tokens = 2048

        self.start_speech_token = 6561
        self.stop_speech_token = 6562
        self.speech_tokens_dict_size = 8194
        self.max_speech_tokens = 4096

        self.llama_config_name = "Llama_520M"
        # Not in the original: an explicit backbone config (e.g. a small one for tests) that takes
        # the place of LLAMA_CONFIGS[llama_config_name].
        self.llama_config = llama_config
        self.input_pos_emb = "learned"
        self.speech_cond_prompt_len = 150

        self.encoder_type = "voice_encoder"
        self.speaker_embed_size = 256
        self.use_perceiver_resampler = True
        self.emotion_adv = True

    @property
    def backbone_config(self) -> dict:
        return self.llama_config if self.llama_config is not None else LLAMA_CONFIGS[self.llama_config_name]

    @property
    def n_channels(self) -> int:
        return self.backbone_config["hidden_size"]

    @property
    def is_multilingual(self) -> bool:
        return self.text_tokens_dict_size == 2454

    @classmethod
    def english_only(cls) -> "T3Config":
        """Create configuration for English-only TTS model."""
        return cls(text_tokens_dict_size=704)

    @classmethod
    def multilingual(cls) -> "T3Config":
        """Create configuration for multilingual TTS model."""
        return cls(text_tokens_dict_size=2454)
