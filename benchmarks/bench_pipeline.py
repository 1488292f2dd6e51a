"""Original PyTorch Chatterbox vs the MLX pipeline: same weights, case, settings and random draws.

Each side runs in its own worker process (models loaded once, untimed), the parent alternates
them round by round after a warm-up, and reports medians: T3 tokens/s (CFG on), S3Gen seconds per
second of audio, the conditioning time, the whole pipeline's real-time factor, and each worker's
peak memory (max RSS; on the GPU also the device's peak). Results: JSON + Markdown under
reports/out/bench_{cpu,gpu}.*, which the report includes.

On the GPU (`--device gpu`: torch on CUDA, MLX on its CUDA backend) `--expert` adds a third worker,
the decode loop a PyTorch expert would write (benchmarks/expert_t3.py: StaticCache + CUDA graphs)
with the original's S3Gen, and `--builtin-voice` takes the conditioning from the checkpoint's
conds.pt instead of the reference clip (the GPU machine has no librosa). `--mlx-dtype` and
`--expert-dtype` take several dtypes: one worker each, all alternating (the first MLX dtype is the
"mlx" side the ratios use; the others are sides "mlx_<dtype>"; an expert in float32 is "expert",
in another dtype "expert_<dtype>": its T3 and conditioning cast to that dtype, S3Gen float32).

`--model turbo` times Chatterbox Turbo instead: the original `ChatterboxTurboTTS.generate` against
MLX's (benchmarks/turbo_workers.py: same Turbo checkpoint, default `checkpoints/synthetic-turbo-s0`,
same case, default `turbo_espeak`, same token draws; `--tokens` bounds inference_turbo), CPU, float32;
results under reports/out/bench_cpu_turbo.*. `--model mtl` times Chatterbox Multilingual the same way:
the original `ChatterboxMultilingualTTS.generate` against MLX's (benchmarks/mtl_workers.py: the AlignmentStreamAnalyzer
runs in both; default checkpoint `checkpoints/synthetic-mtl-s0`, case `mtl_de`; `--tokens` bounds T3.inference),
results under reports/out/bench_cpu_mtl.*. `--note` adds a line to the record (e.g. what else ran).
Usage:
    python benchmarks/bench_pipeline.py [--model chatterbox|turbo|mtl] [--checkpoint DIR] [--case CASE]
        [--tokens 100] [--rounds 3] [--device cpu|gpu] [--mlx-dtype float32|bfloat16|float16|bfloat16-t3 ...] [--expert]
        [--expert-dtype float32|bfloat16|float16 ...] [--builtin-voice] [--note TEXT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parity.fixtures import write_text_atomic  # noqa: E402


# ----------------------------------------------------------------------------- workers
def worker_original(ckpt_dir: str, case_name: str, n_tokens: int, device: str, builtin_voice: bool,
                    expert: bool = False, expert_dtype: str = "float32"):
    import torch

    from parity.cases import get_case
    from parity.checkpoint_dir import CheckpointDir
    from reference.export import load_original
    from reference.recording import RecordedSampler, patched

    case = get_case(case_name)
    torch_device = "cuda" if device == "gpu" else "cpu"
    tts = load_original(CheckpointDir.open(ckpt_dir), torch_device)
    p = case.params
    expert_t3 = None
    if expert:
        from benchmarks.expert_t3 import ExpertT3

        if expert_dtype != "float32":  # as a PyTorch user would: T3 and its conditioning in that dtype
            tts.t3.to(dtype=getattr(torch, expert_dtype))
            tts.conds.t3.to(dtype=getattr(torch, expert_dtype))
        expert_t3 = ExpertT3(tts.t3)

    def sync():
        if torch_device == "cuda":
            torch.cuda.synchronize()

    def run():
        import torch.nn.functional as F
        from chatterbox.tts import punc_norm

        t0 = time.perf_counter()
        if not builtin_voice:
            tts.prepare_conditionals(str(case.audio_path), exaggeration=p["exaggeration"])
        t_cond = time.perf_counter() - t0
        tt = tts.tokenizer.text_to_tokens(punc_norm(case.text)).to(torch_device)
        tt = torch.cat([tt, tt])
        tt = F.pad(F.pad(tt, (1, 0), value=tts.t3.hp.start_text_token), (0, 1), value=tts.t3.hp.stop_text_token)
        sampler = RecordedSampler(seed=case.seed)
        kw = dict(t3_cond=tts.conds.t3, text_tokens=tt, max_new_tokens=n_tokens, temperature=p["temperature"],
                  cfg_weight=p["cfg_weight"], repetition_penalty=p["repetition_penalty"], min_p=p["min_p"],
                  top_p=p["top_p"])
        sync()
        t0 = time.perf_counter()
        if expert_t3 is not None:
            tokens = expert_t3.inference(**kw)
        else:
            with patched(torch, "multinomial", sampler):
                tokens = tts.t3.inference(**kw)
        sync()
        t_t3 = time.perf_counter() - t0
        speech = tokens[0][tokens[0] < 6561]
        torch.manual_seed(case.seed)
        t0 = time.perf_counter()
        wav, _ = tts.s3gen.inference(speech_tokens=speech, ref_dict=tts.conds.gen)
        wav = wav.cpu()
        t_s3 = time.perf_counter() - t0
        out = dict(cond_s=t_cond, t3_s=t_t3, t3_tokens=int(tokens.shape[1]), s3gen_s=t_s3,
                   audio_s=wav.shape[-1] / 24000, tokens=tokens[0].tolist(), uniforms=sampler.uniforms)
        if torch_device == "cuda":
            out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out

    return run


def worker_mlx(ckpt_dir: str, case_name: str, n_tokens: int, uniforms, device: str, builtin_voice: bool,
               dtype: str, step_kind=None):
    import mlx.core as mx
    import numpy as np

    from mlx_impl import backend
    from mlx_impl.load import cast_in_place, set_half_precision
    from mlx_impl.t3.inference.sampling import ReplayDraw
    from mlx_impl.tts import ChatterboxTTS, SPEECH_VOCAB_SIZE
    from parity.cases import get_case

    backend.apply_mlx_defaults()
    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    case = get_case(case_name)
    tts = ChatterboxTTS.from_pretrained(ckpt_dir)
    if dtype in MLX_T3_ONLY_DTYPES:
        cast_in_place(tts.t3, getattr(mx, dtype.removesuffix("-t3")))
    elif dtype != "float32":
        set_half_precision(tts.t3, tts.s3gen, getattr(mx, dtype))
    if step_kind:
        tts.t3.compile_steps = step_kind
    p = case.params

    def run():
        t0 = time.perf_counter()
        if not builtin_voice:
            tts.prepare_conditionals(str(case.audio_path), exaggeration=p["exaggeration"])
            # everything conditioning computes, lest lazy work be timed as T3's or S3Gen's
            c = tts.conds.t3
            mx.eval([a for a in (c.speaker_emb, c.cond_prompt_speech_tokens, *tts.conds.gen.values())
                     if isinstance(a, mx.array)])
        t_cond = time.perf_counter() - t0
        text_tokens = tts.text_tokens(case.text)
        t0 = time.perf_counter()
        tokens = tts.t3.inference(t3_cond=tts.conds.t3, text_tokens=text_tokens, max_new_tokens=n_tokens,
                                  temperature=p["temperature"], cfg_weight=p["cfg_weight"],
                                  repetition_penalty=p["repetition_penalty"], min_p=p["min_p"], top_p=p["top_p"],
                                  draw=ReplayDraw(uniforms) if uniforms else None)
        t_t3 = time.perf_counter() - t0
        speech = tokens[0][tokens[0] < SPEECH_VOCAB_SIZE]
        t0 = time.perf_counter()
        wav, _ = tts.s3gen.inference(speech[None], ref_dict=tts.conds.gen)
        mx.eval(wav)
        t_s3 = time.perf_counter() - t0
        out = dict(cond_s=t_cond, t3_s=t_t3, t3_tokens=int(tokens.shape[1]), s3gen_s=t_s3,
                   audio_s=wav.shape[-1] / 24000, tokens=np.asarray(tokens[0]).tolist())
        if device == "gpu":
            out["gpu_peak_mb"] = mx.get_peak_memory() / 2**20
        return out

    return run


def worker_main(side: str, args):
    uniforms = json.loads(Path(args.uniforms).read_text()) if args.uniforms else None
    common = (str(args.checkpoint), args.case, args.tokens)
    if args.model == "turbo":
        from benchmarks.turbo_workers import worker_mlx_turbo, worker_original_turbo

        run = worker_mlx_turbo(*common, uniforms) if side == "mlx" else worker_original_turbo(*common)
    elif args.model == "mtl":
        from benchmarks.mtl_workers import worker_mlx_mtl, worker_original_mtl

        run = worker_mlx_mtl(*common, uniforms) if side == "mlx" else worker_original_mtl(*common)
    elif side.startswith("mlx"):
        run = worker_mlx(*common, uniforms, args.device, args.builtin_voice, args.worker_dtype, args.mlx_step)
    else:
        run = worker_original(*common, args.device, args.builtin_voice, expert=side.startswith("expert"),
                              expert_dtype=args.worker_dtype)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        out = run()
        out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["warmup"] = cmd == "warmup"
        print(json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- parent
# MLX dtypes of T3 alone (S3Gen float32), as the expert's half-precision workers run
MLX_T3_ONLY_DTYPES = ("bfloat16-t3",)


def side_of(kind: str, dtype: str, first: bool) -> str:
    """A worker's side name: "mlx" for the first MLX dtype, "expert" for a float32 expert, else
    the kind and the dtype ("mlx_bfloat16", "expert_bfloat16")."""
    plain = first if kind == "mlx" else dtype == "float32"
    return kind if plain else f"{kind}_{dtype}"


# libgomp's spin count with OMP_WAIT_POLICY unset (its documented default)
LIBGOMP_DEFAULT_SPINCOUNT = "300000"


def worker_env(side: str) -> dict:
    """A worker's environment. The original's and the expert's workers run OpenMP as a PyTorch user
    has it: the GOMP_SPINCOUNT that the set-up's sitecustomize sets (for MLX's process, whose
    stream thread shares the cores with Python's) goes back to libgomp's default for them; one the
    user set stays for every side."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    site = sys.modules.get("sitecustomize")
    if not side.startswith("mlx") and getattr(site, "SET_SPIN_COUNT", False):
        env["GOMP_SPINCOUNT"] = LIBGOMP_DEFAULT_SPINCOUNT
    return env


