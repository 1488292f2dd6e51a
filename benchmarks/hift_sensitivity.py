"""Sensitivity of the ORIGINAL HiFT vocoder (chatterbox-tts 0.1.7, PyTorch) to tiny mel perturbations.

Runs S3Token2Wav's vocoder step (hift_inference, then the 40 ms trim-fade, as S3Token2Wav.inference
does) on a fixture's `flow.output_mel`, with SineGen's random draws replayed from the fixture
(`hift.sine_phase` for the Uniform phase, `hift.sine_noise` turned back into the standard-normal
draw), first unperturbed (wav0, checked against `hift.wav`), then on the mel plus a perturbation:

  gauss@S   mel + N(0, 1) * rms(mel) * 10**(-S/20)        (relative Gaussian, mel SNR = S dB)
  ulp       each element moved by one float32 ulp up or down with probability 1/2 (rounding-like)

Each perturbation is applied three ways ("path"): to the whole vocoder ("both"), only to the F0
predictor's input ("f0_only": decode gets the reference mel) and only to decode's input
("decode_only": the F0 predictor gets the reference mel). Reported against the unperturbed run:
SNR of wav, of the source signal s, of F0; the largest drift of the fundamental's cumulative phase
2*pi*cumsum(f0)/sr; and the wav SNR per second of audio (time dependence).

  .venv/bin/python benchmarks/hift_sensitivity.py --case espeak_22k --case long_16k \
      [--snr 140 130 122 115 110] [--seeds 5] [--ckpt checkpoints/synthetic-s0] [--out FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parity.fixtures import Fixture, fixture_dir  # noqa: E402
from parity.metrics import snr_db  # noqa: E402
from reference.recording import forward_hook, patched, wrap_method  # noqa: E402

SR = 24000


def load_original_s3gen(ckpt: Path):
    """The original S3Gen with the checkpoint's weights, loaded as ChatterboxTTS.from_local does."""
    import torch
    from chatterbox.models.s3gen import S3Gen
    from safetensors.torch import load_file

    torch.set_grad_enabled(False)
    s3 = S3Gen()
    s3.load_state_dict(load_file(str(ckpt / "s3gen.safetensors")), strict=False)
    return s3.eval()


class Vocoder:
    """The original vocoder on a mel, with SineGen's draws replayed; records f0, source, uv."""

    def __init__(self, s3, fx: Fixture):
        import torch

        self.s3, self.hift = s3, s3.mel2wav
        self.ref_mel = torch.from_numpy(fx.tensor("flow.output_mel"))
        self.phase = torch.from_numpy(fx.tensor("hift.sine_phase"))
        noise = torch.from_numpy(fx.tensor("hift.sine_noise"))
        # SineGen draws noise = noise_amp * randn_like(sine_waves); noise_amp (from uv) is read off a
        # run whose randn_like returns ones, so that the standard-normal draw can be replayed.
        self.z = torch.ones_like(noise)
        self.z = noise / torch.from_numpy(self.run(self.ref_mel)["sine_noise"].astype(np.float32))

    def run(self, mel, f0_mel=None, decode_mel=None) -> dict:
        import torch
        import chatterbox.models.s3gen.hifigan as hifigan_mod

        phase, z, out = self.phase.to(mel.dtype), self.z.to(mel.dtype), {}
        real_randn_like = torch.randn_like

        class ReplayUniform:
            def __init__(self, low, high):
                pass

            def sample(self, sample_shape):
                return phase.clone()  # SineGen zeroes harmonic 0 in place: recorded already zeroed

        def randn_like(x, *a, **k):  # SineGen's draw replayed; SourceModuleHnNSF's unused noise branch real
            return z.clone() if x.shape == z.shape else real_randn_like(x, *a, **k)

        def f0_pre(module, args):  # F0 predictor input (only when it differs from `mel`)
            return (f0_mel,) if f0_mel is not None else None

        def decode(x, s, _orig=self.hift.decode):
            return _orig(x=decode_mel if decode_mel is not None else x, s=s)

        def keep(name, fn):
            return lambda m, i, o: out.__setitem__(name, fn(o).detach().clone())

        with contextlib.ExitStack() as st:
            st.enter_context(patched(hifigan_mod, "Uniform", ReplayUniform))
            st.enter_context(patched(torch, "randn_like", randn_like))
            st.enter_context(patched(self.hift, "decode", decode))
            h = self.hift.f0_predictor.register_forward_pre_hook(f0_pre)
            st.callback(h.remove)
            st.enter_context(forward_hook(self.hift.f0_predictor, keep("f0", lambda o: o)))
            st.enter_context(forward_hook(self.hift.m_source.l_sin_gen, keep("uv", lambda o: o[1])))
            st.enter_context(forward_hook(self.hift.m_source.l_sin_gen, keep("sine_noise", lambda o: o[2])))
            wav, source = self.s3.hift_inference(mel, None)
            wav = wav.clone()
            wav[:, :len(self.s3.trim_fade)] *= self.s3.trim_fade  # as S3Token2Wav.inference
        out.update(wav=wav, source=source)
        return {k: v.numpy().astype(np.float64) for k, v in out.items()}


