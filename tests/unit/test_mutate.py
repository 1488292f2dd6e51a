"""The machinery of `chatterbox-parity mutate` (parity/mutate.py, parity/mutations.py): the catalogue
is well formed, every patch changes the MLX implementation while it is active and leaves it exactly
as it was afterwards (also on an error), --list prints one mutation a line, a bad --only or --case
gives one error line and exit status 2, and the record's verdicts are computed as documented.
No weights load; patches that need model instances get tiny ones."""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlx_impl
from parity import bisect, cli, mutate, registry
from parity.session import all_cases
from parity.mutations import CATALOGUE, by_name, patched, weights


def _import_all_mlx_impl():
    for info in pkgutil.walk_packages(mlx_impl.__path__, "mlx_impl."):
        if info.name.startswith("mlx_impl.backend.") or info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:
            pass


def implementation_state() -> dict:
    """(module, name) / (class, name) -> id of the object: every global of mlx_impl's modules and
    every attribute in the __dict__ of their classes."""
    state = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith("mlx_impl") or mod is None:
            continue
        for attr, value in vars(mod).items():
            state[(name, attr)] = id(value)
            if inspect.isclass(value) and value.__module__ == name:
                for cattr, cvalue in vars(value).items():
                    state[(f"{name}.{attr}", cattr)] = id(cvalue)
    from mlx_impl import audio

    state.update({("DEFAULT_METHOD", k): v for k, v in audio.DEFAULT_METHOD.items()})
    return state


# ---------------------------------------------------------------- tiny model instances
def _tiny_hift():
    from mlx_impl.s3gen.hifigan import HiFTConfig, HiFTGenerator

    cfg = HiFTConfig(base_channels=8, upsample_rates=[2], upsample_kernel_sizes=[4], resblock_kernel_sizes=[3],
                     resblock_dilation_sizes=[[1]], source_resblock_kernel_sizes=[3],
                     source_resblock_dilation_sizes=[[1]])
    return HiFTGenerator(cfg)


class TinyContext:
    """ctx.models(kind) with tiny stand-ins of the kinds whose patches change attributes or weights."""

    def __init__(self):
        from mlx_impl.voice_encoder.voice_encoder import VoiceEncoder

        self._models = {"hift": [_tiny_hift()], "ve": [VoiceEncoder()]}

    def models(self, kind):
        if kind not in self._models:
            pytest.skip(f"no tiny stand-in for '{kind}'")
        return self._models[kind]


# ---------------------------------------------------------------- the catalogue
def test_catalogue_is_well_formed():
    reg = registry.load()
    assert len(CATALOGUE) >= 40
    assert len(by_name()) == len(CATALOGUE)  # names unique
    for m in CATALOGUE:
        assert m.stages and set(m.stages) <= set(reg.models[mutate.mutation_model(m)]), m.name
        assert m.case in all_cases(), m.name
        assert m.source, m.name
        assert (m.bisect in bisect.STAGES) if m.bisect else m.bisect_na, m.name


@pytest.mark.parametrize("name", [m.name for m in CATALOGUE])
def test_patch_changes_the_implementation_and_restores_it(name):
    """Each patch that needs no loaded model moves some global, class attribute or setting of mlx_impl
    while active; afterwards every one of them is the same object as before."""
    m = by_name()[name]
    _import_all_mlx_impl()
    ctx = TinyContext()
    before = implementation_state()
    try:
        with m.patch(ctx):
            inside = implementation_state()
            tiny_state = {k: [p.__dict__.copy() for p in ms] for k, ms in ctx._models.items()}
    except pytest.skip.Exception:
        raise
    assert implementation_state() == before, f"{name} left mlx_impl changed"
    moved = inside != before or any(
        any(d != p.__dict__ for d, p in zip(tiny_state[k], ctx._models[k])) for k in tiny_state)
    changed_weights = name in ("ve_lstm_gate_order",)  # weights are checked in their own test
    assert moved or changed_weights or _changes_instances(name), f"{name} changed nothing while active"


