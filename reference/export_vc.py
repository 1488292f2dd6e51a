"""Reference export of voice conversion: runs the ORIGINAL ChatterboxVC on one VC case and writes
every `vc.*` parity checkpoint (parity/checkpoints.toml, model vc).

The run is the original's own, unmodified: `ChatterboxVC.from_local(ckpt)`, then
`torch.manual_seed(case.seed)` and `generate(source, target_voice_path=target)` (set_target_voice,
librosa.load at 16 kHz, the S3 tokenizer, s3gen.inference, the watermark). Hooks record:
  - the two librosa.load calls of chatterbox/vc.py (24 kHz target, 16 kHz source), by their `sr`;
  - S3Token2Mel.embed_ref's intermediates and its result (ChatterboxVC.ref_dict);
  - the tokenizer's log-mel of the source and the tokens s3gen.inference receives;
  - S3Gen's flow and HiFT with the English export's hooks (reference/export.py record_s3gen), the
    checkpoints renamed to their vc.* names: the CFM start noise and SineGen's phase and noise are
    recorded so that MLX replays them;
  - s3gen.inference's output (vc.wav: before the watermark, which generate() then applies).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from parity.cases import VCCase
from parity.checkpoint_dir import CheckpointDir
from parity.errors import ParityError

from .export import (_check_audio_readable, checkpoint_meta, from_local_or_error, package_versions, record_s3gen,
                     sanity_check, write_case_fixture)
from .recording import Recorder, patched, wrap_method

VC_EXPORT_VERSION = "vc-1"

# English checkpoint names recorded by reference/export.py's hooks -> the VC checkpoint they are here
S3GEN_NAMES = {
    "flow.spk_embedding": "vc.flow.spk_embedding", "flow.input_embedding": "vc.flow.input_embedding",
    "flow.encoder_out": "vc.flow.encoder_out", "flow.mu": "vc.flow.mu", "flow.cond": "vc.flow.cond",
    "flow.start_noise": "vc.flow.start_noise", "flow.estimator": "vc.flow.estimator", "flow.output_mel": "vc.output_mel",
    "hift.f0": "vc.hift.f0", "hift.sine_phase": "vc.hift.sine_phase", "hift.sine_noise": "vc.hift.sine_noise",
    "hift.magnitude": "vc.hift.magnitude", "hift.phase": "vc.hift.phase", "hift.wav_pre_fade": "vc.hift.wav_pre_fade",
}


class RenamingRecorder(Recorder):
    """A Recorder that files each recording under `names[name]` (a name outside `names` is kept)."""

    def __init__(self, names: dict):
        super().__init__()
        self.names = names

    def put(self, name, value) -> None:
        super().put(self.names.get(name, name), value)

    def append(self, name, value) -> None:
        super().append(self.names.get(name, name), value)


def load_original_vc(ckpt: CheckpointDir, device: str = "cpu"):
    from chatterbox.vc import ChatterboxVC

    return from_local_or_error(ChatterboxVC, ckpt, device)


class _VCLibrosa:
    """Stands in for `librosa` inside chatterbox/vc.py: records its two loads by sample rate."""

    NAMES = {24000: "vc.target_wav_24k", 16000: "vc.source_wav_16k"}

    def __init__(self, real, rec: Recorder):
        self._real, self._rec = real, rec

    def __getattr__(self, name):
        return getattr(self._real, name)

    def load(self, path, *a, sr=22050, **k):
        import torch

        out = self._real.load(path, *a, sr=sr, **k)
        self._rec.put(self.NAMES[sr], torch.from_numpy(out[0]))
        return out


@contextlib.contextmanager
def record_vc_front(vc, rec: Recorder):
    """The target voice (set_target_voice -> embed_ref) and the source tokens."""
    import librosa
    import chatterbox.models.s3gen.s3gen as s3gen_mod
    import chatterbox.models.s3gen.xvector as xvector_mod
    import chatterbox.vc as vc_mod

    s3 = vc.s3gen
    phase = {"in_embed_ref": False}
    real_get_resampler, real_extract = s3gen_mod.get_resampler, xvector_mod.extract_feature

    def get_resampler(src_sr, dst_sr, device):
        resampler = real_get_resampler(src_sr, dst_sr, device)

        def run(x):
            y = resampler(x)
            if dst_sr == 16000:
                rec.put("vc.embed_ref.wav_16k", y)
            return y

        return run

    def extract_feature(audio):
        out = real_extract(audio)
        rec.put("vc.embed_ref.fbank", out[0])
        return out

    def log_mel_after(result, *a, **k):
        rec.put("vc.embed_ref.log_mel" if phase["in_embed_ref"] else "vc.source_log_mel", result)

    def embed_ref_before(*a, **k):
        phase["in_embed_ref"] = True

    def embed_ref_after(result, *a, **k):  # ChatterboxVC.ref_dict as set_target_voice stores it (S3Token2Mel.
        phase["in_embed_ref"] = False       # flow_inference later casts its tensors to float32 in place)
        for key in ("prompt_feat", "prompt_token", "embedding"):
            rec.put(f"vc.ref_dict.{key}", result[key])

    def inference_before(*a, speech_tokens=None, **k):
        rec.put("vc.source_tokens", speech_tokens if speech_tokens is not None else a[0])

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(vc_mod, "librosa", _VCLibrosa(librosa, rec)))
        stack.enter_context(patched(s3gen_mod, "get_resampler", get_resampler))
        stack.enter_context(patched(xvector_mod, "extract_feature", extract_feature))
        stack.enter_context(wrap_method(s3.tokenizer, "log_mel_spectrogram", after=log_mel_after))
        stack.enter_context(wrap_method(s3, "embed_ref", before=embed_ref_before, after=embed_ref_after))
        stack.enter_context(wrap_method(s3, "inference", before=inference_before))
        yield


def validate_vc_case_inputs(case: VCCase) -> None:
    for what, path in (("source", case.source_path), ("target voice", case.target_path)):
        if not path.is_file():
            raise ParityError(f"VC case '{case.name}': {what} audio file not found: {path}")
        _check_audio_readable(path)


def export_vc_case(ckpt: CheckpointDir, case: VCCase, out_root=None, vc=None, log=print) -> Path:
    import torch

    validate_vc_case_inputs(case)
    vc = vc or load_original_vc(ckpt)
    rec = RenamingRecorder(S3GEN_NAMES)
    t0 = time.time()
    outputs = []
    torch.manual_seed(case.seed)
    with record_vc_front(vc, rec), record_s3gen(vc, rec), \
            wrap_method(vc.s3gen, "inference", after=lambda r, *a, **k: outputs.append(r)):
        vc.generate(str(case.source_path), target_voice_path=str(case.target_path))
    if len(outputs) != 1:
        raise RuntimeError(f"expected one s3gen.inference call, saw {len(outputs)}")
    wav, sources = outputs[0]
    est = rec.lists.pop("vc.flow.estimator")
    rec.put("vc.flow.estimator_first", est[0])
    rec.put("vc.flow.estimator_last", est[-1])
    rec.put("vc.hift.source", sources)
    rec.put("vc.wav", wav)
    log(f"[{case.name}] ChatterboxVC.generate: {wav.shape[-1] / 24000:.2f}s of audio in {time.time() - t0:.1f}s")

    meta = {
        "export_version": VC_EXPORT_VERSION,
        "model": "vc",
        "case": case.as_manifest(),
        "checkpoint": checkpoint_meta(ckpt, files_read="s3gen.safetensors (+ conds.pt, replaced by the target voice)"),
        "versions": package_versions(),
        "device": "cpu",
        "dtype": "float32",
        "driver": {
            "run": "ChatterboxVC.from_local(ckpt, 'cpu'); torch.manual_seed(case.seed); "
                   "generate(source, target_voice_path=target_voice), unmodified",
            "n_cfm_timesteps": "s3gen.inference's default, 10 (generate() passes none)",
            "watermark": "applied by generate() as in the original; vc.wav is s3gen.inference's output before it",
        },
        "sanity": vc_sanity_check(rec.values),
    }
    return write_case_fixture(rec, meta, out_root, case, t0, log)


def vc_sanity_check(values: dict) -> dict:
    """The English export's activation checks (finite, non-constant), SineGen's voiced F0 included."""
    out = sanity_check(values)
    if not bool((values["vc.hift.f0"] > 10.0).any()):  # SineGen's voiced_threshold
        out["problems"].append("vc.hift.f0: no voiced frame (F0 <= 10 Hz everywhere): SineGen's sine branch unexercised")
        out["ok"] = False
    return out
