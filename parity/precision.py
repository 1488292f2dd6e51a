"""`chatterbox-parity precision`: the MLX pipeline at float32, float16, bfloat16 and with a 4-bit T3,
against the float32 reference, per case:

  token agreement   T3 free-running with the reference's uniforms replayed, from the reference's
                    conditioning: share of the first N tokens equal to the reference's
  mel SNR           flow from the reference's tokens, conditioning and noise (identical tokens)
  waveform SNR      HiFT on that mel with the reference's SineGen draws
  speaker cosine    VoiceEncoder (fp32) embedding of the MLX waveform vs of the reference's

Voice-conversion cases (vc_*): ChatterboxVC runs no T3, so a VC row has no token agreement (n/a)
and no q4 column; its S3Gen (flow and HiFT at the precision, the S3 tokenizer and CAMPPlus float32)
runs on the reference's source tokens, target reference, noise and SineGen draws (the English S3Gen,
so the English rows' mel / waveform / speaker bounds apply).

Chatterbox Turbo cases (turbo_*): the GPT-2 T3 (inference_turbo, its processors, the reference's
turbo.t3.uniform_draws replayed) from the reference's conditioning, and S3Gen with MeanFlow (2 steps) on
the reference's tokens, start noise and SineGen draws; the same four measures, the VoiceEncoder of the
Turbo checkpoint (float32) for the speaker cosine.

Chatterbox Multilingual cases (mtl_*): the multilingual T3 (its 2454-entry text table; T3.inference, so the
AlignmentStreamAnalyzer runs on the text's positions at every step) from the reference's mtl.* conditioning
and padded text tokens, the reference's mtl.t3.uniform_draws replayed, and S3Gen (10 Euler steps, as the
multilingual generate() passes none) on the reference's mtl.flow.speech_tokens, start noise and SineGen draws;
the same four measures, the multilingual checkpoint's VoiceEncoder (float32) for the speaker cosine.

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
# what a model's rows measure: VC has no T3 (no tokens to agree on, nothing for q4 to quantize)
NOT_APPLICABLE = {"vc": ("token_agreement",)}
MODEL_PRECISIONS = {"tts": PRECISIONS, "vc": ("fp32", "fp16", "bf16"), "turbo": PRECISIONS, "mtl": PRECISIONS}
MTL_N_CFM_TIMESTEPS = 10  # the multilingual generate() passes none: S3Gen's default


def _models(ckpt, precision: str):
    from mlx_impl.convert.s3gen import load_s3gen
    from mlx_impl.convert.t3 import load_t3

    return at_precision(load_t3(ckpt.state("t3")), load_s3gen(ckpt.state("s3gen")), precision)


def at_precision(t3, s3gen, precision: str):
    """T3, the flow and the vocoder in fp16 / bf16 (load.set_half_precision), or T3's transformer 4-bit
    (group 64, from float32, as `convert --quantize-t3 4` does); fp32 as loaded."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_impl.load import set_half_precision

    if precision in ("fp16", "bf16"):
        set_half_precision(t3, s3gen, mx.float16 if precision == "fp16" else mx.bfloat16)
    elif precision == "q4":
        nn.quantize(t3.tfmr, group_size=64, bits=4)
    return t3, s3gen


def _turbo_models(ckpt, precision: str):
    """(VoiceEncoder float32, T3 and S3Gen at the precision) of a Turbo checkpoint folder (hub layout)."""
    from mlx_impl.tts_turbo import load_turbo_weights

    ve, t3, s3gen = load_turbo_weights(ckpt.path)
    return (ve, *at_precision(t3, s3gen, precision))


def _vc_s3gen(ckpt, precision: str):
    import mlx.core as mx

    from mlx_impl.convert.s3gen import load_s3gen

    s3gen = load_s3gen(ckpt.state("s3gen"))
    if precision in ("fp16", "bf16"):  # as set_half_precision: the flow and the vocoder, nothing else
        for module in (s3gen.flow, s3gen.mel2wav):
            module.set_dtype(mx.float16 if precision == "fp16" else mx.bfloat16)
    return s3gen


