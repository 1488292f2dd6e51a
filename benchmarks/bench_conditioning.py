"""The conditioning (ChatterboxTTS.prepare_conditionals) piece by piece: the original against MLX on
the same weights and the same inputs, fp32 on the CPU, in one process.

Pieces, in the order prepare_conditionals runs them:
  load_resample     the reference file at 24 kHz and its 16 kHz copy (librosa / soxr)
  mel_24k           S3Gen's prompt mel of the (10 s) 24 kHz reference
  resample_16k      embed_ref's 24 -> 16 kHz resampling (torchaudio's sinc)
  campplus_fbank    CAMPPlus's Kaldi fbank (extract_feature)
  campplus_model    CAMPPlus on that fbank (the FCM head and the TDNN trunk)
  s3tok_ref         the S3 tokenizer on embed_ref's 16 kHz reference
  s3tok_prompt      the S3 tokenizer on the T3 prompt (the first 6 s, max_len 150)
  voice_encoder     VoiceEncoder.embeds_from_wavs (trim, mel, the LSTM over the partials)
  total             prepare_conditionals as the pipeline calls it (includes reading the file)
Each piece's MLX side gets the original's own input (the original's waveform, fbank), so that its
output can be compared: `outputs` gives the SNR in dB (or, for tokens, whether they are equal).
Every piece gets one untimed warm-up; then rounds alternate the sides (original first in even
rounds, MLX first in odd ones), piece by piece. Medians and minima in ms, MLX / original per piece.

On a shared machine run it under the benchmarks' lock:
  flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_conditioning.py --rounds 7 \
      --out reports/bench/bench_conditioning_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parity.fixtures import write_text_atomic  # noqa: E402


def snr_db(ref, out) -> float:
    import numpy as np

    ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {out.shape}")
    err = np.sum((ref - out) ** 2)
    return float("inf") if err == 0 else round(float(10 * np.log10(np.sum(ref ** 2) / err)), 1)


def pieces(orig, mlx_tts, audio_path: str):
    """{name: (original callable, MLX callable, compare(original output, MLX output))}."""
    import librosa
    import mlx.core as mx
    import numpy as np
    import torch
    from chatterbox.models.s3gen.s3gen import get_resampler
    from chatterbox.models.s3gen.xvector import extract_feature as orig_extract_feature

    from mlx_impl.audio import embed_ref_resample_16k, prepare_conditionals_audio
    from mlx_impl.s3gen.xvector import extract_feature

    def both_evaluated(x):
        mx.eval(x)
        return x

    wav_24k, _ = librosa.load(audio_path, sr=24000)
    wav_16k = librosa.resample(wav_24k, orig_sr=24000, target_sr=16000)
    ref_24k = wav_24k[: orig.DEC_COND_LEN]
    ref_16k = get_resampler(24000, 16000, "cpu")(torch.from_numpy(ref_24k)[None])
    feat = orig_extract_feature(ref_16k)[0]
    prompt = wav_16k[: orig.ENC_COND_LEN]
    plen = orig.t3.hp.speech_cond_prompt_len
    m_ref_16k, m_feat = mx.array(ref_16k.numpy()), mx.array(feat.numpy())
    s3g, ms3g = orig.s3gen, mlx_tts.s3gen

    def tokens_equal(a, b):
        return {"tokens_equal": bool(np.array_equal(np.asarray(a[0]).ravel(), np.asarray(b[0]).ravel()))}

    def snr(a, b):
        return {"snr_db": snr_db(np.asarray(a), np.asarray(b))}

    def total_mlx():
        conds = mlx_tts.prepare_conditionals(audio_path, exaggeration=0.5)
        return both_evaluated([conds.t3.speaker_emb, conds.t3.cond_prompt_speech_tokens,
                               *[v for v in conds.gen.values() if isinstance(v, mx.array)]])

    def total_compare(_a, _b):
        c, m = orig.conds, mlx_tts.conds
        return {"ve_snr_db": snr_db(c.t3.speaker_emb, m.t3.speaker_emb),
                "xvector_snr_db": snr_db(c.gen["embedding"], m.gen["embedding"]),
                "prompt_tokens_equal": bool(np.array_equal(np.asarray(c.t3.cond_prompt_speech_tokens),
                                                           np.asarray(m.t3.cond_prompt_speech_tokens))),
                "ref_tokens_equal": bool(np.array_equal(np.asarray(c.gen["prompt_token"]),
                                                        np.asarray(m.gen["prompt_token"])))}

    return {
        "load_resample": (lambda: librosa.resample(librosa.load(audio_path, sr=24000)[0], orig_sr=24000,
                                                   target_sr=16000),
                          lambda: prepare_conditionals_audio(audio_path, 24000, 16000)[1], snr),
        "mel_24k": (lambda: s3g.mel_extractor(torch.from_numpy(ref_24k)[None]),
                    lambda: both_evaluated(ms3g.mel_extractor(mx.array(ref_24k[None]))), snr),
        "resample_16k": (lambda: get_resampler(24000, 16000, "cpu")(torch.from_numpy(ref_24k)[None]),
                         lambda: embed_ref_resample_16k(ref_24k[None], 24000, 16000), snr),
        "campplus_fbank": (lambda: orig_extract_feature(ref_16k)[0],
                           lambda: both_evaluated(extract_feature(m_ref_16k)[0]), snr),
        "campplus_model": (lambda: s3g.speaker_encoder(feat), lambda: both_evaluated(ms3g.speaker_encoder(m_feat)),
                           snr),
        "s3tok_ref": (lambda: s3g.tokenizer(ref_16k), lambda: both_evaluated(ms3g.tokenizer(m_ref_16k)),
                      tokens_equal),
        "s3tok_prompt": (lambda: s3g.tokenizer.forward([prompt], max_len=plen),
                         lambda: both_evaluated(ms3g.tokenizer.forward([prompt], max_len=plen)), tokens_equal),
        "voice_encoder": (lambda: orig.ve.embeds_from_wavs([wav_16k], sample_rate=16000),
                          lambda: both_evaluated(mlx_tts.ve.embeds_from_wavs([wav_16k], sample_rate=16000)), snr),
        "total": (lambda: orig.prepare_conditionals(audio_path, exaggeration=0.5), total_mlx, total_compare),
    }


def run_rounds(jobs: dict, rounds: int):
    """{piece: {"original": [ms...], "mlx": [ms...]}} and each piece's last outputs; sides alternate."""
    import torch

    times = {name: {"original": [], "mlx": []} for name in jobs}
    outs = {}
    for name, (orig_fn, mlx_fn, _) in jobs.items():  # warm-up, untimed
        with torch.inference_mode():
            outs[name] = (orig_fn(), mlx_fn())
    for r in range(rounds):
        for name, (orig_fn, mlx_fn, _) in jobs.items():
            order = (("original", orig_fn), ("mlx", mlx_fn))
            for side, fn in order if r % 2 == 0 else order[::-1]:
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    fn()
                    times[name][side].append((time.perf_counter() - t0) * 1e3)
    return times, outs


