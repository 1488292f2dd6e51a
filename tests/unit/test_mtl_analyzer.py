"""The multilingual T3's AlignmentStreamAnalyzer in MLX against the ORIGINAL class
(chatterbox/models/t3/inference/alignment_stream_analyzer.py), and the small multilingual T3's
decoding with it against the original T3.inference.

Part 1 drives both analyzers with the same attention maps and logits over many steps (the original
built on a fake backbone so that its hooks install, its `last_aligned_attns` set directly): every
step's decisions, the alignment rows and the output logits exact. The original's decisions are read
from its step()'s own local variables at return (a profiler hook), not recomputed.

Part 2 runs a 14-layer multilingual T3 (the watched layers 9, 12, 13 exist) on both sides: the MLX
spies' attention rows against the original's eager attention, every token and decision exact.
"""
from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from mlx_impl.t3.inference.alignment_stream_analyzer import LLAMA_ALIGNED_HEADS, AlignmentStreamAnalyzer
from tests.mtl_analysis import DECISIONS, original_decisions, original_step_locals, recording_original_analysis

EOS = 3
V = 32


class FakeLayer:
    def __init__(self):
        self.self_attn = torch.nn.Identity()


class FakeTfmr:
    """What the original's constructor touches: layers[k].self_attn (a forward hook) and config."""

    def __init__(self, n_layers=14):
        self.layers = [FakeLayer() for _ in range(n_layers)]
        self.config = type("Config", (), dict(output_attentions=False, _attn_implementation="sdpa"))()


def make_pair(text_tokens_slice):
    from chatterbox.models.t3.inference.alignment_stream_analyzer import AlignmentStreamAnalyzer as Original

    return (Original(FakeTfmr(), None, text_tokens_slice=text_tokens_slice, alignment_layer_idx=9, eos_idx=EOS),
            AlignmentStreamAnalyzer(None, None, text_tokens_slice=text_tokens_slice, alignment_layer_idx=9,
                                    eos_idx=EOS))


def attention_rows(rng, n_rows, n_cols, i, targets, sharpness, quantize=False):
    """Three heads' (n_rows, n_cols) softmax-like rows, peaked at text column i + target where target >= 0."""
    heads = []
    for _ in LLAMA_ALIGNED_HEADS:
        rows = rng.random((n_rows, n_cols)).astype(np.float32)
        for r, (t, s) in enumerate(zip(targets, sharpness)):
            if t >= 0:
                rows[r, i + t] += s * n_cols
                if quantize:  # a second, equal peak on the next column
                    rows[r, i + t + 1] += s * n_cols
        rows /= rows.sum(axis=1, keepdims=True)
        if quantize:  # exact ties: multiples of 1/8, equal in all heads
            rows = np.round(rows * 8) / 8
            rows[:] = rows[0] if rows.shape[0] == 1 else rows
        heads.append(rows.astype(np.float32))
    if quantize:
        heads = [heads[0]] * len(heads)
    return heads


def run_scenario(n_cond, S, plan, tokens, seed=0, quantize=False):
    """Both analyzers over len(plan) steps; plan[k] = (target text position or -1, sharpness).
    Returns the per-step (original, MLX) decisions and whether an error ended it (and which)."""
    rng = np.random.default_rng(seed)
    i, j = n_cond, n_cond + S
    T0 = j + 2  # [cond | text | start token | start token], as T3.inference's prefill
    original, ours = make_pair((i, j))
    record, results = [], []
    for step, ((target, sharp), token) in enumerate(zip(plan, tokens)):
        if step == 0:
            heads = attention_rows(rng, T0, T0, i, [-1] * (T0 - 1) + [target], [0] * (T0 - 1) + [sharp], quantize)
        else:
            heads = attention_rows(rng, 1, T0 + step, i, [target], [sharp], quantize)
        logits = rng.standard_normal((1, V)).astype(np.float32)
        original.last_aligned_attns = [torch.from_numpy(h.copy()) for h in heads]
        ours.last_aligned_attns = [mx.array(h) for h in heads]
        errors = []
        try:
            with original_step_locals(record):
                out_ref = original.step(torch.from_numpy(logits.copy()), next_token=token)
        except (IndexError, RuntimeError) as e:
            errors.append(type(e))
        try:
            out = ours.step(mx.array(logits), next_token=token)
        except (IndexError, RuntimeError) as e:
            errors.append(type(e))
        if errors:
            return results, errors, (original, ours)
        ref = original_decisions(record[-1], out_ref, EOS)
        got = ours.steps[-1]
        np.testing.assert_array_equal(np.array(out), out_ref.numpy(), err_msg=f"logits at step {step}")
        results.append((ref, got))
    return results, [], (original, ours)


