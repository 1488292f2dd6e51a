"""`chatterbox-parity bisect` (parity/bisect.py): the first-divergence finder.

Bugs are planted in COPIES of the MLX modules (or in a module-level function, patched only inside a
context manager); mlx_impl itself is never edited. For each bug the finder must name the right
module or gap, and without the bug it must report no divergence on the same (short) inputs.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from parity.bisect import (Stage, align, bisect, find_first_divergence, record_mlx, record_original,
                           STAGES)

CASE = "espeak_22k"
VC_CASE = "vc_stereo_to_espeak"
TURBO_CASE = "turbo_espeak"
MTL_CASE = "mtl_de"


@contextlib.contextmanager
def patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _current_fixture(session, case: str, ckpt):
    """The case's fixture: opened as it is when current (no need to check, and export, every case), else
    through the session, which exports the stale fixtures."""
    from parity.fixtures import Fixture, fixture_dir
    from parity.session import all_cases, staleness

    if staleness(session.fx_root, all_cases()[case], ckpt) is None:
        return Fixture.open(fixture_dir(session.fx_root, case))
    return session.fixture(case)


@pytest.fixture(scope="module")
def env(parity_session):
    pytest.importorskip("torch")
    pytest.importorskip("chatterbox")
    s = parity_session
    # the original ChatterboxTTS, shared with the other tests
    return s.ckpt, _current_fixture(s, CASE, s.ckpt), s._original()


@pytest.fixture  # per test: no two of the VC, Turbo and multilingual originals held at once (peak 21.2 -> 17.3 GB)
def vc_env(parity_session):
    """The VC case's fixture and the original ChatterboxVC (its S3Gen: the same modules as the English
    model's, loaded by ChatterboxVC.from_local)."""
    from reference.export_vc import load_original_vc

    s = parity_session
    return s.ckpt, _current_fixture(s, VC_CASE, s.ckpt), load_original_vc(s.ckpt)


@pytest.fixture  # per test: no two of the VC, Turbo and multilingual originals held at once (peak 21.2 -> 17.3 GB)
def turbo_env(parity_session):
    """The Turbo case's fixture, its checkpoint and the original ChatterboxTurboTTS."""
    from reference.export_turbo import load_original_turbo

    ckpt = parity_session.ckpt_for("turbo")
    return ckpt, _current_fixture(parity_session, TURBO_CASE, ckpt), load_original_turbo(ckpt)


@pytest.fixture  # per test: no two of the VC, Turbo and multilingual originals held at once (peak 21.2 -> 17.3 GB)
def mtl_env(parity_session):
    """The multilingual case's fixture, its checkpoint and the original ChatterboxMultilingualTTS."""
    from reference.export_mtl import load_original_mtl

    ckpt = parity_session.ckpt_for("mtl")
    return ckpt, _current_fixture(parity_session, MTL_CASE, ckpt), load_original_mtl(ckpt)


def _snr(check):
    return check.match.metrics.snr_db


def _assert_clean(f, min_calls):
    print(f.report())
    assert not f.diverged, f.report()
    assert f.kind == "none"
    n_calls = len({id(c.call) for c in f.checks if c.call is not None})
    assert n_calls >= min_calls, f"only {n_calls} module calls compared"
    assert f.checks[-1].what == "stage output" and not f.checks[-1].diverged
    assert all(not c.diverged for c in f.checks)


# ------------------------------------------------------------------------------ planted bugs
def test_hift_leaky_relu_before_conv_post(env):
    """HiFT: the leaky ReLU before conv_post with slope 0.1 instead of the default 0.01 (the loop's
    calls pass lrelu_slope = 0.1 explicitly, so only the final call changes)."""
    import mlx_impl.s3gen.hifigan as hifigan

    ckpt, fx, tts = env
    clean = bisect("hift", fx, ckpt=ckpt, tts=tts, max_len=20)  # 20 mel frames, 9600 source samples
    _assert_clean(clean, min_calls=150)

    real = hifigan.leaky_relu

    def wrong_default_slope(x, negative_slope=0.1):
        return real(x, negative_slope)

    with patched(hifigan, "leaky_relu", wrong_default_slope):
        f = bisect("hift", fx, ckpt=ckpt, tts=tts, max_len=20)
    assert hifigan.leaky_relu is real
    print(f.report())
    assert f.kind == "gap", f.report()
    assert (f.previous, f.module) == ("resblocks.8", "conv_post")
    assert f.check.what == "in" and f.last_ok.what == "out"
    assert _snr(f.last_ok) >= 100.0
    assert _snr(f.check) < 40.0
    assert "code between `resblocks.8` and `conv_post`" in f.report()


