"""`chatterbox-parity precision`: the MLX pipeline at float32, float16, bfloat16 and with a 4-bit T3,
against the float32 reference, per case:

  token agreement   T3 free-running with the reference's uniforms replayed, from the reference's
                    conditioning: share of the first N tokens equal to the reference's
  mel SNR           flow from the reference's tokens, conditioning and noise (identical tokens)
  waveform SNR      HiFT on that mel with the reference's SineGen draws
  speaker cosine    VoiceEncoder (fp32) embedding of the MLX waveform vs of the reference's

Tolerances: [precision_matrix.<precision>] in parity/checkpoints.toml. Results go to
reports/out/precision.{json,md} (the report includes them).
"""
from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import numpy as np

from . import ROOT, registry
from .metrics import compare
from .fixtures import write_text_atomic

PRECISIONS = ("fp32", "fp16", "bf16", "q4")
OUT = ROOT / "reports" / "out"


def _models(ckpt, precision: str):
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_impl.convert.s3gen import load_s3gen
    from mlx_impl.convert.t3 import load_t3
    from mlx_impl.load import set_half_precision

    t3 = load_t3(ckpt.state("t3"))
    s3gen = load_s3gen(ckpt.state("s3gen"))
    if precision in ("fp16", "bf16"):
        set_half_precision(t3, s3gen, mx.float16 if precision == "fp16" else mx.bfloat16)
    elif precision == "q4":
        nn.quantize(t3.tfmr, group_size=64, bits=4)
    return t3, s3gen


def _tolerances() -> dict:
    data = tomllib.loads(registry.REGISTRY_FILE.read_text())
    return data.get("precision_matrix", {})


def measure(fx, ckpt, precision: str, n_tokens: int, ve) -> dict:
    import mlx.core as mx

    from mlx_impl.audio import resample
    from mlx_impl.t3.inference.sampling import ReplayDraw

    from .stages.t3_cond import t3_cond_from_fixture

    t3, s3gen = _models(ckpt, precision)
    p = fx.params
    t0 = time.time()
    ref_tokens = fx.tensor("t3.speech_tokens")[0][:n_tokens]
    tokens = t3.inference(t3_cond=t3_cond_from_fixture(fx), text_tokens=fx.tensor("t3.text_tokens"),
                          max_new_tokens=n_tokens, temperature=float(p["temperature"]),
                          cfg_weight=float(p["cfg_weight"]), repetition_penalty=float(p["repetition_penalty"]),
                          min_p=float(p["min_p"]), top_p=float(p["top_p"]),
                          draw=ReplayDraw(fx.tensor("t3.uniform_draws")))[0]
    m = min(len(tokens), len(ref_tokens))
    agree = float(np.mean(tokens[:m] == ref_tokens[:m])) * m / max(len(ref_tokens), 1)
    diff = np.nonzero(tokens[:m] != ref_tokens[:m])[0]
    ref = dict(prompt_token=mx.array(fx.tensor("embed_ref.prompt_token")),
               prompt_token_len=mx.array([fx.tensor("embed_ref.prompt_token").shape[1]], dtype=mx.int32),
               prompt_feat=mx.array(fx.tensor("embed_ref.prompt_feat")), prompt_feat_len=None,
               embedding=mx.array(fx.tensor("embed_ref.xvector")))
    trace = {}
    wav, _ = s3gen.inference(fx.tensor("flow.speech_tokens"), ref_dict=ref, trace=trace,
                             n_cfm_timesteps=int(p["n_cfm_timesteps"]),
                             flow_noise=mx.array(fx.tensor("flow.start_noise")),
                             sine_phase=mx.array(fx.tensor("hift.sine_phase")),
                             sine_noise=mx.array(fx.tensor("hift.sine_noise")))
    wav = np.asarray(wav.astype(mx.float32))
    mel = np.asarray(trace["output_mel"].astype(mx.float32))
    ref_wav = fx.tensor("hift.wav")
    e_out = np.asarray(ve.embeds_from_wavs([resample(wav.reshape(-1), 24000, 16000)], sample_rate=16000, as_spk=True))
    e_ref = np.asarray(ve.embeds_from_wavs([resample(ref_wav.reshape(-1), 24000, 16000)], sample_rate=16000, as_spk=True))
    return {
        "token_agreement": agree, "first_token_mismatch": int(diff[0]) if diff.size else None, "tokens": m,
        "mel_snr_db": compare(fx.tensor("flow.output_mel"), mel).snr_db,
        "wav_snr_db": compare(ref_wav, wav).snr_db,
        "speaker_cosine": float(np.dot(e_out.reshape(-1), e_ref.reshape(-1))),
        "seconds": time.time() - t0,
    }


