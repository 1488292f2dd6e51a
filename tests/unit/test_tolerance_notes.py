"""The loose tolerances' `measured` notes: refreshed from a run in place, shown in the report."""
import json
import math

import pytest

from parity import registry, tolerance_notes
from parity.errors import ParityError

TOML = '''[tolerances.fp32."t3.logits_min_p"]
snr_db = 100.0
measured = "old note"
reason = """kept"""

[cumulative.e2e."hift.wav"]
snr_db = 60.0
measured = "old e2e note"  
reason = "kept too"

[cumulative.s3gen."hift.wav"]
measured = "other mode"
'''


def _run(results):
    return {"meta": {"time": "2026-12-06T10:00:00+00:00", "git_commit": "0123456789abcdef",
                     "machine": {"cpu_model": "CPU X", "processor": "x86_64"}}, "results": results}


def _r(case, checkpoint, **metrics):
    return {"case": case, "checkpoint": checkpoint, "status": "passed", "metrics": metrics}


def test_refresh_replaces_only_the_named_tables_measured_lines():
    text, done = tolerance_notes.refresh_text(TOML, {"t3.logits_min_p": "new", "e2e:hift.wav": 'say "x"'})
    assert sorted(done) == ["e2e:hift.wav", "t3.logits_min_p"]
    assert 'measured = "new"\n' in text and 'measured = "say \\"x\\""\n' in text
    assert 'measured = "other mode"' in text and '"""kept"""' in text and 'reason = "kept too"' in text


def test_a_multiline_measured_note_becomes_one_line():
    multi = TOML.replace('measured = "old note"', 'measured = """old\nnote, line 2"""')
    text, done = tolerance_notes.refresh_text(multi, {"t3.logits_min_p": "new"})
    assert done == ["t3.logits_min_p"] and 'measured = "new"\nreason = """kept"""' in text and "line 2" not in text
    with pytest.raises(ParityError, match="cannot read"):
        tolerance_notes.refresh_text(TOML.replace('measured = "old note"', "measured = 3"), {"t3.logits_min_p": "x"})


def test_note_gives_date_commit_machine_and_every_case():
    run = _run([_r("b", "e2e:hift.wav", snr_db=63.6), _r("a", "e2e:hift.wav", snr_db=math.inf),
                _r("a", "t3.logits_min_p", snr_db=116.04, nonfinite_mismatch=1)])
    assert tolerance_notes.note_for("e2e:hift.wav", run) == "2026-12-06, commit 0123456789, CPU X: a bit-identical, b 63.6 dB"
    assert "1 filtered on one side" in tolerance_notes.note_for("t3.logits_min_p", run)
    with pytest.raises(ParityError, match="no result for"):
        tolerance_notes.note_for("s3gen:hift.wav", run)


def test_refresh_rewrites_every_loose_note_of_the_registry(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints.toml"
    path.write_text(registry.REGISTRY_FILE.read_text())
    labels = [label for label, _ in tolerance_notes.loose_labels()]
    assert "e2e:hift.wav" in labels and "t3.logits_min_p" in labels
    run = _run([_r("c1", label, snr_db=99.5) for label in labels])
    done = tolerance_notes.refresh(run, path)
    assert sorted(done) == sorted(labels)
    reg = registry.load(path)
    for label, _ in tolerance_notes.loose_labels():
        mode, _, name = label.rpartition(":")
        tol = reg.cumulative[mode][name] if mode else reg[name].tolerance("fp32")
        assert tol.measured.endswith("c1 99.5 dB"), label
    assert registry.load() is not reg  # the default registry is untouched


def test_report_lists_loose_tolerances_beside_this_run(tmp_path):
    from parity import report

    run = _run([_r("c1", "e2e:hift.wav", snr_db=63.6, cosine=1.0, max_abs=1e-3)])
    run["meta"].update(mlx="0", mlx_device="cpu", precision="fp32", checkpoint={"path": "c", "identity": "0" * 64})
    run["meta"]["machine"].update(platform="p", cpus=2)
    for r in run["results"]:
        r["tolerance"] = "SNR>=60dB"
    report.write_report(run, [], [], out_dir=tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Loose tolerances beside their recorded measurement" in md
    loose = md.split("## Loose tolerances beside their recorded measurement")[1]
    row = next(line for line in loose.splitlines() if line.startswith("| e2e:hift.wav |"))
    assert "c1 63.6 dB" in row and registry.load().cumulative["e2e"]["hift.wav"].measured in row
