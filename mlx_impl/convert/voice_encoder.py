"""VoiceEncoder weights: ve.safetensors (PyTorch) -> mlx_impl.voice_encoder.VoiceEncoder.

torch.nn.LSTM keeps `bias_ih_l{k}` and `bias_hh_l{k}` apart; MLX's LSTM has one bias, their sum.
Gate order (i, f, g, o) is the same in both, so the weights are taken as they are.
"""
from __future__ import annotations

from .common import ConversionError, Weights, check_all_consumed, take

NUM_LAYERS = 3
# Every source key is consumed; nothing is ignored.
IGNORED: dict = {}


def sanitize(state: Weights) -> Weights:
    consumed: set = set()
    out: Weights = {}
    for k in range(NUM_LAYERS):
        w_ih = take(state, f"lstm.weight_ih_l{k}", consumed)
        w_hh = take(state, f"lstm.weight_hh_l{k}", consumed)
        b_ih = take(state, f"lstm.bias_ih_l{k}", consumed)
        b_hh = take(state, f"lstm.bias_hh_l{k}", consumed)
        if w_ih.ndim != 2 or w_hh.ndim != 2 or b_ih.shape != b_hh.shape or b_ih.shape != (w_ih.shape[0],):
            raise ConversionError(f"lstm layer {k}: inconsistent shapes {w_ih.shape} {w_hh.shape} {b_ih.shape} {b_hh.shape}")
        out[f"lstm.layers.{k}.Wx"] = w_ih
        out[f"lstm.layers.{k}.Wh"] = w_hh
        out[f"lstm.layers.{k}.bias"] = b_ih + b_hh
    for key in ("proj.weight", "proj.bias", "similarity_weight", "similarity_bias"):
        out[key] = take(state, key, consumed)
    check_all_consumed(state, consumed, IGNORED, what="voice_encoder")
    return out


def load_voice_encoder(state: Weights):
    """A VoiceEncoder with the converted weights, in eval mode."""
    from ..voice_encoder import VoiceEncoder
    from .common import load_strict

    model = VoiceEncoder()
    load_strict(model, sanitize(state), what="voice_encoder")
    model.eval()
    return model