class Worker:
    def __init__(self, side, args, uniforms_path="", dtype="float32"):
        self.side, self.dtype = side, dtype
        self.env = worker_env(side)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", side, "--model", args.model, "--checkpoint", str(args.checkpoint),
             "--case", args.case,
             "--tokens", str(args.tokens), "--uniforms", uniforms_path, "--device", args.device,
             "--worker-dtype", dtype]
            + (["--mlx-step", args.mlx_step] if args.mlx_step else [])
            + (["--builtin-voice"] if args.builtin_voice else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env)
        self._read()

    def _read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.side} worker died")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, cmd="run"):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


SPEEDS = ("t3_tokens_per_s", "s3gen_s_per_audio_s", "pipeline_rtf")


def speeds(r: dict) -> dict:
    """One run's T3 tokens/s, S3Gen seconds per audio second and pipeline real-time factor."""
    return {"t3_tokens_per_s": r["t3_tokens"] / r["t3_s"], "s3gen_s_per_audio_s": r["s3gen_s"] / r["audio_s"],
            "pipeline_rtf": (r["cond_s"] + r["t3_s"] + r["s3gen_s"]) / r["audio_s"]}


def summarise(runs):
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    per_run = [speeds(r) for r in runs]
    return {**{k: statistics.median(m[k] for m in per_run) for k in SPEEDS},
            "t3_tokens_per_s_by_round": [round(m["t3_tokens_per_s"], 2) for m in per_run], "conditioning_s": med("cond_s"),
            "audio_s": med("audio_s"), "t3_tokens": runs[0]["t3_tokens"],
            "peak_rss_mb": max(r["max_rss_mb"] for r in runs), "runs": len(runs),
            **({"generate_s": med("total_s")} if "total_s" in runs[0] else {}),
            **({"gpu_peak_mb": max(r["gpu_peak_mb"] for r in runs)} if "gpu_peak_mb" in runs[0] else {})}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--model", choices=MODELS, default="chatterbox",
                    help="chatterbox (the English ChatterboxTTS), turbo (ChatterboxTurboTTS.generate) or mtl "
                         "(ChatterboxMultilingualTTS.generate)")
    ap.add_argument("--case", default=None, help="default: espeak_22k (chatterbox), turbo_espeak (turbo), mtl_de (mtl)")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "out")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--uniforms", default="")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    dtypes = ("float32", "bfloat16", "float16")
    ap.add_argument("--mlx-dtype", choices=dtypes + MLX_T3_ONLY_DTYPES, nargs="+", default=["float32"],
                    help="one MLX worker per dtype; the first is the side the ratios use (bfloat16-t3: T3 in "
                         "bfloat16, S3Gen float32, as the expert's bfloat16)")
    ap.add_argument("--expert-dtype", choices=dtypes, nargs="+", default=["float32"],
                    help="with --expert: one expert worker per dtype")
    ap.add_argument("--worker-dtype", choices=dtypes + MLX_T3_ONLY_DTYPES, default="float32", help=argparse.SUPPRESS)
    from mlx_impl.t3.inference.step_kinds import STEP_KINDS

    ap.add_argument("--mlx-step", choices=STEP_KINDS, default=None,
                    help="T3 one-token step of fast decode (mlx_impl/t3/inference/step_kinds.make_step); default: the model's")
    ap.add_argument("--expert", action="store_true", help="GPU: add the StaticCache + CUDA-graphs T3 baseline")
    ap.add_argument("--builtin-voice", action="store_true", help="conditioning from the checkpoint's conds.pt")
    ap.add_argument("--note", default="", help="a line kept in the record (e.g. what else ran on the machine)")
    args = ap.parse_args()
    check_model_options(ap, args)
    if args.worker:
        return worker_main(args.worker, args)
    if args.checkpoint is None:
        args.checkpoint = default_checkpoint(args.model)

    orig = Worker("original", args)
    warm = orig.run("warmup")  # its recorded draws make the MLX side decode the same tokens
    args.out.mkdir(parents=True, exist_ok=True)
    upath = args.out / f".bench_uniforms_{args.model}.json"
    upath.write_text(json.dumps(warm["uniforms"]))
    workers = [orig] + [Worker(side_of("mlx", d, i == 0), args, str(upath), d) for i, d in enumerate(args.mlx_dtype)]
    if args.expert:
        workers += [Worker(side_of("expert", d, False), args, dtype=d) for d in args.expert_dtype]
    for w in workers[1:]:
        w.run("warmup")
    runs = {w.side: [] for w in workers}
    for i in range(args.rounds):
        for w in workers if i % 2 == 0 else workers[::-1]:
            r = w.run()
            r.pop("uniforms", None)
            runs[w.side].append(r)
            print(f"round {i} {w.side}: T3 {r['t3_tokens'] / r['t3_s']:.2f} tok/s, "
                  f"S3Gen {r['s3gen_s'] / r['audio_s']:.3f} s/s, cond {r['cond_s']:.2f} s", file=sys.stderr)
    for w in workers:
        w.close()
    write_results(args, runs, {w.side: w.env.get("GOMP_SPINCOUNT", "unset") for w in workers})


