"""Regressions against the measured run-to-run spread (parity/regressions.py), and the verdicts of
parity runs: categorical changes flagged, planted drops inside tolerance caught, `make parity`'s
exit status, "not implemented" only where the registry declares it."""
import copy
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from parity import regressions, report
from parity.regressions import find_regressions, record_baseline

ROOT = Path(__file__).resolve().parents[2]


def _meta(time="t", commit="abc", cpu="cpu-A", identity="0" * 64):
    return {"time": time, "git_commit": commit, "machine": {"platform": "p", "processor": "x86_64", "cpus": 2,
                                                              "cpu_model": cpu},
            "mlx": "0", "mlx_device": "cpu", "precision": "fp32", "checkpoint": {"path": "c", "identity": identity},
            "fixtures": "f"}


def _float(checkpoint, snr, status="passed", case="c1", shape_mismatch=False):
    return {"case": case, "checkpoint": checkpoint, "status": status, "tolerance": "SNR>=60dB", "message": "",
            "metrics": {"snr_db": snr, "cosine": 1.0, "max_abs": 1e-7, "length_mismatch": shape_mismatch,
                        "shape_ref": [1], "shape_out": [2] if shape_mismatch else [1]}}


def _tokens(exact, status="passed"):
    return {"case": "c1", "checkpoint": "t3.speech_tokens", "status": status, "tolerance": "exact>=1", "message": "",
            "metrics": {"exact": exact, "first_mismatch": None, "length_mismatch": False, "shape_ref": [1],
                        "shape_out": [1]}}


def _run(wav=76.3, mel=121.0, feat=math.inf, tokens=1.0, **meta):
    return {"meta": _meta(**meta), "results": [_float("e2e:hift.wav", wav), _float("flow.output_mel", mel),
                                               _float("embed_ref.prompt_feat", feat), _tokens(tokens)]}


@pytest.fixture
def baseline(tmp_path):
    """Two bit-identical repeat runs, but the cumulative waveform moved by 0.4 dB between them."""
    runs = [_run(wav=76.3, time="t1"), _run(wav=76.7, time="t2")]
    path = tmp_path / "baseline.json"
    record_baseline(runs, path)
    return regressions.load_baseline(path)


def _kinds(regs):
    return sorted((g["kind"], g["checkpoint"]) for g in regs)


def test_planted_10db_drop_inside_tolerance_is_flagged_against_the_baseline(baseline):
    # 66.3 dB is 6 dB inside the 60 dB tolerance and 10 dB below the baseline
    assert _kinds(find_regressions(_run(wav=66.3), [], baseline)) == [("metric", "e2e:hift.wav")]
    # the same drop is below the history's 15 dB margin for that checkpoint: the old check missed it
    assert find_regressions(_run(wav=66.3), [_run(wav=76.3)]) == []


def test_moves_within_the_measured_spread_are_not_flagged(baseline):
    assert find_regressions(_run(wav=76.0), [], baseline) == []  # 76.3..76.7, spread 0.4
    assert _kinds(find_regressions(_run(wav=75.8), [], baseline)) == [("metric", "e2e:hift.wav")]
    # a bit-identical baseline value (spread 0) moving by 0.01 dB is flagged, even far above 100 dB
    assert _kinds(find_regressions(_run(mel=120.99), [], baseline)) == [("metric", "flow.output_mel")]
    assert find_regressions(_run(mel=125.0), [], baseline) == []  # better is no regression


def test_lost_bit_exactness_is_flagged_at_any_level(baseline):
    regs = find_regressions(_run(feat=131.0), [], baseline)
    assert _kinds(regs) == [("bit-exactness", "embed_ref.prompt_feat")]
    # in history mode too (the old check ignored every SNR above 130 dB)
    assert _kinds(find_regressions(_run(feat=131.0), [_run()])) == [("bit-exactness", "embed_ref.prompt_feat")]


def test_new_errors_expected_failures_and_shape_mismatches_are_flagged(baseline):
    run = _run()
    run["results"][1] = _float("flow.output_mel", None, status="error")
    run["results"][1]["metrics"] = None
    run["results"][3] = _tokens(None, status="not implemented")
    run["results"][3]["metrics"] = None
    run["results"][2] = _float("embed_ref.prompt_feat", math.inf, status="failed", shape_mismatch=True)
    assert _kinds(find_regressions(run, [], baseline)) == [
        ("new error", "embed_ref.prompt_feat"), ("new error", "flow.output_mel"),
        ("new expected failure", "t3.speech_tokens"), ("shape mismatch", "embed_ref.prompt_feat")]
    # the same changes against the last run of the history (no baseline)
    assert len(find_regressions(run, [_run()])) == 4


def test_token_agreement_drop_is_flagged(baseline):
    assert _kinds(find_regressions(_run(tokens=0.995), [], baseline)) == [("metric", "t3.speech_tokens")]


def test_other_machines_and_checkpoints_are_not_compared(baseline):
    # another CPU: no baseline entry, and no history of that machine: nothing to compare with
    assert find_regressions(_run(wav=20.0, cpu="cpu-B"), [_run()], baseline) == []
    # another checkpoint: neither baseline nor history apply
    assert find_regressions(_run(wav=20.0, identity="1" * 64), [_run()], baseline) == []
    # the history of the same machine and checkpoint applies when the baseline has no entry
    assert _kinds(find_regressions(_run(wav=20.0, cpu="cpu-B"), [_run(cpu="cpu-B")], baseline)) == [
        ("metric", "e2e:hift.wav")]


