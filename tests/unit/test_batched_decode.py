"""Batched English T3 decoding (mlx_impl/t3/inference/batched_decode.py, T3.inference_batch) on the
small seeded T3 of the T3 unit tests: three texts of different lengths, each with its own voice,
decoded together; each row against the one-text `T3.inference` (fast_decode) with the same draw."""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from mlx_impl.convert.t3 import load_t3
from mlx_impl.t3 import T3Cond, T3Config
from mlx_impl.t3.inference import GreedyDraw, MLXDraw, ReplayDraw
from mlx_impl.t3.inference import batched_decode as bd
from mlx_impl.t3.inference.device_sampler import make_sampler
from parity.metrics import compare

from t3_reference import build_original_t3, small_llama_config, state_numpy

DEFAULTS = dict(temperature=0.8, cfg_weight=0.5, min_p=0.05, top_p=1.0, repetition_penalty=1.2)
TOP_P = dict(temperature=1.3, cfg_weight=0.3, min_p=0.02, top_p=0.9, repetition_penalty=1.2)
N_STEPS = 120
TEXT_LENGTHS = (12, 40, 25)  # the rows' prompts differ by up to 28 positions of left padding
STOP = 6562


@pytest.fixture(scope="module")
def state_cfg():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = small_llama_config()
    state = state_numpy(build_original_t3(cfg, seed=0))
    torch.set_num_threads(threads)
    return state, cfg


@pytest.fixture(scope="module")
def fused(state_cfg):
    """The model as from_pretrained loads it: fused projections (the compiled per-layer step)."""
    state, cfg = state_cfg
    return load_t3(state, T3Config(704, llama_config=cfg)).fuse_projections()


@pytest.fixture(scope="module")
def rows():
    """Three (text tokens (2, n + 2), voice (speaker embedding, prompt tokens)) of different lengths."""
    out = []
    for r, n in enumerate(TEXT_LENGTHS):
        rng = np.random.default_rng(10 + r)
        text = np.concatenate([[255], rng.integers(1, 700, n), [0]]).astype(np.int32)[None]
        voice = (rng.standard_normal((1, 256)).astype(np.float32), rng.integers(0, 6561, (1, 150)).astype(np.int32))
        out.append((np.concatenate([text, text]), voice))
    return out


def cond(voice) -> T3Cond:
    return T3Cond(speaker_emb=mx.array(voice[0]), cond_prompt_speech_tokens=mx.array(voice[1]),
                  emotion_adv=0.5 * mx.ones((1, 1, 1)))


def one_text_tokens(m, rows, draws, n_steps=N_STEPS, params=DEFAULTS):
    return [m.inference(t3_cond=cond(v), text_tokens=t, max_new_tokens=n_steps, draw=d, **params)
            for (t, v), d in zip(rows, draws)]


def batched_tokens(m, rows, draws, n_steps=N_STEPS, params=DEFAULTS, on_token=None):
    return m.inference_batch(t3_conds=[cond(v) for _, v in rows], text_tokens=[t for t, _ in rows],
                             max_new_tokens=n_steps, draws=draws, on_token=on_token, **params)


def replays(seed, n_rows=3, n=N_STEPS):
    return [ReplayDraw(np.random.default_rng(seed + r).random(n)) for r in range(n_rows)]


def assert_rows_equal(one, batched):
    assert len(one) == len(batched)
    for r, (a, b) in enumerate(zip(one, batched)):
        np.testing.assert_array_equal(a, b, err_msg=f"text {r}")


# ---------------------------------------------------------------- tokens


@pytest.mark.parametrize("draw_kind,params", [("greedy", DEFAULTS), ("replayed", DEFAULTS), ("replayed", TOP_P)],
                         ids=["english-batched-greedy", "english-batched-replayed", "english-batched-replayed-top_p0.9"])
def test_batched_tokens_equal_one_text_runs(fused, rows, draw_kind, params):
    """Each row's tokens equal its one-text run's, whatever its batch mates (different text lengths,
    different voices); on_token reports each row's tokens in order."""
    draws = [GreedyDraw()] * 3 if draw_kind == "greedy" else replays(5)
    one = one_text_tokens(fused, rows, draws, params=params)
    seen = [[] for _ in rows]
    batched = batched_tokens(fused, rows, draws, params=params, on_token=lambda r, i, t: seen[r].append((i, t)))
    assert_rows_equal(one, batched)
    for r, b in enumerate(batched):
        assert seen[r] == list(enumerate(b[0].tolist()))
    assert min(b.shape[1] for b in batched) > 20  # enough steps decoded to mean something


