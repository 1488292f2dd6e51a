"""Loads parity/checkpoints.toml: the one list of checkpoints, stages and tolerances."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

REGISTRY_FILE = Path(__file__).with_name("checkpoints.toml")
PRECISIONS = ("fp32", "fp16", "bf16", "q4")
DEFAULT_MODEL = "tts"  # the English ChatterboxTTS: the registry's `stages`; other models under [models.<name>]


@dataclass(frozen=True)
class Tolerance:
    snr_db: Optional[float] = None  # minimum SNR in dB (float checkpoints)
    cosine: Optional[float] = None  # minimum cosine similarity
    max_abs: Optional[float] = None  # maximum absolute error
    exact: Optional[float] = None  # minimum exact-match rate (int checkpoints)
    max_nonfinite_mismatch: int = 0  # entries allowed to be filtered (-inf) on one side only
    # token checkpoints: a differing token is a justified flip only where the reference's own sampling
    # margin at that step (fixture t3.sampling_margin, parity/flips.py) is <= flip_margin (logit units);
    # at most max_flips of them, none after an unjustified mismatch
    flip_margin: Optional[float] = None
    max_flips: int = 0
    regression_margin_db: Optional[float] = None  # the report's SNR regression margin, if not the default
    measured: Optional[str] = None
    reason: Optional[str] = None

    def describe(self) -> str:
        parts = []
        if self.snr_db is not None:
            parts.append(f"SNR>={self.snr_db:g}dB")
        if self.cosine is not None:
            parts.append(f"cos>={self.cosine}")
        if self.max_abs is not None:
            parts.append(f"maxabs<={self.max_abs:g}")
        if self.exact is not None:
            parts.append(f"exact>={self.exact:g}")
        if self.flip_margin is not None:
            parts.append(f"(flips<={self.max_flips} where the reference margin<={self.flip_margin:g})")
        if self.max_nonfinite_mismatch:
            parts.append(f"filter-boundary flips<={self.max_nonfinite_mismatch}")
        return " ".join(parts)


@dataclass(frozen=True)
class Checkpoint:
    name: str
    stage: str
    kind: str
    source: str
    layout: str
    random: bool = False
    implemented: bool = True  # False: no MLX implementation yet, an expected failure "not implemented"
    reference_only: bool = False  # the reference's own measurement used by a verdict: stored, never compared
    model: str = DEFAULT_MODEL  # the model whose cases export and compare it (the model of its stage)
    tolerances: Dict[str, Tolerance] = field(default_factory=dict, compare=False, hash=False)

    def tolerance(self, precision: str = "fp32") -> Tolerance:
        return self.tolerances[precision]

    @property
    def compared(self) -> bool:
        """Compared with MLX's output: not a recorded draw (a replay input), not a reference-only measurement."""
        return not self.random and not self.reference_only


@dataclass(frozen=True)
class Registry:
    stages: List[str]  # the English model's stages (tts)
    checkpoints: Dict[str, Checkpoint]
    cumulative: Dict[str, Dict[str, Tolerance]] = field(default_factory=dict)  # mode -> checkpoint -> tolerance
    defaults: Dict[str, Dict[str, Tolerance]] = field(default_factory=dict)  # precision -> kind -> tolerance
    models: Dict[str, List[str]] = field(default_factory=dict)  # model -> its stages, in order (tts first)

    def default(self, kind: str, precision: str = "fp32") -> Tolerance:
        """The tolerance a checkpoint of `kind` ("float" or "int") takes without an entry of its own:
        the goal unit tests hold MLX's modules to as well."""
        return self.defaults[precision][kind]

    def tolerance_of(self, label: str, precision: str = "fp32") -> Optional[Tolerance]:
        """The tolerance a result label names: "<mode>:<checkpoint>" (cumulative) or a checkpoint."""
        mode, _, name = label.rpartition(":")
        if mode:
            return self.cumulative.get(mode, {}).get(name)
        cp = self.checkpoints.get(name)
        return cp.tolerances.get(precision) if cp else None

    def by_stage(self, stage: str) -> List[Checkpoint]:
        return [c for c in self.checkpoints.values() if c.stage == stage]

    def ordered(self) -> List[Checkpoint]:
        """Every checkpoint, by stage: the English model's stages, then each other model's."""
        order = {s: i for i, s in enumerate(s for stages in self.models.values() for s in stages)}
        return sorted(self.checkpoints.values(), key=lambda c: order[c.stage])

    def of_model(self, model: str = DEFAULT_MODEL) -> List[Checkpoint]:
        """The checkpoints of one model (its cases' fixtures hold them), by stage."""
        return [c for c in self.ordered() if c.model == model]

    def mode_model(self, mode: str) -> str:
        """The model a cumulative mode runs (the model of its checkpoints)."""
        return self.checkpoints[next(iter(self.cumulative[mode]))].model

    def __getitem__(self, name: str) -> Checkpoint:
        return self.checkpoints[name]


