"""ChatterboxTTS.generate_batch at full size (the synthetic checkpoint, loaded as users load it):
three texts of different lengths with two voices, decoded together, against three generate() calls
with the same draws. T3's tokens are compared exactly; with replayed draws each waveform too, bit
for bit: S3Gen runs text by text, and with MLX's generator seeded alike before the batch and before
the three generate() calls, each text's flow noise and SineGen draws are the same (greedy decoding
takes uniforms from MLX's generator in generate(), not in generate_batch: tokens only). Both sides
get the same prepared voices (prepare_conditionals once per clip)."""
import mlx.core as mx
import numpy as np
import pytest

from parity.cases import get_case

TEXTS = ("Hello there.", "Batched decoding keeps every row's tokens, whatever the other rows are.",
         "A third text, of a middle length.")
N_STEPS = 50


VOICES = ("espeak_22k", "stereo_44k")


@pytest.fixture(scope="module")
def tts(parity_session):
    from mlx_impl.tts import ChatterboxTTS

    return ChatterboxTTS.from_pretrained(str(parity_session.ckpt.path))


@pytest.fixture
def prepared_once(tts, monkeypatch):
    """prepare_conditionals answering each clip with its Conditionals prepared once, on both sides."""
    prepare, prepared = tts.prepare_conditionals, {}

    def once(path, exaggeration=0.5, trace=None):
        if (path, exaggeration) not in prepared:
            prepared[path, exaggeration] = prepare(path, exaggeration=exaggeration)
        tts.conds = prepared[path, exaggeration]
        return tts.conds

    monkeypatch.setattr(tts, "prepare_conditionals", once)
    return prepared


def replays(n_texts=len(TEXTS)):
    from mlx_impl.t3.inference import ReplayDraw

    return [ReplayDraw(np.random.default_rng(40 + r).random(N_STEPS)) for r in range(n_texts)]


@pytest.mark.parametrize("greedy", [False, True], ids=["english-batched-replayed", "english-batched-greedy"])
def test_generate_batch_equals_generate(tts, prepared_once, greedy):
    from mlx_impl.t3.inference import GreedyDraw

    voices = [str(get_case(case).audio_path) for case in VOICES]
    paths = [voices[0], voices[1], voices[0]]
    draws = [GreedyDraw()] * len(TEXTS) if greedy else replays()
    batch_tokens = [[] for _ in TEXTS]
    mx.random.seed(7)
    wavs = tts.generate_batch(list(TEXTS), audio_prompt_paths=paths, max_new_tokens=N_STEPS, draws=draws,
                              on_token=lambda r, i, t: batch_tokens[r].append(t))
    mx.eval(wavs)
    mx.random.seed(7)
    for r, text in enumerate(TEXTS):
        one_tokens = []
        wav = tts.generate(text, audio_prompt_path=paths[r], max_new_tokens=N_STEPS, draw=draws[r],
                           on_token=lambda i, t: one_tokens.append(t))
        assert batch_tokens[r] == one_tokens, f"text {r}: T3 tokens differ"
        assert 0 < len(one_tokens) <= N_STEPS
        a, b = np.array(wav), np.array(wavs[r])
        assert a.shape == b.shape and np.isfinite(b).all()
        if not greedy:
            np.testing.assert_array_equal(a, b, err_msg=f"text {r}: waveform")
    assert len(prepared_once) == 2


def test_generate_batch_bad_input(tts):
    from mlx_impl.validate import UsageError

    with pytest.raises(UsageError, match="texts: a non-empty list"):
        tts.generate_batch("one text, not a list")
    with pytest.raises(UsageError, match="draws: one per text expected"):
        tts.generate_batch(list(TEXTS), draws=replays()[:2])
    with pytest.raises(UsageError, match="audio_prompt_paths: one per text expected"):
        tts.generate_batch(list(TEXTS), audio_prompt_paths=[str(get_case("espeak_22k").audio_path)] * 2)
