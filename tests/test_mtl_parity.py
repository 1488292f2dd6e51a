"""Chatterbox Multilingual's reference export (reference/export_mtl.py): deterministic, complete (every
registered mtl.* checkpoint, the activation checks, the analyzer's decisions, the front end's record), stale when
its case or checkpoint changes, and one clear error on bad input with nothing half-written. The parity tests
themselves are the mtl_* cases of tests/parity (test_parity.py: isolated, test_cumulative.py: mode mtl); select
them with `-k mtl`."""
import dataclasses

import numpy as np
import pytest

from tests.export_checks import (CLI, assert_one_error_line_and_no_fixture, assert_one_file_per_stage_and_same_bytes,
                                 export_twice, linked_checkpoint, run_without_warnings)

pytestmark = pytest.mark.reference
SHORT_STEPS = 4  # the short case's T3 bound: time (the registered cases run 200)
SHORT_CASE = "mtl_zh"  # the Chinese case: Cangjie and pkuseg on the folder's stand-ins


@pytest.fixture(scope="module")
def mtl_ckpt():
    from parity.mtl_checkpoint import resolve_mtl_checkpoint

    return resolve_mtl_checkpoint()


@pytest.fixture(scope="module")
def short_case():
    from parity.cases import load_mtl_cases

    base = load_mtl_cases()[SHORT_CASE]
    return dataclasses.replace(base, name="mtl_short", params={**base.params, "max_new_tokens": SHORT_STEPS})


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory, mtl_ckpt, short_case):
    """The short case exported twice with one original ChatterboxMultilingualTTS (then released)."""
    from reference.export_mtl import export_mtl_case, load_original_mtl

    return export_twice(load_original_mtl, export_mtl_case, mtl_ckpt, short_case, tmp_path_factory, "mtl_fx")


def test_mtl_export_twice_is_bit_identical(two_exports):
    assert_one_file_per_stage_and_same_bytes(*two_exports, "mtl")


def test_mtl_export_is_complete_and_sane(two_exports, short_case):
    """Every registered mtl.* checkpoint; the text front end's record (the language tag and the Cangjie codes in
    the BPE's input, the steps that ran); T3 runs of max_new_tokens draws with one analyzer row each (the stop
    token suppressed at the start of a long text); generate()'s hand-over to S3Gen; SineGen's sine branch."""
    from parity import registry
    from parity.fixtures import Fixture

    fx = Fixture.open(two_exports[0])
    m = fx.manifest
    assert m["sanity"]["ok"], m["sanity"]
    assert sorted(m["tensors"]) == sorted(c.name for c in registry.load().of_model("mtl"))
    assert m["case"]["language"] == "zh"
    preprocessed = bytes(fx.tensor("mtl.text.preprocessed")).decode("utf-8")
    assert preprocessed.startswith("[zh]") and "[cj_." in preprocessed and "[SPACE]" in preprocessed
    steps = m["front_end"]["optional_steps"]
    assert steps["zh_cangjie"]["runs"] and steps["zh_segmentation"]["runs"], steps
    assert [s["step"] for s in m["front_end"]["language_steps_run"]] == ["ChineseCangjieConverter"]
    tokens = fx.tensor("mtl.t3.speech_tokens").reshape(-1)
    assert tokens.size == fx.tensor("mtl.t3_greedy.speech_tokens").size == SHORT_STEPS  # no stop token in 4 steps
    assert fx.tensor("mtl.t3.uniform_draws").size == fx.tensor("mtl.t3.sampling_margin").size == tokens.size
    n_text = fx.tensor("mtl.t3.text_tokens").shape[1]
    assert fx.tensor("mtl.t3.logits_analyzed").shape == (tokens.size, 8194)
    # the first step appends two rows: the prefill's start-of-speech position and the start token fed after it
    assert fx.tensor("mtl.t3.alignment").shape == (tokens.size + 1, n_text)
    analysis = fx.tensor("mtl.t3.analysis")
    assert analysis.shape == (tokens.size, 10)
    from reference.export_mtl import ANALYSIS_COLUMNS

    suppressed = analysis[:, ANALYSIS_COLUMNS.index("eos_suppressed")]
    assert suppressed.all()  # a long text, the alignment at its start: the stop logit at -2**15
    assert np.all(fx.tensor("mtl.t3.logits_analyzed")[:, 6562] == -2.0 ** 15)
    assert fx.tensor("mtl.flow.speech_tokens").reshape(-1).tolist() == tokens.tolist()  # no start/stop drawn
    assert fx.tensor("mtl.hift.wav").shape[-1] == 480 * fx.tensor("mtl.flow.output_mel").shape[-1] > 0
    assert bool((fx.tensor("mtl.hift.f0") > 10.0).any())  # SineGen's sine branch runs
    assert np.all(fx.tensor("mtl.t3_greedy.sampling_margin") > 0)