MODELS = ("chatterbox", "turbo", "mtl")
DEFAULT_CASES = {"chatterbox": "espeak_22k", "turbo": "turbo_espeak", "mtl": "mtl_de"}
MODEL_TITLES = {"turbo": "Chatterbox Turbo", "mtl": "Chatterbox Multilingual"}


def check_model_options(ap, args) -> None:
    """The model's default case; the Turbo and multilingual sides have no GPU, half-precision, expert or
    built-in-voice variant."""
    args.case = args.case or DEFAULT_CASES[args.model]
    if args.model == "chatterbox":
        return
    unsupported = [opt for opt, used in (("--device gpu", args.device != "cpu"), ("--expert", args.expert),
                                         ("--builtin-voice", args.builtin_voice), ("--mlx-step", bool(args.mlx_step)),
                                         ("--mlx-dtype", args.mlx_dtype != ["float32"])) if used]
    if unsupported:
        ap.error(f"--model {args.model}: {', '.join(unsupported)} not supported (CPU, float32, the case's clip)")


def default_checkpoint(model: str) -> Path:
    if model == "turbo":
        from reference.synth_turbo_checkpoint import ensure_turbo_checkpoint

        return ensure_turbo_checkpoint()
    if model == "mtl":
        from reference.mtl_synth_checkpoint import ensure_mtl_checkpoint

        return ensure_mtl_checkpoint()
    from benchmarks.bench_checkpoint import default_bench_checkpoint

    return default_bench_checkpoint()


