"""Where MLX's peak memory comes from, phase by phase (load, T3 decoding, S3Gen), on the built-in
voice (the GPU machine has no librosa): `mx.get_peak_memory()` reset before each phase, beside the
memory still held after it. Usage (on the device machine, from the repository root):
    python3 benchmarks/gpu/mem_probe.py /tmp/ckpt [--tokens 300] [--dtype float32|bfloat16]
Prints one JSON line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    import mlx.core as mx

    from mlx_impl import backend
    from mlx_impl.load import set_half_precision
    from mlx_impl.tts import SPEECH_VOCAB_SIZE, ChatterboxTTS
    from parity.cases import get_case

    backend.apply_mlx_defaults()
    record = {"dtype": args.dtype, "tokens": args.tokens, "device": str(mx.default_device())}

    def phase(name):
        record[name] = {"peak_mb": round(mx.get_peak_memory() / 2**20), "held_mb": round(mx.get_active_memory() / 2**20)}
        mx.reset_peak_memory()

    tts = ChatterboxTTS.from_pretrained(args.checkpoint)
    if args.dtype != "float32":
        set_half_precision(tts.t3, tts.s3gen, getattr(mx, args.dtype))
    mx.eval(tts.t3.parameters(), tts.s3gen.parameters())
    phase("load")
    case = get_case("espeak_22k")
    tokens = tts.t3.inference(t3_cond=tts.conds.t3, text_tokens=tts.text_tokens(case.text), max_new_tokens=args.tokens,
                              cfg_weight=0.5)
    phase("t3")
    speech = tokens[0][tokens[0] < SPEECH_VOCAB_SIZE]
    wav, _ = tts.s3gen.inference(speech[None], ref_dict=tts.conds.gen)
    mx.eval(wav)
    phase("s3gen")
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
