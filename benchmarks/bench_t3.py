"""T3 tokens/s: the MLX T3 against the ORIGINAL PyTorch T3.inference, same weights, same case.

Weights: a checkpoint folder's t3_cfg.safetensors (--ckpt) or seeded random full-size weights (the
original's own initialisation, seeded). Case: seeded random conditioning (speaker embedding, 150
prompt tokens), --text-len text tokens, CFG on, ChatterboxTTS.generate's defaults (temperature 0.8,
cfg 0.5, min_p 0.05, top_p 1.0, repetition penalty 1.2). Both sides draw with the same recorded
uniforms through the inverse-CDF sampler (torch.multinomial replaced in the original), so they decode
the same tokens and the same number of steps. After a warm-up run each, --runs alternating runs;
medians. Time is the whole inference call (prefill + decoding). Prints JSON.

    .venv/bin/python benchmarks/bench_t3.py [--ckpt DIR] [--tokens 60] [--runs 3]
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

os.environ.setdefault("TQDM_DISABLE", "1")  # the original's per-step progress bar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def original_t3(state=None, seed=0):
    import torch
    from chatterbox.models.t3 import T3

    torch.manual_seed(seed)
    model = T3()
    if state is not None:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model.eval()


def make_case(seed: int, text_len: int):
    rng = np.random.default_rng(seed)
    text = np.concatenate([[255], rng.integers(1, 700, text_len), [0]]).astype(np.int32)[None]
    return dict(
        speaker_emb=rng.standard_normal((1, 256)).astype(np.float32) * 0.1,
        prompt=rng.integers(0, 6561, (1, 150)).astype(np.int32),
        text=np.concatenate([text, text]),
    )


PARAMS = dict(temperature=0.8, cfg_weight=0.5, min_p=0.05, top_p=1.0, repetition_penalty=1.2)


def run_torch(model, case, n_tokens, uniforms):
    import torch
    from chatterbox.models.t3 import t3 as t3mod
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    from mlx_impl.t3.inference.sampling import inverse_cdf_token

    step = [0]

    def multinomial(probs, num_samples=1):
        tok = inverse_cdf_token(probs.float().numpy(), float(uniforms[step[0]]))
        step[0] += 1
        return torch.tensor([[tok]], dtype=torch.long)

    cond = T3Cond(speaker_emb=torch.from_numpy(case["speaker_emb"]),
                  cond_prompt_speech_tokens=torch.from_numpy(case["prompt"]).long(),
                  emotion_adv=0.5 * torch.ones(1, 1, 1))
    saved = torch.multinomial
    torch.multinomial = multinomial
    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.inference(t3_cond=cond, text_tokens=torch.from_numpy(case["text"]).long(),
                                  max_new_tokens=n_tokens, **PARAMS)
        dt = time.perf_counter() - t0
    finally:
        torch.multinomial = saved
    return out.numpy().reshape(-1), dt


def run_mlx(model, case, n_tokens, uniforms):
    import mlx.core as mx

    from mlx_impl.t3 import T3Cond
    from mlx_impl.t3.inference import ReplayDraw

    cond = T3Cond(speaker_emb=mx.array(case["speaker_emb"]), cond_prompt_speech_tokens=mx.array(case["prompt"]),
                  emotion_adv=0.5 * mx.ones((1, 1, 1)))
    t0 = time.perf_counter()
    out = model.inference(t3_cond=cond, text_tokens=case["text"], max_new_tokens=n_tokens, draw=ReplayDraw(uniforms),
                          **PARAMS)
    dt = time.perf_counter() - t0
    return out.reshape(-1), dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint folder (t3_cfg.safetensors); default: seeded random weights")
    ap.add_argument("--tokens", type=int, default=60, help="max_new_tokens per run")
    ap.add_argument("--warmup-tokens", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per side, alternating")
    ap.add_argument("--text-len", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)

    import mlx.core as mx
    import torch

    from mlx_impl import backend
    from mlx_impl.convert.t3 import load_t3

    backend.apply_mlx_defaults()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.ckpt:
        from parity.checkpoint_dir import read_safetensors

        state = read_safetensors(Path(args.ckpt) / "t3_cfg.safetensors")
        ref = original_t3(state)
        source = f"checkpoint {args.ckpt}"
    else:
        ref = original_t3(seed=args.seed)
        state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
        source = f"seeded random full-size weights (seed {args.seed})"
    model = load_t3(state)
    del state
    n_params = sum(p.numel() for p in ref.parameters())

    case = make_case(args.seed, args.text_len)
    uniforms = np.random.default_rng(args.seed + 1).random(max(args.tokens, args.warmup_tokens))

    run_torch(ref, case, args.warmup_tokens, uniforms)
    run_mlx(model, case, args.warmup_tokens, uniforms)
    times = {"torch": [], "mlx": []}
    counts = {"torch": [], "mlx": []}
    same_tokens = True
    for _ in range(args.runs):
        t_tok, t_dt = run_torch(ref, case, args.tokens, uniforms)
        m_tok, m_dt = run_mlx(model, case, args.tokens, uniforms)
        times["torch"].append(t_dt)
        times["mlx"].append(m_dt)
        counts["torch"].append(int(t_tok.size))
        counts["mlx"].append(int(m_tok.size))
        same_tokens &= t_tok.shape == m_tok.shape and bool(np.all(t_tok == m_tok))

    def summary(side):
        med = statistics.median(times[side])
        n = statistics.median(counts[side])
        return {"median_s": med, "tokens": n, "tokens_per_s": n / med, "runs_s": times[side]}

    result = {
        "benchmark": "t3_inference",
        "weights": source,
        "n_params": n_params,
        "case": {"text_tokens": int(case["text"].shape[1]), "prompt_tokens": 150, "cfg": True, **PARAMS,
                 "max_new_tokens": args.tokens},
        "timing": "whole T3.inference call (prefill + decode), after one warm-up run each; alternating runs; median",
        "torch": summary("torch"),
        "mlx": summary("mlx"),
        "identical_tokens": same_tokens,
        "device": {"mlx": str(mx.default_device()), "torch": "cpu", "torch_threads": torch.get_num_threads(),
                   "machine": platform.machine(), "cpus": os.cpu_count()},
        "versions": {"mlx": mx.__version__, "torch": torch.__version__},
    }
    result["speedup_mlx_over_torch"] = result["mlx"]["tokens_per_s"] / result["torch"]["tokens_per_s"]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
