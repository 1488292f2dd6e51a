"""How far each float32 S3Gen is from the truth: the ORIGINAL S3Gen (flow + HiFT) run in float64.

The cumulative `s3gen:` checkpoints compare MLX's S3Gen (from the reference's tokens and
conditioning) with the original's float32 run. When that SNR moves (a BLAS or a summation order
changed), this tells whether MLX moved away from the right answer or only to another float32 answer
equally far from it: both float32 runs are measured against the original computed in float64 (weights,
activations and SineGen's phase sum; the recorded flow noise and SineGen draws replayed).

MLX runs in a worker process per variant (the environment picks S3Gen's BLAS):
  mkl    CHATTERBOX_WIDE_BLAS=0: every product on MLX's BLAS (MKL on x86-64)
  wide   CHATTERBOX_WIDE_BLAS=libopenblas.so.0: S3Gen's large products on OpenBLAS (the AMD default)

  .venv/bin/python benchmarks/s3gen_float64.py --case stereo_44k [--case espeak_22k] [--out FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from parity.fixtures import Fixture, fixture_dir  # noqa: E402
from parity.metrics import snr_db  # noqa: E402
from parity.summary import cpu_model  # noqa: E402

VARIANTS = {"mkl": "0", "wide": "libopenblas.so.0"}
OUTPUTS = ("flow.output_mel", "hift.source", "hift.wav")


def original_in(fx: Fixture, ckpt: Path, dtype) -> dict:
    """The original S3Gen on the fixture's tokens and reference conditioning, in `dtype`, with the
    recorded flow noise and SineGen draws replayed."""
    import torch
    import chatterbox.models.s3gen.decoder as decoder_mod
    import chatterbox.models.s3gen.flow_matching as fm
    from hift_sensitivity import Vocoder, load_original_s3gen

    from reference.recording import patched

    s3 = load_original_s3gen(ckpt)
    voc = Vocoder(s3, fx)  # float32: reads SineGen's standard-normal draw off the recorded noise
    noise = torch.from_numpy(fx.tensor("flow.start_noise"))
    real = torch.randn_like

    def randn_like(x, *a, **k):
        return noise.to(x.dtype).clone() if x.shape == noise.shape else real(x, *a, **k)

    real_bias = decoder_mod.mask_to_bias

    def mask_to_bias(mask, dtype):  # the original asserts a float32/16 dtype; its -1e10 bias is as large in float64
        return real_bias(mask, torch.float32).to(dtype) if dtype == torch.float64 else real_bias(mask, dtype)

    old = torch.get_default_dtype()
    s3.to(dtype)
    torch.set_default_dtype(dtype)
    try:
        ref = {k: torch.from_numpy(fx.tensor(f"embed_ref.{v}")).to(dtype) for k, v in
               (("prompt_feat", "prompt_feat"), ("embedding", "xvector"))}
        ref["prompt_token"] = torch.from_numpy(fx.tensor("embed_ref.prompt_token")).long()
        ref["prompt_token_len"] = torch.tensor([ref["prompt_token"].shape[1]])
        ref["prompt_feat_len"] = None
        with patched(fm.torch, "randn_like", randn_like), patched(decoder_mod, "mask_to_bias", mask_to_bias), \
                contextlib.redirect_stdout(sys.stderr):
            mel = s3.flow_inference(torch.from_numpy(fx.tensor("flow.speech_tokens")).long(), ref_dict=ref,
                                    n_cfm_timesteps=int(fx.params["n_cfm_timesteps"]), finalize=True)
        out = voc.run(mel)
    finally:
        torch.set_default_dtype(old)
    return {"flow.output_mel": mel.numpy().astype(np.float64), "hift.source": out["source"], "hift.wav": out["wav"]}


def mlx_worker(case: str, out_path: str) -> None:
    from mlx_impl.backend import native
    from parity.synthetic import resolve_checkpoint
    from parity.stages.cumulative import run_s3gen

    fx = Fixture.open(fixture_dir(None, case))
    out = run_s3gen(fx, resolve_checkpoint(None, create_synthetic=False))
    np.savez(out_path, **{k: np.asarray(out[k]) for k in OUTPUTS}, blas=np.array(native.wide_blas()))


def mlx_variant(case: str, variant: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.npz")
        env = dict(os.environ, CHATTERBOX_WIDE_BLAS=VARIANTS[variant])
        subprocess.run([sys.executable, __file__, "--worker", case, path], env=env, check=True)
        z = np.load(path)
        return {k: z[k] for k in OUTPUTS} | {"blas": str(z["blas"])}


def db(x: float):
    return "inf" if x == float("inf") else round(float(x), 2)


def measure(case: str, ckpt: Path, log) -> dict:
    import torch

    fx = Fixture.open(fixture_dir(None, case))
    f32 = original_in(fx, ckpt, torch.float32)
    truth = original_in(fx, ckpt, torch.float64)
    res = {"original_fp32_rerun_vs_fixture": {k: db(snr_db(fx.tensor(k), f32[k])) for k in OUTPUTS},
           "original_fp32_vs_float64": {k: db(snr_db(truth[k], fx.tensor(k))) for k in OUTPUTS}}
    for variant in VARIANTS:
        out = mlx_variant(case, variant)
        res[f"mlx_{variant}"] = {"blas": out["blas"],
                                 "vs_float64": {k: db(snr_db(truth[k], out[k])) for k in OUTPUTS},
                                 "vs_original_fp32": {k: db(snr_db(fx.tensor(k), out[k])) for k in OUTPUTS}}
    log(f"[{case}] {json.dumps(res)}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", help="fixture case (repeatable; default stereo_44k)")
    ap.add_argument("--ckpt", type=Path, default=ROOT / "checkpoints" / "synthetic-s0")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "s3gen_float64.json")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        mlx_worker(*args.worker)
        return 0

    import torch

    torch.set_num_threads(2)
    cases = args.case or ["stereo_44k"]
    record = {"about": "SNR (dB) of each float32 S3Gen against the original S3Gen in float64, same tokens, "
                       "conditioning and recorded draws (benchmarks/s3gen_float64.py)",
              "machine": cpu_model(), "torch": torch.__version__,
              "cases": {c: measure(c, args.ckpt, lambda m: print(m, flush=True)) for c in cases}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
