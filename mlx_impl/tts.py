"""The Chatterbox TTS pipeline (mirrors chatterbox/tts.py): the text normalisation `punc_norm`,
`drop_invalid_tokens` (mirrors chatterbox.models.s3tokenizer.drop_invalid_tokens, used by
ChatterboxTTS.generate), `Conditionals` and `ChatterboxTTS`.
"""
from __future__ import annotations

import numpy as np

SPEECH_VOCAB_SIZE = 6561
SOS = SPEECH_VOCAB_SIZE  # start of speech
EOS = SPEECH_VOCAB_SIZE + 1  # stop of speech


# punc_norm's replacement table and sentence enders; the Turbo and multilingual pipelines have their own
PUNC_TO_REPLACE = (("...", ", "), ("…", ", "), (":", ","), (" - ", ", "), (";", ", "), ("—", "-"), ("–", "-"),
                   (" ,", ","), ("“", "\""), ("”", "\""), ("‘", "'"), ("’", "'"))
SENTENCE_ENDERS = (".", "!", "?", "-", ",")


def normalize_punctuation(text: str, punc_to_replace=PUNC_TO_REPLACE, sentence_enders=SENTENCE_ENDERS) -> str:
    """The original's punc_norm with a given table: an empty text replaced, the first letter capitalised,
    white space runs folded, the table's replacements in order, a full stop added if no ender closes it."""
    if len(text) == 0:
        return "You need to add some text for me to talk."
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old_char_sequence, new_char in punc_to_replace:
        text = text.replace(old_char_sequence, new_char)
    text = text.rstrip(" ")
    if not any(text.endswith(p) for p in sentence_enders):
        text += "."
    return text


def punc_norm(text: str) -> str:
    """Quick cleanup of punctuation from LLMs or characters rarely seen in the dataset."""
    return normalize_punctuation(text)


def drop_invalid_tokens(x) -> np.ndarray:
    """Keep the tokens after the start-of-speech token and before the stop token.

    Mirrors the original, quirks included: only 1-D input or a (1, n) array is allowed; for a
    (1, n) array the original's `nonzero(...)[0]` gives ROW indices, so any SOS/EOS there slices
    rows (an empty result); more than one SOS (or EOS) in a 1-D input is an error.
    """
    x = np.asarray(x)
    assert x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1), "only batch size of one allowed for now"
    s, e = _valid_span(x)
    return x[s:e]


def _valid_span(x: np.ndarray):
    """drop_invalid_tokens' slice (start, end) of x along its first axis."""
    def position(token: int):
        hits = np.nonzero(x == token)[0]  # first axis, as torch's nonzero(as_tuple=True)[0]
        if hits.size != 1:
            raise TypeError(f"only integer tensors of a single element can be converted to an index "
                            f"({hits.size} positions of token {token})")
        return int(hits[0])

    return (position(SOS) + 1 if (x == SOS).any() else 0), (position(EOS) if (x == EOS).any() else None)


def s3gen_token_positions(row) -> np.ndarray:
    """Positions, in a 1-D T3 output row, of the tokens generate() hands to S3Gen: the ones
    drop_invalid_tokens keeps (after SOS, before EOS) that are speech ids (< 6561). They are the
    decoding steps of S3Gen's tokens."""
    row = np.asarray(row)
    assert row.ndim == 1, "a 1-D row of T3 tokens expected"
    s, e = _valid_span(row)
    positions = np.arange(row.size)[s:e]
    return positions[row[positions] < SPEECH_VOCAB_SIZE]


def s3gen_speech_tokens(row) -> np.ndarray:
    """The tokens generate() hands to S3Gen from a 1-D T3 output row (drop_invalid_tokens, < 6561)."""
    row = np.asarray(row)
    return row[s3gen_token_positions(row)]


# ----------------------------------------------------------------------------- ChatterboxTTS
import os  # noqa: E402
from typing import Callable, List, Optional, Sequence  # noqa: E402

import mlx.core as mx  # noqa: E402

# chatterbox/tts.py's Conditionals, in its own module so that load.py (which from_pretrained uses)
# reads conds files without importing the pipeline
from .conditionals import Conditionals  # noqa: E402

S3_SR = 16_000
S3GEN_SR = 24_000
REPO_ID = "ResembleAI/chatterbox"


def use_conditionals(tts, audio_prompt_path, exaggeration: float) -> None:
    """generate()'s conditioning (the English and the multilingual one): the clip's (prepare_conditionals)
    or the loaded ones, with T3's emotion_adv set to `exaggeration`."""
    from .t3.modules.cond_enc import T3Cond
    from .validate import UsageError

    if not audio_prompt_path and tts.conds is None:
        raise UsageError("Please `prepare_conditionals` first or specify `audio_prompt_path`")
    if audio_prompt_path:
        tts.prepare_conditionals(audio_prompt_path, exaggeration=exaggeration)
    cond = tts.conds.t3
    if float(np.asarray(cond.emotion_adv).reshape(-1)[0]) != float(exaggeration):
        tts.conds.t3 = T3Cond(speaker_emb=cond.speaker_emb, cond_prompt_speech_tokens=cond.cond_prompt_speech_tokens,
                              emotion_adv=exaggeration * mx.ones((1, 1, 1)))