def test_s3tok_rope_theta(env):
    """S3 tokenizer: the copy's precomputed rotary table with theta 1000 instead of 10000. The
    rotation happens in FSMNMultiHeadAttention.qkv_attention between the FSMN memory and `out`."""
    from mlx_impl.s3tokenizer.model_v2 import precompute_freqs_cis
    from parity.stages.s3tok import _load_tokenizer

    ckpt, fx, tts = env
    copy = _load_tokenizer.__wrapped__(str(ckpt.path))  # a fresh model, not the stage runner's cached one
    clean = bisect("s3tok", fx, ckpt=ckpt, tts=tts, max_len=80, mlx_root=copy)  # 80 mel frames -> 20 tokens
    _assert_clean(clean, min_calls=70)
    assert clean.checks[-1].match.metrics.exact == 1.0  # the tokens, compared exactly

    copy.encoder._freqs_cis = precompute_freqs_cis(64, 1024 * 2, theta=1000.0)
    f = bisect("s3tok", fx, ckpt=ckpt, tts=tts, max_len=80, mlx_root=copy)
    print(f.report())
    assert f.kind == "gap", f.report()
    assert (f.previous, f.module, f.parent) == (
        "encoder.blocks.0.attn.fsmn_block", "encoder.blocks.0.attn.out", "encoder.blocks.0.attn")
    assert _snr(f.last_ok) >= 100.0
    assert _snr(f.check) < 60.0


def test_campplus_stats_pool_eps(env):
    """CAMPPlus: statistics pooling with sqrt(biased var + 1e-5) instead of the unbiased std without
    epsilon (a common port bug: torch's x.std(unbiased=True) read as var + eps)."""
    import mlx.core as mx

    import mlx_impl.s3gen.xvector as xvector

    ckpt, fx, tts = env
    clean = bisect("campplus", fx, ckpt=ckpt, tts=tts, max_len=200)
    _assert_clean(clean, min_calls=500)

    def biased_eps_stats(x, axis=1, keepdims=False, unbiased=True):
        mean = mx.mean(x, axis=axis)
        std = mx.sqrt(mx.var(x, axis=axis) + 1e-5)
        stats = mx.concatenate([mean, std], axis=-1)
        return mx.expand_dims(stats, axis) if keepdims else stats

    with patched(xvector, "statistics_pooling", biased_eps_stats):
        f = bisect("campplus", fx, ckpt=ckpt, tts=tts, max_len=200)
    print(f.report())
    assert f.kind == "module", f.report()
    assert f.module == "xvector.stats" and f.check.call.cls == "StatsPool"
    assert f.check.what == "out" and f.last_ok.what == "in" and f.last_ok.call is f.check.call
    assert _snr(f.last_ok) >= 100.0
    assert _snr(f.check) < 60.0


def test_voice_encoder_clean(env):
    ckpt, fx, tts = env
    f = bisect("ve", fx, ckpt=ckpt, tts=tts, max_len=2)
    _assert_clean(f, min_calls=3)  # the root, lstm (final hidden state adapted), proj
    assert {c.call.name for c in f.checks if c.call is not None} == {"", "lstm", "proj"}


def test_flow_clean(env):
    """The English flow stage: the encoder, then the estimator's first Euler step (CFG batch of 2), every
    matched sub-module within tolerance."""
    ckpt, fx, tts = env
    f = bisect("flow", fx, ckpt=ckpt, tts=tts, max_len=8)
    _assert_clean(f, min_calls=500)