@contextlib.contextmanager
def float64(s3, all_tensors: bool):
    """The vocoder's weights in float64; with all_tensors also torch's default dtype (SineGen builds
    its F_mat, hence the phase cumsum, with torch.zeros in the default dtype)."""
    import torch

    old = torch.get_default_dtype()
    s3.mel2wav.double()  # float32 -> float64 -> float32 is exact
    if all_tensors:
        torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
        s3.mel2wav.float()


def compare_runs(base: dict, o: dict, ups: int) -> dict:
    return {"wav": snr_db(base["wav"], o["wav"]), "source": snr_db(base["source"], o["source"]),
            "f0": snr_db(base["f0"], o["f0"]), "drift": phase_drift(base["f0"], o["f0"], ups),
            "uv_flips": int(np.sum(base["uv"] != o["uv"])), "per_s": per_second(base["wav"], o["wav"])}


def perturb(mel: np.ndarray, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind.startswith("gauss@"):
        snr = float(kind.split("@")[1])
        sigma = math.sqrt(float(np.mean(mel.astype(np.float64) ** 2))) * 10 ** (-snr / 20)
        return (mel + sigma * rng.standard_normal(mel.shape)).astype(np.float32)
    if kind == "ulp":
        toward = np.where(rng.random(mel.shape) < 0.5, np.inf, -np.inf).astype(np.float32)
        moved = np.nextafter(mel, toward)
        return np.where(rng.random(mel.shape) < 0.5, moved, mel).astype(np.float32)
    raise ValueError(kind)


def db(x: float):
    return "inf" if x == math.inf else round(x, 2)


def per_second(ref: np.ndarray, out: np.ndarray) -> list:
    r, o = ref.reshape(-1), out.reshape(-1)
    return [snr_db(r[i:i + SR], o[i:i + SR]) for i in range(0, len(r) - SR // 2, SR)]


def phase_drift(f0_ref, f0, upsample: int) -> float:
    """Largest |2*pi*cumsum(delta f0)/sr| of the fundamental over the utterance, radians."""
    d = np.repeat((f0 - f0_ref).reshape(-1), upsample)
    return float(np.max(np.abs(2 * np.pi * np.cumsum(d) / SR)))


def summary(values) -> dict:
    v = list(values)
    return {"min": db(min(v)), "median": db(statistics.median(v)), "max": db(max(v))}


def measure_case(s3, case: str, kinds: list, seeds: int, paths: list, log) -> dict:
    import torch

    fx = Fixture.open(fixture_dir(None, case))
    voc = Vocoder(s3, fx)
    mel = fx.tensor("flow.output_mel")
    ups = int(voc.hift.f0_upsamp.scale_factor)
    base = voc.run(voc.ref_mel)
    again = voc.run(voc.ref_mel)
    res = {
        "mel_shape": list(mel.shape), "seconds_of_audio": base["wav"].size / SR,
        "wav0_vs_fixture_hift_wav_snr_db": db(snr_db(fx.tensor("hift.wav"), base["wav"])),
        "source0_vs_fixture_hift_source_snr_db": db(snr_db(fx.tensor("hift.source"), base["source"])),
        "f0_0_vs_fixture_hift_f0_snr_db": db(snr_db(fx.tensor("hift.f0"), base["f0"])),
        "repeat_run_wav_snr_db": db(snr_db(base["wav"], again["wav"])),
        "voiced_fraction": float(base["uv"].mean()),
        "f0_hz_range": [float(base["f0"].min()), float(base["f0"].max())],
        "perturbations": {},
    }
    # the original's own float32 rounding: the same vocoder in float64 (SineGen's cumsum stays float32
    # unless the default dtype is float64 too), against the float32 run
    for name, all_tensors in (("hift_weights_f64", False), ("hift_all_f64", True)):
        with float64(s3, all_tensors):
            o = voc.run(voc.ref_mel.double())
        c = compare_runs(base, o, ups)
        res[f"fp32_vs_{name}"] = {k: (db(v) if k not in ("drift", "uv_flips", "per_s") else v)
                                  for k, v in c.items() if k != "per_s"}
        res[f"fp32_vs_{name}"]["wav_snr_per_second"] = [db(x) for x in c["per_s"]]
        log(f"[{case}] fp32 vs {name}: {res[f'fp32_vs_{name}']}")
    for kind in kinds:
        for path in paths:
            rows = []
            for seed in range(seeds):
                pm = torch.from_numpy(perturb(mel, kind, seed))
                if path == "both":
                    o = voc.run(pm)
                elif path == "f0_only":
                    o = voc.run(voc.ref_mel, f0_mel=pm)
                else:
                    o = voc.run(voc.ref_mel, decode_mel=pm)
                rows.append({"mel": snr_db(mel, pm.numpy()), **compare_runs(base, o, ups)})
            n_sec = len(rows[0]["per_s"])
            entry = {k: summary([r[k] for r in rows]) for k in ("mel", "wav", "source", "f0")}
            entry["f0_phase_drift_rad"] = {"median": float(statistics.median(r["drift"] for r in rows)),
                                           "max": float(max(r["drift"] for r in rows))}
            entry["uv_flips_max"] = max(r["uv_flips"] for r in rows)
            entry["wav_snr_per_second_median"] = [db(statistics.median(r["per_s"][i] for r in rows))
                                                  for i in range(n_sec)]
            entry["wav_snr_first_vs_last_second"] = {
                "first": summary([r["per_s"][0] for r in rows]), "last": summary([r["per_s"][-1] for r in rows])}
            res["perturbations"].setdefault(kind, {})[path] = entry
            log(f"[{case}] {kind:10s} {path:11s} mel {entry['mel']['median']} dB -> wav "
                f"{entry['wav']['min']}/{entry['wav']['median']}/{entry['wav']['max']} dB, "
                f"source {entry['source']['median']}, f0 {entry['f0']['median']}, "
                f"per-second {entry['wav_snr_per_second_median']}")
    return res


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", action="append", help="fixture case (repeatable; default espeak_22k and long_16k)")
    ap.add_argument("--ckpt", default="checkpoints/synthetic-s0")
    ap.add_argument("--snr", type=float, nargs="+", default=[140, 130, 122, 115, 110], help="mel SNRs, dB")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-ulp", action="store_true", help="skip the 1-ulp rounding perturbation")
    ap.add_argument("--paths", nargs="+", default=["both", "f0_only", "decode_only"],
                    choices=["both", "f0_only", "decode_only"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    s3 = load_original_s3gen(ROOT / args.ckpt)
    kinds = (["ulp"] if not args.no_ulp else []) + [f"gauss@{s:g}" for s in args.snr]
    log = lambda m: print(m, file=sys.stderr, flush=True)
    result = {
        "about": "original chatterbox HiFT (PyTorch, fp32, CPU) on fixture flow.output_mel + perturbation, "
                 "SineGen draws replayed; SNRs in dB against the unperturbed run; min/median/max over seeds",
        "ckpt": args.ckpt, "seeds": args.seeds, "torch": torch.__version__, "threads": args.threads,
        "cases": {c: measure_case(s3, c, kinds, args.seeds, args.paths, log)
                  for c in (args.case or ["espeak_22k", "long_16k"])},
    }
    result["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        write_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
