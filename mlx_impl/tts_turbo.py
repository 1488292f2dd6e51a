"""Chatterbox Turbo in MLX (mirrors chatterbox/tts_turbo.py): Turbo's text normalisation
`punc_norm`, the reference clip's loudness normalisation, and `ChatterboxTurboTTS`: the reference
clip -> conditionals (T3's 375-token prompt from the first 15 s, S3Gen's reference from the first
10 s); text -> the GPT-2 tokenizer -> T3.inference_turbo (GPT-2 medium, no CFG) -> speech tokens,
three S3GEN_SIL appended -> S3Gen with MeanFlow (2 steps) -> waveform at 24 kHz. No watermark is
applied (as in mlx_impl/tts.py). Loading a folder: `from_pretrained` (load_turbo below).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .tts import normalize_punctuation

REPO_ID = "ResembleAI/chatterbox-turbo"
S3_SR = 16_000
S3GEN_SR = 24_000
S3GEN_SIL = 4299  # chatterbox.models.s3gen.const
SPEECH_VOCAB_SIZE = 6561
TURBO_WEIGHTS = ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors")
TEXT_VOCAB = 50276
# the GPT-2 tokenizer's files as AutoTokenizer.from_pretrained(ckpt_dir) reads them
TOKENIZER_FILES = ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")
# where Turbo's MLX layout keeps them: a folder of their own, since AutoTokenizer also reads a config.json
# beside them (the layout's, model_type chatterbox_turbo, which transformers does not know)
MLX_TOKENIZER_DIR = "tokenizer"
logger = logging.getLogger(__name__)


# Turbo's table: unlike the English punc_norm's, no "...", " - " or ";" rules
TURBO_PUNC_TO_REPLACE = (("…", ", "), (":", ","), ("—", "-"), ("–", "-"), (" ,", ","), ("“", "\""), ("”", "\""),
                         ("‘", "'"), ("’", "'"))


def punc_norm(text: str) -> str:
    """Quick cleanup of punctuation from LLMs or characters rarely seen in the dataset (Turbo's table)."""
    return normalize_punctuation(text, TURBO_PUNC_TO_REPLACE)


def norm_loudness(wav: np.ndarray, sr: int, target_lufs: float = -27) -> np.ndarray:
    """ChatterboxTurboTTS.norm_loudness: the clip scaled to `target_lufs` integrated loudness
    (ITU-R BS.1770 through pyloudnorm, the original's library and call); unchanged where the gain is
    not finite and positive (a silent clip) or pyloudnorm fails (the original prints a warning)."""
    import pyloudnorm as ln

    try:
        meter = ln.Meter(sr)
        loudness = meter.integrated_loudness(wav)
        gain_db = target_lufs - loudness
        gain_linear = 10.0 ** (gain_db / 20.0)
        if math.isfinite(gain_linear) and gain_linear > 0.0:
            wav = wav * gain_linear
    except Exception as e:
        print(f"Warning: Error in norm_loudness, skipping: {e}")

    return wav


# ----------------------------------------------------------------------------- loading


@dataclass
class TurboFiles:
    """What `check_turbo_dir` read: the cheap parts of a Turbo folder, checked before the weights load."""
    path: Path
    kind: str  # "mlx" (model.safetensors from `python -m mlx_impl.convert`) or "hub"
    tokenizer: object
    conds: object  # Conditionals or None
    text_vocab: int  # rows of T3's text token table
    config: dict  # config.json of the MLX layout ({} for the hub's)


def is_turbo_dir(model_dir: Path) -> bool:
    """The folder holds Chatterbox Turbo: the hub's t3_turbo_v1 / s3gen_meanflow files, or an MLX
    layout whose config.json names model_type chatterbox_turbo."""
    from .load import TURBO_FILES, TURBO_MODEL_TYPE, read_config

    model_dir = Path(model_dir)
    if (model_dir / "model.safetensors").is_file():
        return read_config(model_dir).get("model_type") == TURBO_MODEL_TYPE
    return any((model_dir / f).is_file() for f in TURBO_FILES)


def check_turbo_dir(model_dir: Path) -> TurboFiles:
    """Every file of a Turbo folder checked without loading the weights: the weight files present with
    sound safetensors headers (an English Chatterbox folder is named as such), the GPT-2 tokenizer,
    the built-in voice. One ModelLoadError naming the file."""
    from .load import load_conds

    model_dir = Path(model_dir)
    kind = "mlx" if (model_dir / "model.safetensors").is_file() else "hub"
    config, text_vocab = _check_mlx_layout(model_dir) if kind == "mlx" else ({}, _check_hub_layout(model_dir))
    tokenizer = load_turbo_tokenizer(model_dir / MLX_TOKENIZER_DIR if kind == "mlx" else model_dir)
    conds = None
    for name in ("conds.safetensors", "conds.pt"):
        if (model_dir / name).is_file():
            conds = load_conds(model_dir / name)
            break
    return TurboFiles(model_dir, kind, tokenizer, conds, int(text_vocab), config)


def _check_hub_layout(model_dir: Path) -> int:
    from .load import ModelLoadError
    from .validate import UsageError, safetensors_header, tensor_shape

    missing = [f for f in TURBO_WEIGHTS if not (model_dir / f).is_file()]
    if missing:
        english = [f for f in ("t3_cfg.safetensors", "s3gen.safetensors") if (model_dir / f).is_file()]
        note = (f"; it holds the English Chatterbox's {', '.join(english)}: load it with ChatterboxTTS"
                if english else "")
        what = {"s3gen_meanflow.safetensors": " (Turbo's MeanFlow S3Gen)"}
        raise ModelLoadError(f"{model_dir}: not a Chatterbox Turbo folder, missing "
                             f"{', '.join(f + what.get(f, '') for f in missing)}{note}")
    try:
        headers = {name: safetensors_header(model_dir / name) for name in TURBO_WEIGHTS}
        t3 = model_dir / "t3_turbo_v1.safetensors"
        return tensor_shape(headers[t3.name], "text_emb.weight", t3)[0]
    except UsageError as e:
        raise ModelLoadError(str(e)) from None


def _check_mlx_layout(model_dir: Path):
    """(config.json, T3's text table rows) of a folder in Turbo's MLX layout; an English one is named."""
    from .load import TURBO_MODEL_TYPE, ModelLoadError, read_config
    from .validate import UsageError, safetensors_header, tensor_shape

    config = read_config(model_dir)
    if config.get("model_type") != TURBO_MODEL_TYPE:
        raise ModelLoadError(f"{model_dir / 'config.json'}: model_type {config.get('model_type')!r}, not "
                             f"{TURBO_MODEL_TYPE!r}: an English Chatterbox folder in the MLX layout (load it with "
                             "ChatterboxTTS)")
    path = model_dir / "model.safetensors"
    try:
        return config, tensor_shape(safetensors_header(path), "t3.text_emb.weight", path)[0]
    except UsageError as e:
        raise ModelLoadError(str(e)) from None


def load_turbo_tokenizer(model_dir: Path):
    """The GPT-2 tokenizer as from_local loads it: AutoTokenizer.from_pretrained(ckpt_dir) (vocab.json,
    merges.txt, added_tokens.json, special_tokens_map.json, tokenizer_config.json), pad token = eos
    when missing, the original's warning when its size is not 50276."""
    from .load import ModelLoadError

    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as e:
        raise ModelLoadError(f"{model_dir}: the GPT-2 tokenizer (vocab.json, merges.txt, tokenizer_config.json) "
                             f"could not be loaded: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                             ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) != TEXT_VOCAB:
        print(f"WARNING: Tokenizer len {len(tokenizer)} != {TEXT_VOCAB}")
    return tokenizer


def load_turbo_weights(model_dir: Path):
    """ve, T3 (GPT-2) and S3Gen (MeanFlow) from the hub's files, converted strictly."""
    from .convert.s3gen import load_s3gen
    from .convert.t3_turbo import load_t3_turbo
    from .convert.voice_encoder import load_voice_encoder
    from .load import convert_file

    ve = convert_file(load_voice_encoder, model_dir / "ve.safetensors")
    t3 = convert_file(load_t3_turbo, model_dir / "t3_turbo_v1.safetensors")
    s3gen = convert_file(lambda state: load_s3gen(state, meanflow=True), model_dir / "s3gen_meanflow.safetensors")
    return ve, t3, s3gen


def turbo_modules():
    """Empty MLX modules of Chatterbox Turbo: VoiceEncoder, T3 on GPT-2 medium, S3Gen with MeanFlow."""
    from .convert.t3_turbo import turbo_hp
    from .s3gen.s3gen import S3Token2Wav
    from .t3 import T3
    from .voice_encoder import VoiceEncoder

    return VoiceEncoder(), T3(turbo_hp()), S3Token2Wav(meanflow=True)


def load_turbo(model_dir: Path, cls, files: Optional[TurboFiles] = None):
    """The cheap checks first (files, headers, tokenizer, built-in voice), then the weights: the MLX
    layout's model.safetensors, or the hub's files converted on the fly."""
    from .load import load_mlx_layout

    files = files if files is not None else check_turbo_dir(Path(model_dir))
    if files.kind == "mlx":
        ve, t3, s3gen = load_mlx_layout(files.path, modules=turbo_modules())
    else:
        ve, t3, s3gen = load_turbo_weights(files.path)
    return cls(t3, s3gen, ve, files.tokenizer, conds=files.conds)


# ----------------------------------------------------------------------------- ChatterboxTurboTTS


class ChatterboxTurboTTS:
    """chatterbox.tts_turbo.ChatterboxTurboTTS in MLX."""

    ENC_COND_LEN = 15 * S3_SR
    DEC_COND_LEN = 10 * S3GEN_SR

    def __init__(self, t3, s3gen, ve, tokenizer, conds=None):
        self.sr = S3GEN_SR
        self.t3, self.s3gen, self.ve, self.tokenizer, self.conds = t3, s3gen, ve, tokenizer, conds

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str = REPO_ID) -> "ChatterboxTurboTTS":
        """A local folder in the hub's Turbo layout (ve.safetensors, t3_turbo_v1.safetensors,
        s3gen_meanflow.safetensors, the GPT-2 tokenizer files, optional conds.pt) or in Turbo's MLX
        layout (model.safetensors + config.json from `python -m mlx_impl.convert`, the tokenizer files in
        tokenizer/, optional conds.safetensors), or a hub repo id resolved through huggingface_hub's cache."""
        from .backend import apply_mlx_defaults
        from .load import resolve_model_dir

        apply_mlx_defaults()
        return load_turbo(resolve_model_dir(path_or_repo_id), cls)

    from_local = from_pretrained

    def norm_loudness(self, wav, sr, target_lufs=-27):
        return norm_loudness(wav, sr, target_lufs)

    def prepare_conditionals(self, wav_fpath, exaggeration: float = 0.5, norm_loudness: bool = True,
                             trace: Optional[dict] = None):
        import mlx.core as mx

        from .audio import DEFAULT_METHOD, load_like_librosa, resample
        from .conditionals import Conditionals
        from .t3.modules.cond_enc import T3Cond
        from .validate import UsageError, check_voice

        info, _ = check_voice(wav_fpath)  # readable, non-empty, finite: UsageError naming the file
        s3gen_ref_wav, _sr = load_like_librosa(wav_fpath, sr=S3GEN_SR, method=DEFAULT_METHOD["prepare_conditionals.load_24k"])
        if not len(s3gen_ref_wav) / _sr > 5.0:  # the original asserts it
            raise UsageError(f"voice {info.path}: {len(s3gen_ref_wav) / _sr:.2f} s; Chatterbox Turbo's audio prompt "
                             "must be longer than 5 seconds")
        if norm_loudness:
            s3gen_ref_wav = self.norm_loudness(s3gen_ref_wav, _sr)
        ref_16k_wav = resample(s3gen_ref_wav, S3GEN_SR, S3_SR, DEFAULT_METHOD["prepare_conditionals.resample_16k"])
        if trace is not None:
            trace.update(wav_24k=s3gen_ref_wav, wav_16k=ref_16k_wav)  # before the cuts
        s3gen_ref_dict = self.s3gen.embed_ref(s3gen_ref_wav[: self.DEC_COND_LEN], S3GEN_SR)
        plen = self.t3.hp.speech_cond_prompt_len
        t3_cond_prompt_tokens, _ = self.s3gen.tokenizer.forward([ref_16k_wav[: self.ENC_COND_LEN]], max_len=plen)
        ve_embed = mx.array(self.ve.embeds_from_wavs([ref_16k_wav], sample_rate=S3_SR)).mean(axis=0, keepdims=True)
        t3_cond = T3Cond(speaker_emb=ve_embed, cond_prompt_speech_tokens=mx.atleast_2d(t3_cond_prompt_tokens),
                         emotion_adv=exaggeration * mx.ones((1, 1, 1)))
        self.conds = Conditionals(t3_cond, s3gen_ref_dict)
        return self.conds

    def text_tokens(self, text: str) -> np.ndarray:
        """punc_norm, then the GPT-2 tokenizer as generate() calls it (1, n); no [START]/[STOP]."""
        return np.asarray(self.tokenizer(punc_norm(text), return_tensors="np", padding=True,
                                         truncation=True).input_ids).astype(np.int32)

    def generate(self, text, repetition_penalty=1.2, min_p=0.00, top_p=0.95, audio_prompt_path=None,
                 exaggeration=0.0, cfg_weight=0.0, temperature=0.8, top_k=1000, norm_loudness=True,
                 max_gen_len: int = 1000, draw=None, flow_noise=None, sine_phase=None, sine_noise=None,
                 on_token: Optional[Callable[[int, int], None]] = None, trace: Optional[dict] = None):
        """(1, L) waveform at 24 kHz. `max_gen_len` is inference_turbo's bound (generate() in the
        original leaves it at 1000); `draw` / `flow_noise` / `sine_phase` / `sine_noise` replay the
        original's random draws; `on_token(step, token)` reports T3 progress."""
        from .validate import UsageError

        text_tokens = self.text_tokens(text)
        if not audio_prompt_path and self.conds is None:
            raise UsageError("Please `prepare_conditionals` first or specify `audio_prompt_path`")
        if audio_prompt_path:
            self.prepare_conditionals(audio_prompt_path, exaggeration=exaggeration, norm_loudness=norm_loudness)
        if cfg_weight > 0.0 or exaggeration > 0.0 or min_p > 0.0:
            logger.warning("CFG, min_p and exaggeration are not supported by Turbo version and will be ignored.")
        speech_tokens = self.t3.inference_turbo(
            t3_cond=self.conds.t3, text_tokens=text_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, max_gen_len=max_gen_len, draw=draw, on_token=on_token)
        speech_tokens = s3gen_tokens(speech_tokens)
        if trace is not None:
            trace.update(t3_tokens=speech_tokens)
        wav, _ = self.s3gen.inference(speech_tokens[None], ref_dict=self.conds.gen, n_cfm_timesteps=2,
                                      flow_noise=flow_noise, sine_phase=sine_phase, sine_noise=sine_noise, trace=trace)
        return wav


def s3gen_tokens(speech_tokens) -> np.ndarray:
    """generate()'s hand-over to S3Gen: the speech ids (< 6561, the start/stop tokens dropped), then
    three S3GEN_SIL."""
    speech_tokens = np.asarray(speech_tokens).reshape(-1)
    speech_tokens = speech_tokens[speech_tokens < SPEECH_VOCAB_SIZE]
    return np.concatenate([speech_tokens, np.full(3, S3GEN_SIL, dtype=speech_tokens.dtype)]).astype(np.int32)
