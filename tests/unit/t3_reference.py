"""Helpers for the T3 unit tests: a small original (PyTorch) T3 with seeded weights, and a recorder
of the original T3.inference's per-step logits (the processors and torch.multinomial wrapped)."""
from __future__ import annotations

import contextlib
import copy
import functools

import numpy as np
import torch

SMALL_LLAMA = None  # filled by small_llama_config()


def small_llama_config(hidden=256, layers=2, heads=4, intermediate=512) -> dict:
    from chatterbox.models.t3.llama_configs import LLAMA_520M_CONFIG_DICT

    cfg = copy.deepcopy(LLAMA_520M_CONFIG_DICT)
    cfg.update(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
               head_dim=hidden // heads, intermediate_size=intermediate)
    return cfg


@contextlib.contextmanager
def original_small_t3_classes(cfg: dict, name: str = "Llama_unit_test"):
    """Register `cfg` in the original's LLAMA_CONFIGS and size its Perceiver to the hidden width
    (the original hard-codes 1024), for the duration of the block. Runtime only."""
    from chatterbox.models.t3 import llama_configs
    from chatterbox.models.t3.modules import cond_enc, perceiver

    saved = cond_enc.Perceiver
    llama_configs.LLAMA_CONFIGS[name] = cfg
    cond_enc.Perceiver = functools.partial(perceiver.Perceiver, pre_attention_query_size=cfg["hidden_size"],
                                           embedding_dim=cfg["hidden_size"])
    try:
        yield name
    finally:
        cond_enc.Perceiver = saved
        llama_configs.LLAMA_CONFIGS.pop(name, None)


def build_original_t3(cfg: dict, seed: int = 0, head_gain: float = 3.0, multilingual: bool = False):
    """The original T3 with seeded random weights (norm gains and biases randomised too); the
    multilingual one (text table 2454, AlignmentStreamAnalyzer) where asked."""
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.t3.t3 import T3

    with original_small_t3_classes(cfg) as name:
        hp = T3Config.multilingual() if multilingual else T3Config.english_only()
        hp.llama_config_name = name
        model = T3(hp)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif k.endswith(".bias") or k.endswith("norm.bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "emb" in k.split(".")[0] or k == "cond_enc.perceiver.pre_attention_query":
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:  # linear weights (out, in)
                gain = head_gain if k == "speech_head.weight" else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    return model.eval()


def state_numpy(model) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def inverse_cdf(probs: torch.Tensor, u: float) -> int:
    p = probs.detach().float().cpu().numpy().reshape(-1)
    cdf = np.cumsum(p.astype(np.float64))
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), p.size - 1))


def run_original_inference(model, t3_cond, text_tokens, *, picker, **kwargs):
    """Run the original T3.inference, recording per step: logits_raw (2, V), logits_cfg, logits_rep,
    logits_temp, logits_min_p, logits_top_p, probs (V,). `picker(step, probs) -> int` replaces
    torch.multinomial."""
    from chatterbox.models.t3 import t3 as t3mod

    rec = {k: [] for k in ("logits_raw", "logits_cfg", "logits_rep", "logits_temp", "logits_min_p",
                           "logits_top_p", "probs")}

    def np1(t):
        return t.detach().float().cpu().numpy().copy()

    def wrap(cls, in_key, out_key):
        class Recording(cls):
            def __call__(self, input_ids, scores):
                if in_key:
                    rec[in_key].append(np1(scores)[0])
                out = super().__call__(input_ids, scores)
                rec[out_key].append(np1(out)[0])
                return out
        return Recording

    def head_hook(module, inputs, output):
        rec["logits_raw"].append(np1(output[:, -1, :]))

    def multinomial(probs, num_samples=1):
        rec["probs"].append(np1(probs)[0])
        tok = picker(len(rec["probs"]) - 1, probs)
        return torch.tensor([[tok]], dtype=torch.long)

    saved = (t3mod.RepetitionPenaltyLogitsProcessor, t3mod.MinPLogitsWarper, t3mod.TopPLogitsWarper,
             torch.multinomial)
    t3mod.RepetitionPenaltyLogitsProcessor = wrap(saved[0], "logits_cfg", "logits_rep")
    t3mod.MinPLogitsWarper = wrap(saved[1], "logits_temp", "logits_min_p")
    t3mod.TopPLogitsWarper = wrap(saved[2], None, "logits_top_p")
    torch.multinomial = multinomial
    handle = model.speech_head.register_forward_hook(head_hook)
    try:
        tokens = model.inference(t3_cond=t3_cond, text_tokens=text_tokens, **kwargs)
    finally:
        handle.remove()
        (t3mod.RepetitionPenaltyLogitsProcessor, t3mod.MinPLogitsWarper, t3mod.TopPLogitsWarper,
         torch.multinomial) = saved
    out = {k: np.stack(v) for k, v in rec.items()}
    out["tokens"] = tokens.numpy().astype(np.int32)
    return out