def test_baseline_records_the_spread_and_unstable_statuses(tmp_path):
    a, b = _run(wav=70.0, time="t1"), _run(wav=72.5, time="t2")
    b["results"][3] = _tokens(0.5, status="failed")
    entry = record_baseline([a, b], tmp_path / "b.json")
    rows = {(r["checkpoint"], r["metric"]): r for r in regressions.spread_table(entry)}
    assert rows[("e2e:hift.wav", "snr_db")]["spread"] == pytest.approx(2.5)
    assert rows[("flow.output_mel", "snr_db")]["spread"] == 0.0
    assert entry["results"]["c1|t3.speech_tokens"]["status"] == "unstable"
    with pytest.raises(Exception, match="share machine"):
        record_baseline([_run(), _run(cpu="cpu-B")], tmp_path / "c.json")


def test_report_command_uses_the_baseline_and_fails_on_regression(tmp_path):
    from parity.cli import main

    hist, results, base = tmp_path / "history.jsonl", tmp_path / "latest.json", tmp_path / "baseline.json"
    common = ["--results", str(results), "--history", str(hist), "--baseline", str(base)]
    for t in ("t1", "t2"):
        results.write_text(json.dumps(_run(time=t)))
        assert main(["report", *common, "--out", str(tmp_path / "out"), "--fail-on-regression"]) == 0
    assert main(["baseline", *common, "--runs", "2"]) == 0
    assert main(["baseline", *common, "--runs", "3"]) == 2  # only two runs of this commit: a clear error
    results.write_text(json.dumps(_run(wav=66.3, time="t3")))
    with pytest.raises(SystemExit) as e:
        main(["report", *common, "--out", str(tmp_path / "out"), "--fail-on-regression"])
    assert e.value.code == 1
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Compared with the baseline" in md and "metric: c1 / e2e:hift.wav" in md and "(regressed)" in md


def test_history_keeps_shape_mismatches(tmp_path):
    run = _run()
    run["results"][0] = _float("e2e:hift.wav", 50.0, status="failed", shape_mismatch=True)
    report.append_history(run, tmp_path / "h.jsonl")
    slim = report.load_history(tmp_path / "h.jsonl")[0]["results"][0]
    assert slim["shape_mismatch"] is True and slim["status"] == "failed"


# ----------------------------------------------------------------------------- make parity's exit status
def _fake_tools(tmp_path, pytest_status: int, report_status: int) -> dict:
    log = tmp_path / "calls.log"
    py, cli = tmp_path / "py", tmp_path / "cli"
    py.write_text(f'#!/bin/sh\necho "py $*" >> {log}\ncase "$*" in *pytest*) exit {pytest_status};; esac\nexit 0\n')
    cli.write_text(f'#!/bin/sh\necho "cli $*" >> {log}\ncase "$1" in report) exit {report_status};; esac\nexit 0\n')
    py.chmod(0o755)
    cli.chmod(0o755)
    return dict(os.environ, PY=str(py), CLI=str(cli)), log


@pytest.mark.parametrize("pytest_status,report_status,expect", [(0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)])
def test_main_job_fails_when_parity_tests_fail_and_still_writes_the_report(tmp_path, pytest_status, report_status,
                                                                           expect):
    env, log = _fake_tools(tmp_path, pytest_status, report_status)
    res = subprocess.run([str(ROOT / "scripts" / "run_parity.sh")], env=env, capture_output=True, text=True)
    assert (res.returncode != 0) == bool(expect), res.stderr
    assert "cli report --fail-on-regression" in log.read_text()  # the report is written in every case


def test_makefile_runs_the_main_job_script():
    assert "scripts/run_parity.sh" in (ROOT / "Makefile").read_text()
    assert "|| true" not in (ROOT / "Makefile").read_text()


# ----------------------------------------------------------------------------- not implemented
class _Cp:
    def __init__(self, implemented):
        self.name, self.implemented = "x.y", implemented


def test_not_implemented_only_where_the_registry_declares_it():
    from parity.session import NOT_IMPLEMENTED, implementation_verdict

    runner = type("runner", (), {"__name__": "parity.stages.x"})
    assert implementation_verdict(_Cp(True), runner) is None
    assert implementation_verdict(_Cp(False), None)[0] == NOT_IMPLEMENTED
    status, msg = implementation_verdict(_Cp(True), None)  # undeclared and no runner: a failure
    assert status == "failed" and "no MLX runner" in msg
    status, msg = implementation_verdict(_Cp(False), runner)  # declared but implemented: a failure
    assert status == "failed" and "remove the declaration" in msg


def test_a_not_implemented_error_inside_an_implemented_stage_is_an_error(monkeypatch, tmp_path):
    """A guard raising NotImplementedError inside a runner used to turn the stage's checkpoints into
    expected failures; now it is an error carrying its message."""
    import numpy as np

    from parity import session as session_mod
    from parity.session import ParitySession

    class Fx:
        name = "c1"

        def tensor(self, name):
            return np.zeros(3, np.float32)

    runner = type("runner", (), {"__name__": "parity.stages.fake"})
    runner.run = staticmethod(lambda fx, ckpt: (_ for _ in ()).throw(NotImplementedError("odd stride unsupported")))
    monkeypatch.setattr("parity.stages.providers", lambda: {"flow.mu": runner})
    s = ParitySession(ckpt=None, fx_root=tmp_path)
    s.fixtures["c1"] = Fx()
    res = s.run_checkpoint("c1", "flow.mu")
    assert res.status == "error" and "odd stride unsupported" in res.message
    assert session_mod.NOT_IMPLEMENTED != res.status
