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
The conditioning, T3 and S3Gen are timed by wrappers around the instance's methods (turbo_workers.timed_generate).
A run returns the dict bench_pipeline's parent summarises.
"""
from __future__ import annotations

from contextlib import ExitStack

from benchmarks.turbo_workers import timed_generate


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
        sampler = RecordedSampler(seed=case.seed)
        inference = tts.t3.inference

        def bounded(**kw):
            with patched(torch, "multinomial", sampler):
                return inference(**{**kw, "max_new_tokens": n_tokens})

        torch.manual_seed(case.seed)
        out = timed_generate(tts, "inference", lambda: tts.generate(case.text, case.language,
                                                                    audio_prompt_path=str(case.audio_path),
                                                                    **generate_kwargs(case)),
                             patches=[(tts.t3, "inference", bounded),
                                      (tts.watermarker, "apply_watermark", lambda wav, sample_rate: wav)])
        return dict(out, t3_tokens=len(sampler.tokens), tokens=list(sampler.tokens), uniforms=sampler.uniforms)

    return run


def worker_mlx_mtl(ckpt_dir: str, case_name: str, n_tokens: int, uniforms):
    from mlx_impl.mtl_tts import ChatterboxMultilingualTTS
    from mlx_impl.t3.inference.sampling import ReplayDraw
    from parity.cases import load_mtl_cases

    case = load_mtl_cases()[case_name]
    go_offline(ckpt_dir)
    tts = ChatterboxMultilingualTTS.from_pretrained(ckpt_dir)  # applies the backend's MLX defaults

    def run():
        drawn = []
        out = timed_generate(tts, "inference", lambda: tts.generate(
            case.text, case.language, audio_prompt_path=str(case.audio_path), max_new_tokens=n_tokens,
            draw=ReplayDraw(uniforms) if uniforms else None, on_token=lambda i, t: drawn.append(t),
            **generate_kwargs(case)), mlx=True)
        return dict(out, t3_tokens=len(drawn), tokens=drawn)

    return run
