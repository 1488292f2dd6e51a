"""Chatterbox Multilingual's stage runners (mtl_*.py) and its cumulative mode share this: the MLX
ChatterboxMultilingualTTS as users load it (mlx_impl.mtl_tts.load_mtl: the hub's multilingual files, converted
strictly), one held at a time; the multilingual fixture read under the English checkpoint names (each
multilingual checkpoint is "mtl." + its English counterpart); and the English runners run on it with the
multilingual pipeline's modules in place of the ones they load from an English folder (the VoiceEncoder, S3
tokenizer, CAMPPlus, flow, HiFT and T3's conditioning are the English model's modules). Isolated as the English
stages: every sub-stage gets the reference's own inputs."""
from __future__ import annotations

import contextlib
from typing import Dict

import numpy as np

from ..fixtures import RenamedFixture

PREFIX = "mtl."

_MODELS: Dict[str, object] = {}


def pipeline(ckpt):
    """The MLX ChatterboxMultilingualTTS of a multilingual checkpoint folder (one held at a time: memory)."""
    key = str(ckpt.path)
    if key not in _MODELS:
        from mlx_impl.mtl_tts import ChatterboxMultilingualTTS, load_mtl

        _MODELS.clear()
        with offline_front_end(ckpt):
            _MODELS[key] = load_mtl(ckpt.path, ChatterboxMultilingualTTS)
    return _MODELS[key]


@contextlib.contextmanager
def offline_front_end(ckpt):
    """As the reference export runs the original's front end (reference/export_mtl.py offline_front_end): the
    hub offline (the Cangjie mapping from the folder's hub cache) and spacy-pkuseg's model from the folder's
    pkuseg/ where it has one ($PKUSEG_HOME, and the imported spacy_pkuseg's config, which read it at import)."""
    import os

    from huggingface_hub import constants

    home = ckpt.path / "pkuseg"
    saved_offline, saved_env = constants.HF_HUB_OFFLINE, os.environ.get("PKUSEG_HOME")
    config = None
    constants.HF_HUB_OFFLINE = True
    if home.is_dir():
        from spacy_pkuseg import config

        saved_home = config.pkuseg_home
        os.environ["PKUSEG_HOME"] = config.pkuseg_home = str(home)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_offline
        if config is not None:
            config.pkuseg_home = saved_home
            if saved_env is None:
                os.environ.pop("PKUSEG_HOME", None)
            else:
                os.environ["PKUSEG_HOME"] = saved_env


class MtlFixture(RenamedFixture):
    """A multilingual fixture read under the English checkpoint names ("mtl." + name)."""

    def __init__(self, fx):
        super().__init__(fx, lambda name: PREFIX + name)


def mtl_names(names) -> list:
    return [PREFIX + n for n in names]


@contextlib.contextmanager
def english_loaders(ckpt):
    """The English runners' model loaders answering with the multilingual pipeline's modules (restored on exit)."""
    from . import embed_ref_speaker, embed_ref_tokens, flow, hift, s3tok, t3_cond, ve

    tts = pipeline(ckpt)
    s3gen = tts.s3gen
    loaders = [(ve, "load_ve_model", tts.ve), (s3tok, "load_tokenizer", s3gen.tokenizer),
               (embed_ref_tokens, "load_tokenizer", s3gen.tokenizer),
               (embed_ref_speaker, "load_campplus_model", s3gen.speaker_encoder), (flow, "load_flow", s3gen.flow),
               (hift, "model", s3gen.mel2wav), (t3_cond, "load_t3_model", tts.t3)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in loaders]
    try:
        for mod, name, module in loaders:
            setattr(mod, name, lambda _ckpt, module=module: module)
        yield tts
    finally:
        for mod, name, real in saved:
            setattr(mod, name, real)


def run_english(runner, fx, ckpt, provides) -> dict:
    """An English stage runner on a multilingual fixture, with the multilingual pipeline's modules; the outputs
    the multilingual stage provides, under their mtl.* names."""
    with english_loaders(ckpt):
        out = runner.run(MtlFixture(fx), ckpt)
    return {name: out[name[len(PREFIX):]] for name in provides if name[len(PREFIX):] in out}


def text_tokens_slice(input_embeds: np.ndarray, text_tokens: np.ndarray) -> tuple:
    """(len_cond, len_cond + n_text) of T3.inference's AlignmentStreamAnalyzer: the text's columns in the input
    embeddings [cond | text | start of speech]."""
    len_cond = input_embeds.shape[1] - text_tokens.shape[-1] - 1
    return len_cond, len_cond + text_tokens.shape[-1]


# the AlignmentStreamAnalyzer's decisions per step: the columns of mtl.t3.analysis, in the order the reference
# export writes them (reference/export_mtl.py ANALYSIS_COLUMNS; tests/test_mtl_parity.py checks they agree)
ANALYSIS_COLUMNS = ("text_position", "cur_text_posn", "false_start", "complete", "long_tail", "alignment_repetition",
                    "token_repetition", "discontinuity", "eos_suppressed", "forced_eos")


def analysis_rows(steps) -> np.ndarray:
    """MLX's analyzer decisions (a dict per step) as the fixture's (n_steps, 10) int32 matrix."""
    return np.asarray([[int(s[c]) for c in ANALYSIS_COLUMNS] for s in steps], dtype=np.int32).reshape(-1, len(ANALYSIS_COLUMNS))
