"""Parity cases (fixtures/cases.toml): reference audio + text + generation parameters + seed; and the
voice-conversion cases (source clip + target voice + seed)."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from . import ROOT
from .checkpoint_dir import sha256_file
from .errors import ParityError

CASES_FILE = ROOT / "fixtures" / "cases.toml"
PARAM_KEYS = ("exaggeration", "cfg_weight", "temperature", "min_p", "top_p", "repetition_penalty",
              "max_new_tokens", "n_cfm_timesteps")


@dataclass(frozen=True)
class Case:
    name: str
    audio: str  # path relative to the repository root (or absolute)
    text: str
    seed: int
    params: Dict[str, float]
    about: str = ""

    @property
    def audio_path(self) -> Path:
        p = Path(self.audio)
        return p if p.is_absolute() else ROOT / p

    def as_manifest(self) -> dict:
        return {
            "name": self.name, "about": self.about, "text": self.text, "seed": self.seed,
            "audio": self.audio, "audio_sha256": sha256_file(self.audio_path), "params": dict(self.params),
        }


def load_cases(path: Path = CASES_FILE) -> Dict[str, Case]:
    data = tomllib.loads(Path(path).read_text())
    defaults = data.get("defaults", {})
    cases = {}
    for name, c in data["cases"].items():
        params = {k: c.get(k, defaults.get(k)) for k in PARAM_KEYS}
        missing = [k for k, v in params.items() if v is None]
        if missing:
            raise ParityError(f"{path}: case '{name}' lacks {missing}")
        cases[name] = Case(name=name, audio=c["audio"], text=c["text"], seed=int(c["seed"]),
                           params=params, about=c.get("about", ""))
    return cases


def get_case(name: str) -> Case:
    cases = load_cases()
    if name not in cases:
        raise ParityError(f"unknown case '{name}' (known: {', '.join(cases)})")
    return cases[name]


# ----------------------------------------------------------------------------- voice conversion
VC_PARAM_KEYS = ("n_cfm_timesteps",)


@dataclass(frozen=True)
class VCCase:
    """A ChatterboxVC case: `source` converted to the voice of `target_voice`."""
    name: str
    source: str  # paths relative to the repository root (or absolute)
    target_voice: str
    seed: int
    params: Dict[str, float]
    about: str = ""
    model = "vc"

    @property
    def source_path(self) -> Path:
        return _repo_path(self.source)

    @property
    def target_path(self) -> Path:
        return _repo_path(self.target_voice)

    def as_manifest(self) -> dict:
        return {
            "name": self.name, "about": self.about, "seed": self.seed,
            "source": self.source, "source_sha256": sha256_file(self.source_path),
            "target_voice": self.target_voice, "target_voice_sha256": sha256_file(self.target_path),
            "params": dict(self.params),
        }


def _repo_path(p: str) -> Path:
    p = Path(p)
    return p if p.is_absolute() else ROOT / p


def load_vc_cases(path: Path = CASES_FILE) -> Dict[str, VCCase]:
    data = tomllib.loads(Path(path).read_text())
    defaults = data.get("vc_defaults", {})
    cases = {}
    for name, c in data.get("vc_cases", {}).items():
        params = {k: c.get(k, defaults.get(k)) for k in VC_PARAM_KEYS}
        missing = [k for k in ("source", "target_voice", "seed") if k not in c] + [k for k, v in params.items() if v is None]
        if missing:
            raise ParityError(f"{path}: VC case '{name}' lacks {missing}")
        cases[name] = VCCase(name=name, source=c["source"], target_voice=c["target_voice"], seed=int(c["seed"]),
                             params=params, about=c.get("about", ""))
    return cases


# ----------------------------------------------------------------------------- Chatterbox Turbo
# ChatterboxTurboTTS.generate's arguments, then max_gen_len: inference_turbo's bound, which the export
# lowers to the case's step count (generate() leaves it at 1000)
TURBO_PARAM_KEYS = ("temperature", "top_k", "top_p", "repetition_penalty", "min_p", "exaggeration", "cfg_weight",
                    "norm_loudness", "max_gen_len")


@dataclass(frozen=True)
class TurboCase(Case):
    """A ChatterboxTurboTTS case: `text` spoken in the voice of `audio` (generate(text, audio_prompt_path=audio))."""
    model = "turbo"


def load_turbo_cases(path: Path = CASES_FILE) -> Dict[str, TurboCase]:
    data = tomllib.loads(Path(path).read_text())
    defaults = data.get("turbo_defaults", {})
    cases = {}
    for name, c in data.get("turbo_cases", {}).items():
        params = {k: c.get(k, defaults.get(k)) for k in TURBO_PARAM_KEYS}
        missing = [k for k in ("audio", "text", "seed") if k not in c] + [k for k, v in params.items() if v is None]
        if missing:
            raise ParityError(f"{path}: Turbo case '{name}' lacks {missing}")
        cases[name] = TurboCase(name=name, audio=c["audio"], text=c["text"], seed=int(c["seed"]), params=params,
                                about=c.get("about", ""))
    return cases


# ----------------------------------------------------------------------------- Chatterbox Multilingual
# ChatterboxMultilingualTTS.generate's arguments, then max_new_tokens: T3.inference's bound, which the export
# lowers to the case's step count (generate() passes 1000)
MTL_PARAM_KEYS = ("exaggeration", "cfg_weight", "temperature", "repetition_penalty", "min_p", "top_p", "max_new_tokens")


@dataclass(frozen=True)
class MtlCase(Case):
    """A ChatterboxMultilingualTTS case: `text` in language `language` spoken in the voice of `audio`
    (generate(text, language, audio_prompt_path=audio)). The language is checked against the original's
    SUPPORTED_LANGUAGES where the original runs (reference/export_mtl.py), not here (no torch in this layer)."""
    language: str = ""
    model = "mtl"

    def as_manifest(self) -> dict:
        return {**super().as_manifest(), "language": self.language}


def load_mtl_cases(path: Path = CASES_FILE) -> Dict[str, MtlCase]:
    data = tomllib.loads(Path(path).read_text())
    defaults = data.get("mtl_defaults", {})
    cases = {}
    for name, c in data.get("mtl_cases", {}).items():
        params = {k: c.get(k, defaults.get(k)) for k in MTL_PARAM_KEYS}
        missing = [k for k in ("audio", "text", "language", "seed") if k not in c] + [k for k, v in params.items() if v is None]
        if missing:
            raise ParityError(f"{path}: multilingual case '{name}' lacks {missing}")
        cases[name] = MtlCase(name=name, audio=c["audio"], text=c["text"], seed=int(c["seed"]), params=params,
                              about=c.get("about", ""), language=str(c["language"]))
    return cases
