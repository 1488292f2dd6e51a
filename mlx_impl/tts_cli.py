"""`chatterbox-parity tts`: text (+ a voice clip) -> 24 kHz wav, with the MLX pipeline."""
from __future__ import annotations

import time
from pathlib import Path


def cmd_tts(args):
    import mlx.core as mx
    import numpy as np
    import soundfile as sf
    from tqdm import tqdm

    from parity.errors import ParityError

    from .load import ModelLoadError
    from .t3.inference.sampling import GreedyDraw, MLXDraw
    from .tts import ChatterboxTTS

    if not args.text.strip():
        raise ParityError("--text is empty")
    if args.voice is not None and not args.voice.is_file():
        raise ParityError(f"voice file not found: {args.voice}")
    model_path = args.model or _default_model()
    try:
        tts = ChatterboxTTS.from_pretrained(str(model_path))
    except ModelLoadError as e:
        raise ParityError(str(e)) from None
    if args.voice is None and tts.conds is None:
        raise ParityError(f"{model_path} has no built-in voice (conds.pt): pass --voice")
    mx.random.seed(args.seed)
    bar = tqdm(total=args.max_new_tokens, desc="T3 tokens", unit="tok", disable=args.quiet)
    t0 = time.time()
    wav = tts.generate(
        args.text, audio_prompt_path=str(args.voice) if args.voice else None, exaggeration=args.exaggeration,
        cfg_weight=args.cfg_weight, temperature=args.temperature, repetition_penalty=args.repetition_penalty,
        min_p=args.min_p, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        draw=GreedyDraw() if args.greedy else MLXDraw(),
        on_token=lambda i, tok: bar.update(1))
    bar.close()
    audio = np.asarray(wav, dtype=np.float32).reshape(-1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp.wav")
    sf.write(str(tmp), audio, tts.sr, subtype="PCM_16")
    tmp.replace(args.out)
    dur = len(audio) / tts.sr
    print(f"wrote {args.out}: {dur:.2f} s at {tts.sr} Hz in {time.time() - t0:.1f} s")


def _default_model() -> Path:
    from parity.cli import resolve_checkpoint

    return resolve_checkpoint(None).path


def register(sub):
    p = sub.add_parser("tts", help="synthesise speech with the MLX pipeline (24 kHz wav)")
    p.add_argument("--text", required=True)
    p.add_argument("--voice", type=Path, default=None, help="reference clip (default: the model's built-in voice)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default=None,
                   help="model folder (MLX or hub layout) or hub repo id (default: the synthetic checkpoint)")
    p.add_argument("--exaggeration", type=float, default=0.5)
    p.add_argument("--cfg-weight", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--repetition-penalty", type=float, default=1.2)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=1000)
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_tts)
