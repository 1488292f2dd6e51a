"""The T3 decode loop a PyTorch expert would run on a GPU: the original's own modules (backbone,
embeddings, speech head) and the original's logits processors, but transformers' `StaticCache`,
SDPA attention and `torch.compile(mode="reduce-overhead")` (CUDA graphs) for the decode step.

A speed baseline only (benchmarks/bench_pipeline.py --expert), never a parity reference: it
samples with torch.multinomial on the GPU and checks the stop token once per step like the
original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _static_cache(config, max_len: int, device, dtype):
    from transformers import StaticCache

    try:  # transformers 5.x
        return StaticCache(config=config, max_cache_len=max_len)
    except TypeError:  # 4.x
        return StaticCache(config=config, max_batch_size=2, max_cache_len=max_len, device=device, dtype=dtype)


class ExpertT3:
    def __init__(self, t3, compile: bool = True):
        self.t3 = t3
        tfmr = t3.tfmr
        try:
            tfmr.set_attn_implementation("sdpa")
        except Exception:
            tfmr.config._attn_implementation = "sdpa"
        self.step = torch.compile(self._step, mode="reduce-overhead", fullgraph=False) if compile else self._step

    def _step(self, embeds, cache, cache_position):
        out = self.t3.tfmr(inputs_embeds=embeds, past_key_values=cache, cache_position=cache_position, use_cache=True)
        return self.t3.speech_head(out.last_hidden_state[:, -1, :])

    @torch.inference_mode()
    def inference(self, *, t3_cond, text_tokens, max_new_tokens, temperature=0.8, top_p=0.95, min_p=0.05,
                  repetition_penalty=1.2, cfg_weight=0.5):
        from transformers.generation.logits_process import (
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TopPLogitsWarper,
        )

        t3, hp = self.t3, self.t3.hp
        device = t3.device
        text_tokens = torch.atleast_2d(text_tokens).to(dtype=torch.long, device=device)
        speech = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, _ = t3.prepare_input_embeds(t3_cond=t3_cond, text_tokens=text_tokens, speech_tokens=speech,
                                            cfg_weight=cfg_weight)
        bos = torch.tensor([[hp.start_speech_token]], dtype=torch.long, device=device)
        bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
        inputs = torch.cat([embeds, torch.cat([bos_embed, bos_embed])], dim=1)
        L = inputs.shape[1]
        cache = _static_cache(t3.tfmr.config, L + max_new_tokens + 1, device, inputs.dtype)
        logits = self._step(inputs, cache, torch.arange(L, device=device))  # prefill, eager
        rep = RepetitionPenaltyLogitsProcessor(penalty=float(repetition_penalty))
        min_p_w, top_p_w = MinPLogitsWarper(min_p=min_p), TopPLogitsWarper(top_p=top_p)
        generated = bos.clone()
        predicted = []
        cfg = torch.as_tensor(cfg_weight, device=device, dtype=logits.dtype)
        for i in range(max_new_tokens):
            cond, uncond = logits[0:1], logits[1:2]
            x = cond + cfg * (cond - uncond)
            x = rep(generated, x)
            if temperature != 1.0:
                x = x / temperature
            x = top_p_w(None, min_p_w(None, x))
            token = torch.multinomial(F.softmax(x, dim=-1), num_samples=1)
            predicted.append(token)
            generated = torch.cat([generated, token], dim=1)
            if token.view(-1) == hp.stop_speech_token:
                break
            embed = t3.speech_emb(token) + t3.speech_pos_emb.get_fixed_embedding(i + 1)
            pos = torch.tensor([L + i], device=device)
            logits = self.step(torch.cat([embed, embed]), cache, pos).clone()
        return torch.cat(predicted, dim=1)