def test_batched_row_stops_early(fused, rows):
    """A row that draws the stop token ends there (its later tokens dropped) while the others go on to
    max_new_tokens; it equals its one-text run, which stops at the same step. The stop is placed by
    the uniform: at step 30 of text 1, the middle of the stop token's share of the CDF (min-p off so
    that the stop token keeps its probability; its share there, 6e-5, is far wider than float32
    rounding of the CDF)."""
    params = dict(DEFAULTS, min_p=0.0)
    draws = replays(7)
    stop_step = 30
    probs = []
    fused.inference(t3_cond=cond(rows[1][1]), text_tokens=rows[1][0], max_new_tokens=stop_step + 1, draw=draws[1],
                    on_step=lambda i, out: probs.append(np.array(out["probs"], dtype=np.float64).reshape(-1)), **params)
    cdf = np.cumsum(probs[stop_step])
    low, high = cdf[STOP - 1] / cdf[-1], cdf[STOP] / cdf[-1]
    assert high - low > 1e-5, "the stop token's share is too small to place a uniform in it"
    draws[1].uniforms[stop_step] = (low + high) / 2
    one = one_text_tokens(fused, rows, draws, params=params)
    batched = batched_tokens(fused, rows, draws, params=params)
    assert_rows_equal(one, batched)
    assert batched[1].shape == (1, stop_step + 1) and batched[1][0, -1] == STOP
    assert [b.shape[1] for b in (batched[0], batched[2])] == [N_STEPS, N_STEPS]
    assert STOP not in batched[0] and STOP not in batched[2]


def test_batched_unfused_backbone(state_cfg, rows):
    """mlx-lm's own layers (no fused projections: the bias as their attention mask) give the same tokens."""
    state, cfg = state_cfg
    plain = load_t3(state, T3Config(704, llama_config=cfg))
    draws = replays(11, n=60)
    assert_rows_equal(one_text_tokens(plain, rows, draws, n_steps=60), batched_tokens(plain, rows, draws, n_steps=60))


def test_batched_mlx_draws_are_reproducible(fused, rows):
    """MLXDraw with a key per row: one key, one sequence, in the batch as alone (the row's uniforms
    come from its own key, split once per step as fast_decode splits it)."""
    keyed = lambda: [MLXDraw(mx.random.key(20 + r)) for r in range(3)]  # noqa: E731
    one = one_text_tokens(fused, rows, keyed(), n_steps=40)
    assert_rows_equal(one, batched_tokens(fused, rows, keyed(), n_steps=40))


# ---------------------------------------------------------------- logits

# Measured on this model (2 layers, 256 wide; float32, CPU kernels), 3 texts, prefill + 40 teacher-
# forced steps: max |batched - one-text| 6.7e-6 on logits of magnitude up to ~16, SNR 128.1 dB (the
# worst row). The rows differ from their one-text runs only by float32 rounding: RoPE's angles at
# positions shifted by the padding (the scores depend on the distance only up to rounding) and
# matrix products of another shape. Bounds: 3x the measured difference; the SNR floor of the fused
# CPU-kernel check in test_t3.py (120 dB).
LOGITS_MAX_ABS = 2e-5
LOGITS_MIN_SNR_DB = 120.0


def test_batched_logits_match_one_text_runs(fused, rows):
    """The CFG pairs' raw logits (prefill and 40 teacher-forced one-token steps) of each row against
    its one-text model calls, within the measured float32 bound above."""
    m = fused
    rng = np.random.default_rng(3)
    forced = rng.integers(0, 6561, (40, 3)).astype(np.int32)
    singles = []
    for text, voice in rows:
        embeds, _ = m.prepare_input_embeds(t3_cond=cond(voice), text_tokens=text,
                                           speech_tokens=np.full((2, 1), 6561), cfg_weight=0.5)
        bos = m.speech_token_embed(6561, 0)
        cache = m.make_cache()
        logits = [m.speech_logits(mx.concatenate([embeds, mx.concatenate([bos, bos])], axis=1), cache)]
        singles.append((embeds, cache, logits))
    embeds, pads = bd.left_padded([mx.concatenate([e, mx.concatenate([m.speech_token_embed(6561, 0)] * 2)], axis=1)
                                   for e, _, _ in singles])
    assert np.array(pads).tolist() == [28, 28, 0, 0, 15, 15]
    cache = m.make_cache()
    batched = [bd.prefill(m, embeds, pads, cache)]
    step = bd.BatchedStep(m, pads)
    for i, tokens in enumerate(forced):
        for r, (_, c, logits) in enumerate(singles):
            e = m.speech_token_embed(int(tokens[r]), i + 1)
            logits.append(m.speech_logits(mx.concatenate([e, e]), c))
        e = m.speech_emb(mx.array(tokens)[:, None]) + m.speech_pos_emb.get_fixed_embedding(i + 1)
        batched.append(step(mx.repeat(e, 2, axis=0), cache))
    batched = np.stack([np.array(b) for b in batched])  # (steps, 2 B, V)
    worst_abs, worst_snr = 0.0, np.inf
    for r, (_, _, logits) in enumerate(singles):
        one = np.stack([np.array(x) for x in logits])  # (steps, 2, V)
        got = batched[:, 2 * r: 2 * r + 2]
        assert np.isfinite(got).all()
        worst_abs = max(worst_abs, float(np.abs(got - one).max()))
        worst_snr = min(worst_snr, compare(one, got).snr_db)
    assert worst_abs < LOGITS_MAX_ABS and worst_snr > LOGITS_MIN_SNR_DB, (worst_abs, worst_snr)