def _changes_instances(name):
    """Patches that set attributes on model instances (restored in the test below)."""
    return name.startswith(("hift_resblock", "hift_snake", "hift_voiced", "hift_no_audio", "ve_no_final"))


def test_instance_and_weight_patches_restore_the_model_on_error():
    ctx = TinyContext()
    hift, ve = ctx.models("hift")[0], ctx.models("ve")[0]
    snakes = [m for _, m in hift.named_modules() if type(m).__name__ == "Snake"]
    wx = np.array(ve.lstm.layers[0].Wx)
    with pytest.raises(RuntimeError):
        with by_name()["hift_snake_logscale"].patch(ctx), by_name()["ve_lstm_gate_order"].patch(ctx):
            assert all(s.alpha_logscale for s in snakes)
            assert not np.array_equal(np.array(ve.lstm.layers[0].Wx), wx)
            raise RuntimeError("a failing check")
    assert not any(s.alpha_logscale for s in snakes)
    np.testing.assert_array_equal(np.array(ve.lstm.layers[0].Wx), wx)


def test_weights_patch_checks_what_it_hits():
    lin = nn.Linear(3, 2)
    with pytest.raises(LookupError, match="expected 2"):
        with weights([lin], r"bias$", mx.zeros_like, expect=2):
            pass
    bias = np.array(lin.bias)
    with weights([lin], r"bias$", mx.zeros_like, expect=1):
        assert not np.any(np.array(lin.bias))
    np.testing.assert_array_equal(np.array(lin.bias), bias)


def test_patched_restores_a_module_global():
    from mlx_impl.s3gen import hifigan

    original = hifigan.leaky_relu
    with by_name()["hift_final_leaky_slope"].patch(TinyContext()):
        assert float(hifigan.leaky_relu(mx.array(-1.0))) == pytest.approx(-0.1)
    assert hifigan.leaky_relu is original
    assert float(hifigan.leaky_relu(mx.array(-1.0))) == pytest.approx(-0.01)
    with pytest.raises(AttributeError, match="no attribute"):
        with patched(hifigan, "no_such_name", 1):
            pass


