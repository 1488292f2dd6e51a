"""The two sides of `bench_pipeline.py --model mtl`: the original `ChatterboxMultilingualTTS.generate` and
MLX's, on the same multilingual checkpoint, case (text, language and clip) and token draws.

Each side runs generate(text, language_id, audio_prompt_path=clip) whole, as a user would (conditioning, the
multilingual punc_norm and MTLTokenizer, T3.inference with its AlignmentStreamAnalyzer at every step, S3Gen),
with only these changes, the same on both sides:
  - `T3.inference` is bounded to `n_tokens` steps (the original's generate() passes 1000; MLX's takes
    `max_new_tokens`); the case is one whose T3 runs to that bound (mtl_de: 200 draws in its fixture);
  - the token draws: the original's `torch.multinomial` is `RecordedSampler` (inverse CDF on the case's seeded
    uniforms), MLX replays those uniforms (`ReplayDraw`), so both decode the same tokens;
  - the original's watermark is left out (MLX applies none);
  - the front end runs offline on both sides (the hub offline, spacy-pkuseg's model from the folder's
    pkuseg/), as the parity export runs it.
The conditioning, T3 and S3Gen are timed by wrappers around the instance's methods (turbo_workers.timed).
A run returns the dict bench_pipeline's parent summarises.
"""
from __future__ import annotations

import time
from contextlib import ExitStack

from benchmarks.turbo_workers import timed


def generate_kwargs(case) -> dict:
    """generate()'s arguments of a multilingual case (max_new_tokens bounds T3.inference, set separately)."""
    return {k: v for k, v in case.params.items() if k != "max_new_tokens"}


_WORKER_LIFE = ExitStack()  # contexts entered for the worker process's life


def go_offline(ckpt_dir: str) -> None:
    """The hub offline and $PKUSEG_HOME at the folder's pkuseg/ for the worker's life (either side's
    MTLTokenizer builds spacy-pkuseg's segmenter, which would otherwise download its model)."""
    from parity.mtl_checkpoint import MtlCheckpointDir
    from reference.export_mtl import offline_front_end

    _WORKER_LIFE.enter_context(offline_front_end(MtlCheckpointDir.open(ckpt_dir)))


def worker_original_mtl(ckpt_dir: str, case_name: str, n_tokens: int):
    import torch

    from parity.cases import load_mtl_cases
    from parity.mtl_checkpoint import MtlCheckpointDir
    from reference.export_mtl import load_original_mtl
    from reference.recording import RecordedSampler, patched

    torch.set_grad_enabled(False)
    case = load_mtl_cases()[case_name]
    go_offline(ckpt_dir)
    tts = load_original_mtl(MtlCheckpointDir.open(ckpt_dir))

    def run():
        times = {}
        sampler = RecordedSampler(seed=case.seed)
        inference = tts.t3.inference

        def bounded(**kw):
            with patched(torch, "multinomial", sampler):
                return inference(**{**kw, "max_new_tokens": n_tokens})

        torch.manual_seed(case.seed)
        with ExitStack() as stack:
            stack.enter_context(patched(tts.t3, "inference", bounded))
            timed(stack, patched, tts, "prepare_conditionals", times, "cond_s")
            timed(stack, patched, tts.t3, "inference", times, "t3_s")
            timed(stack, patched, tts.s3gen, "inference", times, "s3gen_s")
            stack.enter_context(patched(tts.watermarker, "apply_watermark", lambda wav, sample_rate: wav))
            t0 = time.perf_counter()
            wav = tts.generate(case.text, case.language, audio_prompt_path=str(case.audio_path),
                               **generate_kwargs(case))
            total = time.perf_counter() - t0
        return dict(cond_s=times["cond_s"], t3_s=times["t3_s"], s3gen_s=times["s3gen_s"], total_s=total,
                    t3_tokens=len(sampler.tokens), audio_s=wav.shape[-1] / tts.sr, tokens=list(sampler.tokens),
                    uniforms=sampler.uniforms)

    return run


def worker_mlx_mtl(ckpt_dir: str, case_name: str, n_tokens: int, uniforms):
    import mlx.core as mx

    from mlx_impl.mtl_tts import ChatterboxMultilingualTTS
    from mlx_impl.t3.inference.sampling import ReplayDraw
    from parity.cases import load_mtl_cases
    from reference.recording import patched

    case = load_mtl_cases()[case_name]
    go_offline(ckpt_dir)
    tts = ChatterboxMultilingualTTS.from_pretrained(ckpt_dir)  # applies the backend's MLX defaults

    def eval_conds(conds):
        # everything conditioning computes, lest lazy work be timed as T3's or S3Gen's
        c = conds.t3
        mx.eval([a for a in (c.speaker_emb, c.cond_prompt_speech_tokens, *conds.gen.values()) if isinstance(a, mx.array)])

    def run():
        times, drawn = {}, []
        with ExitStack() as stack:
            timed(stack, patched, tts, "prepare_conditionals", times, "cond_s", finish=lambda r: eval_conds(tts.conds))
            timed(stack, patched, tts.t3, "inference", times, "t3_s")
            timed(stack, patched, tts.s3gen, "inference", times, "s3gen_s", finish=lambda r: mx.eval(r[0]))
            t0 = time.perf_counter()
            wav = tts.generate(case.text, case.language, audio_prompt_path=str(case.audio_path),
                               max_new_tokens=n_tokens, draw=ReplayDraw(uniforms) if uniforms else None,
                               on_token=lambda i, t: drawn.append(t), **generate_kwargs(case))
            mx.eval(wav)
            total = time.perf_counter() - t0
        return dict(cond_s=times["cond_s"], t3_s=times["t3_s"], s3gen_s=times["s3gen_s"], total_s=total,
                    t3_tokens=len(drawn), audio_s=wav.shape[-1] / tts.sr, tokens=drawn)

    return run