def test_batched_prompt_bias_hides_pads():
    """The prefill bias: causal, pad keys hidden from real queries, a pad query sees only itself;
    the step bias hides the pad keys."""
    pads = mx.array([2, 2, 0, 0], dtype=mx.int32)
    bias = np.array(bd.prompt_bias(pads, 4))[:, 0]
    keep = np.isfinite(bias)
    assert (bias[keep] == 0).all()
    np.testing.assert_array_equal(keep[0], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(keep[2], np.tril(np.ones((4, 4), bool)))
    np.testing.assert_array_equal(np.isfinite(np.array(bd.step_bias(pads, 5))[:, 0, 0]),
                                  [[0, 0, 1, 1, 1]] * 2 + [[1] * 5] * 2)


# ---------------------------------------------------------------- sampler


@pytest.mark.parametrize("top_p,greedy", [(1.0, False), (0.9, False), (1.0, True)],
                         ids=["english-batched-sampler", "english-batched-sampler-top_p", "english-batched-sampler-greedy"])
def test_batched_sampler_equals_make_sampler_row_by_row(top_p, greedy):
    """make_batched_sampler on (2 B, V) logits: each row's token and seen mask those of fast_decode's
    make_sampler on that row's CFG pair, bit for bit (8 rows of random logits, 3 steps)."""
    opts = dict(cfg_weight=0.5, repetition_penalty=1.2, temperature=0.8, min_p=0.05, top_p=top_p, greedy=greedy)
    single, batched = make_sampler(**opts), bd.make_batched_sampler(**opts)
    B, V = 8, 8194
    seen = mx.random.uniform(shape=(B, V), key=mx.random.key(1)) < 0.01
    for step in range(3):
        logits = 3 * mx.random.normal((2 * B, V), key=mx.random.key(10 + step))
        u = mx.random.uniform(shape=(B,), key=mx.random.key(20 + step))
        tokens, new_seen = batched(logits, seen, u)
        for r in range(B):
            t, s = single(logits[2 * r: 2 * r + 2], seen[r], u[r])
            assert t.item() == tokens[r].item(), (step, r)
            assert mx.array_equal(s, new_seen[r]), (step, r)
        seen = new_seen


# ---------------------------------------------------------------- bad input


def test_batched_bad_input(fused, rows):
    with pytest.raises(ValueError, match="3 texts and 2 draws"):
        batched_tokens(fused, rows, [GreedyDraw()] * 2, n_steps=5)
    with pytest.raises(ValueError, match="greedy draws for every text or for none"):
        batched_tokens(fused, rows, [GreedyDraw(), GreedyDraw(), ReplayDraw([0.5] * 5)], n_steps=5)
    with pytest.raises(TypeError, match="ReplayDraw, MLXDraw or GreedyDraw"):
        batched_tokens(fused, rows, [GreedyDraw(), GreedyDraw(), lambda probs, step: 0], n_steps=5)
    with pytest.raises(IndexError, match="no recorded uniform for decode step 10"):
        batched_tokens(fused, rows, replays(1, n=10)[:2] + replays(1, n=20)[:1], n_steps=20)
    with pytest.raises(ValueError, match="one conditioning per text"):
        fused.inference_batch(t3_conds=[cond(rows[0][1])], text_tokens=[t for t, _ in rows], max_new_tokens=5)
    with pytest.raises(ValueError, match="CFG pair"):
        fused.inference_batch(t3_conds=[cond(rows[0][1])], text_tokens=[rows[0][0][:1]], max_new_tokens=5)
