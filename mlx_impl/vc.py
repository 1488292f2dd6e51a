"""Voice conversion in MLX (mirrors chatterbox/vc.py): a source clip's S3 speech tokens, re-voiced
by S3Gen with a target voice's reference (`set_target_voice`). No watermark is applied (as in
mlx_impl/tts.py). Its command line: `python -m mlx_impl.vc_cli` (mlx_impl/vc_cli.py).
"""
from __future__ import annotations

from typing import Optional

import mlx.core as mx

from .audio import load_like_librosa
from .s3gen.const import S3GEN_SR
from .s3tokenizer import S3_SR

REPO_ID = "ResembleAI/chatterbox"


class ChatterboxVC:
    """chatterbox.vc.ChatterboxVC in MLX: set_target_voice(wav) -> S3Gen's reference dict;
    generate(audio) -> (1, L) waveform at 24 kHz in the target voice."""

    ENC_COND_LEN = 6 * S3_SR
    DEC_COND_LEN = 10 * S3GEN_SR

    def __init__(self, s3gen, ref_dict: Optional[dict] = None):
        self.sr = S3GEN_SR
        self.s3gen = s3gen
        self.ref_dict = ref_dict  # the built-in voice (conds.pt's `gen`) until set_target_voice

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str = REPO_ID) -> "ChatterboxVC":
        """A local folder (the hub's layout: s3gen.safetensors + optional conds.pt; or the MLX
        single-file layout), or a hub repo id resolved through huggingface_hub's cache."""
        from .backend import apply_mlx_defaults
        from .load import load_vc, resolve_model_dir

        apply_mlx_defaults()
        return load_vc(resolve_model_dir(path_or_repo_id), cls)

    def set_target_voice(self, wav_fpath, trace: Optional[dict] = None):
        from .validate import check_voice

        check_voice(wav_fpath, option="target_voice_path")  # UsageError naming the file
        s3gen_ref_wav, _sr = load_like_librosa(wav_fpath, sr=S3GEN_SR)
        if trace is not None:
            trace.update(target_wav_24k=s3gen_ref_wav)  # before the 10 s cut
        s3gen_ref_wav = s3gen_ref_wav[: self.DEC_COND_LEN]
        self.ref_dict = self.s3gen.embed_ref(s3gen_ref_wav, S3GEN_SR)

    def generate(self, audio, target_voice_path=None, flow_noise=None, sine_phase=None, sine_noise=None,
                 on_stage=None, trace: Optional[dict] = None) -> mx.array:
        """(1, L) waveform at 24 kHz: `audio` in the target voice. `flow_noise` / `sine_phase` /
        `sine_noise` replay the original's random draws; `on_stage(name)` reports progress ("target
        voice", "tokens", "waveform"). A missing target voice or a bad clip raises
        validate.UsageError (a ValueError) naming it."""
        from .validate import UsageError, check_source

        report = on_stage or (lambda name: None)
        check_source(audio)
        if target_voice_path:
            self.set_target_voice(target_voice_path, trace=trace)
            mx.eval(self.ref_dict["prompt_feat"], self.ref_dict["embedding"])
            report("target voice")
        elif self.ref_dict is None:
            raise UsageError("no target voice: pass target_voice_path or call set_target_voice first "
                             "(this model has no built-in voice, conds.pt)")

        audio_16, _ = load_like_librosa(audio, sr=S3_SR)
        s3_tokens, _ = self.s3gen.tokenizer(mx.array(audio_16)[None])
        mx.eval(s3_tokens)
        report("tokens")
        if trace is not None:
            trace.update(source_wav_16k=audio_16, source_tokens=s3_tokens)
        wav, _ = self.s3gen.inference(speech_tokens=s3_tokens, ref_dict=self.ref_dict, flow_noise=flow_noise,
                                      sine_phase=sine_phase, sine_noise=sine_noise, trace=trace)
        mx.eval(wav)
        report("waveform")
        return wav