def device_name(args) -> str:
    import mlx.core as mx

    if args.device == "gpu":
        import torch

        return (f"GPU: {torch.cuda.get_device_name(0)} (torch {torch.__version__}, MLX {mx.__version__} CUDA "
                f"backend, MLX dtype {args.mlx_dtype[0]}, T3 step {args.mlx_step or 'default'})")
    from mlx_impl import backend

    return (f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; MLX {mx.__version__} "
            f"on {mx.default_device()}, BLAS {mlx_blas()}, S3Gen's products: {backend.wide_blas()}")


def mlx_blas() -> str:
    """What MLX's bundled BLAS links to (scripts/setup.sh): MKL, OpenBLAS (with its kernel type) or its own."""
    import importlib.util

    libs = Path(importlib.util.find_spec("mlx").submodule_search_locations[0]).parent / "mlx_cpu.libs"
    target = next((str(p.resolve()) for p in libs.glob("libblas-*.so.3.10.0")), "")
    if "mkl" in target:
        return "Intel oneMKL"
    if "openblas" in target:
        return f"OpenBLAS ({os.environ.get('OPENBLAS_CORETYPE', 'auto')} kernels)"
    return "MLX's bundled reference BLAS" if target else "system (not Linux)"


LABELS = (("t3_tokens_per_s", "T3 tokens/s (higher is better)"), ("s3gen_s_per_audio_s", "S3Gen s per audio s"),
          ("conditioning_s", "conditioning s"), ("pipeline_rtf", "pipeline real-time factor"),
          ("generate_s", "generate() s (the whole call)"),
          ("peak_rss_mb", "peak RSS MB"), ("gpu_peak_mb", "peak GPU memory MB"))


