#!/usr/bin/env bash
# The test suite, in groups that each run in their own process (the full-size original and MLX
# models would not all fit in 24 GB at once). Every group runs; the exit status fails if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
status=0
# each group's wall time and peak memory, where GNU time is installed (the 24 GB budget: docs/TESTING.md)
TIMER=()
[ -x /usr/bin/time ] && TIMER=(/usr/bin/time -f "=== group took %e s, peak RSS %M KB")
run() { echo "=== pytest $*"; "${TIMER[@]}" "$PY" -m pytest -q -rxXs -p no:cacheprovider "$@" || status=1; }
run tests/unit
run tests/parity --ignore=tests/parity/test_generate.py -k "not turbo and not mtl"
run tests/parity/test_parity.py tests/parity/test_cumulative.py tests/test_turbo_parity.py tests/parity/test_mutations.py -k turbo  # Chatterbox Turbo: export of turbo_espeak/turbo_very_long (200 steps), isolated + cumulative parity, export determinism, bad input, two Turbo mutations
run tests/parity/test_parity.py tests/parity/test_cumulative.py tests/test_mtl_parity.py tests/parity/test_mutations.py -k mtl  # Chatterbox Multilingual: export of the mtl_* cases (200 steps), isolated + cumulative parity, export determinism, bad input, two multilingual mutations
run tests/parity/test_generate.py  # its own full-size pipeline (from_pretrained): a process of its own
run tests/test_export.py tests/test_convert.py tests/test_tts_cli.py tests/test_real_weights.py
run tests/test_vc.py tests/test_turbo_checkpoint.py tests/test_turbo_generate.py  # voice conversion (the original ChatterboxVC, the MLX vc command); the synthetic Turbo checkpoint; Turbo generate() against the original
run tests/test_turbo_layout.py  # Turbo's MLX layout at --dtype float16 / --quantize-t3 4: converted, loaded, generate() run, the precision rows' measures reproduced
run tests/test_mtl_checkpoint.py  # the synthetic multilingual checkpoint: the original from_local loads it, MLX token ids equal its tokenizer's, generate() runs
run tests/test_mtl_generate.py  # Chatterbox Multilingual generate() against the original (el, ja; greedy, sampled; 120 steps): tokens, AlignmentStreamAnalyzer decisions, waveform
run tests/test_batched_generate.py  # ChatterboxTTS.generate_batch at full size (3 texts, 2 voices, 50 steps) against generate(): its own process (~2 min, 5.2 GB)
run tests/test_bisect.py
run tests/test_pack.py
exit $status
