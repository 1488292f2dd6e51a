"""What a parity run needs: the checkpoint, up-to-date fixtures (exported if missing or stale),
and the MLX runners' outputs, cached per (case, runner)."""
from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from . import flips, registry
from .cases import Case, load_cases, load_mtl_cases, load_turbo_cases, load_vc_cases
from .checkpoint_dir import CheckpointDir
from .errors import ParityError
from .fixtures import Fixture, default_fixture_root, fixture_dir
from .metrics import Metrics, check, compare

NOT_IMPLEMENTED = "not implemented"


def reference_available() -> bool:
    try:
        import chatterbox.tts  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def export_version(model: str = "tts") -> Optional[str]:
    try:
        if model == "vc":
            from reference.export_vc import VC_EXPORT_VERSION as EXPORT_VERSION
        elif model == "turbo":
            from reference.export_turbo import TURBO_EXPORT_VERSION as EXPORT_VERSION
        elif model == "mtl":
            from reference.export_mtl import MTL_EXPORT_VERSION as EXPORT_VERSION
        else:
            from reference.export import EXPORT_VERSION
    except ImportError:
        return None
    return EXPORT_VERSION


# the manifest fields of a case that make its fixture stale when they change, per model
CASE_KEYS = {"tts": ("text", "seed", "audio_sha256", "params"),
             "vc": ("seed", "source_sha256", "target_voice_sha256", "params"),
             "turbo": ("text", "seed", "audio_sha256", "params"),
             "mtl": ("text", "language", "seed", "audio_sha256", "params")}


def case_model(case) -> str:
    """The model a case runs: a VCCase says "vc", a TurboCase "turbo", an MtlCase "mtl", an English Case has no `model`."""
    return getattr(case, "model", "tts")


def all_cases() -> dict:
    """Every case of fixtures/cases.toml: the English model's, then the VC ones, Chatterbox Turbo's, the multilingual ones."""
    return {**load_cases(), **load_vc_cases(), **load_turbo_cases(), **load_mtl_cases()}


def staleness(fx_root: Path, case: Case, ckpt: CheckpointDir) -> Optional[str]:
    """Why the case's fixture must be (re)generated, or None when it is current."""
    mpath = fixture_dir(fx_root, case.name) / "manifest.json"
    if not mpath.is_file():
        return "missing"
    m = json.loads(mpath.read_text())
    if m.get("checkpoint", {}).get("identity") != ckpt.identity():
        return "made with another checkpoint"
    model = case_model(case)
    ver = export_version(model)
    if ver is not None and m.get("export_version") != ver:
        return f"export version {m.get('export_version')} != {ver}"
    missing = [c.name for c in registry.load().of_model(model) if c.name not in m.get("tensors", {})]
    if missing:
        return f"lacks {len(missing)} registered checkpoints ({missing[0]}, ...)"
    want = case.as_manifest()
    for key in CASE_KEYS[model]:
        if m["case"].get(key) != want[key]:
            return f"case {key} changed"
    return None


def implementation_verdict(cp, runner) -> Optional[tuple]:
    """(status, message) when `cp` is not to be compared, else None. Only the registry declares a
    checkpoint unimplemented (`implemented = false`): a declared one without a runner is the expected
    failure "not implemented"; a declared one that a runner provides, or an undeclared one without a
    runner, fails (the registry and parity/stages/ disagree)."""
    if not cp.implemented:
        if runner is None:
            return NOT_IMPLEMENTED, f"'{cp.name}' is declared implemented = false in the registry"
        return "failed", (f"'{cp.name}' is declared implemented = false but {runner.__name__} provides it: "
                          "remove the declaration from parity/checkpoints.toml")
    if runner is None:
        return "failed", (f"no MLX runner provides '{cp.name}' (parity/stages/); declare it implemented = false "
                          "in parity/checkpoints.toml if that is intended")
    return None


@dataclass
class Result:
    case: str
    checkpoint: str
    status: str  # passed | failed | not implemented | error
    metrics: Optional[Metrics] = None
    tolerance: str = ""
    message: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "metrics"}
        d["metrics"] = self.metrics.as_dict() if self.metrics else None
        return d