def summary(times: dict, outs: dict, jobs: dict) -> dict:
    med = statistics.median
    res = {}
    for name, t in times.items():
        o, m = t["original"], t["mlx"]
        res[name] = {"original_ms": {"median": round(med(o), 1), "min": round(min(o), 1)},
                     "mlx_ms": {"median": round(med(m), 1), "min": round(min(m), 1)},
                     "mlx_over_original_median": round(med(m) / med(o), 3),
                     "mlx_over_original_min": round(min(m) / min(o), 3),
                     "mlx_over_original_by_round": [round(b / a, 3) for a, b in zip(o, m)],
                     "outputs": jobs[name][2](*outs[name])}
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="espeak_22k")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: benchmarks/bench_checkpoint.py's")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="JSON record (else printed only)")
    ap.add_argument("--note", default="", help="recorded as is (e.g. how the machine was shared)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    import mlx.core as mx

    from benchmarks.bench_checkpoint import default_bench_checkpoint
    from benchmarks.bench_pipeline import mlx_blas
    from mlx_impl.tts import ChatterboxTTS
    from parity.cases import get_case
    from parity.checkpoint_dir import CheckpointDir
    from reference.export import load_original

    case = get_case(args.case)
    ckpt = args.checkpoint or default_bench_checkpoint()
    orig = load_original(CheckpointDir.open(ckpt), "cpu")
    mlx_tts = ChatterboxTTS.from_pretrained(str(ckpt))
    jobs = pieces(orig, mlx_tts, str(case.audio_path))
    times, outs = run_rounds(jobs, args.rounds)
    import torch

    record = {"device": (f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; MLX "
                         f"{mx.__version__}, BLAS {mlx_blas()}; torch {torch.__version__} "
                         f"({torch.get_num_threads()} threads)"),
              "case": args.case, "checkpoint": Path(ckpt).name, "rounds": args.rounds, "note": args.note,
              "pieces": summary(times, outs, jobs), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    text = json.dumps(record, indent=1) + "\n"
    if args.out:
        write_text_atomic(args.out, text)
    print(text)
    return record


if __name__ == "__main__":
    main()
