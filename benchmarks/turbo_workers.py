"""The two sides of `bench_pipeline.py --model turbo`: the original `ChatterboxTurboTTS.generate` and
MLX's, on the same Turbo checkpoint, case (text and clip) and token draws.

Each side runs generate(text, audio_prompt_path=clip) whole, as a user would (conditioning, Turbo's
punc_norm and GPT-2 tokenizer, T3.inference_turbo, S3Gen with MeanFlow's 2 steps), with only these
changes, the same on both sides:
  - `T3.inference_turbo` is bounded to `n_tokens` steps after the first draw (generate() leaves it at
    1000; the synthetic Turbo T3 never draws the stop token, so it decodes n_tokens + 1 tokens);
  - the token draws: the original's `torch.multinomial` is `RecordedSampler` (inverse CDF on seeded
    uniforms), MLX replays those uniforms (`ReplayDraw`), so both decode the same tokens;
  - the original's watermark is left out (MLX applies none).
The conditioning, T3 and S3Gen are timed by wrappers around the instance's methods (the work itself
is the original's / MLX's own). A run returns the dict bench_pipeline's parent summarises.
"""
from __future__ import annotations

import time
from contextlib import ExitStack


def timed(stack: ExitStack, patched, obj, name: str, times: dict, key: str, finish=None):
    """Replace obj.name, for the stack's life, by a wrapper adding its wall time to times[key];
    `finish(result)` (MLX: evaluate lazy outputs) runs inside the timed span."""
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        result = original(*args, **kwargs)
        if finish is not None:
            finish(result)
        times[key] = times.get(key, 0.0) + time.perf_counter() - t0
        return result

    stack.enter_context(patched(obj, name, wrapper))


def generate_kwargs(case) -> dict:
    """generate()'s arguments of a Turbo case (max_gen_len is inference_turbo's bound, set separately)."""
    return {k: v for k, v in case.params.items() if k != "max_gen_len"}


def timed_generate(tts, t3_method: str, generate, patches=(), mlx: bool = False) -> dict:
    """One run of `generate()` (returns the waveform) with the conditioning, T3 (`t3_method`) and
    S3Gen timed by wrappers around tts's methods; `patches`: (obj, name, value) replaced for the run
    first (the original's bounded T3, its watermark left out). `mlx`: MLX's lazy outputs evaluated
    inside each timed span. The times (s) and the audio's length; the caller adds the tokens."""
    from reference.recording import patched

    times = {}
    with ExitStack() as stack:
        for obj, name, value in patches:
            stack.enter_context(patched(obj, name, value))
        timed(stack, patched, tts, "prepare_conditionals", times, "cond_s",
              finish=(lambda r: eval_mlx_conds(tts.conds)) if mlx else None)
        timed(stack, patched, tts.t3, t3_method, times, "t3_s")
        timed(stack, patched, tts.s3gen, "inference", times, "s3gen_s", finish=eval_first if mlx else None)
        t0 = time.perf_counter()
        wav = generate()
        if mlx:
            eval_first((wav,))
        total = time.perf_counter() - t0
    return dict(cond_s=times["cond_s"], t3_s=times["t3_s"], s3gen_s=times["s3gen_s"], total_s=total,
                audio_s=wav.shape[-1] / tts.sr)


def eval_mlx_conds(conds) -> None:
    """Everything MLX's conditioning computes, lest lazy work be timed as T3's or S3Gen's."""
    import mlx.core as mx

    c = conds.t3
    mx.eval([a for a in (c.speaker_emb, c.cond_prompt_speech_tokens, *conds.gen.values()) if isinstance(a, mx.array)])


def eval_first(result) -> None:
    import mlx.core as mx

    mx.eval(result[0])


def worker_original_turbo(ckpt_dir: str, case_name: str, n_tokens: int):
    import torch

    from parity.cases import load_turbo_cases
    from parity.turbo_checkpoint import TurboCheckpointDir
    from reference.export_turbo import load_original_turbo
    from reference.recording import RecordedSampler, patched

    torch.set_grad_enabled(False)
    case = load_turbo_cases()[case_name]
    tts = load_original_turbo(TurboCheckpointDir.open(ckpt_dir))

    def run():
        sampler = RecordedSampler(seed=case.seed)
        inference = tts.t3.inference_turbo

        def bounded(**kw):
            with patched(torch, "multinomial", sampler):
                return inference(**kw, max_gen_len=n_tokens)

        torch.manual_seed(case.seed)
        out = timed_generate(tts, "inference_turbo", lambda: tts.generate(case.text, audio_prompt_path=str(case.audio_path),
                                                                         **generate_kwargs(case)),
                             patches=[(tts.t3, "inference_turbo", bounded),
                                      (tts.watermarker, "apply_watermark", lambda wav, sample_rate: wav)])
        return dict(out, t3_tokens=len(sampler.tokens), tokens=list(sampler.tokens), uniforms=sampler.uniforms)

    return run


def worker_mlx_turbo(ckpt_dir: str, case_name: str, n_tokens: int, uniforms):
    from mlx_impl.t3.inference.sampling import ReplayDraw
    from mlx_impl.tts_turbo import ChatterboxTurboTTS
    from parity.cases import load_turbo_cases

    case = load_turbo_cases()[case_name]
    tts = ChatterboxTurboTTS.from_pretrained(ckpt_dir)  # applies the backend's MLX defaults

    def run():
        drawn = []
        out = timed_generate(tts, "inference_turbo", lambda: tts.generate(
            case.text, audio_prompt_path=str(case.audio_path), max_gen_len=n_tokens,
            draw=ReplayDraw(uniforms) if uniforms else None, on_token=lambda i, t: drawn.append(t),
            **generate_kwargs(case)), mlx=True)
        return dict(out, t3_tokens=len(drawn), tokens=drawn)

    return run
