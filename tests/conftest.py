"""pytest wiring for the parity suite: one test per (case, checkpoint), a summary table at the end.

The synthetic checkpoint and the reference fixtures are created on first use when missing or
stale (keyed by checkpoint identity and export version). Environment:
  CHATTERBOX_CKPT              checkpoint folder to test (default: the synthetic one)
  CHATTERBOX_PARITY_FIXTURES   fixture root (default: fixtures/)
  CHATTERBOX_REAL_CKPT         a real checkpoint folder: enables tests/parity/test_real_weights.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


SESSION = pytest.StashKey[object]()


@pytest.fixture(scope="session")
def parity_session(request):
    """The parity run of this pytest session: checkpoint, fixtures (exported when missing or stale),
    MLX outputs and results; the terminal summary reads its results."""
    from parity.session import ParitySession

    session = ParitySession.create(log=lambda msg: print(f"\n[parity] {msg}", flush=True))
    request.config.stash[SESSION] = session
    return session


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = config.stash.get(SESSION, None)
    if session is None or not session.results:
        return
    from parity.summary import summary_table, write_results

    tr = terminalreporter
    tr.section("parity: checkpoint -> status -> measured error -> tolerance")
    for line in summary_table(session):
        tr.write_line(line)
    path = write_results(session)
    tr.write_line(f"results written to {path}")
