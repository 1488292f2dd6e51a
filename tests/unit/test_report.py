"""The report flags a planted regression (even inside tolerance) and writes its pages."""
import copy
import json

import pytest

from parity import report


def _run(snr, exact=1.0, commit="abc"):
    return {
        "meta": {"time": "t", "git_commit": commit, "machine": {"platform": "p", "cpus": 2}, "mlx": "0",
                 "mlx_device": "cpu", "precision": "fp32", "checkpoint": {"path": "c", "identity": "0" * 64},
                 "fixtures": "f"},
        "results": [
            {"case": "c1", "checkpoint": "flow.mu", "status": "passed", "tolerance": "SNR>=100dB", "message": "",
             "seconds": 0.1, "metrics": {"snr_db": snr, "cosine": 1.0, "max_abs": 1e-7, "length_mismatch": False,
                                         "shape_ref": [1], "shape_out": [1]}},
            {"case": "c1", "checkpoint": "t3.speech_tokens", "status": "passed", "tolerance": "exact>=1",
             "message": "", "seconds": 0.1, "metrics": {"exact": exact, "first_mismatch": None,
                                                        "length_mismatch": False, "shape_ref": [1], "shape_out": [1]}},
            {"case": "c1", "checkpoint": "hift.wav", "status": "not implemented", "tolerance": "SNR>=100dB",
             "message": "no runner", "seconds": 0.0, "metrics": None},
        ],
    }


def test_planted_regression_is_flagged_and_fails_when_asked(tmp_path):
    hist = tmp_path / "history.jsonl"
    results = tmp_path / "latest.json"
    args = ["--results", str(results), "--history", str(hist), "--out", str(tmp_path / "out"), "--fail-on-regression"]
    from parity.cli import main

    results.write_text(json.dumps(_run(130.0)))
    assert main(["report", *args]) == 0  # first run: nothing to regress against
    results.write_text(json.dumps(_run(131.5)))
    assert main(["report", *args]) == 0  # within the 3 dB margin
    # planted regression: still far inside the 100 dB tolerance, but 20 dB worse than the best
    results.write_text(json.dumps(_run(111.0)))
    with pytest.raises(SystemExit) as e:
        main(["report", *args])
    assert e.value.code == 1
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Regressions" in page and "flow.mu" in page
    assert "(regressed)" in (tmp_path / "out" / "report.md").read_text()
    # a token agreement drop is a regression too
    hist_runs = report.load_history(hist)
    regs = report.find_regressions(_run(131.5, exact=0.99), hist_runs)
    assert [(g["checkpoint"], g["metric"]) for g in regs] == [("t3.speech_tokens", "exact")]


def test_report_without_results_is_a_clear_error(tmp_path):
    from parity.cli import main

    assert main(["report", "--results", str(tmp_path / "none.json"), "--out", str(tmp_path)]) == 2


def test_a_run_enters_the_history_once(tmp_path):
    hist = tmp_path / "history.jsonl"
    run = _run(120.0)
    assert report.append_history(run, hist)
    assert not report.append_history(copy.deepcopy(run), hist)  # the same run reported twice
    later = copy.deepcopy(run)
    later["meta"]["time"] = "t2"
    assert report.append_history(later, hist)
    assert [h["meta"]["time"] for h in report.load_history(hist)] == ["t", "t2"]


def test_a_checkpoint_can_set_its_own_regression_margin():
    """Cumulative HiFT SNRs move by up to ~15 dB with the last bits of the mel: their tolerance sets a
    15 dB regression margin (checkpoints.toml, with the measured spread); the default 3 dB applies
    elsewhere."""
    from parity import registry

    assert registry.load().tolerance_of("e2e:hift.wav").regression_margin_db == 15.0
    assert registry.load().tolerance_of("flow.mu").regression_margin_db is None

    def run(snr_e2e, snr_mu):
        r = _run(snr_mu)
        r["results"].append({**r["results"][0], "checkpoint": "e2e:hift.wav",
                             "metrics": {**r["results"][0]["metrics"], "snr_db": snr_e2e}})
        return r

    history = [run(80.0, 130.0)]
    assert report.find_regressions(run(67.0, 130.0), history) == []  # 13 dB: within the margin
    assert [g["checkpoint"] for g in report.find_regressions(run(64.0, 126.0), history)] == ["flow.mu", "e2e:hift.wav"]


def test_snr_drops_within_float32_rounding_are_not_regressions():
    assert report.find_regressions(_run(131.0), [_run(143.0)]) == []  # both at float32 rounding level
    assert [g["checkpoint"] for g in report.find_regressions(_run(126.0), [_run(143.0)])] == ["flow.mu"]
