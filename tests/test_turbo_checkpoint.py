"""The synthetic Chatterbox Turbo checkpoint (issue 20, reference/synth_turbo_checkpoint.py): the
original ChatterboxTurboTTS.from_local loads it unmodified and generate() returns audio that
exercises the vocoder's sine branch. Built once into checkpoints/synthetic-turbo-s0 when missing."""
import pytest

pytestmark = pytest.mark.reference

N_STEPS = 6  # generate() lets T3 run 1000 steps; only that bound is lowered here


@pytest.fixture(scope="module")
def turbo():
    import torch
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

    torch.set_grad_enabled(False)
    return ChatterboxTurboTTS.from_local(ensure_turbo_checkpoint(), "cpu")


def test_turbo_synthetic_checkpoint_loads_unmodified(turbo):
    assert len(turbo.tokenizer) == 50276  # from_local's own check (a warning otherwise)
    assert turbo.t3.is_gpt and not hasattr(turbo.t3.tfmr, "wte")
    assert turbo.s3gen.meanflow and turbo.conds is not None
    assert turbo.conds.t3.cond_prompt_speech_tokens.shape[-1] == 375  # 15 s of the built-in voice
    mixer = turbo.s3gen.flow.decoder.estimator.time_embed_mixer.weight
    assert float(mixer[:, mixer.shape[0]:].abs().max()) > 0  # MeanFlow's end time r is exercised


def test_turbo_synthetic_checkpoint_generates_audio(turbo):
    import torch

    f0 = []
    handle = turbo.s3gen.mel2wav.f0_predictor.register_forward_hook(lambda m, i, o: f0.append(o))
    inference = turbo.t3.inference_turbo
    tokens = []

    def bounded(**kw):
        out = inference(**kw, max_gen_len=N_STEPS)
        tokens.append(out)
        return out

    turbo.t3.inference_turbo = bounded
    try:
        torch.manual_seed(0)
        wav = turbo.generate("Hello there [laugh], a synthetic turbo checkpoint.")
    finally:
        del turbo.t3.inference_turbo
        handle.remove()
    n_speech = int((tokens[0] < 6561).sum())
    assert wav.shape == (1, 960 * (n_speech + 3))  # the three S3GEN_SIL tokens generate() appends
    assert torch.isfinite(wav).all() and float(wav.std()) > 0
    assert bool((f0[0] > 10.0).any()), "no voiced frame: SineGen's sine branch unexercised"
