"""Speed of the MLX flow (token -> mel, CausalMaskedDiffWithXvec.inference, finalize=True) against
the original PyTorch flow on the same weights and inputs, fp32 on the CPU. Prints JSON.

Weights: the flow of a checkpoint folder (--ckpt, s3gen.safetensors) or seeded random ones (full
size, as S3Token2Mel builds the flow). Inputs: random prompt / speech tokens, prompt mel, x-vector;
the same start noise for both. Runs alternate (torch, mlx, torch, mlx, ...) so that load from other
processes hits both alike; min and median are reported.

  .venv/bin/python benchmarks/bench_flow.py [--n-prompt 100] [--n-tokens 75] [--repeats 3] [--ckpt DIR]
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

TOKEN_RATE = 25  # speech tokens per second of audio


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-prompt", type=int, default=100, help="prompt speech tokens (mel frames = 2x)")
    ap.add_argument("--n-tokens", type=int, default=75, help="speech tokens to synthesise (25 per second)")
    ap.add_argument("--n-timesteps", type=int, default=10)
    add_common_arguments(ap)
    args = ap.parse_args(argv)

    import mlx.core as mx
    import numpy as np
    import torch

    from benchmarks.alternating import alternate, ratios, side_summary
    from mlx_impl import backend
    from mlx_impl.convert.common import load_strict
    from mlx_impl.convert.flow import sanitize
    from mlx_impl.s3gen.flow import build_causal_flow
    from parity.metrics import compare
    from reference.builders import original_flow

    backend.apply_mlx_defaults()
    torch.manual_seed(args.seed)
    ref = original_flow().eval()
    if args.ckpt:
        from parity.checkpoint_dir import CheckpointDir

        state = {k[5:]: v for k, v in CheckpointDir.open(args.ckpt).state("s3gen").items() if k.startswith("flow.")}
        ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    else:
        state = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    model = build_causal_flow()
    load_strict(model, sanitize(state), what="flow")
    mx.eval(model.parameters())

    g = torch.Generator().manual_seed(args.seed + 1)
    inputs = dict(
        token=torch.randint(0, 6561, (1, args.n_tokens), generator=g),
        token_len=torch.tensor([args.n_tokens]),
        prompt_token=torch.randint(0, 6561, (1, args.n_prompt), generator=g),
        prompt_token_len=torch.tensor([args.n_prompt]),
        prompt_feat=torch.randn(1, 2 * args.n_prompt, 80, generator=g),
        prompt_feat_len=None,
        embedding=torch.randn(1, 192, generator=g),
    )
    n_mel = 2 * (args.n_prompt + args.n_tokens)
    noise = torch.randn(1, 80, n_mel, generator=g)
    m_inputs = {k: (None if v is None else mx.array(v.numpy())) for k, v in inputs.items()}
    m_noise = mx.array(noise.numpy())

    orig_randn_like = torch.randn_like

    def run_torch():
        torch.randn_like = lambda t, *a, **k: noise.clone()
        try:
            with torch.inference_mode():
                return ref.inference(finalize=True, n_timesteps=args.n_timesteps, **inputs)[0].numpy()
        finally:
            torch.randn_like = orig_randn_like

    def run_mlx():
        out, _ = model.inference(finalize=True, n_timesteps=args.n_timesteps, noise=m_noise, **m_inputs)
        mx.eval(out)
        return np.array(out)

    times, cpu_times, outs = alternate({"torch": run_torch, "mlx": run_mlx}, args.repeats)

    audio_s = args.n_tokens / TOKEN_RATE
    result = {
        "what": "S3Gen flow inference (encoder + 10-step CFG Euler), fp32 CPU",
        "weights": args.ckpt or f"seeded random (seed {args.seed})",
        "n_prompt_tokens": args.n_prompt, "n_tokens": args.n_tokens, "n_mel_frames": n_mel,
        "n_timesteps": args.n_timesteps, "audio_seconds": audio_s, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "load_avg_1m": os.getloadavg()[0],
        "mlx_version": mx.__version__, "torch_version": torch.__version__, "wide_blas": backend.wide_blas(),
        "output_snr_db": compare(outs["torch"], outs["mlx"]).snr_db,
    }
    for name in times:
        result[name] = side_summary(times[name], cpu_times[name], audio_s)
    result.update(ratios(times, cpu_times))
    result["note"] = ("wall time on a shared machine: other processes slow both sides; runs alternate, "
                      "compare min (least disturbed) and median")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
