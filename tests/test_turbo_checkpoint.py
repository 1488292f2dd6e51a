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


def test_turbo_s3gen_meanflow_matches_the_original(turbo):
    """The MLX S3Gen(meanflow=True) on the synthetic s3gen_meanflow.safetensors against the original's
    s3gen.inference(n_cfm_timesteps=2), as generate() calls it (tokens + three S3GEN_SIL, the built-in
    voice), the original's draws (the start basic_euler gets, SineGen's phase and noise) replayed."""
    import mlx.core as mx
    import numpy as np
    import torch

    from mlx_impl.convert.s3gen import load_s3gen
    from mlx_impl.load import read_state_dict
    from parity import registry
    from parity.metrics import compare
    from reference.export import record_s3gen
    from reference.recording import Recorder, wrap_method
    from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

    g = torch.Generator().manual_seed(11)
    tokens = torch.cat([torch.randint(0, 6561, (40,), generator=g), torch.full((3,), 4299)])
    rec, start = Recorder(), []
    torch.manual_seed(12)
    with record_s3gen(turbo, rec), wrap_method(turbo.s3gen.flow.decoder, "basic_euler",
                                               before=lambda x, *a, **k: start.append(x.clone())):
        wav_ref, _ = turbo.s3gen.inference(speech_tokens=tokens, ref_dict=dict(turbo.conds.gen), n_cfm_timesteps=2)
    assert len(start) == 1 and len(rec.lists["flow.estimator"]) == 2

    mlx_s3gen = load_s3gen(read_state_dict(ensure_turbo_checkpoint() / "s3gen_meanflow.safetensors"), meanflow=True)
    ref = {k: (mx.array(v.numpy()) if torch.is_tensor(v) else v) for k, v in turbo.conds.gen.items()}
    ref["prompt_token"] = ref["prompt_token"].astype(mx.int32)
    trace = {}
    wav, _ = mlx_s3gen.inference(tokens.numpy()[None], ref_dict=ref, flow_noise=mx.array(start[0].numpy()),
                                 sine_phase=mx.array(rec.values["hift.sine_phase"].numpy()),
                                 sine_noise=mx.array(rec.values["hift.sine_noise"].numpy()), trace=trace)
    reg = registry.load()
    mel_snr = compare(rec.values["flow.output_mel"].numpy(), np.array(trace["output_mel"]), "float").snr_db
    wav_snr = compare(wav_ref.numpy(), np.array(wav), "float").snr_db
    print(f"turbo S3Gen meanflow: mel {mel_snr:.1f} dB, wav {wav_snr:.1f} dB")
    assert np.asarray(wav).shape == tuple(wav_ref.shape) == (1, 960 * 43)
    assert mel_snr >= reg.cumulative["s3gen"]["flow.output_mel"].snr_db
    assert wav_snr >= reg.cumulative["s3gen"]["hift.wav"].snr_db  # the SineGen phase sum (see the registry)


def test_turbo_gpt2_backbone_matches_the_original(turbo):
    """The MLX GPT-2 backbone (mlx_impl/t3/gpt2.py) against T3's HF GPT2Model of the
    synthetic t3_turbo_v1.safetensors, fed input embeddings as inference_turbo does: a prefill, then
    three one-token steps on the KV cache."""
    import mlx.core as mx
    import numpy as np
    import torch
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS
    from mlx_lm.models.cache import make_prompt_cache

    from mlx_impl.convert.common import load_strict
    from mlx_impl.convert.gpt2 import sanitize
    from mlx_impl.load import read_state_dict
    from mlx_impl.t3.gpt2 import GPT2Backbone, gpt2_model_args
    from parity import registry
    from parity.metrics import compare
    from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

    state = read_state_dict(ensure_turbo_checkpoint() / "t3_turbo_v1.safetensors")
    tfmr = {k[len("tfmr."):]: v for k, v in state.items() if k.startswith("tfmr.")}
    model = GPT2Backbone(gpt2_model_args(LLAMA_CONFIGS["GPT2_medium"]))
    load_strict(model, sanitize(tfmr), what="t3 GPT-2 backbone")
    g = torch.Generator().manual_seed(21)
    prefill = 0.5 * torch.randn(1, 30, 1024, generator=g)
    steps = [0.5 * torch.randn(1, 1, 1024, generator=g) for _ in range(3)]

    out = turbo.t3.tfmr(inputs_embeds=prefill, use_cache=True)
    ref, pkv = [out[0]], out.past_key_values
    for e in steps:
        out = turbo.t3.tfmr(inputs_embeds=e, past_key_values=pkv, use_cache=True)
        ref.append(out[0])
        pkv = out.past_key_values
    cache = make_prompt_cache(model)
    mine = [model(cache=cache, input_embeddings=mx.array(x.numpy())) for x in [prefill] + steps]
    goal = registry.load().default("float").snr_db
    snrs = [compare(r.numpy(), np.array(m), "float").snr_db for r, m in zip(ref, mine)]
    print("turbo GPT-2 backbone: " + ", ".join(f"{s:.1f} dB" for s in snrs))
    assert all(s >= goal for s in snrs), snrs