def test_mtl_analysis_columns_agree():
    """The stage runners (no reference import) and the export name the analyzer's columns alike."""
    from parity.stages.mtl_common import ANALYSIS_COLUMNS as RUNNER_COLUMNS
    from reference.export_mtl import ANALYSIS_COLUMNS

    assert RUNNER_COLUMNS == ANALYSIS_COLUMNS


def test_mtl_fixture_goes_stale(two_exports, mtl_ckpt, short_case):
    from parity.session import staleness

    root = two_exports[0].parent
    assert staleness(root, short_case, mtl_ckpt) is None
    assert staleness(root, dataclasses.replace(short_case, seed=short_case.seed + 1), mtl_ckpt) == "case seed changed"
    assert staleness(root, dataclasses.replace(short_case, language="ja"), mtl_ckpt) == "case language changed"
    changed = dataclasses.replace(short_case, params={**short_case.params, "repetition_penalty": 1.2})
    assert staleness(root, changed, mtl_ckpt) == "case params changed"


def test_mtl_unknown_language_one_error_no_fixture(tmp_path, mtl_ckpt, short_case):
    """A case whose language the original does not speak: one error naming the case and the code, before the
    model is loaded, and no fixture folder."""
    from parity.errors import ParityError
    from reference.export_mtl import export_mtl_case

    out = tmp_path / "fx"
    with pytest.raises(ParityError) as e:
        export_mtl_case(mtl_ckpt, dataclasses.replace(short_case, language="xx"), out_root=out, tts=object())
    msg = str(e.value)
    assert "\n" not in msg and "'mtl_short'" in msg and "language 'xx'" in msg and "zh" in msg, msg
    assert not out.exists()


def test_mtl_case_without_language_is_named(tmp_path):
    from parity.cases import load_mtl_cases
    from parity.errors import ParityError

    toml = tmp_path / "cases.toml"
    toml.write_text('[mtl_defaults]\nexaggeration = 0.5\ncfg_weight = 0.5\ntemperature = 0.8\nrepetition_penalty = 2.0\n'
                    'min_p = 0.05\ntop_p = 1.0\nmax_new_tokens = 4\n'
                    '[mtl_cases.mtl_nolang]\naudio = "fixtures/inputs/espeak_22k_mono.wav"\ntext = "bonjour"\nseed = 1\n')
    with pytest.raises(ParityError, match=r"multilingual case 'mtl_nolang' lacks \['language'\]"):
        load_mtl_cases(toml)


@pytest.mark.parametrize("missing", ["s3gen.pt", "grapheme_mtl_merged_expanded_v1.json"])
def test_mtl_export_missing_checkpoint_file_one_clear_error_no_fixture(tmp_path, mtl_ckpt, missing):
    out = tmp_path / "fx"
    d = linked_checkpoint(mtl_ckpt.path, tmp_path, drop=missing)
    r = run_without_warnings(CLI + ["export", "--case", SHORT_CASE, "--out", str(out), "--checkpoint", str(d)],
                             tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert_one_error_line_and_no_fixture(r, missing, out)
