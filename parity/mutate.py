"""`chatterbox-parity mutate`: how many real porting bugs the parity checks catch.

Each mutation of the catalogue (parity/mutations.py) is patched into the MLX implementation at run
time and undone after. Under it the parity checks of the stages it touches run as the parity tests
run them (parity/session.py, the registry's tolerances): isolated mode for those stages, then, when
those miss it (or always, with --cumulative always), cumulative mode (e2e, or s3gen for a flow / HiFT
mutation) on one case. A mutation is caught when a
check that passes without it fails with it, or, inside every tolerance, when the report's regression
rule (parity/regressions.py, on which `make parity` fails) sees the move against the unmutated run. The first failing checkpoint is named in pipeline order
(the registry's; isolated before cumulative), with its measured value and tolerance, and `bisect`
(parity/bisect.py) runs where the mutation's stage has an entry. A mutation that no check catches is
measured against the unmutated MLX outputs: when none moved beyond float32 rounding, on its case and
(isolated mode) on every other, it is listed as numerically invisible, apart from the misses.

Writes reports/out/mutations.{json,md} (after each mutation, then complete with bisect's findings);
a run of the whole catalogue also writes the record reports/mutations.json. Exit status 1 when a visible mutation was missed.
"""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import ROOT, registry
from .errors import ParityError
from .fixtures import write_text_atomic
from .metrics import compare
from .mutations import CATALOGUE, Mutation, by_name

OUT_DIR = ROOT / "reports" / "out"
RECORD = ROOT / "reports" / "mutations.json"
S3GEN_STAGES = {"flow", "hift"}
ROUNDING_SNR_DB = 130.0  # an output this close to the unmutated MLX output moved by float32 rounding only
TURBO_KINDS = {"turbo_t3": lambda tts: tts.t3, "turbo_flow": lambda tts: tts.s3gen.flow,
               "turbo_hift": lambda tts: tts.s3gen.mel2wav}


# ============================================================================ model instances
class MutationContext:
    """The loaded MLX model instances a patch of weights or attributes must reach: the isolated stage
    runners' (parity/stages/) and, when cumulative mode runs, the pipeline's (a copy of S3Gen and
    the VoiceEncoder; T3 is shared)."""

    def __init__(self, ckpt, with_pipeline: bool, turbo_ckpt=None):
        self.ckpt = ckpt
        self.with_pipeline = with_pipeline
        self.turbo_ckpt = turbo_ckpt

    def pipeline(self):
        from .stages.cumulative import _pipeline

        return _pipeline(self.ckpt)

    def models(self, kind: str) -> list:
        from .stages import embed_ref_speaker, flow, hift, s3tok, t3_cond, ve

        if kind in TURBO_KINDS:  # Turbo's stage runners and its cumulative mode share one pipeline
            from .stages.turbo_common import pipeline

            if self.turbo_ckpt is None:
                raise KeyError(f"model kind '{kind}': no Turbo checkpoint in this context")
            return [TURBO_KINDS[kind](pipeline(self.turbo_ckpt))]
        isolated = {
            "ve": lambda: ve.load_ve_model(self.ckpt), "s3tok": lambda: s3tok.load_tokenizer(self.ckpt),
            "campplus": lambda: embed_ref_speaker.load_campplus_model(self.ckpt),
            "flow": lambda: flow.load_flow(self.ckpt), "hift": lambda: hift.model(self.ckpt),
            "t3": lambda: t3_cond.load_t3_model(self.ckpt),
        }
        if kind not in isolated:
            raise KeyError(f"unknown model kind '{kind}' (one of: {', '.join(isolated)})")
        out = [isolated[kind]()]
        if self.with_pipeline:
            tts = self.pipeline()
            shared = {"ve": tts.ve, "s3tok": tts.s3gen.tokenizer, "campplus": tts.s3gen.speaker_encoder,
                      "flow": tts.s3gen.flow, "hift": tts.s3gen.mel2wav, "t3": tts.t3}[kind]
            if all(shared is not m for m in out):
                out.append(shared)
        return out


# ============================================================================ one mutation
@dataclass
class Check:
    label: str  # "<checkpoint>" (isolated) or "<mode>:<checkpoint>"
    status: str
    measured: str
    tolerance: str
    message: str = ""
    metrics: dict = field(default_factory=dict)  # the tracked metrics (snr_db, cosine, exact) of parity/regressions.py


