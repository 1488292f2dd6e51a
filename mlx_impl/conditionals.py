"""The built-in voice's conditioning: chatterbox/tts.py's `Conditionals` (re-exported by
mlx_impl/tts.py), saved as one safetensors file or read from the original's conds.pt without torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from .t3.modules.cond_enc import T3Cond


@dataclass
class Conditionals:
    """T3 and S3Gen conditioning (chatterbox.tts.Conditionals).
    t3: T3Cond (speaker_emb, cond_prompt_speech_tokens, emotion_adv);
    gen: prompt_token, prompt_token_len, prompt_feat, prompt_feat_len, embedding."""

    t3: T3Cond
    gen: dict = field(default_factory=dict)

    def save(self, fpath) -> None:
        """One safetensors file: `t3.<field>` and `gen.<key>` arrays (None fields left out)."""
        arrays = {f"t3.{k}": mx.array(v) for k, v in self.t3.__dict__.items()
                  if v is not None and not isinstance(v, (int, float))}
        arrays.update({f"gen.{k}": mx.array(v) for k, v in self.gen.items() if v is not None})
        mx.save_safetensors(str(fpath), arrays)

    @classmethod
    def load(cls, fpath) -> "Conditionals":
        """From `save`'s safetensors file, or from the original's conds.pt (read without torch)."""
        fpath = Path(fpath)
        if fpath.suffix == ".pt":
            from . import torch_pickle

            d = torch_pickle.load(fpath)
            t3 = {k: (mx.array(v) if isinstance(v, np.ndarray) else v) for k, v in d["t3"].items()}
            gen = {k: (mx.array(v) if isinstance(v, np.ndarray) else v) for k, v in d["gen"].items()}
        else:
            arrays = mx.load(str(fpath))
            t3 = {k[3:]: v for k, v in arrays.items() if k.startswith("t3.")}
            gen = {k[4:]: v for k, v in arrays.items() if k.startswith("gen.")}
            gen.setdefault("prompt_feat_len", None)
        for k in ("cond_prompt_speech_tokens",):
            if t3.get(k) is not None:
                t3[k] = t3[k].astype(mx.int32)
        for k in ("prompt_token", "prompt_token_len"):
            if gen.get(k) is not None:
                gen[k] = gen[k].astype(mx.int32)
        t3.pop("cond_prompt_speech_emb", None)  # recomputed by T3.prepare_conditioning
        return cls(T3Cond(**t3), gen)