class ChatterboxTTS:
    """The Chatterbox pipeline in MLX (chatterbox.tts.ChatterboxTTS): reference clip ->
    conditionals; text -> T3 speech tokens -> S3Gen waveform at 24 kHz. No watermark is applied."""

    ENC_COND_LEN = 6 * S3_SR
    DEC_COND_LEN = 10 * S3GEN_SR

    def __init__(self, t3, s3gen, ve, tokenizer, conds: Optional[Conditionals] = None):
        self.sr = S3GEN_SR
        self.t3, self.s3gen, self.ve, self.tokenizer, self.conds = t3, s3gen, ve, tokenizer, conds

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path_or_repo_id: str = REPO_ID) -> "ChatterboxTTS":
        """A local folder (the MLX single-file layout, model.safetensors + config.json, or the hub's
        PyTorch layout, converted on the fly), or a hub repo id resolved through huggingface_hub's
        cache (downloaded where a network exists). Applies MLX's settings for this model first
        (backend.apply_mlx_defaults: read at MLX's first evaluation; a value the user set wins)."""
        from .backend import apply_mlx_defaults
        from .load import load_pipeline, resolve_model_dir

        apply_mlx_defaults()
        return load_pipeline(resolve_model_dir(path_or_repo_id), cls)

    # ------------------------------------------------------------------ conditioning
    def prepare_conditionals(self, wav_fpath, exaggeration: float = 0.5, trace: Optional[dict] = None):
        from .audio import prepare_conditionals_audio
        from .t3.modules.cond_enc import T3Cond
        from .validate import check_sampling, check_voice

        check_sampling(dict(exaggeration=exaggeration))
        check_voice(wav_fpath)  # readable, non-empty, finite, long enough: UsageError naming the file
        s3gen_ref_wav, ref_16k_wav = prepare_conditionals_audio(wav_fpath, S3GEN_SR, S3_SR)
        if trace is not None:
            trace.update(wav_24k=s3gen_ref_wav, wav_16k=ref_16k_wav)  # before the 10 s cut
        s3gen_ref_wav = s3gen_ref_wav[: self.DEC_COND_LEN]
        s3gen_ref_dict = self.s3gen.embed_ref(s3gen_ref_wav, S3GEN_SR)
        plen = self.t3.hp.speech_cond_prompt_len
        t3_cond_prompt_tokens, _ = self.s3gen.tokenizer.forward([ref_16k_wav[: self.ENC_COND_LEN]], max_len=plen)
        ve_embed = mx.array(self.ve.embeds_from_wavs([ref_16k_wav], sample_rate=S3_SR))
        ve_embed = ve_embed.mean(axis=0, keepdims=True)
        t3_cond = T3Cond(speaker_emb=ve_embed, cond_prompt_speech_tokens=mx.atleast_2d(t3_cond_prompt_tokens),
                         emotion_adv=exaggeration * mx.ones((1, 1, 1)))
        self.conds = Conditionals(t3_cond, s3gen_ref_dict)
        return self.conds

    # ------------------------------------------------------------------ synthesis
    def text_tokens(self, text: str) -> np.ndarray:
        """punc_norm, tokenize, CFG copy, [START]/[STOP] padding, as generate() does (2, n + 2)."""
        tokens = np.asarray(self.tokenizer.text_to_tokens(punc_norm(text))).reshape(1, -1)
        tokens = np.concatenate([tokens, tokens], axis=0)
        sot, eot = self.t3.hp.start_text_token, self.t3.hp.stop_text_token
        return np.pad(np.pad(tokens, ((0, 0), (1, 0)), constant_values=sot), ((0, 0), (0, 1)), constant_values=eot)

    def generate(self, text, repetition_penalty=1.2, min_p=0.05, top_p=1.0, audio_prompt_path=None,
                 exaggeration=0.5, cfg_weight=0.5, temperature=0.8, max_new_tokens: int = 1000,
                 draw=None, flow_noise=None, sine_phase=None, sine_noise=None,
                 on_token: Optional[Callable[[int, int], None]] = None, trace: Optional[dict] = None) -> mx.array:
        """(1, L) waveform at 24 kHz. `draw` / `flow_noise` / `sine_phase` / `sine_noise` replay the
        original's random draws; `on_token(step, token)` reports T3 progress. Every argument is
        checked (validate.RULES, the text against T3's tables) before any work; a bad one raises
        validate.UsageError (a ValueError) naming it."""
        from .validate import check_sampling

        check_sampling(dict(exaggeration=exaggeration))
        self.t3.check_decode_args(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                                  repetition_penalty=repetition_penalty, cfg_weight=cfg_weight)
        text_tokens = self.text_tokens(text)
        self.t3.check_text_tokens(text_tokens)
        use_conditionals(self, audio_prompt_path, exaggeration)
        speech_tokens = self.t3.inference(
            t3_cond=self.conds.t3, text_tokens=text_tokens, max_new_tokens=max_new_tokens, temperature=temperature,
            cfg_weight=cfg_weight, repetition_penalty=repetition_penalty, min_p=min_p, top_p=top_p, draw=draw,
            on_token=on_token)
        speech_tokens = s3gen_speech_tokens(speech_tokens[0])
        if trace is not None:
            trace.update(t3_tokens=speech_tokens)
        wav, _ = self.s3gen.inference(speech_tokens[None], ref_dict=self.conds.gen, flow_noise=flow_noise,
                                      sine_phase=sine_phase, sine_noise=sine_noise, trace=trace)
        return wav

    def generate_batch(self, texts: Sequence[str], repetition_penalty=1.2, min_p=0.05, top_p=1.0,
                       audio_prompt_paths=None, exaggeration=0.5, cfg_weight=0.5, temperature=0.8,
                       max_new_tokens: int = 1000, draws=None, flow_noises=None, sine_phases=None, sine_noises=None,
                       on_token: Optional[Callable[[int, int, int], None]] = None) -> List[mx.array]:
        """`generate` for several texts: a (1, L) waveform per text. T3 decodes all texts together
        (T3.inference_batch); S3Gen then runs text by text. `audio_prompt_paths`: None (the loaded
        conditionals), one path for every text, or one per text (each voice prepared once; the
        conditionals last prepared stay loaded, as after `generate`). `draws`, `flow_noises`,
        `sine_phases`, `sine_noises`: None or one per text; text r then gets generate's waveform
        for texts[r] with its voice and draws. `on_token(text, step, token)` reports T3 progress."""
        from .validate import UsageError, check_sampling

        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise UsageError("texts: a non-empty list of strings expected")
        B = len(texts)
        draws, flow_noises, sine_phases, sine_noises = (
            self._one_per_text(values, B, name) for values, name in
            ((draws, "draws"), (flow_noises, "flow_noises"), (sine_phases, "sine_phases"), (sine_noises, "sine_noises")))
        check_sampling(dict(exaggeration=exaggeration))
        self.t3.check_decode_args(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                                  repetition_penalty=repetition_penalty, cfg_weight=cfg_weight)
        text_tokens = [self.text_tokens(text) for text in texts]
        for tokens in text_tokens:
            self.t3.check_text_tokens(tokens)
        conds = self._conditionals_per_text(audio_prompt_paths, B, exaggeration)
        t3_conds = {id(c): self._t3_cond(c, exaggeration) for c in conds}
        tokens = self.t3.inference_batch(
            t3_conds=[t3_conds[id(c)] for c in conds], text_tokens=text_tokens, max_new_tokens=max_new_tokens,
            temperature=temperature, cfg_weight=cfg_weight, repetition_penalty=repetition_penalty, min_p=min_p,
            top_p=top_p, draws=draws, on_token=on_token)
        wavs = []
        for r, (row, c) in enumerate(zip(tokens, conds)):
            wav, _ = self.s3gen.inference(s3gen_speech_tokens(row[0])[None], ref_dict=c.gen, flow_noise=flow_noises[r],
                                          sine_phase=sine_phases[r], sine_noise=sine_noises[r])
            wavs.append(wav)
        return wavs

    @staticmethod
    def _one_per_text(values, B: int, name: str) -> list:
        from .validate import UsageError

        if values is None:
            return [None] * B
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != B:
            raise UsageError(f"{name}: one per text expected ({B} texts)")
        return list(values)

    def _conditionals_per_text(self, audio_prompt_paths, B: int, exaggeration: float) -> list:
        """Each text's Conditionals: the loaded ones, one voice's, or each text's voice (each path
        prepared once)."""
        from .validate import UsageError

        if not audio_prompt_paths:
            if self.conds is None:
                raise UsageError("Please `prepare_conditionals` first or specify `audio_prompt_paths`")
            return [self.conds] * B
        if isinstance(audio_prompt_paths, (str, os.PathLike)):
            audio_prompt_paths = [audio_prompt_paths] * B
        paths = self._one_per_text(audio_prompt_paths, B, "audio_prompt_paths")
        prepared = {}
        for path in paths:
            if path not in prepared:
                prepared[path] = self.prepare_conditionals(path, exaggeration=exaggeration)
        return [prepared[path] for path in paths]

    @staticmethod
    def _t3_cond(conds: Conditionals, exaggeration: float):
        """conds.t3 with `exaggeration` as its emotion value (generate's replacement, without
        changing conds)."""
        from .t3.modules.cond_enc import T3Cond

        cond = conds.t3
        if float(np.asarray(cond.emotion_adv).reshape(-1)[0]) == exaggeration:
            return cond
        return T3Cond(speaker_emb=cond.speaker_emb, cond_prompt_speech_tokens=cond.cond_prompt_speech_tokens,
                      emotion_adv=exaggeration * mx.ones((1, 1, 1)))