def regression(label: str, base: Check, mutated: Check) -> Optional[str]:
    """How `mutated` regressed from `base` (both passing) by the report's history rule, which
    `make parity` fails on (parity/regressions.py against_history: bit-exactness lost, an SNR below
    130 dB and below by more than the checkpoint's regression margin, 3 dB by default, a cosine down by
    more than 1e-6, a token agreement down); None if it did not."""
    from .regressions import FLOAT32_NOISE_DB, TRACKED, _capped

    if base.status != "passed" or mutated.status != "passed":
        return None
    tol = registry.load().tolerance_of(label)
    margin = tol.regression_margin_db if tol is not None and tol.regression_margin_db is not None else TRACKED["snr_db"]
    b, m = base.metrics, mutated.metrics
    if b.get("snr_db") is not None and m.get("snr_db") is not None:
        if math.isinf(b["snr_db"]) and not math.isinf(m["snr_db"]):
            return f"SNR {m['snr_db']:.1f} dB, bit-identical unmutated (the report's bit-exactness rule)"
        if m["snr_db"] < FLOAT32_NOISE_DB and _capped(b["snr_db"]) - m["snr_db"] > margin:
            return f"SNR {m['snr_db']:.1f} dB, unmutated {b['snr_db']:.1f} dB (report's regression margin {margin:g} dB)"
    if b.get("cosine") is not None and m.get("cosine") is not None and b["cosine"] - m["cosine"] > TRACKED["cosine"]:
        return f"cos {m['cosine']:.9f}, unmutated {b['cosine']:.9f}"
    if b.get("exact") is not None and m.get("exact") is not None and m["exact"] < b["exact"]:
        return f"exact {m['exact']:.4f}, unmutated {b['exact']:.4f}"
    return None


@dataclass
class Outcome:
    name: str
    source: str
    case: str
    stages: List[str]
    caught: bool
    caught_by: str  # "tolerance" (a registry tolerance fails), "regression" (the report's regression rule), ""
    invisible: Optional[str]  # why it is numerically invisible (a miss that moves no output), else None
    first_failing_checkpoint: Optional[str]
    measured: Optional[str]
    tolerance: Optional[str]
    bisect: str
    failing: List[str] = field(default_factory=list)  # every caught check, in pipeline order
    moved: str = ""  # how far the mutation moved MLX's own outputs (for misses)
    error: str = ""
    seconds: float = 0.0


def planned_checks(m: Mutation) -> List[tuple]:
    """(mode or None, checkpoint) in pipeline order: the isolated checks of the mutation's stages,
    then cumulative mode (s3gen for flow / HiFT mutations, e2e otherwise)."""
    reg = registry.load()
    isolated = [(None, cp.name) for cp in reg.ordered() if cp.stage in m.stages and cp.compared]
    model = mutation_model(m)
    mode = model if model != "tts" else "s3gen" if set(m.stages) <= S3GEN_STAGES else "e2e"
    return isolated + [(mode, name) for name in reg.cumulative[mode]]


def mutation_model(m: Mutation) -> str:
    """The model whose case the mutation runs on ("tts", "turbo"; cumulative mode: e2e/s3gen, turbo)."""
    from .session import all_cases, case_model

    return case_model(all_cases()[m.case])


def pipeline_position(label: str) -> tuple:
    mode, _, name = label.rpartition(":")
    names = [c.name for c in registry.load().ordered()]
    return (names.index(name) if name in names else len(names), 1 if mode else 0)


def _label(mode: Optional[str], name: str) -> str:
    return f"{mode}:{name}" if mode else name


def measured_text(res) -> str:
    kind = registry.load()[res.checkpoint.rpartition(":")[2]].kind
    if res.metrics is None:
        return f"{res.status}: {res.message.splitlines()[0][:160] if res.message else ''}"
    m = res.metrics
    if m.length_mismatch:
        return f"shape {list(m.shape_out)} != reference {list(m.shape_ref)}"
    if kind == "int":
        return f"exact {m.exact:.4f}" + (f" (first mismatch at {m.first_mismatch})" if m.first_mismatch is not None else "")
    snr = "inf" if m.snr_db == math.inf else f"{m.snr_db:.1f}"
    extra = f", {m.nonfinite_mismatch} non-finite entries differ" if m.nonfinite_mismatch else ""
    return f"SNR {snr} dB, cos {m.cosine:.6f}{extra}"


