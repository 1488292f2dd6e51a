"""The architecture's contract, checked on the import graph of every file (function-local imports
included) in mlx_impl/, parity/, reference/ and tests/:

- layers, bottom up: `mlx_impl` (the MLX port) imports nothing of the project's other packages; the
  harness core (CORE: registry, fixtures, metrics, ...) imports neither MLX, torch, mlx_impl nor
  reference, nor the harness above it; `reference/` (the original, torch) and the MLX stage runners
  (`parity/stages/`) stand on the core side by side, neither importing the other; the CLI, the
  session, the reports and the tests are on top;
- no import cycles between files;
- `import mlx_impl` (every module of it, and its two command lines) works with torch and the
  harness's packages made unimportable.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mlx_impl", "parity", "reference", "tests")

CORE = {"parity", "parity.registry", "parity.fixtures", "parity.cases", "parity.metrics", "parity.checkpoint_dir",
        "parity.errors", "parity.regressions", "parity.flips"}
TORCH = ("torch", "torchaudio", "chatterbox", "s3tokenizer", "librosa", "safetensors.torch")
MLX = ("mlx", "mlx_lm")
HARNESS = ("parity", "reference", "tests")


# ----------------------------------------------------------------------------- the import graph


@lru_cache(maxsize=1)
def project_modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every .py file of PACKAGES (a package is its __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path, node) -> List[str]:
    """The dotted names one import statement asks for (relative ones made absolute)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{a.name}" if base else a.name for a in node.names] + ([base] if base else [])


def _resolve(name: str, path: Path) -> Tuple[str, bool]:
    """(the project module `name` loads, True) or (the external dotted name, False). A top-level name
    next to a file outside any package (tests/unit, on pytest's sys.path) is that sibling file."""
    modules = project_modules()
    if name.split(".")[0] in PACKAGES:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name, bool(name)
    sibling = path.parent / f"{name.split('.')[0]}.py"
    if not (path.parent / "__init__.py").exists() and sibling.exists():
        return next(m for m, p in project_modules().items() if p == sibling), True
    return name, False


@lru_cache(maxsize=1)
def import_graph() -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]]]:
    """(module -> project modules it imports, module -> external dotted names it imports), from
    every import statement of its file, wherever it stands (function bodies included)."""
    internal: Dict[str, Set[str]] = {}
    external: Dict[str, Set[str]] = {}
    for module, path in project_modules().items():
        internal[module], external[module] = set(), set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported_names(module, path, node):
                    target, inside = _resolve(name, path)
                    if inside and target != module:
                        internal[module].add(target)
                    elif not inside:
                        external[module].add(target)
    return internal, external


def _layer(module: str) -> str:
    if module.split(".")[0] == "mlx_impl":
        return "mlx_impl"
    if module in CORE:
        return "core"
    if module.split(".")[0] == "reference":
        return "reference"
    if module == "parity.stages" or module.startswith("parity.stages."):
        return "stages"
    return "top"


# what each layer may import from the project: its own layer and those below
MAY_IMPORT = {
    "mlx_impl": {"mlx_impl"},
    "core": {"core"},
    "reference": {"reference", "core"},
    "stages": {"stages", "core", "mlx_impl"},
    "top": {"top", "stages", "reference", "core", "mlx_impl"},
}
# external packages each layer may not import
FORBIDDEN = {
    "mlx_impl": TORCH,
    "core": TORCH + MLX,
    "stages": TORCH,
}


def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# ----------------------------------------------------------------------------- the contract


def test_the_graph_sees_function_local_and_relative_imports():
    internal, external = import_graph()
    assert "mlx_impl.t3.inference.fast_decode" in internal["mlx_impl.t3.t3"]  # `from .inference import fast_decode`
    assert "parity.checkpoint_dir" in internal["parity.fixtures"] or "parity.registry" in internal["parity.fixtures"]
    assert "torch" in external["reference.recording"]
    assert len(internal) > 150


def test_each_layer_imports_only_its_own_and_those_below():
    internal, _ = import_graph()
    wrong = [f"{m} ({_layer(m)}) imports {t} ({_layer(t)})" for m, targets in sorted(internal.items())
             for t in sorted(targets) if _layer(t) not in MAY_IMPORT[_layer(m)]]
    assert not wrong, "\n".join(wrong)


def test_forbidden_packages():
    """mlx_impl needs no torch; the harness core neither MLX nor torch (not even inside a function);
    the MLX stage runners no torch."""
    _, external = import_graph()
    wrong = [f"{m} ({_layer(m)}) imports {name}" for m, names in sorted(external.items()) for name in sorted(names)
             if _matches(name, FORBIDDEN.get(_layer(m), ()))]
    assert not wrong, "\n".join(wrong)


def test_mlx_impl_does_not_name_the_harness():
    """Nor reaches it by a name in a string (importlib, an exception matched by its class name)."""
    harness_name = re.compile(r"^(parity|reference|tests)(\.\w+)*$|^ParityError$")
    wrong = [f"{module}: {node.value!r}" for module, path in sorted(project_modules().items())
             if _layer(module) == "mlx_impl" for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and harness_name.match(node.value)]
    assert not wrong, wrong


def strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    internal, _ = import_graph()
    cycles = strongly_connected(internal)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]


# ----------------------------------------------------------------------------- mlx_impl on its own

BLOCKER = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` raises ModuleNotFoundError; importlib's find_spec says None
"""


def run_blocked(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter where torch, the original and the harness cannot be imported."""
    blocked = sorted({n.split(".")[0] for n in TORCH} | set(HARNESS))
    env = {k: v for k, v in os.environ.items() if k != "CHATTERBOX_CKPT"}
    program = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_mlx_impl_imports_without_torch_or_the_harness():
    r = run_blocked("""
        import importlib, pkgutil
        import mlx_impl
        for m in pkgutil.walk_packages(mlx_impl.__path__, "mlx_impl."):
            if not m.name.endswith("__main__"):
                importlib.import_module(m.name)
        import mlx_impl.tts, mlx_impl.generate, mlx_impl.convert, mlx_impl.convert.cli
        try:
            import torch
        except ImportError:
            print("torch blocked")
        print("imported", len([m for m in sys.modules if m.startswith("mlx_impl")]))
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch blocked" in r.stdout and "imported" in r.stdout


def test_standalone_commands_run_without_the_harness():
    """`python -m mlx_impl.generate` / `python -m mlx_impl.convert`: their help, and without a model
    folder (no --model / --checkpoint, no $CHATTERBOX_CKPT) one error line, exit status 2."""
    r = run_blocked("""
        import runpy
        for module, argv in (("mlx_impl.generate", ["--text", "Hi.", "--out", "o.wav"]),
                             ("mlx_impl.convert", ["--out", "converted"]), ("mlx_impl.generate", ["--help"])):
            sys.argv = [module] + argv
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as e:
                print(f"exit {e.code}", file=sys.stderr)
    """)
    lines = r.stderr.splitlines()
    assert lines[:4] == ["error: no model folder: pass --model or set CHATTERBOX_CKPT", "exit 2",
                         "error: no model folder: pass --checkpoint or set CHATTERBOX_CKPT", "exit 2"], r.stderr[-3000:]
    assert lines[4:] == ["exit 0"] and "usage: python -m mlx_impl.generate" in r.stdout, r.stderr[-3000:]
    assert not (ROOT / "converted").exists() and not (ROOT / "o.wav").exists()


# ----------------------------------------------------------------------------- the core without torch


def test_core_reads_bfloat16_weights_without_torch(tmp_path):
    """parity.checkpoint_dir widens bfloat16 tensors to float32 itself (numpy has no bfloat16)."""
    import mlx.core as mx
    import numpy as np

    from parity.checkpoint_dir import read_safetensors

    tensors = {"w": mx.random.normal((3, 5)).astype(mx.bfloat16), "f": mx.arange(4, dtype=mx.float32),
               "i": mx.array([[1, -2]], dtype=mx.int64), "h": mx.ones((2,), dtype=mx.float16)}
    mx.save_safetensors(str(tmp_path / "m.safetensors"), tensors, metadata={"format": "mlx"})
    state = read_safetensors(tmp_path / "m.safetensors")
    assert state["w"].dtype == np.float32 and np.array_equal(state["w"], np.array(tensors["w"].astype(mx.float32)))
    for k in ("f", "i", "h"):
        assert state[k].dtype == np.array(tensors[k]).dtype and np.array_equal(state[k], np.array(tensors[k]))


def test_fixture_writer_takes_torch_tensors_without_importing_torch():
    import numpy as np
    import torch

    from parity.fixtures import _to_numpy

    x = torch.randn(3, 4)
    for value, want in ((x, x.numpy()), (x.to(torch.bfloat16), x.to(torch.bfloat16).float().numpy()),
                        (x.half(), x.half().float().numpy()), (torch.tensor([5, -1]), np.array([5, -1], np.int32)),
                        (x.t(), x.numpy().T), (np.arange(3), np.arange(3, dtype=np.int32))):
        a = _to_numpy(value)
        assert a.dtype == want.dtype and np.array_equal(a, want) and a.flags.c_contiguous


def test_the_cores_s3gen_token_rule_is_the_originals_and_the_ports():
    """parity.flips states which T3 steps feed S3Gen itself (the core may not ask mlx_impl): the same
    steps as mlx_impl.tts.s3gen_token_positions, and the tokens the original's generate() keeps."""
    import numpy as np
    import torch
    from chatterbox.models.s3tokenizer import drop_invalid_tokens

    from mlx_impl.tts import s3gen_token_positions
    from parity.flips import s3gen_token_steps

    rng = np.random.default_rng(0)
    for _ in range(300):
        row = rng.integers(6400, 8194, size=int(rng.integers(0, 30)))
        row[row >= 6561] = rng.choice([6561, 6562, 6563, 8000, 7], size=int((row >= 6561).sum()))
        for token in (6561, 6562):  # the original takes at most one of each
            at = np.nonzero(row == token)[0]
            row[at[1:]] = 8000
        steps = s3gen_token_steps(row)
        np.testing.assert_array_equal(steps, s3gen_token_positions(row))
        kept = drop_invalid_tokens(torch.from_numpy(row)).numpy()
        np.testing.assert_array_equal(row[steps], kept[kept < 6561])
