"""`chatterbox-parity coverage`: the seed checklist's items -> MLX implementation (file:symbol)
-> parity checkpoints covering it.

parity/seed_checklist.json holds the checklist's 188 table rows. parity/coverage.toml maps each
row (by index) to `impl = "path.py:Symbol[.member]"` (checked here: the file must define it) and
`checkpoints` (registry names), or to a `reason` when no MLX symbol stands for it. Rows not in the
file are resolved automatically from the item's own name (the first `name` in backticks), looked
up in the files of the section (SECTION_FILES), and covered by the section's stages.
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
    rs = rows()
    text = table_markdown(rs)
    print(text)
    out = ROOT / "reports" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "coverage.md").write_text("## Seed checklist coverage\n\n" + text + "\n")
    if args.strict and any(r["status"] == "missing" for r in rs):
        raise SystemExit(1)


def register(sub):
    p = sub.add_parser("coverage", help="seed checklist -> MLX implementation -> parity checkpoints")
    p.add_argument("--strict", action="store_true", help="exit 1 when an item has neither implementation nor reason")
    p.set_defaults(fn=cmd_coverage)