def run_checks(session, case: str, checks: Sequence[tuple]) -> Dict[str, Check]:
    out = {}
    for mode, name in checks:
        res = session.run_cumulative(case, mode, name) if mode else session.run_checkpoint(case, name)
        tracked = {k: getattr(res.metrics, k) for k in ("snr_db", "cosine", "exact")
                   if res.metrics is not None and getattr(res.metrics, k) is not None}
        out[_label(mode, name)] = Check(res.checkpoint, res.status, measured_text(res), res.tolerance, res.message,
                                        tracked)
    return out


def output_movement(base: dict, mutated: dict) -> tuple:
    """(moved beyond float32 rounding?, description): the mutated MLX outputs against the unmutated ones."""
    worst, n, moved = math.inf, 0, False
    for key, outs in mutated.items():
        ref = base.get(key)
        if isinstance(outs, Exception) or isinstance(ref, Exception) or ref is None:
            return True, f"{key[1]}: the run {'failed' if isinstance(outs, Exception) else 'differs'}"
        for name, a in outs.items():
            if not isinstance(a, np.ndarray) or name not in ref:
                continue
            n += 1
            b = np.asarray(ref[name])
            if a.shape != b.shape:
                return True, f"{name}: shape {list(a.shape)} != {list(b.shape)} unmutated"
            if np.issubdtype(a.dtype, np.integer):
                moved = moved or not np.array_equal(a, b)
                continue
            snr = compare(b, a).snr_db
            worst = min(worst, snr)
            moved = moved or snr < ROUNDING_SNR_DB
    text = "bit-identical" if worst == math.inf and not moved else f"lowest SNR {worst:.1f} dB"
    return moved, f"{n} outputs against the unmutated MLX run: {text}"