def test_vc_hift_clean_then_leaky_relu_named(vc_env):
    """vc_hift: HiFT on the VC fixture's vc.output_mel / vc.hift.source against ChatterboxVC's
    mel2wav; the planted slope bug of the English test is named the same way."""
    import mlx_impl.s3gen.hifigan as hifigan

    ckpt, fx, vc = vc_env
    clean = bisect("vc_hift", fx, ckpt=ckpt, tts=vc, max_len=20)
    _assert_clean(clean, min_calls=150)
    assert "case vc_stereo_to_espeak" in clean.report()
    real = hifigan.leaky_relu
    with patched(hifigan, "leaky_relu", lambda x, negative_slope=0.1: real(x, negative_slope)):
        f = bisect("vc_hift", fx, ckpt=ckpt, tts=vc, max_len=20)
    print(f.report())
    assert f.kind == "gap" and (f.previous, f.module) == ("resblocks.8", "conv_post"), f.report()
    assert _snr(f.last_ok) >= 100.0 and _snr(f.check) < 40.0


def test_vc_flow_clean_then_time_embedding_named(vc_env):
    """vc_flow: the flow encoder on vc.flow.input_embedding, then the estimator's first Euler step on the
    VC fixture's start noise / mu / cond / speaker embedding, against ChatterboxVC's flow (encoder and
    estimator sub-modules compared); the time embedding's sin and cos halves swapped in MLX is named at
    the module that computes it."""
    import mlx.core as mx

    import mlx_impl.s3gen.decoder as decoder

    ckpt, fx, vc = vc_env
    clean = bisect("vc_flow", fx, ckpt=ckpt, tts=vc, max_len=8)
    _assert_clean(clean, min_calls=100)
    names = {c.call.name for c in clean.checks if c.call is not None}
    assert any(n.startswith("encoder.") for n in names) and any(n.startswith("decoder.estimator.") for n in names)

    real = decoder.SinusoidalPosEmb.__call__

    def cos_then_sin(self, x, scale=1000):  # the halves swapped (at t = 0 a wrong scale would not show)
        emb = real(self, x, scale)
        half = emb.shape[-1] // 2
        return mx.concatenate([emb[:, half:], emb[:, :half]], axis=-1)

    with patched(decoder.SinusoidalPosEmb, "__call__", cos_then_sin):
        f = bisect("vc_flow", fx, ckpt=ckpt, tts=vc, max_len=8)
    print(f.report())
    assert f.kind == "module" and f.module == "decoder.estimator.time_embeddings", f.report()
    assert f.check.what == "out" and _snr(f.check) < 10.0


def test_turbo_hift_and_meanflow_flow_clean_then_time_embedding_named(turbo_env):
    """turbo_hift and turbo_flow (MeanFlow's estimator at basic_euler's first step, t = 0, r = 0.5) on the
    Turbo fixture against the original ChatterboxTurboTTS's S3Gen; the time embedding's halves swapped
    in MLX is named at the module that computes it."""
    import mlx.core as mx

    import mlx_impl.s3gen.decoder as decoder

    ckpt, fx, tts = turbo_env
    _assert_clean(bisect("turbo_hift", fx, ckpt=ckpt, tts=tts, max_len=20), min_calls=150)
    clean = bisect("turbo_flow", fx, ckpt=ckpt, tts=tts, max_len=8)
    _assert_clean(clean, min_calls=500)
    assert any(c.call.name == "decoder.estimator.time_embed_mixer" for c in clean.checks if c.call is not None)

    real = decoder.SinusoidalPosEmb.__call__

    def cos_then_sin(self, x, scale=1000):
        emb = real(self, x, scale)
        half = emb.shape[-1] // 2
        return mx.concatenate([emb[:, half:], emb[:, :half]], axis=-1)

    with patched(decoder.SinusoidalPosEmb, "__call__", cos_then_sin):
        f = bisect("turbo_flow", fx, ckpt=ckpt, tts=tts, max_len=8)
    print(f.report())
    assert f.kind == "module" and f.module == "decoder.estimator.time_embeddings", f.report()