def first_difference(a, b):
    """Index of the first differing token of two sequences (None when equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def write_results(args, runs: dict, spin_counts: dict) -> None:
    same_tokens = runs["original"][0]["tokens"] == runs["mlx"][0]["tokens"]
    differ_at = first_difference(runs["original"][0]["tokens"], runs["mlx"][0]["tokens"])
    res = {k: summarise(v) for k, v in runs.items()}
    for side, side_runs in runs.items():  # every side's tokens against the original's (experts draw their own)
        res[side]["tokens_differ_from"] = first_difference(runs["original"][0]["tokens"], side_runs[0]["tokens"])
        res[side]["same_tokens_every_round"] = all(r["tokens"] == side_runs[0]["tokens"] for r in side_runs)
    ratio = {k: res["mlx"][k] / res["original"][k] for k in SPEEDS}
    per_round = round_ratios(runs["original"], runs["mlx"])
    record = {"device": device_name(args), "model": args.model, "checkpoint": str(args.checkpoint), "case": args.case,
              "t3_tokens": args.tokens, "rounds": args.rounds,
              "same_tokens": same_tokens, "tokens_differ_from": differ_at, "builtin_voice": args.builtin_voice,
              "dtypes": {w: d for w, d in side_dtypes(args).items() if w in res}, **res, "mlx_over_original": ratio,
              "mlx_over_original_by_round": per_round, "gomp_spincount": spin_counts,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if args.note:
        record["note"] = args.note
    name = f"bench_{args.device}" + (f"_{args.model}" if args.model in MODEL_TITLES else "")
    sides = list(res)
    title = MODEL_TITLES.get(args.model)
    what = f"T3 steps in {title}'s generate()" if title else "T3 steps with CFG"
    md = [f"## Benchmark{f' ({title})' if title else ''}: MLX vs the original (same weights, "
          "case and draws)", "", f"{record['device']}; case "
          f"{args.case}; {args.tokens} {what}; medians of {args.rounds} alternating runs after warm-up; "
          f"identical tokens: {same_tokens}" + ("; conditioning from conds.pt (not timed)" if args.builtin_voice
                                                else "") + (f"; {args.note}" if args.note else "")
          + spin_count_note(spin_counts), "",
          "| metric | " + " | ".join(side_name(s) for s in sides) + " | MLX / original |",
          "|---|" + "---|" * (len(sides) + 1)]
    for k, label in LABELS:
        if k not in res["original"]:
            continue
        vals = " | ".join(f"{res[s][k]:.3f}" for s in sides)
        md.append(f"| {label} | {vals} | {res['mlx'][k] / res['original'][k]:.2f} |")
    md += ["", "MLX / original round by round (each round runs both sides back to back; the spread is this "
           "machine's drift): " + "; ".join(f"{k} " + ", ".join(f"{v:.2f}" for v in vals)
                                              for k, vals in per_round.items())]
    write_text_atomic(args.out / f"{name}.json", json.dumps(record, indent=1) + "\n")
    write_text_atomic(args.out / f"{name}.md", "\n".join(md) + "\n")
    print(json.dumps(record, indent=1))


def spin_count_note(spin_counts: dict) -> str:
    """The workers' GOMP_SPINCOUNT for the record's header, where any side set one."""
    if all(v == "unset" for v in spin_counts.values()):
        return ""
    return "; GOMP_SPINCOUNT: " + ", ".join(f"{side_name(s)} {v}" for s, v in spin_counts.items())


def round_ratios(original: list, mlx: list) -> dict:
    """MLX / original per round (the sides of a round ran back to back), for each of SPEEDS."""
    pairs = [(speeds(o), speeds(m)) for o, m in zip(original, mlx)]
    return {k: [m[k] / o[k] for o, m in pairs] for k in SPEEDS}


SIDE_NAMES = {"original": "original (PyTorch)", "mlx": "MLX", "expert": "PyTorch expert (StaticCache + CUDA graphs)"}


def side_name(side: str) -> str:
    kind, _, dtype = side.partition("_")
    return SIDE_NAMES[kind] + (f", {dtype}" if dtype else "")


def side_dtypes(args) -> dict:
    sides = {"original": "float32"}
    sides.update({side_of("mlx", d, i == 0): d for i, d in enumerate(args.mlx_dtype)})
    sides.update({side_of("expert", d, False): d for d in args.expert_dtype})
    return sides


if __name__ == "__main__":
    main()
