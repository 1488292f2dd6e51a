"""The parity harness: checkpoint registry, fixture format, metrics, CLI."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