@dataclass
class ParitySession:
    ckpt: CheckpointDir
    fx_root: Path
    precision: str = "fp32"
    fixtures: Dict[str, Fixture] = field(default_factory=dict)
    outputs: Dict[tuple, object] = field(default_factory=dict)
    results: Dict[tuple, Result] = field(default_factory=dict)
    _exported: set = field(default_factory=set)  # the models whose stale fixtures were exported
    log: callable = print

    @classmethod
    def create(cls, ckpt_path=None, fx_root=None, **kw) -> "ParitySession":
        from .synthetic import resolve_checkpoint

        ckpt = resolve_checkpoint(ckpt_path, create_synthetic=reference_available())
        return cls(ckpt=ckpt, fx_root=Path(fx_root or default_fixture_root()), **kw)

    def fixture(self, case_name: str) -> Fixture:
        """The case's fixture; on first use of a model's case every missing or stale case of that model
        is exported at once and the original model is then released (it takes ~7 GB beside the MLX
        models). A run that asks for no Turbo case exports none."""
        if case_name not in self.fixtures:
            case = all_cases().get(case_name)
            model = case_model(case) if case is not None else None  # not a case of cases.toml: opened as it is
            if model is not None and model not in self._exported:
                self._export_stale(model)
                self._exported.add(model)
            self.fixtures[case_name] = Fixture.open(fixture_dir(self.fx_root, case_name))
        return self.fixtures[case_name]

    def ckpt_for(self, model: str = "tts"):
        """The checkpoint a model's cases run on: the session's own, or for Chatterbox Turbo its own folder
        ($CHATTERBOX_TURBO_CKPT, else the synthetic one; parity/turbo_checkpoint.py), for the multilingual
        model its own ($CHATTERBOX_MTL_CKPT, else the synthetic one; parity/mtl_checkpoint.py)."""
        if model == "mtl":
            if self._mtl_ckpt is None:
                from .mtl_checkpoint import resolve_mtl_checkpoint

                self._mtl_ckpt = resolve_mtl_checkpoint(create_synthetic=reference_available())
            return self._mtl_ckpt
        if model != "turbo":
            return self.ckpt
        if self._turbo_ckpt is None:
            from .turbo_checkpoint import resolve_turbo_checkpoint

            self._turbo_ckpt = resolve_turbo_checkpoint(create_synthetic=reference_available())
        return self._turbo_ckpt

    def _export_stale(self, model: Optional[str] = None) -> None:
        """Export the missing or stale fixtures of `model`'s cases (None: every model's)."""
        import gc

        stale = {}
        for name, case in all_cases().items():
            if model is not None and case_model(case) != model:
                continue
            why = staleness(self.fx_root, case, self.ckpt_for(case_model(case)))
            if why is not None and not reference_available():
                if why != "missing" and export_version(case_model(case)) is None:
                    continue  # MLX-only machine: use fixtures made elsewhere as they are
                raise ParityError(
                    f"fixture {fixture_dir(self.fx_root, name)} is {why} and the reference stack "
                    "(torch + chatterbox-tts) is not installed here: export it where it is "
                    "(chatterbox-parity export) and copy the folder")
            if why is not None:
                stale[name] = (case, why)
        if not stale:
            return
        from reference.export import export_case
        from reference.export_mtl import export_mtl_case, load_original_mtl
        from reference.export_turbo import export_turbo_case, load_original_turbo
        from reference.export_vc import export_vc_case, load_original_vc

        turbo = mtl = None
        for name, (case, why) in stale.items():
            self.log(f"exporting reference fixture '{name}' ({why})")
            if case_model(case) == "vc":
                self._tts = None  # one original model at a time (memory)
                self._vc = self._vc or load_original_vc(self.ckpt)
                export_vc_case(self.ckpt, case, out_root=self.fx_root, vc=self._vc, log=self.log)
            elif case_model(case) == "turbo":
                self._tts = self._vc = None
                turbo = turbo or load_original_turbo(self.ckpt_for("turbo"))
                export_turbo_case(self.ckpt_for("turbo"), case, out_root=self.fx_root, tts=turbo, log=self.log)
            elif case_model(case) == "mtl":
                self._tts = self._vc = turbo = None
                mtl = mtl or load_original_mtl(self.ckpt_for("mtl"))
                export_mtl_case(self.ckpt_for("mtl"), case, out_root=self.fx_root, tts=mtl, log=self.log)
            else:
                export_case(self.ckpt, case, out_root=self.fx_root, tts=self._original(), log=self.log)
        self._tts = self._vc = turbo = mtl = None
        gc.collect()

    _turbo_ckpt = None

    _mtl_ckpt = None

    _vc = None

    _tts = None

    def _original(self):
        if self._tts is None:
            from reference.export import load_original

            self._tts = load_original(self.ckpt)
        return self._tts

    def run_cumulative(self, case_name: str, mode: str, name: str) -> Result:
        """MLX chained end to end (parity/stages/cumulative.py) against the reference."""
        from .stages import cumulative

        tol = registry.load().cumulative[mode][name]
        if not registry.load()[name].implemented:
            res = Result(case_name, f"{mode}:{name}", NOT_IMPLEMENTED, tolerance=tol.describe(),
                         message=f"'{name}' is declared implemented = false in the registry")
            self.results[(case_name, res.checkpoint)] = res
            return res
        return self._evaluate(case_name, name, tol, label=f"{mode}:{name}", key=f"cumulative.{mode}",
                              run=lambda fx: cumulative.run(fx, self.ckpt_for(registry.load().mode_model(mode)), mode),
                              missing=f"not computed: an upstream stage diverged ({mode})")

    def run_checkpoint(self, case_name: str, name: str) -> Result:
        """One checkpoint in isolated mode, from the runner in parity/stages/ that provides it."""
        from .stages import providers

        cp = registry.load()[name]
        tol = cp.tolerance(self.precision)
        runner = providers().get(name)
        verdict = implementation_verdict(cp, runner)
        if verdict is not None:
            status, message = verdict
            res = Result(case_name, name, status, tolerance=tol.describe(), message=message)
            self.results[(case_name, name)] = res
            return res
        return self._evaluate(case_name, name, tol, label=name, key=runner.__name__,
                              run=lambda fx: runner.run(fx, self.ckpt_for(cp.model)),
                              missing=f"{runner.__name__}.run did not return '{name}'")

    def _evaluate(self, case_name: str, name: str, tol, *, label: str, key: str, run, missing: str) -> Result:
        """Run (once per case and key, cached) and compare `name` with the reference."""
        cp = registry.load()[name]
        fx = self.fixture(case_name)
        t0 = time.time()
        if (case_name, key) not in self.outputs:
            try:
                self.outputs[(case_name, key)] = run(fx)
            except Exception as e:  # NotImplementedError too: the registry says this stage is implemented  # reported on every checkpoint of the run
                self.outputs[(case_name, key)] = RuntimeError(f"{key} failed: {e!r}\n{traceback.format_exc()}")
        out = self.outputs[(case_name, key)]
        if isinstance(out, Exception):
            res = Result(case_name, label, "error", tolerance=tol.describe(), message=str(out))
        elif name not in out:
            res = Result(case_name, label, "failed", tolerance=tol.describe(), message=missing)
        else:
            m = compare(fx.tensor(name), out[name], cp.kind)
            fails = check(m, tol, cp.kind)
            note = out.get(flips.NOTES, {}).get(name, "")
            if fails and name in flips.TOKEN_RUNS:  # a differing token: a justified flip? (parity/flips.py)
                fails, note = flips.session_verdict(fx, out, name, m, tol, fails)
            res = Result(case_name, label, "failed" if fails else "passed", metrics=m, tolerance=tol.describe(),
                         message="; ".join(fails) or note)
        res.seconds = time.time() - t0
        self.results[(case_name, label)] = res
        return res
