"""Speed of the MLX HiFT vocoder (HiFTGenerator.inference: F0 predictor, source, decode, iSTFT)
against the original PyTorch HiFTGenerator on the same weights and the same mel, fp32 on the CPU.
Prints JSON: seconds per second of audio, min and median.

Weights: mel2wav of a checkpoint folder (--ckpt, s3gen.safetensors) or seeded random ones (as
S3Token2Wav builds the vocoder, gains / alphas / biases perturbed, F0 scaled into the voiced range).
The original's SineGen draws (phase, noise) are captured from its first run and replayed into the
MLX run, so the outputs are comparable (output_snr_db). Both sides get one untimed warm-up on a
short mel; then runs alternate (torch, mlx, torch, mlx, ...) so that load from other processes hits
both alike.

  .venv/bin/python benchmarks/bench_hift.py [--n-mel 150] [--repeats 3] [--ckpt DIR]

Besides wall time, the process CPU time of each run is reported (more robust when other processes
load the machine), and the OpenBLAS core MLX's BLAS runs (on an unrecognised virtual CPU OpenBLAS
falls back to its SSE3 "Prescott" kernels; OPENBLAS_CORETYPE=SkylakeX selects AVX-512 ones).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.alternating import add_common_arguments  # noqa: E402

MEL_RATE = 50  # mel frames per second of audio (24 kHz, 480 samples per frame)


def openblas_core() -> str:
    """The OpenBLAS core of the BLAS that MLX's CPU backend loaded (or 'unknown')."""
    import ctypes
    import glob

    import mlx.core as mx

    site = os.path.dirname(os.path.dirname(mx.__file__))
    libs = glob.glob(os.path.join(site, "mlx_cpu.libs", "libblas-*.so*[0-9]"))
    for path in libs + ["libopenblas.so.0"]:
        try:
            fn = ctypes.CDLL(path).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        return fn().decode()
    return "unknown"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-mel", type=int, default=150, help="mel frames (50 per second of audio)")
    add_common_arguments(ap)
    args = ap.parse_args(argv)

    import mlx.core as mx
    import numpy as np
    import torch
    from torch.distributions.uniform import Uniform

    from benchmarks.alternating import alternate, ratios, side_summary
    from mlx_impl import backend
    from mlx_impl.convert.hift import build_hift, strip_prefix
    from parity.metrics import compare
    from reference.builders import original_hift, randomize_hift

    backend.apply_mlx_defaults()

    torch.manual_seed(args.seed)
    ref = original_hift()
    if args.ckpt:
        from parity.checkpoint_dir import CheckpointDir

        state = strip_prefix(CheckpointDir.open(args.ckpt).state("s3gen"), "mel2wav.")
        ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    else:
        randomize_hift(ref, args.seed + 1)
        state = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    model = build_hift(state)
    mx.eval(model.parameters())

    g = torch.Generator().manual_seed(args.seed + 2)
    mel = torch.randn(1, 80, args.n_mel, generator=g)
    mel_warm = torch.randn(1, 80, 10, generator=g)
    m_mel, m_mel_warm = mx.array(mel.numpy()), mx.array(mel_warm.numpy())

    draws = {}
    sine_gen = ref.m_source.l_sin_gen
    sine_forward = sine_gen.forward
    uniform_sample = Uniform.sample

    def capture_sample(dist, *a, **k):
        out = uniform_sample(dist, *a, **k)
        draws["phase"] = out.clone()
        return out

    def capture_forward(f0):
        out = sine_forward(f0)
        draws["noise"] = out[2].clone()
        return out

    def run_torch(x, capture=False):
        if capture:
            Uniform.sample, sine_gen.forward = capture_sample, capture_forward
        try:
            with torch.inference_mode():
                return ref.inference(x)[0].numpy()
        finally:
            Uniform.sample = uniform_sample
            sine_gen.__dict__.pop("forward", None)

    def run_mlx(x, replay=True):
        kw = dict(phase_vec=m_phase, noise=m_noise) if replay else {}
        wav, _ = model.inference(x, **kw)
        mx.eval(wav)
        return np.array(wav)

    run_torch(mel_warm)
    run_mlx(m_mel_warm, replay=False)
    torch.manual_seed(args.seed + 3)
    run_torch(mel, capture=True)  # captures the draws (untimed)
    m_phase, m_noise = mx.array(draws["phase"].numpy()), mx.array(draws["noise"].numpy())

    def same_draws():  # the same draws on every torch run
        torch.manual_seed(args.seed + 3)

    times, cpu_times, outs = alternate(
        {"torch": lambda: run_torch(mel), "mlx": lambda: run_mlx(m_mel)}, args.repeats, before_each=same_draws)

    audio_s = args.n_mel / MEL_RATE
    result = {
        "what": "HiFTGenerator.inference (F0 predictor + NSF source + decode + iSTFT), fp32 CPU",
        "weights": args.ckpt or f"seeded random (seed {args.seed})",
        "n_mel_frames": args.n_mel, "audio_seconds": audio_s, "repeats": args.repeats,
        "mlx_device": str(mx.default_device()), "mlx_conv_forms": "native" if backend.on_gpu() else "im2col/matmul",
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "load_avg_1m": os.getloadavg()[0],
        "mlx_version": mx.__version__, "torch_version": torch.__version__,
        "openblas_core": openblas_core(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "wide_blas": backend.wide_blas(),
        "output_snr_db": round(compare(outs["torch"], outs["mlx"]).snr_db, 1),
    }
    for name in times:
        result[name] = side_summary(times[name], cpu_times[name], audio_s)
    result.update(ratios(times, cpu_times))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
