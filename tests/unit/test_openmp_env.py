"""The set-up's OpenMP wait setting: scripts/site/sitecustomize.py sets GOMP_SPINCOUNT for every process
of the virtual environment unless the user chose one (or a wait policy), and bench_pipeline.py gives
the original's and the expert's workers libgomp's own default back, as a PyTorch user runs them."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "scripts" / "site" / "sitecustomize.py"
sys.path.insert(0, str(ROOT))

from benchmarks import bench_pipeline  # noqa: E402


def site_run(**env_vars):
    """(GOMP_SPINCOUNT after the file ran, its SET_SPIN_COUNT) in a process that loads no site hooks."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = ("import os, runpy; ns = runpy.run_path(%r); "
            "print(os.environ.get('GOMP_SPINCOUNT'), ns['SET_SPIN_COUNT'])" % str(SITE))
    out = subprocess.run([sys.executable, "-S", "-c", code], env={**env, **env_vars}, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], out[1] == "True"


def test_site_sets_the_short_spin_when_nothing_is_chosen():
    assert site_run() == ("1000", True)


@pytest.mark.parametrize("env, expected", [({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "passive"}, "None")])
def test_site_keeps_what_the_user_chose(env, expected):
    assert site_run(**env) == (expected, False)


def test_installed_site_file_is_the_set_ups():
    installed = sys.modules.get("sitecustomize")
    if installed is None or getattr(installed, "__file__", None) is None or sys.platform != "linux":
        pytest.skip("no sitecustomize in this environment (scripts/setup.sh installs it on Linux)")
    assert Path(installed.__file__).read_text() == SITE.read_text(), "re-run scripts/setup.sh"


@pytest.mark.parametrize("side", ["original", "expert", "expert_bfloat16"])
def test_original_workers_get_libgomps_default_back(monkeypatch, side):
    monkeypatch.setitem(sys.modules, "sitecustomize", SimpleNamespace(SET_SPIN_COUNT=True))
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    assert bench_pipeline.worker_env(side)["GOMP_SPINCOUNT"] == bench_pipeline.LIBGOMP_DEFAULT_SPINCOUNT == "300000"
    assert bench_pipeline.worker_env("mlx")["GOMP_SPINCOUNT"] == "1000"
    assert bench_pipeline.worker_env("mlx_bfloat16")["GOMP_SPINCOUNT"] == "1000"


@pytest.mark.parametrize("side", ["original", "mlx"])
def test_a_users_spin_count_stays_for_every_side(monkeypatch, side):
    monkeypatch.setitem(sys.modules, "sitecustomize", SimpleNamespace(SET_SPIN_COUNT=False))
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    assert bench_pipeline.worker_env(side)["GOMP_SPINCOUNT"] == "7"


def test_record_header_names_the_spin_counts_only_where_set():
    assert bench_pipeline.spin_count_note({"original": "unset", "mlx": "unset"}) == ""
    note = bench_pipeline.spin_count_note({"original": "300000", "mlx": "1000"})
    assert note == "; GOMP_SPINCOUNT: original (PyTorch) 300000, MLX 1000"