def test_turbo_t3_clean_then_gelu_layernorm_eps_and_wpe_offset_named(turbo_env):
    """turbo_t3: the GPT-2 T3 (prefill of the reference's input embeddings, the speech head, one decode step on
    the KV cache) against the original's HF GPT2Model; every block's ln_1 / attn / ln_2 / mlp and ln_f are
    compared on both passes. Planted: the exact (erf) GELU for GPT-2's tanh one (a functional op: named as
    the gap before mlp.c_proj of the first block), LayerNorm eps 1e-3 for the config's 1e-5 (the first
    block's ln_1), the wpe position not advanced with the KV cache (the decode step's wpe input)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.base import create_attention_mask

    from mlx_impl.t3.gpt2 import GPT2MLP, GPT2Backbone
    from parity.bisect import _mlx_turbo_t3

    ckpt, fx, tts = turbo_env
    clean = bisect("turbo_t3", fx, ckpt=ckpt, tts=tts, max_len=40)
    _assert_clean(clean, min_calls=400)
    names = {c.call.name for c in clean.checks if c.call is not None}
    assert {"tfmr.wpe", "tfmr.h.23.ln_1", "tfmr.h.23.attn", "tfmr.h.23.ln_2", "tfmr.h.23.mlp", "tfmr.ln_f",
            "speech_emb", "speech_head"} <= names
    assert any(c.call.name == "tfmr.h.23.mlp" and c.call.index == 1 for c in clean.checks if c.call is not None)

    def exact_gelu(self, x):
        return self.c_proj(nn.gelu(self.c_fc(x)))

    with patched(GPT2MLP, "__call__", exact_gelu):
        f = bisect("turbo_t3", fx, ckpt=ckpt, tts=tts, max_len=40)
    print(f.report())
    assert f.kind == "gap" and f.module == "tfmr.h.0.mlp.c_proj" and f.parent == "tfmr.h.0.mlp", f.report()

    t3 = _mlx_turbo_t3(ckpt)
    norms = [m for _, m in t3.tfmr.named_modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 24 + 1
    try:
        for m in norms:
            m.eps = 1e-3
        f = bisect("turbo_t3", fx, ckpt=ckpt, tts=tts, max_len=40)
    finally:
        for m in norms:
            m.eps = 1e-5
    print(f.report())
    assert f.kind == "module" and f.module == "tfmr.h.0.ln_1", f.report()

    def no_wpe_offset(self, inputs=None, cache=None, input_embeddings=None):
        h = input_embeddings + self.wpe(mx.arange(input_embeddings.shape[1]))  # positions from 0 on every step
        mask = create_attention_mask(h, cache[0])
        for layer, c in zip(self.h, cache):
            h = layer(h, mask, cache=c)
        return self.ln_f(h)

    with patched(GPT2Backbone, "__call__", no_wpe_offset):
        f = bisect("turbo_t3", fx, ckpt=ckpt, tts=tts, max_len=40)
    print(f.report())
    assert f.kind == "gap" and f.module == "tfmr.wpe#1" and f.parent == "tfmr#1", f.report()
    assert f.check.what == "in" and f.check.match.metrics.exact == 0.0  # position 0 for the reference's 40


def test_mtl_t3_clean_then_text_embedding_row_and_rmsnorm_eps_named(mtl_env):
    """mtl_t3: the multilingual T3's prefill (cond_enc, the 2454-entry text table, the Llama layers with eager
    attention, the speech head) and one decode step on the KV cache, against the original's HF Llama. Planted:
    the text table read one row off (named at text_emb), RMSNorm eps 1e-3 for the config's 1e-5 (the first
    layer's input_layernorm)."""
    import mlx.nn as nn

    from parity.bisect import _mlx_mtl_t3

    ckpt, fx, tts = mtl_env
    clean = bisect("mtl_t3", fx, ckpt=ckpt, tts=tts, max_len=12)
    _assert_clean(clean, min_calls=300)
    names = {c.call.name for c in clean.checks if c.call is not None}
    assert {"cond_enc", "text_emb", "speech_emb", "tfmr.layers.29.self_attn", "tfmr.layers.29.mlp", "tfmr.norm",
            "speech_head"} <= names
    assert any(c.call.name == "tfmr.layers.29.mlp" and c.call.index == 1 for c in clean.checks if c.call is not None)

    t3 = _mlx_mtl_t3(ckpt)
    table = t3.text_emb

    class OffByOne(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = table.weight

        def __call__(self, tokens):
            return self.weight[tokens + 1]

    t3.text_emb = OffByOne()
    try:
        f = bisect("mtl_t3", fx, ckpt=ckpt, tts=tts, max_len=12, mlx_root=t3)
    finally:
        t3.text_emb = table
    print(f.report())
    assert f.kind == "module" and f.module == "text_emb", f.report()

    norms = [m for _, m in t3.tfmr.named_modules() if isinstance(m, nn.RMSNorm)]
    assert len(norms) == 2 * 30 + 1
    eps = norms[0].eps
    try:
        for m in norms:
            m.eps = 1e-3
        f = bisect("mtl_t3", fx, ckpt=ckpt, tts=tts, max_len=12, mlx_root=t3)
    finally:
        for m in norms:
            m.eps = eps
    print(f.report())
    assert f.kind == "module" and f.module == "tfmr.layers.0.input_layernorm", f.report()


# ------------------------------------------------------------------------------ the machinery, on toys
def test_align_adapts_channels_last_layouts():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 4, 7)).astype(np.float32)
    m = align(ref, np.ascontiguousarray(ref.transpose(0, 2, 1)))
    assert m.layout == "axes (0, 2, 1)" and m.metrics.snr_db == np.inf
    ref4 = rng.standard_normal((1, 3, 5, 7)).astype(np.float32)  # Conv2d (B, C, H, W) vs MLX (B, H, W, C)
    m = align(ref4, np.ascontiguousarray(ref4.transpose(0, 2, 3, 1)))
    assert m.layout == "axes (0, 3, 1, 2)" and m.metrics.snr_db == np.inf
    sq = rng.standard_normal((1, 6, 6)).astype(np.float32)  # square: both arrangements fit, the best wins
    m = align(sq, np.ascontiguousarray(sq.transpose(0, 2, 1)))
    assert m.layout == "axes (0, 2, 1)" and m.metrics.snr_db == np.inf
    m = align(ref, ref[:, None])  # a unit axis more
    assert m is not None and m.metrics.snr_db == np.inf
    assert align(ref, ref[:, :3]) is None  # no arrangement has the original's shape


