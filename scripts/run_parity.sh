#!/usr/bin/env bash
# The main job (`make parity`): fixtures -> parity tests -> coverage -> report. The report is written
# whatever the tests say; the exit status is non-zero when a parity test failed (pytest's status) or
# the report found a regression. PY and CLI may name other interpreters/commands (the unit test does).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CLI=${CLI:-.venv/bin/chatterbox-parity}
$CLI export --case all --only-stale || exit $?
$PY -m pytest tests/parity -q -p no:cacheprovider --ignore=tests/parity/test_generate.py
tests=$?
# generate() as users call it: its own full-size pipeline, a process of its own (memory)
$PY -m pytest tests/parity/test_generate.py -q -p no:cacheprovider || tests=$((tests ? tests : 1))
$CLI coverage > /dev/null || exit $?
$PY benchmarks/gpu_summary.py > /dev/null || exit $?  # the committed GPU results (reports/bench) into the report
$CLI report --fail-on-regression
report=$?
if [ $tests != 0 ]; then
  echo "parity: the parity tests failed (pytest exit status $tests); the report is written" >&2
  exit 1
fi
exit $report