def _tolerances() -> dict:
    data = tomllib.loads(registry.REGISTRY_FILE.read_text())
    return data.get("precision_matrix", {})


def row_tolerance(tols: dict, model: str, precision: str) -> dict:
    """[precision_matrix.<precision>], with a model's own measured bounds ([precision_matrix.<model>.<precision>],
    each with its `measured` value and `reason`) in place of the shared ones they name."""
    return {**{k: v for k, v in tols.get(precision, {}).items() if not isinstance(v, dict)},
            **tols.get(model, {}).get(precision, {})}


def measure(fx, ckpt, precision: str, n_tokens: int, ve) -> dict:
    t3, s3gen = _models(ckpt, precision)
    return measure_modules(fx, t3, s3gen, n_tokens, ve)


def measure_modules(fx, t3, s3gen, n_tokens: int, ve, n_cfm_timesteps=None) -> dict:
    """An English-named fixture's row for given modules: T3.inference's first n_tokens from the reference's
    conditioning and text with its uniforms replayed, and S3Gen as measure_s3gen."""
    from mlx_impl.t3.inference.sampling import ReplayDraw

    from .stages.t3_cond import t3_cond_from_fixture

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
    return {"token_agreement": agree, "first_token_mismatch": int(diff[0]) if diff.size else None, "tokens": m,
            **measure_s3gen(fx, s3gen, ve, n_cfm_timesteps=n_cfm_timesteps), "seconds": time.time() - t0}


def _mtl_models(ckpt, precision: str):
    """(VoiceEncoder float32, T3 and S3Gen at the precision) of a multilingual checkpoint folder (hub layout)."""
    from mlx_impl.mtl_tts import load_hub_weights

    ve, t3, s3gen = load_hub_weights(ckpt.path)
    return (ve, *at_precision(t3, s3gen, precision))


def measure_mtl(fx, ckpt, precision: str, n_tokens: int, ve=None) -> dict:
    """A multilingual case on the multilingual checkpoint's modules at the precision, the fixture read under
    the English names (MtlFixture); the multilingual VoiceEncoder (float32) measures the speaker cosine."""
    from .stages.mtl_common import MtlFixture

    mtl_ve, t3, s3gen = _mtl_models(ckpt, precision)
    return measure_modules(MtlFixture(fx), t3, s3gen, n_tokens, mtl_ve, n_cfm_timesteps=MTL_N_CFM_TIMESTEPS)


def measure_vc(fx, ckpt, precision: str, n_tokens: int, ve) -> dict:
    """A voice-conversion case: S3Gen only (no T3), read through VCFixture under the English names."""
    from .stages.vc_common import VCFixture

    t0 = time.time()
    s3gen = _vc_s3gen(ckpt, precision)
    return {"token_agreement": None, "first_token_mismatch": None, "tokens": n_tokens,
            **measure_s3gen(VCFixture(fx), s3gen, ve), "seconds": time.time() - t0}


def measure_turbo(fx, ckpt, precision: str, n_tokens: int, ve=None) -> dict:
    """A Turbo case on the Turbo checkpoint's modules at the precision (the Turbo VoiceEncoder, float32,
    measures the speaker cosine)."""
    turbo_ve, t3, s3gen = _turbo_models(ckpt, precision)
    return measure_turbo_modules(fx, t3, s3gen, n_tokens, turbo_ve)


