"""Batched generation (ChatterboxTTS.generate_batch, T3.inference_batch) against one-text runs:
aggregate tokens/s of B texts decoded together vs the same B texts decoded one after the other,
with the same draws (each text its own ReplayDraw), so both sides decode the same tokens (checked:
a mismatch is recorded and the exit status is 1).

Parts: `t3` (T3 alone: inference_batch vs B inference calls) and `pipeline` (generate_batch vs B
generate calls: T3, then S3Gen text by text on both sides). The two sides alternate round by round
after a warm-up round (compilation); medians, min and max of --rounds rounds. The voice is the
checkpoint's built-in one (conds.pt), or --voice for every text. MLX runs on its default device
(mlx_impl.backend: the GPU where MLX has one, else the CPU); the record names it.
Usage:
    python benchmarks/bench_batched.py [--checkpoint checkpoints/synthetic-s0] [--batch 4] [--tokens 100]
        [--rounds 3] [--part t3|pipeline|both] [--dtype float32|bfloat16|float16] [--voice WAV]
        [--note TEXT] [--out reports/bench/bench_batched_<cpu|gpu>_b<B>[_<part>].json]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.alternating import alternate  # noqa: E402
from parity.fixtures import write_text_atomic  # noqa: E402

# texts of different lengths (the batch's prompts are left-padded to the longest), cycled for B > 8
TEXTS = (
    "Hello there.",
    "The quick brown fox jumps over the lazy dog.",
    "Batched decoding runs several texts through the model at once.",
    "Short one.",
    "Every row keeps its own voice, its own draws and its own stop token, whatever the other rows do.",
    "A sentence of a middle length, for variety.",
    "Numbers like three hundred and twelve are spelled out.",
    "The last of the eight texts, which then repeat with other draws.",
)


def texts_for(batch: int) -> list:
    return [TEXTS[r % len(TEXTS)] for r in range(batch)]


def draws_for(batch: int, tokens: int, seed: int) -> list:
    import numpy as np

    from mlx_impl.t3.inference import ReplayDraw

    return [ReplayDraw(np.random.default_rng(seed + r).random(tokens)) for r in range(batch)]


def spread(seconds: list, tokens: int) -> dict:
    med = statistics.median(seconds)
    return {"seconds": [round(s, 4) for s in seconds], "median_s": round(med, 4), "min_s": round(min(seconds), 4),
            "max_s": round(max(seconds), 4), "spread_pct": round(100 * (max(seconds) - min(seconds)) / med, 1),
            "tokens_per_s_median": round(tokens / med, 2), "tokens_per_s_best": round(tokens / min(seconds), 2)}


def mismatches(one: list, batched: list) -> list:
    """Texts whose tokens differ, with the first differing step."""
    out = []
    for r, (a, b) in enumerate(zip(one, batched)):
        a, b = list(a), list(b)
        if a != b:
            n = min(len(a), len(b))
            first = next((i for i in range(n) if a[i] != b[i]), n)
            out.append({"text": r, "first_step": first, "lengths": [len(a), len(b)]})
    return out


def bench_t3(tts, texts, draws, tokens: int, rounds: int, p: dict) -> dict:
    t3 = tts.t3
    text_tokens = [tts.text_tokens(t) for t in texts]
    conds = [tts.conds.t3] * len(texts)

    def one():
        return [t3.inference(t3_cond=c, text_tokens=tt, max_new_tokens=tokens, draw=d, **p)[0].tolist()
                for c, tt, d in zip(conds, text_tokens, draws)]

    def batched():
        return [row[0].tolist() for row in
                t3.inference_batch(t3_conds=conds, text_tokens=text_tokens, max_new_tokens=tokens, draws=draws, **p)]

    return compare_sides(one, batched, rounds, audio=False)


def bench_pipeline(tts, texts, draws, tokens: int, rounds: int, p: dict) -> dict:
    import mlx.core as mx

    def one():
        rows, audio = [], 0
        for text, d in zip(texts, draws):
            seen = []
            wav = tts.generate(text, max_new_tokens=tokens, draw=d, on_token=lambda i, t: seen.append(t), **p)
            mx.eval(wav)
            rows.append(seen)
            audio += wav.shape[-1]
        return rows, audio / tts.sr

    def batched():
        rows = [[] for _ in texts]
        wavs = tts.generate_batch(texts, max_new_tokens=tokens, draws=draws,
                                  on_token=lambda r, i, t: rows[r].append(t), **p)
        mx.eval(wavs)
        return rows, sum(w.shape[-1] for w in wavs) / tts.sr

    return compare_sides(one, batched, rounds, audio=True)


def compare_sides(one, batched, rounds: int, audio: bool) -> dict:
    runs = {"one_text_runs": one, "batched": batched}
    for fn in runs.values():  # warm-up: compilation, caches
        fn()
    wall, cpu, outs = alternate(runs, rounds)
    rows = {name: (out[0] if audio else out) for name, out in outs.items()}
    n_tokens = sum(len(r) for r in rows["batched"])
    res = {name: spread(wall[name], n_tokens) for name in runs}
    for name in runs:
        res[name]["cpu_s_median"] = round(statistics.median(cpu[name]), 3)
    res["tokens"] = n_tokens
    res["tokens_per_text"] = [len(r) for r in rows["batched"]]
    res["speedup_median"] = round(res["one_text_runs"]["median_s"] / res["batched"]["median_s"], 3)
    res["token_mismatches"] = mismatches(rows["one_text_runs"], rows["batched"])
    res["tokens_equal"] = not res["token_mismatches"]
    if audio:
        res["audio_s"] = round(outs["batched"][1], 3)
    return res


def device_record(args) -> dict:
    import mlx.core as mx

    from mlx_impl.backend.device import on_cuda

    rec = {"mlx": mx.__version__, "default_device": str(mx.default_device()), "cuda": on_cuda(),
           "machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version()}
    try:
        info = mx.device_info()
        rec["device_name"] = info.get("device_name") or info.get("name")
    except Exception:  # noqa: BLE001 - not every backend describes itself
        pass
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "synthetic-s0"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=100, help="max_new_tokens of each text")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--part", choices=("t3", "pipeline", "both"), default="both")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    ap.add_argument("--voice", default=None, help="reference clip for every text (default: the built-in voice)")
    ap.add_argument("--seed", type=int, default=0, help="the draws' seed (text r: seed + r)")
    ap.add_argument("--note", default="", help="free text kept in the record (e.g. other load on the machine)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.tokens < 1 or args.rounds < 1:
        ap.error("--batch, --tokens and --rounds must be positive")
    if not (Path(args.checkpoint) / "t3_cfg.safetensors").exists() and not (Path(args.checkpoint) / "model.safetensors").exists():
        ap.error(f"--checkpoint {args.checkpoint}: no Chatterbox checkpoint there")

    import mlx.core as mx

    from mlx_impl.load import set_half_precision
    from mlx_impl.tts import ChatterboxTTS

    tts = ChatterboxTTS.from_pretrained(args.checkpoint)
    if args.dtype != "float32":
        set_half_precision(tts.t3, tts.s3gen, getattr(mx, args.dtype))
    if args.voice:
        tts.prepare_conditionals(args.voice)
    if tts.conds is None:
        ap.error(f"--checkpoint {args.checkpoint} has no built-in voice (conds.pt): pass --voice")
    p = dict(temperature=0.8, cfg_weight=0.5, repetition_penalty=1.2, min_p=0.05, top_p=1.0)
    texts, draws = texts_for(args.batch), draws_for(args.batch, args.tokens, args.seed)
    device = device_record(args)
    print(json.dumps(device), flush=True)
    record = {"benchmark": "bench_batched", "batch": args.batch, "max_new_tokens": args.tokens, "rounds": args.rounds,
              "dtype": args.dtype, "checkpoint": str(args.checkpoint), "voice": args.voice or "built-in (conds.pt)",
              "sampling": p, "note": args.note, "device": device, "texts": texts}
    from mlx_impl.t3.inference.step_kinds import make_step

    record["one_text_step"] = type(make_step(tts.t3, 1)).__name__
    if args.part in ("t3", "both"):
        record["t3"] = bench_t3(tts, texts, draws, args.tokens, args.rounds, p)
        print(json.dumps({"t3": record["t3"]}), flush=True)
    if args.part in ("pipeline", "both"):
        record["pipeline"] = bench_pipeline(tts, texts, draws, args.tokens, args.rounds, p)
        print(json.dumps({"pipeline": record["pipeline"]}), flush=True)
    record["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    kind = "gpu" if device["default_device"].startswith("Device(gpu") else "cpu"
    part = "" if args.part == "both" else f"_{args.part}"
    out = Path(args.out or ROOT / "reports" / "bench" / f"bench_batched_{kind}_b{args.batch}{part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(record, indent=1) + "\n")
    print(f"written {out}", flush=True)
    equal = all(record[part]["tokens_equal"] for part in ("t3", "pipeline") if part in record)
    if not equal:
        print("token mismatch between batched and one-text runs (see token_mismatches)", file=sys.stderr)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
