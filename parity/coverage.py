"""`chatterbox-parity coverage`: the seed checklist's items -> MLX implementation (file:symbol)
-> parity checkpoints covering it.

parity/seed_checklist.json holds the checklist's 188 table rows. parity/coverage.toml maps each
row (by index) to `impl = "path.py:Symbol[.member]"` (checked here: the file must define it) and
`checkpoints` (registry names), or to a `reason` when no MLX symbol stands for it. Rows not in the
file are resolved automatically from the item's own name (the first `name` in backticks), looked
up in the files of the section (SECTION_FILES), and covered by the section's stages.

The models beyond the checklist (issue 20: ChatterboxVC, ChatterboxTurboTTS) have their rows in the
same file, `[[module]]`: the original's symbol (checked in the installed chatterbox package), the MLX
symbol (checked), and the registry stages / checkpoints and tests (checked to exist) that cover it
(`module_rows`).
"""
from __future__ import annotations

import ast
import json
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

from . import ROOT, registry

CHECKLIST = Path(__file__).with_name("seed_checklist.json")
MAPPING = Path(__file__).with_name("coverage.toml")

# section prefix -> (MLX files to search, stages whose checkpoints cover it)
SECTION_FILES = {
    "1.1": (["mlx_impl/tts.py", "mlx_impl/load.py", "mlx_impl/audio.py"], ["text", "audio", "ve", "s3tok", "t3_decode", "hift"]),
    "2.1": (["mlx_impl/t3/t3.py"], ["t3_cond", "t3_decode", "t3_greedy"]),
    "2.2": (["mlx_impl/t3/modules/cond_enc.py"], ["t3_cond"]),
    "2.3": (["mlx_impl/t3/modules/perceiver.py"], ["t3_cond"]),
    "2.4": (["mlx_impl/t3/modules/learned_pos_emb.py"], ["t3_cond", "t3_decode"]),
    "3.1": (["mlx_impl/s3gen/s3gen.py", "mlx_impl/audio.py"], ["embed_ref", "flow", "hift"]),
    "3.2": (["mlx_impl/s3gen/flow.py"], ["flow"]),
    "3.3": (["mlx_impl/s3gen/flow_matching.py", "mlx_impl/s3gen/configs.py", "mlx_impl/s3gen/matcha/flow_matching.py"], ["flow"]),
    "3.4": (["mlx_impl/s3gen/hifigan.py", "mlx_impl/ops.py"], ["hift"]),
    "3.5": (["mlx_impl/s3gen/decoder.py"], ["flow"]),
    "3.6": (["mlx_impl/s3gen/transformer/upsample_encoder.py"], ["flow"]),
    "3.7": ([f"mlx_impl/s3gen/transformer/{f}.py" for f in ("attention", "encoder_layer", "embedding", "activation",
                                                              "convolution", "positionwise_feed_forward", "subsampling")], ["flow"]),
    "3.8": (["mlx_impl/s3gen/f0_predictor.py"], ["hift"]),
    "3.9": (["mlx_impl/s3gen/xvector.py"], ["embed_ref"]),
    "3.10": (["mlx_impl/s3gen/utils/mel.py"], ["embed_ref"]),
    "3.11": (["mlx_impl/s3gen/matcha/decoder.py", "mlx_impl/s3gen/matcha/flow_matching.py",
              "mlx_impl/s3gen/matcha/transformer.py", "mlx_impl/s3gen/decoder.py"], ["flow"]),
    "4.1": (["mlx_impl/voice_encoder/voice_encoder.py", "mlx_impl/convert/voice_encoder.py"], ["ve"]),
    "4.2": (["mlx_impl/voice_encoder/melspec.py", "mlx_impl/s3gen/xvector.py"], ["ve"]),
    "5.1": (["mlx_impl/s3tokenizer/__init__.py", "mlx_impl/s3tokenizer/model_v2.py", "mlx_impl/s3tokenizer/model.py"], ["s3tok"]),
    "5.2": (["mlx_impl/s3tokenizer/model_v2.py", "mlx_impl/s3tokenizer/utils.py"], ["s3tok", "embed_ref"]),
    "5.3": (["mlx_impl/s3tokenizer/model_v2.py"], ["s3tok"]),
    "5.4": (["mlx_impl/s3tokenizer/model_v2.py"], ["s3tok"]),
    "5.5": (["mlx_impl/s3tokenizer/model_v2.py"], ["s3tok"]),
    "5.6": (["mlx_impl/s3tokenizer/model_v2.py"], ["s3tok"]),
    "5.7": (["mlx_impl/s3tokenizer/model.py"], []),
    "5.8": (["mlx_impl/s3tokenizer/utils.py", "mlx_impl/s3tokenizer/model_v2.py", "mlx_impl/s3tokenizer/__init__.py"], ["s3tok"]),
    "5.9": (["mlx_impl/s3tokenizer/s3tokenizer.py"], ["s3tok"]),
    "6.1": (["mlx_impl/tokenizers/tokenizer.py"], ["text"]),
    "7.1": (["mlx_impl/t3/modules/t3_config.py", "mlx_impl/t3/llama_configs.py"], ["t3_cond"]),
    "7.2": (["mlx_impl/tts.py"], ["audio"]),
}