def _tolerance(d: dict) -> Tolerance:
    return Tolerance(**{k: d[k] for k in d})


@lru_cache(maxsize=None)
def load(path: Path = REGISTRY_FILE) -> Registry:
    data = tomllib.loads(Path(path).read_text())
    stages = list(data["stages"])
    models = {DEFAULT_MODEL: stages, **{m: list(d["stages"]) for m, d in data.get("models", {}).items()}}
    model_of = {s: m for m, ss in models.items() for s in ss}
    if len(model_of) != sum(len(ss) for ss in models.values()):
        raise ValueError(f"{path}: a stage is listed under two models")
    overrides = data.get("tolerances", {})
    checkpoints = {}
    for name, c in data["checkpoints"].items():
        if c["stage"] not in model_of:
            raise ValueError(f"{path}: checkpoint '{name}' has unknown stage '{c['stage']}'")
        if c["kind"] not in ("float", "int"):
            raise ValueError(f"{path}: checkpoint '{name}' has unknown kind '{c['kind']}'")
        tols = {}
        for prec in PRECISIONS:
            base = dict(data["defaults"][prec][c["kind"]])
            over = overrides.get(prec, {}).get(name)
            if over is not None:
                base = dict(over)
                if "reason" not in over or "measured" not in over:
                    raise ValueError(f"{path}: tolerance override {prec}.'{name}' needs 'measured' and 'reason'")
            tols[prec] = _tolerance(base)
        checkpoints[name] = Checkpoint(
            name=name, stage=c["stage"], kind=c["kind"], source=c["source"], layout=c["layout"],
            random=bool(c.get("random", False)), implemented=bool(c.get("implemented", True)),
            reference_only=bool(c.get("reference_only", False)), model=model_of[c["stage"]], tolerances=tols,
        )
    for prec, entries in overrides.items():
        for name in entries:
            if name not in checkpoints:
                raise ValueError(f"{path}: tolerance for unknown checkpoint '{name}' in [{prec}]")
    cumulative = {}
    for mode, entries in data.get("cumulative", {}).items():
        for name in entries:
            if name not in checkpoints:
                raise ValueError(f"{path}: cumulative tolerance for unknown checkpoint '{name}' in [{mode}]")
        for name, t in entries.items():
            if t.get("snr_db", 100.0) < 100.0 and not ("measured" in t and "reason" in t):
                raise ValueError(f"{path}: cumulative.{mode}.'{name}' is looser than 100 dB: give 'measured' and 'reason'")
        if len({checkpoints[name].model for name in entries}) > 1:
            raise ValueError(f"{path}: cumulative mode '{mode}' mixes the checkpoints of several models")
        cumulative[mode] = {name: _tolerance(t) for name, t in entries.items()}
    defaults = {prec: {kind: _tolerance(t) for kind, t in data["defaults"][prec].items()} for prec in PRECISIONS}
    return Registry(stages=stages, checkpoints=checkpoints, cumulative=cumulative, defaults=defaults, models=models)