def measure_turbo_modules(fx, t3, s3gen, n_tokens: int, ve) -> dict:
    """The Turbo row's measures for given modules (also a converted MLX layout's: tests/test_turbo_layout.py):
    the first n_tokens draws of inference_turbo from the reference's conditioning and text with its
    uniforms replayed; S3Gen (MeanFlow, 2 steps) as measure_s3gen, read through TurboFixture."""
    from mlx_impl.t3.inference.sampling import ReplayDraw

    from .stages.turbo_common import N_CFM_TIMESTEPS, TurboFixture, decode_params
    from .stages.turbo_t3_cond import t3_cond_from_fixture

    t0 = time.time()
    ref_tokens = fx.tensor("turbo.t3.speech_tokens").reshape(-1)[:n_tokens]
    drawn = []
    t3.inference_turbo(t3_cond=t3_cond_from_fixture(fx), text_tokens=fx.tensor("turbo.text.tokens").astype(np.int32),
                       max_gen_len=n_tokens - 1, draw=ReplayDraw(fx.tensor("turbo.t3.uniform_draws")),
                       on_token=lambda step, token: drawn.append(token), **decode_params(fx))
    tokens = np.asarray(drawn[:n_tokens], dtype=ref_tokens.dtype)
    m = min(len(tokens), len(ref_tokens))
    agree = float(np.mean(tokens[:m] == ref_tokens[:m])) * m / max(len(ref_tokens), 1)
    diff = np.nonzero(tokens[:m] != ref_tokens[:m])[0]
    return {"token_agreement": agree, "first_token_mismatch": int(diff[0]) if diff.size else None, "tokens": m,
            **measure_s3gen(TurboFixture(fx), s3gen, ve, n_cfm_timesteps=N_CFM_TIMESTEPS),
            "seconds": time.time() - t0, "drawn": tokens.tolist()}


def measure_s3gen(fx, s3gen, ve, n_cfm_timesteps=None) -> dict:
    """S3Gen on the reference's tokens, reference dict, start noise and SineGen draws: the mel and
    waveform SNR, and the speaker cosine of the two waveforms' VoiceEncoder embeddings."""
    import mlx.core as mx

    from mlx_impl.audio import resample

    ref = dict(prompt_token=mx.array(fx.tensor("embed_ref.prompt_token")),
               prompt_token_len=mx.array([fx.tensor("embed_ref.prompt_token").shape[1]], dtype=mx.int32),
               prompt_feat=mx.array(fx.tensor("embed_ref.prompt_feat")), prompt_feat_len=None,
               embedding=mx.array(fx.tensor("embed_ref.xvector")))
    trace = {}
    wav, _ = s3gen.inference(fx.tensor("flow.speech_tokens"), ref_dict=ref, trace=trace,
                             n_cfm_timesteps=n_cfm_timesteps or int(fx.params["n_cfm_timesteps"]),
                             flow_noise=mx.array(fx.tensor("flow.start_noise")),
                             sine_phase=mx.array(fx.tensor("hift.sine_phase")),
                             sine_noise=mx.array(fx.tensor("hift.sine_noise")))
    wav = np.asarray(wav.astype(mx.float32))
    mel = np.asarray(trace["output_mel"].astype(mx.float32))
    ref_wav = fx.tensor("hift.wav")
    e_out = np.asarray(ve.embeds_from_wavs([resample(wav.reshape(-1), 24000, 16000)], sample_rate=16000, as_spk=True))
    e_ref = np.asarray(ve.embeds_from_wavs([resample(ref_wav.reshape(-1), 24000, 16000)], sample_rate=16000, as_spk=True))
    return {
        "mel_snr_db": compare(fx.tensor("flow.output_mel"), mel).snr_db,
        "wav_snr_db": compare(ref_wav, wav).snr_db,
        "speaker_cosine": float(np.dot(e_out.reshape(-1), e_ref.reshape(-1))),
    }


def check_row(row: dict, tol: dict, not_applicable=()) -> list:
    """The row's values below their bounds; `not_applicable`: the model's measures that do not exist
    (they must be None in the row)."""
    fails = []
    for key, bound in tol.items():
        if key in ("reason", "measured"):
            continue
        if key in not_applicable:
            if row[key] is not None:
                fails.append(f"{key} {row[key]} measured, but it does not apply to this model")
            continue
        if row[key] is None or row[key] < bound:
            fails.append(f"{key} {_fmt(row[key], '.4g')} < {bound}")
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