# ---------------------------------------------------------------- the command line
def test_list_prints_one_mutation_a_line(capsys):
    assert cli.main(["mutate", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [m.name for m in CATALOGUE]


@pytest.mark.parametrize("argv,named", [(["--only", "no_such_mutation"], "--only"),
                                        (["--only", "hift_no_trim_fade,nope"], "--only"),
                                        (["--case", "no_such_case"], "--case")])
def test_bad_selection_is_one_error_line(argv, named, capsys):
    assert cli.main(["mutate", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0]


# ---------------------------------------------------------------- verdicts and records
def test_first_failing_checkpoint_is_in_pipeline_order():
    labels = ["s3gen:hift.wav", "hift.wav", "flow.output_mel", "e2e:flow.output_mel", "text.tokens"]
    assert sorted(labels, key=mutate.pipeline_position) == [
        "text.tokens", "flow.output_mel", "e2e:flow.output_mel", "hift.wav", "s3gen:hift.wav"]


def test_caught_only_by_checks_that_pass_unmutated():
    m = by_name()["hift_no_trim_fade"]
    ok, bad = (mutate.Check("x", s, "m", "t", metrics={"snr_db": 120.0}) for s in ("passed", "failed"))
    base = {"hift.wav": ok, "hift.f0": bad}
    out = mutate.Runner._outcome(m, "espeak_22k", base, {"hift.wav": bad, "hift.f0": bad}, "n/a")
    assert out.caught and out.caught_by == "tolerance" and out.first_failing_checkpoint == "hift.wav"
    assert out.failing == ["hift.wav"]
    out = mutate.Runner._outcome(m, "espeak_22k", base, {"hift.wav": ok, "hift.f0": bad}, "n/a")
    assert not out.caught and out.first_failing_checkpoint is None and out.caught_by == ""


def test_regression_rule_catches_a_move_inside_tolerance():
    """The report's history rule: an SNR down by more than 3 dB (or the checkpoint's margin)."""
    m = by_name()["hift_no_trim_fade"]
    check = lambda snr: mutate.Check("x", "passed", "m", "t", metrics={"snr_db": snr, "cosine": 1.0})
    base = {"hift.f0": check(124.0), "s3gen:hift.wav": check(75.0)}
    out = mutate.Runner._outcome(m, "espeak_22k", base, {"hift.f0": check(110.0), "s3gen:hift.wav": check(62.0)}, "")
    assert out.caught and out.caught_by == "regression" and out.failing == ["hift.f0"]
    assert "unmutated 124.0 dB" in out.measured
    # within the margins (3 dB; 15 dB for s3gen:hift.wav, the registry's regression_margin_db): not caught
    out = mutate.Runner._outcome(m, "espeak_22k", base, {"hift.f0": check(122.0), "s3gen:hift.wav": check(62.0)}, "")
    assert not out.caught
    # float32 rounding: a drop that stays at or above 130 dB is not one; lost bit-exactness always is
    base = {"hift.f0": check(145.0), "audio.wav_24k": check(math.inf)}
    out = mutate.Runner._outcome(m, "espeak_22k", base, {"hift.f0": check(131.0), "audio.wav_24k": check(math.inf)}, "")
    assert not out.caught
    out = mutate.Runner._outcome(m, "espeak_22k", base, {"hift.f0": check(145.0), "audio.wav_24k": check(150.0)}, "")
    assert out.caught and out.failing == ["audio.wav_24k"] and "bit-identical" in out.measured


def test_output_movement_separates_rounding_from_change():
    a = np.linspace(-1, 1, 1000).astype(np.float32)
    key = ("espeak_22k", "parity.stages.hift")
    same = mutate.output_movement({key: {"hift.wav": a}}, {key: {"hift.wav": a.copy()}})
    assert same[0] is False and "bit-identical" in same[1]
    rounding = mutate.output_movement({key: {"hift.wav": a}}, {key: {"hift.wav": np.nextafter(a, 2)}})
    assert rounding[0] is False
    moved = mutate.output_movement({key: {"hift.wav": a}}, {key: {"hift.wav": a * 1.001}})
    assert moved[0] is True
    tokens = mutate.output_movement({key: {"t": np.arange(4)}}, {key: {"t": np.array([0, 1, 2, 2])}})
    assert tokens[0] is True


def _fake_record():
    outs = [mutate.Outcome("a_mut", "port A", "espeak_22k", ["hift"], True, "tolerance", None, "hift.wav",
                           "SNR 20.0 dB, cos 0.9", "SNR>=100dB", "hift: module `conv_post`",
                           ["hift.wav", "s3gen:hift.wav"]),
            mutate.Outcome("b_mut", "port B", "espeak_22k", ["hift"], False, "", "no output moves", None, None, None,
                           "n/a: x", moved="bit-identical"),
            mutate.Outcome("c_mut", "port C", "espeak_22k", ["flow"], False, "", None, None, None, None, "n/a: x",
                           moved="lowest SNR 90 dB")]
    return mutate.record(outs, 65.0, {"only": None, "case": None})


def test_record_score_markdown_and_signatures():
    rec = _fake_record()
    assert rec["score"] == {"caught": 1, "total": 3, "caught_by_regression_rule": 0, "invisible": 1, "visible": 2,
                            "missed": ["c_mut"]}
    for o in rec["mutations"]:
        assert {"name", "source", "caught", "invisible", "first_failing_checkpoint", "measured", "tolerance",
                "bisect"} <= set(o)
    md = mutate.markdown(rec)
    assert "1 of 3 mutations caught" in md and "**MISSED**" in md and "b_mut: no output moves" in md
    rows = mutate.signature_rows(rec)
    assert len(rows) == 3 and "`hift.wav`" in rows[2] and "`s3gen:hift.wav`" in rows[2] and "port A" in rows[2]


def test_outputs_are_written_and_the_report_shows_the_score(tmp_path, monkeypatch):
    from parity import report

    rec = _fake_record()
    monkeypatch.setattr(mutate, "RECORD", tmp_path / "record.json")
    paths = mutate.write_outputs(rec, tmp_path / "out", full=False)
    assert [p.name for p in paths] == ["mutations.json", "mutations.md"] and not (tmp_path / "record.json").exists()
    monkeypatch.setattr(mutate, "OUT_DIR", tmp_path / "out")
    md, page = report.mutation_section()
    assert "Mutation score: 1 / 3" in page and "MISSED" in page and "1 of 3 mutations caught" in md


def test_pack_readme_gets_the_signature_table(monkeypatch):
    from parity import pack

    rec = _fake_record()
    monkeypatch.setattr(mutate, "load_record", lambda: rec)
    text = pack.signature_section()
    assert "## Failure signatures" in text and "| `hift.wav` | SNR 20.0 dB, cos 0.9 / SNR>=100dB |" in text
    monkeypatch.setattr(mutate, "load_record", lambda: None)
    assert pack.signature_section() == ""


def test_update_record_replaces_entries_and_rescores(tmp_path, monkeypatch):
    import json

    old = _fake_record()
    old["mutations"][2]["name"] = CATALOGUE[2].name  # c_mut stands for a catalogue entry, missed
    for o, m in zip(old["mutations"], CATALOGUE[:2]):
        o["name"] = m.name
    monkeypatch.setattr(mutate, "RECORD", tmp_path / "record.json")
    (tmp_path / "record.json").write_text(json.dumps(old))
    fixed = mutate.Outcome(CATALOGUE[2].name, "port C", "espeak_22k", ["flow"], True, "tolerance", None, "flow.mu",
                           "SNR 10 dB", "SNR>=100dB", "n/a: x", ["flow.mu"])
    merged = mutate.merged_into_record(mutate.record([fixed], 5.0, {}))
    assert [o["name"] for o in merged["mutations"]] == [m.name for m in CATALOGUE[:3]]
    assert merged["score"]["caught"] == 2 and merged["score"]["missed"] == []
    assert merged["meta"]["updated"][0]["mutations"] == [CATALOGUE[2].name]
    monkeypatch.setattr(mutate, "RECORD", tmp_path / "none.json")
    with pytest.raises(mutate.ParityError, match="--update-record"):
        mutate.merged_into_record(mutate.record([fixed], 5.0, {}))


def test_turbo_mutations_run_turbo_checks_and_the_turbo_cumulative_mode():
    """A Turbo mutation (its case a turbo_* one) is checked by the Turbo stages' checkpoints in isolated mode,
    then by cumulative mode "turbo" (not the English e2e / s3gen modes); its bisect stage, if any, is a Turbo
    one; the catalogue plants each Turbo bug the issue lists."""
    reg = registry.load()
    turbo = [m for m in CATALOGUE if mutate.mutation_model(m) == "turbo"]
    assert {"turbo_rep_penalty_first", "turbo_penalty_history_without_start", "turbo_stop_on_first_draw",
            "turbo_gpt2_gelu_exact", "turbo_wpe_offset_not_advanced", "turbo_speech_head_no_bias",
            "turbo_meanflow_without_r", "turbo_meanflow_cosine_t_span", "turbo_no_s3gen_silence",
            "turbo_loudness_minus_23", "turbo_top_k_100"} <= {m.name for m in turbo}
    for m in turbo:
        checks = mutate.planned_checks(m)
        isolated = [name for mode, name in checks if mode is None]
        assert isolated and all(reg.checkpoints[n].stage in m.stages and n.startswith("turbo.") for n in isolated)
        assert {mode for mode, _ in checks if mode is not None} == {"turbo"}, m.name
        assert m.bisect is None or bisect.STAGES[m.bisect].model == "turbo", m.name
    english = by_name()["t3_rmsnorm_eps"]
    assert {mode for mode, _ in mutate.planned_checks(english) if mode} == {"e2e"}


def test_mtl_mutations_run_mtl_checks_and_the_mtl_cumulative_mode():
    """A multilingual mutation (its case an mtl_* one) is checked by the multilingual stages' checkpoints in
    isolated mode, then by cumulative mode "mtl"; the catalogue plants the multilingual bugs of issue 21."""
    reg = registry.load()
    mtl = [m for m in CATALOGUE if mutate.mutation_model(m) == "mtl"]
    assert {"mtl_language_tag_missing", "mtl_nfkd_skipped", "mtl_cangjie_index_from_one",
            "mtl_analyzer_head_off_by_one", "mtl_analyzer_unconditional_row", "mtl_eos_suppressed_on_text_position",
            "mtl_eos_threshold_off_by_one", "mtl_rep_penalty_1_2", "mtl_top_p_0_95",
            "mtl_speech_filter_6561"} <= {m.name for m in mtl}
    for m in mtl:
        checks = mutate.planned_checks(m)
        isolated = [name for mode, name in checks if mode is None]
        assert isolated and all(reg.checkpoints[n].stage in m.stages and n.startswith("mtl.") for n in isolated)
        assert {mode for mode, _ in checks if mode is not None} == {"mtl"}, m.name
        assert m.bisect is None or bisect.STAGES[m.bisect].model == "mtl", m.name


def _tiny_analyzer(S: int = 10, n_cond: int = 3):
    """An AlignmentStreamAnalyzer without spies over a text of S tokens after n_cond conditioning positions."""
    from mlx_impl.t3.inference.alignment_stream_analyzer import AlignmentStreamAnalyzer

    return AlignmentStreamAnalyzer(None, None, text_tokens_slice=(n_cond, n_cond + S), eos_idx=1)


def _attention_at(analyzer, column: int, rows: int):
    """Attention rows (rows, n_cond + S + 2) all on one text column, for the three watched heads."""
    i, j = analyzer.text_tokens_slice
    a = np.zeros((rows, j + 2), np.float32)
    a[:, i + column] = 1.0
    analyzer.last_aligned_attns = [mx.array(a)] * 3


@pytest.mark.parametrize("name", ["mtl_eos_suppressed_on_text_position", "mtl_eos_threshold_off_by_one"])
def test_mtl_eos_suppression_mutations_change_the_stop_logit(name):
    """The two suppression rules planted in AlignmentStreamAnalyzer.step: where the original lets the stop token
    through (cur_text_posn = S - 3 after a jump the analyzer calls a discontinuity: text_position stays 0), the
    mutated step suppresses it, and records that it did."""
    S = 10
    logits = mx.zeros((1, 4))
    plain = _tiny_analyzer(S)
    _attention_at(plain, 0, rows=plain.text_tokens_slice[1] + 2)  # the prefill: two rows from the text's end
    plain.step(logits)
    plain.curr_frame_pos = S  # nothing masked: the jump below is seen
    _attention_at(plain, S - 3, rows=1)
    out = plain.step(logits)
    assert not plain.steps[-1]["eos_suppressed"] and float(out[0, 1]) == 0.0
    with by_name()[name].patch(None):
        mutated = _tiny_analyzer(S)
        _attention_at(mutated, 0, rows=mutated.text_tokens_slice[1] + 2)
        mutated.step(logits)
        mutated.curr_frame_pos = S
        _attention_at(mutated, S - 3, rows=1)
        out = mutated.step(logits)
    assert mutated.steps[-1]["eos_suppressed"] is True and float(out[0, 1]) == -2.0 ** 15
