"""GraphStep's in-place KV cache writes (CUDA) against its slice updates, in one process on the
device machine: T3 decodes the same tokens both ways (seeded draws, CFG), alternating, and each
side's tokens/s, peak memory above the loaded weights, and whether the tokens are identical are
printed as one JSON line. Usage (from the repository root, after run.sh prepare / install):
    python3 benchmarks/gpu/kv_in_place.py /tmp/ckpt [--tokens 300] [--rounds 2] [--dtype float32|bfloat16]"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    import mlx.core as mx

    from mlx_impl import backend
    from mlx_impl.load import set_half_precision
    from mlx_impl.t3.inference import graph_step
    from mlx_impl.tts import ChatterboxTTS
    from parity.cases import get_case

    backend.apply_mlx_defaults()
    tts = ChatterboxTTS.from_pretrained(args.checkpoint)
    if args.dtype != "float32":
        set_half_precision(tts.t3, tts.s3gen, getattr(mx, args.dtype))
    mx.eval(tts.t3.parameters())
    text = tts.text_tokens(get_case("espeak_22k").text)
    plain_init = graph_step.GraphStep.__init__

    def slice_updates_init(self, *a, **k):
        plain_init(self, *a, **k)
        self.in_place = False

    def decode(side, seed):
        graph_step.GraphStep.__init__ = plain_init if side == "in_place" else slice_updates_init
        mx.random.seed(seed)
        held = mx.get_active_memory()
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        tokens = tts.t3.inference(t3_cond=tts.conds.t3, text_tokens=text, max_new_tokens=args.tokens, cfg_weight=0.5)
        mx.eval(tokens)
        dt = time.perf_counter() - t0
        return tokens.shape[1] / dt, (mx.get_peak_memory() - held) / 2**20, tokens.tolist()

    sides = ("in_place", "slice_updates")
    for side in sides:  # warm-up (compiles)
        decode(side, 0)
    runs = {s: [] for s in sides}
    for r in range(args.rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            runs[side].append(decode(side, 100 + r))
    record = {"dtype": args.dtype, "tokens": args.tokens, "rounds": args.rounds, "device": str(mx.default_device()),
              "identical_tokens": all(a[2] == b[2] for a, b in zip(runs["in_place"], runs["slice_updates"]))}
    for side in sides:
        record[side] = {"tokens_per_s": round(statistics.median(r[0] for r in runs[side]), 1),
                        "rounds_tokens_per_s": [round(r[0], 1) for r in runs[side]],
                        "peak_above_held_mb": round(max(r[1] for r in runs[side]))}
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