def plan(cases, precisions):
    """[(case, its model, the precisions measured on it)]: a VC case skips q4 (no T3), said once; an
    unknown case is an error naming it."""
    from .errors import ParityError
    from .session import all_cases, case_model

    known = all_cases()
    out = []
    for case in cases:
        if case not in known:
            raise ParityError(f"--cases {case}: unknown case (known: {', '.join(known)})")
        model = case_model(known[case])
        precs = [p for p in precisions if p in MODEL_PRECISIONS[model]]
        skipped = [p for p in precisions if p not in precs]
        if skipped:
            print(f"[{case}] {', '.join(skipped)} not measured: {model} has no T3 to quantize")
        out.append((case, model, precs))
    return out


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def cmd_precision(args):
    from mlx_impl.convert.voice_encoder import load_voice_encoder

    from .session import ParitySession

    s = ParitySession.create()
    ve = load_voice_encoder(s.ckpt.state("ve"))
    tols = _tolerances()
    rows = []
    for case, model, precs in plan(args.cases, args.precisions):
        fx = s.fixture(case)
        for prec in precs:
            run = {"vc": measure_vc, "turbo": measure_turbo, "mtl": measure_mtl}.get(model, measure)
            row = {"case": case, "model": model, "precision": prec,
                   **run(fx, s.ckpt_for(model), prec, args.tokens, ve)}
            row.pop("drawn", None)
            row["failures"] = check_row(row, row_tolerance(tols, model, prec), NOT_APPLICABLE.get(model, ()))
            rows.append(row)
            print(json.dumps(row))
    OUT.mkdir(parents=True, exist_ok=True)
    rows = merge_rows(_previous_rows(args.tokens), rows)
    for r in rows:  # the kept rows against today's bounds too (a model's own bound may have come since)
        r["failures"] = check_row(r, row_tolerance(tols, r.get("model", "tts"), r["precision"]),
                                  NOT_APPLICABLE.get(r.get("model", "tts"), ()))
    write_text_atomic(OUT / "precision.json", json.dumps(rows, indent=1, default=float) + "\n")
    md = ["## Precision matrix (MLX vs the float32 reference)", "",
          f"T3: first {args.tokens} tokens, free-running with the reference's draws; mel and waveform from the "
          "reference's tokens and noise; speaker cosine of the VoiceEncoder embeddings of the two waveforms. "
          "q4 = T3 transformer 4-bit (group 64), the rest float32. vc_* cases: ChatterboxVC's S3Gen only (no T3: "
          "token agreement n/a, no q4). turbo_* cases: Chatterbox Turbo (GPT-2 T3 with its processors, "
          "S3Gen with MeanFlow) on the Turbo checkpoint. mtl_* cases: Chatterbox Multilingual (T3 with its "
          "AlignmentStreamAnalyzer, S3Gen) on the multilingual checkpoint.", "",
          "| case | precision | token agreement | mel SNR dB | wav SNR dB | speaker cos | tolerance | status |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = row_tolerance(tols, r.get("model", "tts"), r["precision"])
        tol = ", ".join(f"{k}>={v}" for k, v in t.items() if k not in ("reason", "measured"))
        md.append(f"| {r['case']} | {r['precision']} | {_fmt(r['token_agreement'], '.3f')} | {r['mel_snr_db']:.1f} | "
                  f"{r['wav_snr_db']:.1f} | {r['speaker_cosine']:.6f} | {tol} | "
                  f"{'FAILED: ' + '; '.join(r['failures']) if r['failures'] else 'passed'} |")
    write_text_atomic(OUT / "precision.md", "\n".join(md) + "\n")
    print("\n".join(md))
    if any(r["failures"] for r in rows):
        raise SystemExit(1)


def register(sub):
    p = sub.add_parser("precision", help="precision matrix: MLX at fp32/fp16/bf16/4-bit T3 vs the fp32 reference")
    p.add_argument("--cases", nargs="+", default=["espeak_22k", "vc_stereo_to_espeak", "turbo_espeak", "mtl_de"],
                   help="cases to measure, English, voice-conversion (vc_*), Turbo (turbo_*) or multilingual "
                        "(mtl_*) (default: %(default)s)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="precisions to measure, of %(choices)s (default: all)")
    p.add_argument("--tokens", type=int, default=60, help="T3 steps compared per case (default: %(default)s)")
    p.set_defaults(fn=cmd_precision)