def load_items() -> List[dict]:
    return json.loads(CHECKLIST.read_text())["items"]


@lru_cache(maxsize=None)
def _symbols(path: str) -> Dict[str, set]:
    """Top-level names of a file -> member names (methods, self.attrs, class attributes)."""
    tree = ast.parse((ROOT / path).read_text())
    out: Dict[str, set] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            members = set()
            if isinstance(node, ast.ClassDef):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.FunctionDef,)):
                        members.add(sub.name)
                    elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                        members.add(sub.attr)
                    elif isinstance(sub, (ast.AnnAssign,)) and isinstance(sub.target, ast.Name):
                        members.add(sub.target.id)
                    elif isinstance(sub, ast.Assign):
                        members.update(t.id for t in sub.targets if isinstance(t, ast.Name))
            out[node.name] = members
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = set()
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                out.setdefault(a.asname or a.name, set())
    return out


def impl_exists(impl: str) -> bool:
    path, _, sym = impl.partition(":")
    if not (ROOT / path).is_file():
        return False
    if not sym:
        return True
    top, _, member = sym.partition(".")
    syms = _symbols(path)
    if top not in syms:
        return False
    return not member or member in syms[top]


def _item_names(item: str) -> List[str]:
    return [n.rstrip("()").strip() for n in re.findall(r"`([^`]+)`", item)]


def auto_impl(section: str, item: str) -> Optional[str]:
    files, _ = SECTION_FILES.get(section.split(" ")[0], ([], []))
    for name in _item_names(item):
        for f in files:
            if not (ROOT / f).is_file():
                continue
            syms = _symbols(f)
            if name in syms:
                return f"{f}:{name}"
            for top, members in syms.items():
                if name in members:
                    return f"{f}:{top}.{name}"
    return None


def rows() -> List[dict]:
    mapping = tomllib.loads(MAPPING.read_text()).get("item", {}) if MAPPING.is_file() else {}
    reg = registry.load()
    out = []
    for i, it in enumerate(load_items()):
        sec = it["section"].split(" ")[0]
        m = mapping.get(str(i), {})
        impl = m.get("impl") or auto_impl(it["section"], it["item"])
        stages = SECTION_FILES.get(sec, ([], []))[1]
        cps = m.get("checkpoints")
        if cps is None:
            cps = [c.name for c in reg.ordered() if c.stage in stages and c.compared]
        ok = impl is not None and impl_exists(impl)
        out.append({"index": i, "section": it["section"], "item": it["item"], "impl": impl if ok else None,
                    "impl_wanted": impl, "checkpoints": cps, "reason": m.get("reason"),
                    "status": "implemented" if ok else ("reason" if m.get("reason") else "missing")})
    return out


@lru_cache(maxsize=None)
def original_root() -> Path:
    """The installed original package's folder (chatterbox-tts==0.1.7)."""
    import importlib.util

    return Path(importlib.util.find_spec("chatterbox").origin).parent


def symbol_in(path: Path, sym: str) -> bool:
    """`sym` ("Top" or "Top.member") defined in the Python file `path`."""
    if not path.is_file():
        return False
    syms = _symbols(str(path))
    top, _, member = sym.partition(".")
    return top in syms and (not member or member in syms[top])


def has_test(ref: str) -> bool:
    """`ref` = "tests/file.py::test_function", a function defined at the top of that file."""
    path, _, name = ref.partition("::")
    return bool(name) and symbol_in(ROOT / path, name)