def assert_same_decisions(results):
    for step, (ref, got) in enumerate(results):
        for k in DECISIONS:
            assert got[k] == ref[k], f"step {step}: {k} {got[k]} != original {ref[k]}"
        np.testing.assert_array_equal(got["A_chunk"], ref["A_chunk"], err_msg=f"A_chunk at step {step}")


def walk(n_diffuse, per_frame, S, n_steps, sharp=1.0):
    """n_diffuse diffuse frames, then a target advancing one text token every `per_frame` frames to S - 1."""
    plan = [(-1, 0.0)] * n_diffuse
    plan += [(min(S - 1, k // per_frame), sharp) for k in range(n_steps - n_diffuse)]
    return plan


def distinct_tokens(n):
    return [6561] + [10 + k for k in range(n - 1)]


SCENARIOS = {
    # false start, EOS suppressed until the end, completion, then the last tokens held: long tail
    "long_tail": dict(S=12, plan=walk(4, 2, 12, 60), tokens=distinct_tokens(60)),
    # completion, then back to the first tokens: discontinuity, alignment repetition
    "alignment_repetition": dict(S=12, plan=walk(2, 2, 12, 26) + [(1, 1.0)] * 20, tokens=distinct_tokens(46)),
    # stuck at token 1, then a jump of 8 text tokens (discontinuity), then onward
    "discontinuity": dict(S=20, plan=[(1, 1.0)] * 12 + [(9, 1.0)] * 3 + [(10 + k // 2, 1.0) for k in range(15)],
                          tokens=distinct_tokens(30)),
    # the previous token twice in a row forces the stop token
    "token_repetition": dict(S=12, plan=walk(0, 2, 12, 12), tokens=[6561, 10, 11, 11, 12, 13, 13, 13, 14, 15, 16, 17]),
    # exact ties in the attention rows: argmax keeps the first maximum
    "ties": dict(S=10, plan=walk(0, 3, 10, 40, sharp=1.0), tokens=distinct_tokens(40), quantize=True),
}


@pytest.mark.parametrize("name", list(SCENARIOS), ids=[f"mtl-analyzer-{n}" for n in SCENARIOS])
def test_mtl_analyzer_matches_the_original(name):
    sc = SCENARIOS[name]
    results, errors, (original, ours) = run_scenario(7, sc["S"], sc["plan"], sc["tokens"], quantize=sc.get("quantize", False))
    assert not errors, errors
    assert len(results) == len(sc["plan"])
    assert_same_decisions(results)
    np.testing.assert_array_equal(ours.alignment, original.alignment.numpy())
    assert (ours.started_at, ours.completed_at, ours.generated_tokens) == (
        original.started_at, original.completed_at, original.generated_tokens)
    seen = {k for ref, _ in results for k in DECISIONS[2:] if ref[k]}
    expected = {"long_tail": {"false_start", "complete", "long_tail", "eos_suppressed", "forced_eos"},
                "alignment_repetition": {"discontinuity", "alignment_repetition", "forced_eos"},
                "discontinuity": {"discontinuity"},
                "token_repetition": {"token_repetition", "forced_eos", "eos_suppressed"},
                "ties": {"complete"}}[name]
    assert expected <= seen, f"scenario {name} no longer exercises {expected - seen}"
    if name == "ties":
        rows = np.concatenate([g["A_chunk"] for _, g in results])
        assert any((r == r.max()).sum() > 1 for r in rows if r.max() > 0)  # ties do occur


@pytest.mark.parametrize("seed", range(4), ids=[f"mtl-analyzer-random{s}" for s in range(4)])
def test_mtl_analyzer_random_walks_match_the_original(seed):
    """A random walk of the attention target (back and forth), random sharpness, tokens from a small set."""
    rng = np.random.default_rng(100 + seed)
    S, n = int(rng.integers(8, 30)), 150
    pos, plan = 0, []
    for _ in range(n):
        pos = int(np.clip(pos + rng.integers(-3, 4), 0, S - 1))
        plan.append((pos if rng.random() > 0.1 else -1, float(rng.random())))
    tokens = [6561] + rng.integers(0, 6, n - 1).tolist()
    results, errors, (original, ours) = run_scenario(int(rng.integers(3, 40)), S, plan, tokens, seed=seed)
    assert not errors, errors
    assert_same_decisions(results)
    np.testing.assert_array_equal(ours.alignment, original.alignment.numpy())


def test_mtl_analyzer_short_text_fails_like_the_original():
    """Text of 5 tokens or fewer: no EOS suppression; once complete, the original's
    A[completed_at:, :-5].max(dim=1) reduces over no column and raises IndexError, at the same step here."""
    S = 5
    plan = walk(0, 1, S, 10)
    results, errors, _ = run_scenario(4, S, plan, distinct_tokens(10))
    assert errors == [IndexError, IndexError]
    assert_same_decisions(results)
    assert not any(g["eos_suppressed"] for _, g in results)


# ---------------------------------------------------------------- part 2: the small multilingual T3


@pytest.fixture(scope="module")
def small_mtl_t3(torch_one_thread):
    from t3_reference import build_original_t3, small_llama_config, state_numpy

    from mlx_impl.convert.t3 import load_t3
    from mlx_impl.t3 import T3Config

    cfg = small_llama_config(hidden=64, layers=14, heads=16, intermediate=128)
    ref = build_original_t3(cfg, seed=3, multilingual=True)
    model = load_t3(state_numpy(ref), T3Config(2454, llama_config=cfg))
    fused = load_t3(state_numpy(ref), T3Config(2454, llama_config=cfg)).fuse_projections()
    return ref, model, fused


N_T3_STEPS = 120


def _inputs(seed=1, n_text=30):
    rng = np.random.default_rng(seed)
    text = np.concatenate([[255], rng.integers(1, 2450, n_text), [0]]).astype(np.int32)[None]
    return dict(speaker_emb=rng.standard_normal((1, 256)).astype(np.float32),
                prompt=rng.integers(0, 6561, (1, 150)).astype(np.int32), text=np.concatenate([text, text]))


def _run_original(ref, inp, picker, n_steps, params):
    from chatterbox.models.t3.modules.cond_enc import T3Cond as TorchT3Cond
    from t3_reference import run_original_inference

    outs = []
    cond = TorchT3Cond(speaker_emb=torch.from_numpy(inp["speaker_emb"]),
                       cond_prompt_speech_tokens=torch.from_numpy(inp["prompt"]).long(),
                       emotion_adv=0.5 * torch.ones(1, 1, 1))
    with recording_original_analysis(outs):
        r = run_original_inference(ref, cond, torch.from_numpy(inp["text"]).long(), picker=picker,
                                   max_new_tokens=n_steps, **params)
    r["analysis"] = outs
    return r


@pytest.mark.parametrize("mode", ["greedy", "sampled", "greedy-no-penalty"],
                         ids=["mtl-t3-greedy", "mtl-t3-sampled", "mtl-t3-greedy-no-penalty"])
def test_mtl_t3_decoding_matches_the_original(small_mtl_t3, mode):
    """generate()'s sampling defaults; without the repetition penalty greedy decoding repeats a token
    and the analyzer forces the stop token."""
    from t3_reference import inverse_cdf

    from mlx_impl.t3 import T3Cond
    from mlx_impl.t3.inference import GreedyDraw, ReplayDraw

    ref, model, _ = small_mtl_t3
    inp = _inputs()
    params = dict(temperature=0.8, cfg_weight=0.5, min_p=0.05, top_p=1.0,
                  repetition_penalty=1.0 if mode == "greedy-no-penalty" else 2.0)
    greedy = mode != "sampled"
    uniforms = np.random.default_rng(7).random(N_T3_STEPS)
    picker = (lambda i, p: int(torch.argmax(p))) if greedy else (lambda i, p: inverse_cdf(p, uniforms[i]))
    r = _run_original(ref, inp, picker, N_T3_STEPS, params)
    steps = []
    cond = T3Cond(speaker_emb=mx.array(inp["speaker_emb"]), cond_prompt_speech_tokens=mx.array(inp["prompt"]),
                  emotion_adv=0.5 * mx.ones((1, 1, 1)))
    toks = model.inference(t3_cond=cond, text_tokens=inp["text"], max_new_tokens=N_T3_STEPS,
                           draw=GreedyDraw() if greedy else ReplayDraw(uniforms),
                           on_step=lambda i, o: steps.append(o), **params)
    gap = max(float(np.abs(np.array(s["logits_raw"]) - r["logits_raw"][k]).max()) for k, s in enumerate(steps[: len(r["logits_raw"])]))
    ref_a = np.concatenate([a["A_chunk"] for a in r["analysis"]])
    got_a = np.concatenate([s["analysis"]["A_chunk"] for s in steps])
    a_gap = float(np.abs(ref_a - got_a).max()) if ref_a.shape == got_a.shape else float("nan")
    stop = next((k for k in ("long_tail", "alignment_repetition", "token_repetition") if steps[-1]["analysis"][k]), "none")
    fired = {k: sum(bool(s["analysis"][k]) for s in steps) for k in DECISIONS[2:]}
    print(f"\n[mtl-t3-{mode}] {toks.shape[1]} steps, last token {toks[0, -1]}, forced stop by: {stop}; {fired}; "
          f"logits_raw max |MLX SDPA - original eager| {gap:.2e}; A_chunk max gap {a_gap:.2e}")
    np.testing.assert_array_equal(toks, r["tokens"])
    assert len(steps) == len(r["analysis"])
    for k, (s, a) in enumerate(zip(steps, r["analysis"])):
        for key in DECISIONS:
            assert s["analysis"][key] == a[key], f"step {k}: {key}"
        np.testing.assert_allclose(s["analysis"]["A_chunk"], a["A_chunk"], rtol=0, atol=1e-5)
        # the analyzer's edit exact (the stop token's logit, or the forced row), the rest as close as the raw logits
        got, want = np.array(s["logits_analyzed"])[0], r["logits_cfg"][k]  # the repetition penalty's input
        if s["analysis"]["forced_eos"]:
            np.testing.assert_array_equal(got, want)
        else:
            cfg = np.array(s["logits_cfg"])[0]
            np.testing.assert_array_equal(np.delete(got, 6562), np.delete(cfg, 6562))
            assert got[6562] == (-(2 ** 15) if s["analysis"]["eos_suppressed"] else cfg[6562])
            assert want[6562] == got[6562] or not s["analysis"]["eos_suppressed"]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert gap < 1e-4  # float32 rounding of SDPA vs eager attention (value printed above)
    if mode == "greedy-no-penalty":
        assert steps[-1]["analysis"]["forced_eos"] and toks[0, -1] == 6562


def test_mtl_spies_leave_the_backbone_as_it_was(small_mtl_t3):
    """After decoding, the watched layers hold their own attention again and English-style logits are unchanged."""
    from mlx_impl.t3.inference.alignment_stream_analyzer import AttentionSpy

    _, model, _ = small_mtl_t3
    before = [type(l.self_attn) for l in model.tfmr.layers]
    analyzer = AlignmentStreamAnalyzer(model.tfmr, None, text_tokens_slice=(0, 4), eos_idx=6562)
    assert all(isinstance(model.tfmr.layers[l].self_attn, AttentionSpy) for l, _ in LLAMA_ALIGNED_HEADS)
    analyzer.remove_spies()
    assert [type(l.self_attn) for l in model.tfmr.layers] == before
    assert not any(isinstance(l.self_attn, AttentionSpy) for l in model.tfmr.layers)


def test_mtl_spies_on_fused_projections(small_mtl_t3):
    """from_pretrained fuses q/k/v (fused_layers): the spy reads q from the fused projection; tokens,
    decisions and attention rows equal the unfused model's."""
    from mlx_impl.t3 import T3Cond
    from mlx_impl.t3.inference import GreedyDraw

    _, model, fused = small_mtl_t3
    inp = _inputs(seed=4)
    runs = []
    for m in (model, fused):
        steps = []
        cond = T3Cond(speaker_emb=mx.array(inp["speaker_emb"]), cond_prompt_speech_tokens=mx.array(inp["prompt"]),
                      emotion_adv=0.5 * mx.ones((1, 1, 1)))
        toks = m.inference(t3_cond=cond, text_tokens=inp["text"], max_new_tokens=40, draw=GreedyDraw(),
                           on_step=lambda i, o: steps.append(o["analysis"]), repetition_penalty=2.0, top_p=1.0)
        runs.append((toks, steps))
    (t0, s0), (t1, s1) = runs
    np.testing.assert_array_equal(t0, t1)
    for a, b in zip(s0, s1):
        assert all(a[k] == b[k] for k in DECISIONS)
        np.testing.assert_allclose(a["A_chunk"], b["A_chunk"], rtol=0, atol=1e-6)
