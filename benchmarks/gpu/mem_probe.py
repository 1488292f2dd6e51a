"""Where MLX's peak memory comes from, phase by phase (load, T3 decoding, the flow, HiFT), on the
built-in voice (the GPU machine has no librosa): `mx.get_peak_memory()` reset before each phase,
beside the memory still held after it and the phase's seconds. The flow and HiFT run twice (the
first time compiles kernels); the record is the second run's. `--unbounded-queue` queues each
S3Gen stage whole, as before `backend.gpu_block_queued` (a before/after pair in one machine).
Usage (on the device machine, from the repository root):
    python3 benchmarks/gpu/mem_probe.py /tmp/ckpt [--tokens 300] [--dtype float32|bfloat16|bfloat16-t3] [--unbounded-queue]
Prints one JSON line."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--unbounded-queue", action="store_true")
    args = ap.parse_args()

    import mlx.core as mx

    from mlx_impl import backend
    from mlx_impl.backend import lanes
    from mlx_impl.load import cast_in_place, set_half_precision
    from mlx_impl.tts import SPEECH_VOCAB_SIZE, ChatterboxTTS
    from parity.cases import get_case

    backend.apply_mlx_defaults()
    if args.unbounded_queue:
        lanes.gpu_block_queued = lambda x: None
    record = {"dtype": args.dtype, "tokens": args.tokens, "device": str(mx.default_device()),
              "bounded_queue": not args.unbounded_queue}
    clock = [time.perf_counter()]

    def phase(name):
        record[name] = {"peak_mb": round(mx.get_peak_memory() / 2**20), "held_mb": round(mx.get_active_memory() / 2**20),
                        "s": round(time.perf_counter() - clock[0], 4)}
        mx.reset_peak_memory()
        clock[0] = time.perf_counter()

    tts = ChatterboxTTS.from_pretrained(args.checkpoint)
    if args.dtype.endswith("-t3"):  # T3 alone, S3Gen float32 (bench_pipeline's bfloat16-t3)
        cast_in_place(tts.t3, getattr(mx, args.dtype.removesuffix("-t3")))
    elif args.dtype != "float32":
        set_half_precision(tts.t3, tts.s3gen, getattr(mx, args.dtype))
    mx.eval(tts.t3.parameters(), tts.s3gen.parameters())
    phase("load")
    case = get_case("espeak_22k")
    tokens = tts.t3.inference(t3_cond=tts.conds.t3, text_tokens=tts.text_tokens(case.text), max_new_tokens=args.tokens,
                              cfg_weight=0.5)
    phase("t3")
    speech = tokens[0][tokens[0] < SPEECH_VOCAB_SIZE]
    for run in ("first", "second"):
        mels = tts.s3gen.flow_inference(speech[None], ref_dict=tts.conds.gen)
        mx.eval(mels)
        phase(f"flow_{run}")
        wav, _ = tts.s3gen.hift_inference(mels)
        mx.eval(wav)
        phase(f"hift_{run}")
        wav, _ = tts.s3gen.inference(speech[None], ref_dict=tts.conds.gen)
        mx.eval(wav)
        phase(f"s3gen_{run}")
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
