"""The ORIGINAL S3Gen sub-modules built exactly as chatterbox.models.s3gen.s3gen builds them, for the
tests and benchmarks that run one of them alone, and the seeded perturbation that makes random
HiFT weights exercise every parameter."""
from __future__ import annotations


def original_flow(meanflow: bool = False):
    """CausalMaskedDiffWithXvec exactly as chatterbox.models.s3gen.s3gen.S3Token2Mel(meanflow) builds it."""
    from chatterbox.models.s3gen.configs import CFM_PARAMS
    from chatterbox.models.s3gen.decoder import ConditionalDecoder
    from chatterbox.models.s3gen.flow import CausalMaskedDiffWithXvec
    from chatterbox.models.s3gen.flow_matching import CausalConditionalCFM
    from chatterbox.models.s3gen.transformer.upsample_encoder import UpsampleConformerEncoder

    encoder = UpsampleConformerEncoder(
        output_size=512, attention_heads=8, linear_units=2048, num_blocks=6, dropout_rate=0.1,
        positional_dropout_rate=0.1, attention_dropout_rate=0.1, normalize_before=True, input_layer='linear',
        pos_enc_layer_type='rel_pos_espnet', selfattention_layer_type='rel_selfattn', input_size=512,
        use_cnn_module=False, macaron_style=False,
    )
    estimator = ConditionalDecoder(
        in_channels=320, out_channels=80, causal=True, channels=[256], dropout=0.0, attention_head_dim=64,
        n_blocks=4, num_mid_blocks=12, num_heads=8, act_fn='gelu', meanflow=meanflow,
    )
    decoder = CausalConditionalCFM(spk_emb_dim=80, cfm_params=CFM_PARAMS, estimator=estimator)
    return CausalMaskedDiffWithXvec(encoder=encoder, decoder=decoder)


def original_hift():
    """HiFTGenerator exactly as chatterbox.models.s3gen.s3gen.S3Token2Wav builds it (eval mode)."""
    from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
    from chatterbox.models.s3gen.hifigan import HiFTGenerator

    return HiFTGenerator(
        sampling_rate=24000,
        upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7],
        source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        f0_predictor=ConvRNNF0Predictor(),
    ).eval()


def randomize_hift(model, seed: int) -> None:
    """Perturb every weight-norm gain, Snake alpha and bias (default init leaves gains at ||v||,
    alphas at 1), and scale the F0 classifier so that F0 spans unvoiced (< 10 Hz) and voiced
    values of a few hundred Hz."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha") or name.endswith("original0"):
                p.mul_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith("bias"):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        model.f0_predictor.classifier.weight.mul_(4000.0)
        model.f0_predictor.classifier.bias.fill_(40.0)
