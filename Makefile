# The README's two commands: `make parity` (the main job) and `make test` (the tests).
PY := .venv/bin/python
CLI := .venv/bin/chatterbox-parity
export TQDM_DISABLE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: setup parity test unit fixtures report clean-fixtures

.venv/.setup-done: scripts/setup.sh scripts/site/sitecustomize.py requirements/*.txt pyproject.toml mlx_impl/backend/kernels/*.cpp mlx_impl/backend/kernels/*.h mlx_impl/backend/kernels/CMakeLists.txt
	scripts/setup.sh
	touch $@

setup: .venv/.setup-done

# synthetic checkpoint -> reference fixtures -> MLX run -> comparison -> report; fails when a parity
# test failed or the report found a regression (the report is written either way)
parity: setup
	scripts/run_parity.sh

# every test: unit tests, then one parity test per (case, checkpoint); fixtures made if missing
test: setup
	scripts/run_tests.sh

unit: setup
	$(PY) -m pytest tests/unit -q

fixtures: setup
	$(CLI) export --case all --only-stale

report: setup
	$(CLI) report

# a PNG of the HTML report (needs Debian's chromium)
screenshot:
	scripts/screenshot_report.sh reports/out/report.html docs/report.png

clean-fixtures:
	find fixtures -mindepth 1 -maxdepth 1 -type d ! -name inputs -exec rm -rf {} +