# ============================================================================ the runner
class Runner:
    def __init__(self, ckpt, fx_root: Path, *, do_bisect: bool = True, log=None):
        from .session import ParitySession

        log = log or (lambda msg: print(msg, flush=True))
        self.ckpt, self.log, self.do_bisect = ckpt, log, do_bisect
        quiet = lambda msg: log(f"  [parity] {msg}")
        self.base = ParitySession(ckpt=ckpt, fx_root=fx_root, log=quiet)
        self.mutated = ParitySession(ckpt=ckpt, fx_root=fx_root, log=quiet)
        self.mutated.fixtures = self.base.fixtures  # one copy of the fixtures
        self._originals = {}

    def original(self, model: str = "tts"):
        """The original model bisect runs beside MLX (ChatterboxTTS, or Turbo's for a turbo_* stage), one held."""
        if model not in self._originals:
            from .bisect import load_original_model

            self._originals.clear()
            self._originals[model] = (self.base._original() if model == "tts"
                                      else load_original_model(model, self.base.ckpt_for(model)))
        return self._originals[model]

    def run(self, m: Mutation, case: Optional[str] = None, cumulative: str = "if-missed",
            every_case: bool = True) -> Outcome:
        """cumulative: "always", "if-missed" (only when the isolated checks did not catch it: the
        first failing checkpoint lies in the mutation's own stages, which isolated mode checks first)
        or "never". every_case: an invisible mutation is measured on every case (isolated mode)."""
        from .session import all_cases, case_model

        t0 = time.time()
        case = case or m.case
        isolated = [c for c in planned_checks(m) if c[0] is None]
        chained = [c for c in planned_checks(m) if c[0] is not None] if cumulative != "never" else []
        # the English cumulative pipeline holds copies of the models; Turbo's stages and its cumulative mode share one
        english_chain = bool(chained) and case_model(all_cases()[case]) == "tts"
        ctx = MutationContext(self.ckpt, with_pipeline=english_chain, turbo_ckpt=self.base.ckpt_for("turbo"))
        if english_chain:
            ctx.pipeline()  # loaded before the patch, so that a weight patch reaches it
        self.mutated.outputs.clear()
        self.mutated.results.clear()
        base = run_checks(self.base, case, isolated)
        with m.patch(ctx):
            mutated = run_checks(self.mutated, case, isolated)
        caught = any(c.status != "passed" and base[k].status == "passed" or regression(k, base[k], c)
                     for k, c in mutated.items())
        if chained and (cumulative == "always" or not caught):
            base.update(run_checks(self.base, case, chained))
            with m.patch(ctx):
                mutated.update(run_checks(self.mutated, case, chained))
        finding = f"n/a: {m.bisect_na}" if m.bisect is None else "not run"
        out = self._outcome(m, case, base, mutated, finding)
        if not out.caught:
            keys = {k for k in self.mutated.outputs if k[0] == case}
            moved, out.moved = output_movement({k: self.base.outputs.get(k) for k in keys},
                                               {k: self.mutated.outputs[k] for k in keys})
            if not moved:
                out.invisible = f"no output moves beyond float32 rounding ({out.moved}, case {case})"
        self.mutated.outputs.clear()
        if out.invisible and every_case:
            out = self._on_every_case(m, out)
        out.seconds = round(time.time() - t0, 1)
        return out

    def _on_every_case(self, m: Mutation, out: Outcome) -> Outcome:
        """An invisible mutation must move no output on any case: its isolated checks on the others.
        Caught on another case, that case's outcome is the mutation's."""
        from .session import all_cases, case_model

        cases = all_cases()
        for other in [n for n, c in cases.items() if case_model(c) == case_model(cases[out.case])]:
            if other == out.case:
                continue
            o = self.run(m, case=other, cumulative="never", every_case=False)
            if o.caught:
                return o
            if not o.invisible:
                out.invisible, out.moved = None, f"{out.moved}; case {other}: {o.moved}"
                return out
        out.invisible = out.invisible.replace(f", case {out.case})", ", and likewise on every case)")
        return out

    def bisect_all(self, pairs: List[tuple]) -> None:
        """Bisect every (mutation, outcome) whose stage has a bisect entry, under its patch again. Runs
        after the parity checks, with MLX's T3 and the cumulative pipeline released first: the
        original model that bisect runs beside MLX takes ~5 GB (t3_cond, which needs MLX's T3
        again, goes last)."""
        todo = sorted([(m, o) for m, o in pairs if m.bisect], key=lambda p: p[0].bisect == "t3_cond")
        if not todo:
            return
        if not self.do_bisect:
            for _, o in todo:
                o.bisect = "not run (--no-bisect)"
            return
        release_t3_and_pipeline()
        ctx = MutationContext(self.ckpt, with_pipeline=False, turbo_ckpt=self.base.ckpt_for("turbo"))
        for m, o in todo:
            t0 = time.time()
            try:
                with m.patch(ctx):
                    o.bisect = self._bisect(m, o.case)
            except Exception as e:  # a patch that does not apply to the isolated models alone
                o.bisect = f"error: {e!r}"[:300]
            o.seconds = round(o.seconds + time.time() - t0, 1)
            self.log(f"  bisect {m.name}: {o.bisect}")

    def _bisect(self, m: Mutation, case: str) -> str:
        from .bisect import STAGES, bisect

        model = STAGES[m.bisect].model
        try:
            ckpt = self.base.ckpt_for(model)
            f = bisect(m.bisect, self.base.fixture(case), ckpt=ckpt, tts=self.original(model),
                       max_len=m.bisect_max_len)
        except Exception as e:  # reported in the record, the catalogue goes on
            return f"error: {e!r}"[:300]
        if f.kind == "none":
            return f"{m.bisect}: no divergence"
        if f.kind == "module":
            return f"{m.bisect}: module `{f.module}`"
        return f"{m.bisect}: between `{f.previous or 'the stage input'}` and `{f.module or 'the stage output'}`"

    @staticmethod
    def _outcome(m: Mutation, case: str, base: Dict[str, Check], mutated: Dict[str, Check], finding: str) -> Outcome:
        failing = sorted((label for label, c in mutated.items()
                          if c.status != "passed" and base[label].status == "passed"), key=pipeline_position)
        caught_by, measured = "tolerance", {label: mutated[label].measured for label in failing}
        if not failing:  # inside every tolerance: does the report's regression rule (make parity) see it?
            measured = {label: r for label, c in mutated.items() if (r := regression(label, base[label], c))}
            failing, caught_by = sorted(measured, key=pipeline_position), "regression"
        first = mutated[failing[0]] if failing else None
        errors = [f"{label}: {c.message.splitlines()[0]}" for label, c in mutated.items() if c.status == "error"]
        return Outcome(name=m.name, source=m.source, case=case, stages=list(m.stages), caught=bool(failing),
                       caught_by=caught_by if failing else "", invisible=None,
                       first_failing_checkpoint=failing[0] if failing else None,
                       measured=measured[failing[0]] if failing else None,
                       tolerance=(first.tolerance if caught_by == "tolerance" else "report regression rule")
                       if first else None, bisect=finding, failing=failing, error="; ".join(errors)[:500])


