"""Measure each resampling option of mlx_impl.audio against the ORIGINAL's own output, at the three
points where Chatterbox resamples a reference clip:

  prepare_conditionals.load_24k     librosa.load(clip, sr=24000)                     (soxr_hq)
  prepare_conditionals.resample_16k librosa.resample(wav_24k, 24000 -> 16000)         (soxr_hq)
  embed_ref.resample_16k            torchaudio Resample(24000, 16000)(wav_24k[:240000])  (windowed sinc)

Clips: fixtures/inputs/* when present, else a clip made with espeak-ng + sox, else a synthetic signal.
Prints a table (SNR dB, max abs error, lengths) and writes JSON to --out. Exits 1 when the default
method of a point (mlx_impl.audio.DEFAULT_METHOD) is not the best-matching one on every clip.

  .venv/bin/python export_scripts/measure_resamplers.py --out reports/out/resamplers.json
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlx_impl import audio  # noqa: E402
from parity.metrics import compare  # noqa: E402

AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
DEC_COND_LEN = 240000


def find_clips(inputs: Path, workdir: Path):
    clips = sorted(p for p in inputs.glob("*") if p.suffix.lower() in AUDIO_EXT) if inputs.is_dir() else []
    if clips:
        return clips, "fixtures"
    if shutil.which("espeak-ng") and shutil.which("sox"):
        raw, out = workdir / "espeak_raw.wav", workdir / "espeak_44k_stereo.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), "The quick brown fox jumps over the lazy dog, twice."], check=True)
        subprocess.run(["sox", str(raw), "-r", "44100", "-c", "2", str(out)], check=True)
        return [out], "espeak-ng + sox"
    import soundfile as sf

    sr, n = 22050, 22050 * 3
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * np.cumsum(130 + 50 * np.sin(2 * np.pi * t)) * k / sr) / k for k in range(1, 30))
    out = workdir / "synthetic_22k.wav"
    sf.write(out, (0.1 * x).astype(np.float32), sr)
    return [out], "synthetic"


def measure(ref: np.ndarray, out: np.ndarray) -> dict:
    m = compare(ref, out)
    row = {"len_ref": int(ref.shape[-1]), "len_out": int(out.shape[-1]), "length_match": not m.length_mismatch}
    if m.length_mismatch:  # score the overlap, but a length mismatch disqualifies the method
        n = min(ref.shape[-1], out.shape[-1])
        m = compare(ref[..., :n], out[..., :n])
    row.update(snr_db=m.snr_db, max_abs=m.max_abs, exact=bool(m.max_abs == 0.0))
    return row


def score(row: dict) -> float:
    return row["snr_db"] if row["length_match"] else -math.inf


def run(clips) -> list:
    import librosa
    import torch
    import torchaudio

    rows = []
    for clip in clips:
        raw, sr_native = audio.read_audio(clip)
        mono = audio.to_mono_like_librosa(raw)
        ref_24k, _ = librosa.load(clip, sr=24000)
        ref_16k = librosa.resample(ref_24k, orig_sr=24000, target_sr=16000)
        cut = ref_24k[:DEC_COND_LEN][None]
        ref_embed = torchaudio.transforms.Resample(24000, 16000)(torch.from_numpy(cut)).numpy()
        points = {
            "prepare_conditionals.load_24k": (ref_24k, lambda m: audio.resample(mono, sr_native, 24000, m)),
            "prepare_conditionals.resample_16k": (ref_16k, lambda m: audio.resample(ref_24k, 24000, 16000, m)),
            "embed_ref.resample_16k": (ref_embed, lambda m: audio.resample(cut, 24000, 16000, m)),
        }
        for point, (ref, fn) in points.items():
            for method in audio.RESAMPLE_METHODS:
                if point == "prepare_conditionals.load_24k" and sr_native == 24000:
                    out = mono  # no resampling happens in librosa.load either
                else:
                    out = fn(method)
                rows.append({"clip": Path(clip).name, "sr_native": sr_native, "point": point, "method": method,
                             **measure(ref, out)})
    return rows


def verdict(rows) -> dict:
    """point -> {best method per clip, default, default_is_best}."""
    out = {}
    for point in audio.DEFAULT_METHOD:
        per_clip = {}
        for clip in sorted({r["clip"] for r in rows}):
            rs = [r for r in rows if r["point"] == point and r["clip"] == clip]
            best = max(score(r) for r in rs)
            per_clip[clip] = sorted(r["method"] for r in rs if score(r) == best)
        default = audio.DEFAULT_METHOD[point]
        out[point] = {"default": default, "best_per_clip": per_clip,
                      "default_is_best": all(default in b for b in per_clip.values())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON output path")
    p.add_argument("--inputs", type=Path, default=ROOT / "fixtures" / "inputs")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        clips, source = find_clips(args.inputs, Path(tmp))
        rows = run(clips)
    print(f"clips ({source}): {', '.join(Path(c).name for c in clips)}")
    print(f"{'clip':<24} {'sr':>6} {'point':<34} {'method':<16} {'SNR dB':>8} {'max abs':>10} {'len ref/out':>15}")
    for r in rows:
        snr = "exact" if r["exact"] else f"{r['snr_db']:.1f}"
        lens = f"{r['len_ref']}/{r['len_out']}" + ("" if r["length_match"] else "!")
        print(f"{r['clip']:<24} {r['sr_native']:>6} {r['point']:<34} {r['method']:<16} {snr:>8} {r['max_abs']:>10.3g} {lens:>15}")
    v = verdict(rows)
    for point, d in v.items():
        print(f"{point}: default {d['default']} -> {'best' if d['default_is_best'] else 'NOT best'} ({d['best_per_clip']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: (None if isinstance(x, float) and not math.isfinite(x) else x) for k, x in r.items()} for r in rows]
    for r, c in zip(rows, clean):
        if r["snr_db"] == math.inf:
            c["snr_db"] = "inf"
    args.out.write_text(json.dumps({"source": source, "rows": clean, "verdict": v}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(d["default_is_best"] for d in v.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
