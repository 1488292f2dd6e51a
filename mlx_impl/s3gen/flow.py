"""CausalMaskedDiffWithXvec: S3Gen's token-to-mel flow (chatterbox/models/s3gen/flow.py). Inference only."""
from __future__ import annotations

import logging
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from .. import backend
from .configs import CFM_PARAMS
from .decoder import ConditionalDecoder
from .flow_matching import CausalConditionalCFM
from .transformer.upsample_encoder import UpsampleConformerEncoder
from .utils.mask import make_pad_mask

logger = logging.getLogger(__name__)


def _repeat_batch_dim(x: Optional[mx.array], b: int, ndim: int):
    """Add missing leading dims, then repeat a batch of 1 to b."""
    if x is None:
        return None
    while x.ndim < ndim:
        x = x[None]
    if b > 1 and x.shape[0] == 1:
        x = mx.repeat(x, b, axis=0)
    assert x.ndim == ndim
    return x


def l2_normalize(x: mx.array, axis: int = 1, eps: float = 1e-12) -> mx.array:
    """torch.nn.functional.normalize(x, dim=axis)."""
    norm = mx.sqrt(mx.sum(x * x, axis=axis, keepdims=True))
    return x / mx.maximum(norm, eps)


class CausalMaskedDiffWithXvec(nn.Module):
    def __init__(self, input_size: int = 512, output_size: int = 80, spk_embed_dim: int = 192,
                 output_type: str = "mel", vocab_size: int = 6561, input_frame_rate: int = 25,
                 only_mask_loss: bool = True, token_mel_ratio: int = 2, pre_lookahead_len: int = 3,
                 encoder: nn.Module = None, decoder: nn.Module = None):
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.vocab_size = vocab_size
        self.output_type = output_type
        self.input_frame_rate = input_frame_rate
        self.input_embedding = nn.Embedding(vocab_size, input_size)
        self.spk_embed_affine_layer = nn.Linear(spk_embed_dim, output_size)
        self.encoder = encoder
        self.encoder_proj = nn.Linear(self.encoder.output_size(), output_size)
        self.decoder = decoder
        self.token_mel_ratio = token_mel_ratio
        self.pre_lookahead_len = pre_lookahead_len
        backend.use_wide_blas(self)  # the encoder's and estimator's many-row products

    # the sub-stages, each a parity checkpoint of its own
    def speaker_embedding(self, embedding: mx.array) -> mx.array:
        """x-vector (B, 192) -> (B, 80): spk_embed_affine_layer(F.normalize(x))."""
        return self.spk_embed_affine_layer(l2_normalize(mx.atleast_2d(embedding), axis=1))

    def embed_tokens(self, token: mx.array) -> mx.array:
        """(B, T) -> (B, T, 512), before the pad mask."""
        return self.input_embedding(token.astype(mx.int32))

    def project(self, h: mx.array) -> mx.array:
        """encoder output (B, T, 512) -> mu (B, 80, T)."""
        return self.encoder_proj(h).transpose(0, 2, 1)

    def build_cond(self, prompt_feat: mx.array, mel_len: int) -> mx.array:
        """prompt_feat (B, Tf, 80) -> cond (B, 80, mel_len): the prompt's mel, then zeros."""
        b, tf, _ = prompt_feat.shape
        zeros = mx.zeros((b, mel_len - tf, self.output_size), dtype=prompt_feat.dtype)
        return mx.concatenate([prompt_feat, zeros], axis=1).transpose(0, 2, 1)

    def inference(self, token, token_len, prompt_token, prompt_token_len, prompt_feat, prompt_feat_len,
                  embedding, finalize: bool, n_timesteps: int = 10, noised_mels=None, meanflow: bool = False,
                  noise: Optional[mx.array] = None, trace: Optional[dict] = None):
        """token (B, T) int, token_len (B,), prompt_token (1|B, Tp), prompt_feat (1|B, Tf, 80),
        embedding (1|B, 192) -> ((B, 80, T_mel - Tf), None).
        `noise`: the CFM start noise (B, 80, T_mel), drawn with mx.random when None.
        `trace`: a dict that receives the intermediate tensors (parity checkpoints)."""
        b = token.shape[0]
        embedding = self.speaker_embedding(embedding)

        prompt_token = _repeat_batch_dim(prompt_token, b, ndim=2)
        prompt_token_len = _repeat_batch_dim(prompt_token_len, b, ndim=1)
        prompt_feat = _repeat_batch_dim(prompt_feat, b, ndim=3)
        embedding = _repeat_batch_dim(embedding, b, ndim=2)

        token = mx.concatenate([prompt_token.astype(mx.int32), token.astype(mx.int32)], axis=1)
        token_len = prompt_token_len + token_len
        mask = (~make_pad_mask(token_len))[:, :, None].astype(embedding.dtype)
        if bool(mx.any(token >= self.vocab_size).item()):
            logger.error(f"{token.max().item()}>{self.vocab_size}\n out-of-range special tokens found in flow, fix inputs!")
        emb = self.embed_tokens(token)
        token = emb * mask

        h, h_masks = self.encoder(token, token_len)
        if finalize is False:
            h = h[:, : -self.pre_lookahead_len * self.token_mel_ratio]
        h_lengths = h_masks.sum(axis=-1).squeeze(axis=-1)
        mel_len1, mel_len2 = prompt_feat.shape[1], h.shape[1] - prompt_feat.shape[1]
        mu = self.project(h)

        conds = self.build_cond(prompt_feat.astype(h.dtype), mel_len1 + mel_len2)
        mask = (~make_pad_mask(h_lengths))[:, None, :].astype(h.dtype)
        if mask.shape[0] != b:
            mask = mx.repeat(mask, b, axis=0)

        on_step = None
        if trace is not None:
            trace.update(spk_embedding=embedding, input_embedding=emb, encoder_out=h, mu=mu, cond=conds)
            n = n_timesteps

            def on_step(i, dxdt):
                if i == 0:
                    trace["estimator_first"] = dxdt
                if i == n - 1:
                    trace["estimator_last"] = dxdt

        feat, _ = self.decoder(mu=mu, mask=mask, spks=embedding, cond=conds, n_timesteps=n_timesteps,
                               noised_mels=noised_mels, meanflow=meanflow, noise=noise, on_step=on_step)
        feat = feat[:, :, mel_len1:]
        assert feat.shape[2] == mel_len2
        return feat, None


def build_causal_flow(meanflow: bool = False) -> CausalMaskedDiffWithXvec:
    """The flow as chatterbox's S3Token2Mel builds it (random init; load weights with
    mlx_impl.convert.flow.sanitize + load_strict)."""
    encoder = UpsampleConformerEncoder(
        output_size=512, attention_heads=8, linear_units=2048, num_blocks=6, dropout_rate=0.1,
        positional_dropout_rate=0.1, attention_dropout_rate=0.1, normalize_before=True, input_layer="linear",
        pos_enc_layer_type="rel_pos_espnet", selfattention_layer_type="rel_selfattn", input_size=512,
        use_cnn_module=False, macaron_style=False,
    )
    estimator = ConditionalDecoder(
        in_channels=320, out_channels=80, causal=True, channels=[256], dropout=0.0, attention_head_dim=64,
        n_blocks=4, num_mid_blocks=12, num_heads=8, act_fn="gelu", meanflow=meanflow,
    )
    decoder = CausalConditionalCFM(spk_emb_dim=80, cfm_params=CFM_PARAMS, estimator=estimator)
    return CausalMaskedDiffWithXvec(encoder=encoder, decoder=decoder)