def module_rows() -> List[dict]:
    """The [[module]] rows of coverage.toml (the VC, Turbo and multilingual modules), each checked: its original
    symbol, its MLX symbol, its checkpoints (by stage or name: the registry's compared ones) and its
    tests. status: "covered", or "missing" with what is missing."""
    modules = tomllib.loads(MAPPING.read_text()).get("module", []) if MAPPING.is_file() else []
    reg = registry.load()
    out = []
    for m in modules:
        cps = [c.name for c in reg.ordered() if c.stage in m.get("stages", []) and c.compared]
        cps += [n for n in m.get("checkpoints", []) if n not in cps]
        problems = []
        path, _, sym = m["original"].partition(":")
        if not symbol_in(original_root() / path, sym):
            problems.append(f"original chatterbox/{m['original']} not found")
        if not impl_exists(m["impl"]):
            problems.append(f"MLX {m['impl']} not found")
        problems += [f"checkpoint {n} not in the registry" for n in m.get("checkpoints", []) if n not in
                     {c.name for c in reg.ordered()}]
        problems += [f"stage {s} has no compared checkpoint" for s in m.get("stages", [])
                     if not any(c.stage == s and c.compared for c in reg.ordered())]
        problems += [f"test {t} not found" for t in m.get("tests", []) if not has_test(t)]
        if not cps and not m.get("tests"):
            problems.append("no checkpoint and no test checks it")
        out.append({"model": m["model"], "item": m["item"], "original": m["original"], "impl": m["impl"],
                    "checkpoints": cps, "tests": m.get("tests", []), "problems": problems,
                    "status": "missing" if problems else "covered"})
    return out


def modules_markdown(ms: List[dict]) -> str:
    lines = ["| model | item | original (chatterbox/) | MLX implementation | parity checkpoints | tests |",
             "|---|---|---|---|---|---|"]
    for m in ms:
        cps = ", ".join(m["checkpoints"][:4]) + (f" (+{len(m['checkpoints']) - 4})" if len(m["checkpoints"]) > 4 else "")
        tests = ", ".join(t.split("::")[1] for t in m["tests"])
        impl = f"`{m['impl']}`" + (f" **{'; '.join(m['problems'])}**" if m["problems"] else "")
        lines.append(f"| {m['model']} | {m['item'].replace('|', '/')} | `{m['original']}` | {impl} | {cps or '-'} | "
                     f"{tests or '-'} |")
    n_ok = sum(m["status"] == "covered" for m in ms)
    lines += ["", f"{len(ms)} module rows (VC, Turbo): {n_ok} covered, {len(ms) - n_ok} missing"]
    return "\n".join(lines)


def table_markdown(rs: List[dict]) -> str:
    lines = ["| # | section | item | MLX implementation | parity checkpoints | note |", "|---|---|---|---|---|---|"]
    for r in rs:
        cps = ", ".join(r["checkpoints"][:4]) + (f" (+{len(r['checkpoints']) - 4})" if len(r["checkpoints"]) > 4 else "")
        lines.append(f"| {r['index']} | {r['section']} | {r['item'].replace('|', '/')} | "
                     f"{('`' + r['impl'] + '`') if r['impl'] else '**missing**'} | {cps or '-'} | {r['reason'] or ''} |")
    n_impl = sum(r["status"] == "implemented" for r in rs)
    n_reason = sum(r["status"] == "reason" for r in rs)
    missing = len(rs) - n_impl - n_reason
    lines.append("")
    lines.append(f"{len(rs)} checklist rows: {n_impl} implemented, {n_reason} with a written reason, {missing} missing")
    return "\n".join(lines)


def cmd_coverage(args):
    rs, ms = rows(), module_rows()
    text, modules = table_markdown(rs), modules_markdown(ms)
    print(text + "\n\n" + modules)
    out = ROOT / "reports" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "coverage.md").write_text("## Seed checklist coverage\n\n" + text + "\n\n## Voice conversion and Turbo "
                                     "modules\n\n" + modules + "\n")
    if args.strict and (any(r["status"] == "missing" for r in rs) or any(m["status"] == "missing" for m in ms)):
        raise SystemExit(1)


def register(sub):
    p = sub.add_parser("coverage", help="seed checklist -> MLX implementation -> parity checkpoints")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a checklist item has neither implementation nor reason, or a VC/Turbo/multilingual module row "
                        "lacks its original, its MLX symbol or a check")
    p.set_defaults(fn=cmd_coverage)