def check_row(row: dict, tol: dict) -> list:
    fails = []
    for key, bound in tol.items():
        if key in ("reason", "measured"):
            continue
        if row[key] < bound:
            fails.append(f"{key} {row[key]:.4g} < {bound}")
    return fails


def _previous_rows(n_tokens: int) -> list:
    path = OUT / "precision.json"
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in rows if r.get("tokens") == n_tokens]  # rows of another token count do not mix


def merge_rows(previous: list, new: list) -> list:
    """The new rows replace those of the same (case, precision); the others stay, in case order."""
    keys = {(r["case"], r["precision"]) for r in new}
    merged = [r for r in previous if (r["case"], r["precision"]) not in keys] + new
    order = {p: i for i, p in enumerate(PRECISIONS)}
    return sorted(merged, key=lambda r: (r["case"], order.get(r["precision"], 99)))


def cmd_precision(args):
    from mlx_impl.convert.voice_encoder import load_voice_encoder

    from .session import ParitySession

    s = ParitySession.create()
    ve = load_voice_encoder(s.ckpt.state("ve"))
    tols = _tolerances()
    rows = []
    for case in args.cases:
        fx = s.fixture(case)
        for prec in args.precisions:
            row = {"case": case, "precision": prec, **measure(fx, s.ckpt, prec, args.tokens, ve)}
            row["failures"] = check_row(row, {k: v for k, v in tols.get(prec, {}).items()})
            rows.append(row)
            print(json.dumps(row))
    OUT.mkdir(parents=True, exist_ok=True)
    rows = merge_rows(_previous_rows(args.tokens), rows)
    write_text_atomic(OUT / "precision.json", json.dumps(rows, indent=1, default=float) + "\n")
    md = ["## Precision matrix (MLX vs the float32 reference)", "",
          f"T3: first {args.tokens} tokens, free-running with the reference's draws; mel and waveform from the "
          "reference's tokens and noise; speaker cosine of the VoiceEncoder embeddings of the two waveforms. "
          "q4 = T3 transformer 4-bit (group 64), the rest float32.", "",
          "| case | precision | token agreement | mel SNR dB | wav SNR dB | speaker cos | tolerance | status |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = tols.get(r["precision"], {})
        tol = ", ".join(f"{k}>={v}" for k, v in t.items() if k not in ("reason", "measured"))
        md.append(f"| {r['case']} | {r['precision']} | {r['token_agreement']:.3f} | {r['mel_snr_db']:.1f} | "
                  f"{r['wav_snr_db']:.1f} | {r['speaker_cosine']:.6f} | {tol} | "
                  f"{'FAILED: ' + '; '.join(r['failures']) if r['failures'] else 'passed'} |")
    write_text_atomic(OUT / "precision.md", "\n".join(md) + "\n")
    print("\n".join(md))
    if any(r["failures"] for r in rows):
        raise SystemExit(1)


def register(sub):
    p = sub.add_parser("precision", help="precision matrix: MLX at fp32/fp16/bf16/4-bit T3 vs the fp32 reference")
    p.add_argument("--cases", nargs="+", default=["espeak_22k"], help="cases to measure (default: %(default)s)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="precisions to measure, of %(choices)s (default: all)")
    p.add_argument("--tokens", type=int, default=60, help="T3 steps compared per case (default: %(default)s)")
    p.set_defaults(fn=cmd_precision)
