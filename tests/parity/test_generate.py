"""The path users run, against the reference fixtures: `ChatterboxTTS.from_pretrained(<checkpoint>)`
(fused projections, fast decode, the compiled step) and `.generate(text, audio_prompt_path=...)`
with the case's parameters, full size, every case of fixtures/cases.toml.

  generate-<case>-sampled  the recorded uniforms replayed (ReplayDraw) and the recorded flow noise
                           and SineGen draws: T3's tokens exact but for justified flips (the flip
                           rule of parity/flips.py with the tolerance of cumulative e2e
                           t3.speech_tokens), the waveform against the fixture's hift.wav with the
                           tolerance of cumulative e2e hift.wav.
  generate-<case>-greedy   GreedyDraw: the tokens exactly the reference's greedy run's (tolerance of
                           t3_greedy.speech_tokens). The reference has no waveform of the greedy run,
                           so generate() is stopped after its last token (its S3Gen is the same
                           code the sampled tests compare).

Fast decode has no per-step hook, so MLX's logits are not checked here at a flip (cumulative e2e
checks them on the step-by-step loop). Generation stops at the first token that differs from the
reference's (on_token raises): only that first mismatch can be judged in a free run. After a
justified flip, the waveform is made by the same pipeline's S3Gen from the reference's tokens with
the conditioning generate() prepared, so it is still compared.
"""
import numpy as np
import pytest

from parity import flips, registry
from parity.cases import load_cases
from parity.metrics import check, compare

MODES = ("sampled", "greedy")


def _params():
    return [pytest.param(case, mode, id=f"generate-{case}-{mode}") for case in load_cases() for mode in MODES]


@pytest.fixture(scope="session")
def tts(parity_session):
    """One full-size pipeline loaded as users load it, shared by every case (after the fixtures exist:
    an export loads the original model, which is released before this one is loaded)."""
    from mlx_impl.tts import ChatterboxTTS

    session = parity_session
    for case in load_cases():
        session.fixture(case)
    return ChatterboxTTS.from_pretrained(str(session.ckpt.path))


class _Stop(Exception):
    pass


def _generate(tts, fx, ref_tokens: np.ndarray, draw, max_new_tokens: int, tokens_only: bool = False, **replay):
    """generate() as users call it; returns (T3 tokens up to the first differing one, waveform or None).
    `tokens_only`: stop after the last token (greedy: the reference has no waveform to compare)."""
    p = fx.params
    tokens = []

    def on_token(step: int, token: int) -> None:
        tokens.append(int(token))
        if step >= ref_tokens.size or token != ref_tokens[step]:
            raise _Stop("diverged")
        if tokens_only and step + 1 == min(ref_tokens.size, max_new_tokens):
            raise _Stop("all tokens")

    try:
        wav = tts.generate(fx.case["text"], repetition_penalty=float(p["repetition_penalty"]), min_p=float(p["min_p"]),
                           top_p=float(p["top_p"]), audio_prompt_path=str(fx.audio_path()),
                           exaggeration=float(p["exaggeration"]), cfg_weight=float(p["cfg_weight"]),
                           temperature=float(p["temperature"]), max_new_tokens=max_new_tokens, draw=draw,
                           on_token=on_token, **replay)
    except _Stop:
        wav = None
    return np.asarray(tokens, dtype=np.int32), wav


@pytest.mark.parity
@pytest.mark.parametrize("case,mode", _params())
def test_generate(tts, case, mode, parity_session):
    import mlx.core as mx

    from mlx_impl.t3.inference import GreedyDraw, ReplayDraw

    reg = registry.load()
    fx = parity_session.fixture(case)
    prefix = "t3" if mode == "sampled" else "t3_greedy"
    ref_tokens = fx.tensor(f"{prefix}.speech_tokens").reshape(-1)
    if mode == "sampled":
        draws = fx.tensor("t3.uniform_draws")
        replay = dict(flow_noise=mx.array(fx.tensor("flow.start_noise")), sine_phase=mx.array(fx.tensor("hift.sine_phase")),
                      sine_noise=mx.array(fx.tensor("hift.sine_noise")))
        tokens, wav = _generate(tts, fx, ref_tokens, ReplayDraw(draws), min(int(fx.params["max_new_tokens"]), draws.size),
                                **replay)
        tol = reg.cumulative["e2e"]["t3.speech_tokens"]
    else:
        tokens, wav = _generate(tts, fx, ref_tokens, GreedyDraw(), int(fx.params["max_new_tokens"]), tokens_only=True)
        tol = reg["t3_greedy.speech_tokens"].tolerance("fp32")

    mism = flips.token_mismatches(ref_tokens, tokens, fx.tensor(f"{prefix}.sampling_margin"), teacher_forced=False)
    verdict = flips.judge(mism, flip_margin=tol.flip_margin, max_flips=tol.max_flips)
    assert not verdict.fails, f"generate-{case}-{mode}: " + "; ".join(verdict.fails)
    if verdict.flips:
        print(f"\n[generate-{case}-{mode}] {verdict.note}")
    if mode == "greedy":
        assert tokens.size == ref_tokens.size  # every step decoded (a mismatch failed above)
        print(f"\n[generate-{case}-{mode}] tokens {tokens.size}/{ref_tokens.size} identical")
        return
    assert (wav is None) == bool(mism)  # generate ran to its end exactly when no token differed

    if wav is None:  # a justified flip: S3Gen of the same pipeline from the reference's tokens
        wav, _ = tts.s3gen.inference(fx.tensor("flow.speech_tokens"), ref_dict=tts.conds.gen, **replay)
    wav_tol = reg.cumulative["e2e"]["hift.wav"]
    m = compare(fx.tensor("hift.wav"), np.asarray(wav), "float")
    fails = check(m, wav_tol, "float")
    agree = (f"identical up to the justified flip at step {verdict.flips[0].step}, S3Gen on the reference's tokens"
             if verdict.flips else f"{tokens.size}/{ref_tokens.size} identical")
    print(f"\n[generate-{case}-{mode}] tokens {agree}; hift.wav SNR {m.snr_db:.1f} dB (tolerance {wav_tol.describe()})")
    assert not fails, f"generate-{case}-{mode}: hift.wav: " + "; ".join(fails)
