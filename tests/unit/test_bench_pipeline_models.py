"""benchmarks/bench_pipeline.py's --model choice: each model's default case, and the options the Turbo and
multilingual sides do not have refused by name before any worker starts."""
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_pipeline  # noqa: E402


def options(**kw):
    base = dict(case=None, device="cpu", expert=False, builtin_voice=False, mlx_step=None, mlx_dtype=["float32"])
    return Namespace(**{**base, **kw})


@pytest.mark.parametrize("model, case", [("chatterbox", "espeak_22k"), ("turbo", "turbo_espeak"), ("mtl", "mtl_de")])
def test_each_model_has_its_default_case(model, case):
    args = options(model=model)
    bench_pipeline.check_model_options(None, args)
    assert args.case == case


@pytest.mark.parametrize("model", ["turbo", "mtl"])
def test_unsupported_options_are_one_error_naming_the_model(model):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"), "--model", model, "--device",
                        "gpu", "--expert"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1] == (f"bench_pipeline.py: error: --model {model}: --device gpu, --expert "
                                                 "not supported (CPU, float32, the case's clip)")
