"""pytest wiring for the parity suite: one test per (case, checkpoint), a summary table at the end.

The synthetic checkpoint and the reference fixtures are created on first use when missing or
stale (keyed by checkpoint identity and export version). Environment:
  CHATTERBOX_CKPT              checkpoint folder to test (default: the synthetic one)
  CHATTERBOX_PARITY_FIXTURES   fixture root (default: fixtures/)
  CHATTERBOX_REAL_CKPT         a real checkpoint folder: enables tests/parity/test_real_weights.py
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parity import registry  # noqa: E402
from parity.cases import load_cases  # noqa: E402

_SESSION = None


def parity_session():
    global _SESSION
    if _SESSION is None:
        from parity.session import ParitySession

        _SESSION = ParitySession.create(log=lambda msg: print(f"\n[parity] {msg}", flush=True))
    return _SESSION


def parity_params():
    reg = registry.load()
    out = []
    for case in load_cases():
        for cp in reg.ordered():
            if cp.compared:  # recorded random draws are replay inputs, reference-only tensors measurements
                out.append(pytest.param(case, cp.name, id=f"{case}-{cp.name}"))
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _SESSION is None or not _SESSION.results:
        return
    from parity.summary import summary_table, write_results

    tr = terminalreporter
    tr.section("parity: checkpoint -> status -> measured error -> tolerance")
    for line in summary_table(_SESSION):
        tr.write_line(line)
    path = write_results(_SESSION)
    tr.write_line(f"results written to {path}")