def _toys(act_slope=0.0, proj_scale=1.0, post_scale=1.0):
    """A torch module conv -> relu (functional) -> proj, and its MLX port with optional bugs:
    act_slope (the functional op between the modules), proj_scale (the proj module's weight),
    post_scale (the root's own code after proj)."""
    import mlx.core as mx
    import mlx.nn as mnn
    import torch

    from mlx_impl.ops import Conv1d

    torch.manual_seed(0)

    class TorchToy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(3, 8, 3, padding=1)
            self.proj = torch.nn.Linear(8, 2)

        def forward(self, x):
            h = torch.nn.functional.relu(self.conv(x))
            return self.proj(h.transpose(1, 2))

    class MlxToy(mnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = Conv1d(3, 8, 3, padding=1)
            self.proj = mnn.Linear(8, 2)

        def __call__(self, x):
            h = self.conv(x.transpose(0, 2, 1))
            h = mx.where(h > 0, h, act_slope * h)
            return self.proj(h) * post_scale

    t = TorchToy().eval()
    m = MlxToy()
    sd = {k: v.detach().numpy() for k, v in t.state_dict().items()}
    m.conv.weight = mx.array(sd["conv.weight"].transpose(0, 2, 1))
    m.conv.bias = mx.array(sd["conv.bias"])
    m.proj.weight = mx.array(sd["proj.weight"] * proj_scale)
    m.proj.bias = mx.array(sd["proj.bias"])
    return t, m


def _toy_finding(**bugs):
    import mlx.core as mx
    import torch

    t, m = _toys(**bugs)
    x = np.random.default_rng(1).standard_normal((1, 3, 11)).astype(np.float32)
    ref_calls, ref_out = record_original(t, lambda: t(torch.from_numpy(x)))
    mlx_calls, mlx_out = record_mlx(m, lambda: m(mx.array(x)))
    return find_first_divergence("toy", ref_calls, mlx_calls, lambda n: n, ref_out.numpy(), np.array(mlx_out),
                                 100.0), m


def test_finder_names_module_gap_and_own_code_on_toys():
    pytest.importorskip("torch")
    import mlx.nn as mnn

    from mlx_impl.ops import Conv1d

    clean, m = _toy_finding()
    assert clean.kind == "none", clean.report()
    assert [(c.label, c.what) for c in clean.checks] == [
        ("<root>", "in"), ("conv", "in"), ("conv", "out"), ("proj", "in"), ("proj", "out"), ("<root>", "out"),
        ("the stage output", "stage output")]
    # the recording subclasses are gone again
    assert type(m.conv) is Conv1d and type(m.proj) is mnn.Linear

    gap, _ = _toy_finding(act_slope=0.1)  # leaky instead of plain ReLU between conv and proj
    assert (gap.kind, gap.previous, gap.module, gap.parent) == ("gap", "conv", "proj", "<root>"), gap.report()

    mod, _ = _toy_finding(proj_scale=1.001)
    assert (mod.kind, mod.module) == ("module", "proj"), mod.report()
    assert mod.check.match.metrics.snr_db < 100.0

    own, _ = _toy_finding(post_scale=1.001)  # the root's own code after its last sub-module
    assert (own.kind, own.module) == ("module", "<root>"), own.report()
    assert "own code (after `proj`)" in own.report()


def test_record_mlx_restores_classes_after_an_error():
    import mlx.core as mx

    _, m = _toys()
    before = {name: type(mod) for name, mod in m.named_modules()}

    def failing_run():
        m(mx.zeros((1, 3, 5)))
        assert all(type(mod) is not before[name] for name, mod in m.named_modules())  # swapped while running
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        record_mlx(m, failing_run)
    assert {name: type(mod) for name, mod in m.named_modules()} == before


# ------------------------------------------------------------------------------ command line
@pytest.mark.parametrize("argv", [
    ["bisect", "--case", CASE, "--stage", "no_such_stage"],
    ["bisect", "--case", "no_such_case", "--stage", "hift"],
    ["bisect", "--case", CASE, "--stage", "hift", "--max-len", "0"],
    ["bisect", "--case", CASE, "--stage", "hift", "--tol-db", "-3"],
    ["bisect", "--case", CASE, "--stage", "vc_hift"],
    ["bisect", "--case", VC_CASE, "--stage", "hift"],
    ["bisect", "--case", VC_CASE, "--stage", "turbo_flow"],
], ids=["unknown-stage", "unknown-case", "max-len-0", "tol-db-negative", "vc-stage-on-an-english-case",
        "english-stage-on-a-vc-case", "turbo-stage-on-a-vc-case"])
def test_cli_user_errors_exit_2(argv, capsys):
    from parity.cli import main

    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_every_stage_is_registered():
    assert {"hift", "campplus", "s3tok", "ve", "t3_cond", "flow_encoder", "flow", "vc_flow", "vc_hift"} <= set(STAGES)
    assert all(isinstance(s, Stage) for s in STAGES.values())
    assert {n for n, s in STAGES.items() if s.model == "vc"} == {"vc_flow", "vc_hift"}
    assert {n for n, s in STAGES.items() if s.model == "turbo"} == {"turbo_t3", "turbo_flow", "turbo_hift"}
    assert {n for n, s in STAGES.items() if s.model == "mtl"} == {"mtl_t3"}


def test_vc_stage_on_an_english_case_names_the_vc_cases(capsys):
    from parity.cli import main

    assert main(["bisect", "--case", CASE, "--stage", "vc_flow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --stage vc_flow runs on the voice-conversion cases") and VC_CASE in err


def test_cli_exit_status_0_then_1(env, monkeypatch, capsys):
    """The command end to end on the voice encoder (the original model reused from the session):
    exit 0 when nothing diverges; exit 1 when the tolerance is above what float32 reaches."""
    from parity.cli import main
    from parity.session import ParitySession

    ckpt, fx, tts = env
    monkeypatch.setattr(ParitySession, "_original", lambda self: tts)
    argv = ["bisect", "--case", CASE, "--stage", "ve", "--max-len", "2", "--checkpoint", str(ckpt.path)]
    assert main(argv) == 0
    assert "NO DIVERGENCE" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(argv + ["--tol-db", "200", "-v"])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "FIRST DIVERGENCE: module `lstm`" in out and "DIVERGES out lstm" in out
