"""LLaMA backbone configurations of T3 (mirrors chatterbox/models/t3/llama_configs.py).

The dicts keep the original's HF-style keys; `llama_model_args` turns one into the
`mlx_lm.models.llama.ModelArgs` of the MLX backbone.
"""
from __future__ import annotations

LLAMA_520M_CONFIG_DICT = dict(
    # Arbitrary small number that won't cause problems when loading.
    # These param are unused due to custom input layers.
    vocab_size=8,
    # default params needed for loading most pretrained 1B weights
    max_position_embeddings=131072,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=30,
    num_attention_heads=16,
    attn_implementation="sdpa",
    head_dim=64,
    tie_word_embeddings=False,
    hidden_act="silu",
    attention_bias=False,
    attention_dropout=0.0,
    initializer_range=0.02,
    mlp_bias=False,
    model_type="llama",
    num_key_value_heads=16,
    pretraining_tp=1,
    rms_norm_eps=1e-05,
    rope_scaling=dict(
        factor=8.0,
        high_freq_factor=4.0,
        low_freq_factor=1.0,
        original_max_position_embeddings=8192,
        rope_type="llama3",
    ),
    rope_theta=500000.0,
    torch_dtype="bfloat16",
    use_cache=True,
)

# Chatterbox Turbo's backbone (T3 builds mlx_impl/t3/gpt2.py's GPT2Backbone for it); the keys
# the MLX backbone reads are kept, the training-only ones (dropouts, summary heads) left out.
GPT2_MEDIUM_CONFIG = dict(
    activation_function="gelu_new",
    bos_token_id=50256,
    eos_token_id=50256,
    layer_norm_epsilon=1e-05,
    model_type="gpt2",
    n_ctx=8196,
    n_embd=1024,
    hidden_size=1024,
    n_head=16,
    n_layer=24,
    n_positions=8196,
    vocab_size=50276,
)

LLAMA_CONFIGS = {
    "Llama_520M": LLAMA_520M_CONFIG_DICT,
    "GPT2_medium": GPT2_MEDIUM_CONFIG,
}


def llama_model_args(config: dict):
    """mlx-lm ModelArgs for a LLaMA config dict of the original's form."""
    from mlx_lm.models.llama import ModelArgs

    if config.get("model_type") != "llama":
        raise NotImplementedError(f"T3 backbone type {config.get('model_type')!r} is not ported (LLaMA only)")
    if config.get("hidden_act", "silu") != "silu":
        raise NotImplementedError(f"hidden_act {config['hidden_act']!r}")
    return ModelArgs(
        model_type="llama",
        hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        intermediate_size=config["intermediate_size"],
        num_attention_heads=config["num_attention_heads"],
        rms_norm_eps=config["rms_norm_eps"],
        vocab_size=config["vocab_size"],
        head_dim=config.get("head_dim"),
        max_position_embeddings=config.get("max_position_embeddings"),
        num_key_value_heads=config.get("num_key_value_heads"),
        attention_bias=config.get("attention_bias", False),
        mlp_bias=config.get("mlp_bias", False),
        rope_theta=config.get("rope_theta", 10000.0),
        rope_traditional=False,
        rope_scaling=dict(config["rope_scaling"]) if config.get("rope_scaling") else None,
        tie_word_embeddings=config.get("tie_word_embeddings", False),
    )