def release_t3_and_pipeline() -> None:
    import gc

    import mlx.core as mx

    from .stages import cumulative, t3_cond, turbo_common

    cumulative._PIPELINES.clear()
    turbo_common._MODELS.clear()
    t3_cond._load_t3.cache_clear()
    gc.collect()
    mx.clear_cache()


# ============================================================================ output
def score(outcomes: List[Outcome]) -> dict:
    visible = [o for o in outcomes if o.invisible is None]
    return {"caught": sum(o.caught for o in outcomes), "total": len(outcomes),
            "caught_by_regression_rule": sum(o.caught_by == "regression" for o in outcomes),
            "invisible": len(outcomes) - len(visible), "visible": len(visible),
            "missed": [o.name for o in visible if not o.caught]}


def record(outcomes: List[Outcome], seconds: float, argv: dict) -> dict:
    from .summary import git_commit

    return {"meta": {"time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "git_commit": git_commit(),
                     "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
                     "seconds": round(seconds, 1), "selection": argv},
            "score": score(outcomes), "mutations": [asdict(o) for o in outcomes]}


def markdown(rec: dict) -> str:
    s = rec["score"]
    lines = ["# Mutation score", "",
             f"{s['caught']} of {s['total']} mutations caught ({s['caught_by_regression_rule']} of them only by the "
             f"report's regression rule, inside every tolerance; {s['visible']} visible, {s['invisible']} numerically "
             f"invisible); missed: {', '.join(s['missed']) or 'none'}. Run time {rec['meta']['seconds'] / 60:.1f} min "
             f"(commit `{rec['meta']['git_commit'][:12]}`, `chatterbox-parity mutate`).", "",
             "| mutation | case | caught | first failing checkpoint | measured | tolerance | bisect |",
             "|---|---|---|---|---|---|---|"]
    for o in rec["mutations"]:
        caught = ({"regression": "yes (regression rule)"}.get(o["caught_by"], "yes") if o["caught"]
                  else ("invisible" if o["invisible"] else "**MISSED**"))
        lines.append(f"| {o['name']} | {o['case']} | {caught} | {o['first_failing_checkpoint'] or '-'} | "
                     f"{o['measured'] or o['moved'] or '-'} | {o['tolerance'] or '-'} | {o['bisect']} |")
    invisible = [o for o in rec["mutations"] if o["invisible"]]
    if invisible:
        lines += ["", "Numerically invisible (listed apart; not a miss):", ""]
        lines += [f"- {o['name']}: {o['invisible']}" for o in invisible]
    return "\n".join(lines) + "\n"


def signature_rows(rec: dict) -> List[str]:
    """For porters (the fixture pack's README): per mutation, the checkpoint that fails first and how."""
    rows = ["| symptom: first failing checkpoint | how (measured / tolerance) | also fails | likely cause |",
            "|---|---|---|---|"]
    for o in sorted(rec["mutations"], key=lambda o: pipeline_position(o["first_failing_checkpoint"] or "~")):
        if not o["caught"]:
            continue
        others = [f for f in o["failing"][1:4]]
        more = f" (+{len(o['failing']) - 4})" if len(o["failing"]) > 4 else ""
        rows.append(f"| `{o['first_failing_checkpoint']}` | {o['measured']} / {o['tolerance']} | "
                    f"{', '.join(f'`{f}`' for f in others) + more or '-'} | {o['source']} (`{o['name']}`) |")
    return rows


