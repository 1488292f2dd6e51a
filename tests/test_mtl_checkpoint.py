"""The synthetic Chatterbox Multilingual checkpoint (issue 21, reference/mtl_synth_checkpoint.py):
the original ChatterboxMultilingualTTS.from_local loads it unmodified, its text front end reads the
stand-in files (Cangjie mapping from the hub cache inside the folder, pkuseg's model from the
folder's pkuseg/), mlx_impl's MTLTokenizer gives the same ids on the same folder, and generate()
returns audio through T3's multilingual path (its AlignmentStreamAnalyzer included). Built once
into checkpoints/synthetic-mtl-s0 when missing (heavy: run under the shared lock)."""
import pytest

from tests.mtl_front_end import ckpt, offline_front_end  # noqa: F401 (module fixtures)

pytestmark = pytest.mark.reference

N_STEPS = 8  # generate() lets T3 run 1000 steps; only that bound is lowered here


@pytest.fixture(scope="module")
def mtl(ckpt, offline_front_end):
    import torch
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    torch.set_grad_enabled(False)
    return ChatterboxMultilingualTTS.from_local(ckpt, "cpu")


def test_mtl_synthetic_checkpoint_loads_unmodified(mtl):
    assert mtl.t3.hp.is_multilingual and mtl.t3.text_emb.weight.shape[0] == 2454
    assert mtl.tokenizer.tokenizer.get_vocab_size() == 2454
    conv = mtl.tokenizer.cangjie_converter
    assert len(conv.word2cj) == 0x9FFF - 0x4E00 + 1 and conv.segmenter is not None
    assert mtl.conds is not None and mtl.conds.t3.cond_prompt_speech_tokens.shape[-1] == 150
    assert float(mtl.conds.t3.emotion_adv[0, 0, 0]) == 0.5


def test_mtl_tokenizer_of_the_checkpoint_matches_mlx(ckpt, mtl):
    from mlx_impl.tokenizers import MTLTokenizer
    from reference.mtl_tokenizer_json import FILE_NAME, SENTENCES

    mlx = MTLTokenizer(ckpt / FILE_NAME)
    for lang, text in SENTENCES.items():
        assert mlx.encode(text, language_id=lang, strict=True) == mtl.tokenizer.encode(text, language_id=lang), lang


@pytest.mark.parametrize("lang", ["zh"])  # the path is the same for every language; ~40 s of CPU each
def test_mtl_synthetic_checkpoint_generates_audio(mtl, lang):
    import torch

    from reference.mtl_tokenizer_json import SENTENCES

    f0, tokens = [], []
    handle = mtl.s3gen.mel2wav.f0_predictor.register_forward_hook(lambda m, i, o: f0.append(o))
    inference = mtl.t3.inference

    def bounded(**kw):
        kw["max_new_tokens"] = N_STEPS
        out = inference(**kw)
        tokens.append(out)
        return out

    mtl.t3.inference = bounded
    try:
        torch.manual_seed(0)
        wav = mtl.generate(SENTENCES[lang], language_id=lang)
    finally:
        del mtl.t3.inference
        handle.remove()
    assert mtl.t3.patched_model.alignment_stream_analyzer is not None  # the multilingual path ran
    n_speech = int((tokens[0][0] < 6561).sum())
    assert n_speech > 0 and wav.shape[0] == 1 and wav.shape[1] > 0
    assert torch.isfinite(wav).all() and float(wav.std()) > 0
    assert bool((f0[0] > 10.0).any()), "no voiced frame: SineGen's sine branch unexercised"