def write_outputs(rec: dict, out_dir: Path, full: bool) -> List[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(rec, indent=1, default=str) + "\n"
    paths = [out_dir / "mutations.json", out_dir / "mutations.md"]
    write_text_atomic(paths[0], text)
    write_text_atomic(paths[1], markdown(rec))
    if full:
        write_text_atomic(RECORD, text)
        paths.append(RECORD)
    return paths


def merged_into_record(rec: dict) -> dict:
    """The committed record with this run's mutations replaced (a mutation fixed or added since the
    whole catalogue ran); the score is recomputed, and the meta says which entries are newer."""
    if not RECORD.is_file():
        raise ParityError(f"--update-record: no record {RECORD} yet: run the whole catalogue first")
    old = json.loads(RECORD.read_text())
    fresh = {o["name"]: o for o in rec["mutations"]}
    order = [m.name for m in CATALOGUE]
    entries = {o["name"]: o for o in old["mutations"] if o["name"] in order}
    entries.update(fresh)
    merged = dict(old)
    merged["mutations"] = [entries[n] for n in order if n in entries]
    merged["score"] = score([Outcome(**o) for o in merged["mutations"]])
    merged["meta"] = {**old["meta"], "seconds": round(sum(o["seconds"] for o in merged["mutations"]), 1),
                      "seconds_are": "the sum of the mutations' own times (entries from several runs)",
                      "updated": old["meta"].get("updated", []) + [
        {"time": rec["meta"]["time"], "git_commit": rec["meta"]["git_commit"], "mutations": sorted(fresh),
         "seconds": rec["meta"]["seconds"]}]}
    return merged


def load_record() -> Optional[dict]:
    """The latest mutation run: reports/out/mutations.json, else the committed reports/mutations.json."""
    for path in (OUT_DIR / "mutations.json", RECORD):
        if path.is_file():
            return json.loads(path.read_text())
    return None


# ============================================================================ CLI
def select(only: Optional[List[str]]) -> List[Mutation]:
    if not only:
        return list(CATALOGUE)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    known = by_name()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ParityError(f"--only: unknown mutation '{unknown[0]}' (`chatterbox-parity mutate --list` lists them)")
    return [known[n] for n in names]


def cmd_mutate(args):
    from .session import all_cases
    from .fixtures import default_fixture_root
    from .synthetic import resolve_checkpoint

    if args.list:
        for m in CATALOGUE:
            print(f"{m.name}\t{','.join(m.stages)}\t{m.case}\t{m.source}")
        return
    chosen = select(args.only)
    if args.case is not None and args.case not in all_cases():
        raise ParityError(f"--case: unknown case '{args.case}' (one of: {', '.join(all_cases())})")
    ckpt = resolve_checkpoint(args.checkpoint)
    runner = Runner(ckpt, Path(args.fixtures or default_fixture_root()), do_bisect=not args.no_bisect)
    t0, outcomes = time.time(), []
    for i, m in enumerate(chosen, 1):
        try:
            o = runner.run(m, case=args.case, cumulative=args.cumulative)
        except Exception as e:  # a patch that does not apply: recorded, the catalogue goes on
            o = Outcome(m.name, m.source, args.case or m.case, list(m.stages), False, "", None, None, None, None,
                        "not run", error=f"the patch failed: {e!r}"[:500])
        outcomes.append(o)
        verdict = "caught" if o.caught else ("invisible" if o.invisible else "MISSED")
        print(f"[{i}/{len(chosen)}] {m.name}: {verdict} {o.first_failing_checkpoint or ''} "
              f"{o.measured or o.moved} ({o.seconds:.0f} s)", flush=True)
        partial = record(outcomes, time.time() - t0, {"only": args.only, "case": args.case, "partial": True})
        write_outputs(partial, Path(args.out or OUT_DIR), full=False)  # what is done so far, if the run stops
    runner.bisect_all(list(zip(chosen, outcomes)))
    full = not args.only and args.case is None and args.out is None
    rec = record(outcomes, time.time() - t0, {"only": args.only, "case": args.case, "cumulative": args.cumulative})
    if args.update_record:
        rec = merged_into_record(rec)
        full = True
    for p in write_outputs(rec, Path(args.out or OUT_DIR), full):
        print(f"wrote {p}")
    s = rec["score"]
    print(f"mutation score: {s['caught']}/{s['total']} caught, {s['invisible']} invisible, "
          f"missed: {', '.join(s['missed']) or 'none'} ({rec['meta']['seconds'] / 60:.1f} min)")
    if s["missed"]:
        raise SystemExit(1)


def register(sub):
    p = sub.add_parser("mutate", help="run the mutation catalogue: which real porting bugs the parity checks catch")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only these mutations (repeat it, or NAME,NAME); see --list")
    p.add_argument("--case", default=None, help="run every selected mutation on this case instead of its own")
    p.add_argument("--list", action="store_true", help="print the catalogue, one mutation a line, and exit")
    p.add_argument("--no-bisect", action="store_true", help="skip bisect (it loads the original model)")
    p.add_argument("--update-record", action="store_true",
                   help="replace these mutations' entries in reports/mutations.json (after fixing or adding one)")
    p.add_argument("--cumulative", choices=("if-missed", "always", "never"), default="if-missed",
                   help="cumulative mode: only for a mutation the isolated checks miss (default), always, never")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint folder (hub layout); default: $CHATTERBOX_CKPT or the synthetic one")
    p.add_argument("--fixtures", type=Path, default=None, help="fixture root (default: fixtures/)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default reports/out; the whole catalogue there also writes reports/mutations.json)")
    p.set_defaults(fn=cmd_mutate)
