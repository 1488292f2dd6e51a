"""Every row of the seed checklist maps to an MLX symbol that exists (or a written reason); every VC
and Turbo module row (coverage.toml [[module]]) names an original symbol and an MLX symbol that exist,
and a check (registry checkpoints or tests) that exists."""
from parity import coverage


def test_every_checklist_row_is_covered():
    rows = coverage.rows()
    assert len(rows) == 188
    missing = [(r["index"], r["item"], r["impl_wanted"]) for r in rows if r["status"] == "missing"]
    assert not missing, missing
    assert all(r["checkpoints"] or r["section"].startswith("5.7") for r in rows)


def test_impl_check_is_real():
    assert coverage.impl_exists("mlx_impl/s3gen/hifigan.py:HiFTGenerator._istft")
    assert not coverage.impl_exists("mlx_impl/s3gen/hifigan.py:HiFTGenerator.no_such_method")
    assert not coverage.impl_exists("mlx_impl/nope.py:X")


def test_vc_and_turbo_module_rows_are_covered():
    ms = coverage.module_rows()
    assert {m["model"] for m in ms} == {"vc", "turbo", "mtl"}
    problems = [(m["item"], m["problems"]) for m in ms if m["status"] != "covered"]
    assert not problems, problems
    for wanted in ("mlx_impl/vc.py:ChatterboxVC.set_target_voice", "mlx_impl/vc.py:ChatterboxVC.generate",
                   "mlx_impl/t3/gpt2.py:GPT2Backbone", "mlx_impl/t3/inference/sampling.py:turbo_logits_processors",
                   "mlx_impl/s3gen/decoder.py:ConditionalDecoder.time_embed_mixer",
                   "mlx_impl/s3gen/flow_matching.py:CausalConditionalCFM.basic_euler",
                   "mlx_impl/tts_turbo.py:norm_loudness", "mlx_impl/tts_turbo.py:punc_norm",
                   "mlx_impl/t3/inference/alignment_stream_analyzer.py:AlignmentStreamAnalyzer.step",
                   "mlx_impl/tokenizers/tokenizer.py:MTLTokenizer", "mlx_impl/tokenizers/tokenizer.py:hiragana_normalize"):
        assert any(m["impl"] == wanted for m in ms), wanted
    vc_target = next(m for m in ms if m["impl"].endswith("set_target_voice"))
    assert "vc.ref_dict.embedding" in vc_target["checkpoints"]
    processors = next(m for m in ms if m["impl"].endswith("turbo_logits_processors"))
    assert {"turbo.t3.logits_top_k", "turbo.t3.logits_rep"} <= set(processors["checkpoints"])
    analyzer = next(m for m in ms if m["impl"].endswith("AlignmentStreamAnalyzer.step"))
    assert {"mtl.t3.analysis", "mtl.t3.logits_analyzed", "mtl.t3_greedy.analysis"} <= set(analyzer["checkpoints"])


def test_vc_and_turbo_module_checks_are_real(tmp_path, monkeypatch):
    """A wrong original symbol, MLX symbol, test, checkpoint or stage, or a row with no check at all,
    each makes the row missing."""
    bad = tmp_path / "coverage.toml"
    bad.write_text('''
[[module]]
model = "turbo"
item = "a"
original = "tts_turbo.py:ChatterboxTurboTTS.no_such"
impl = "mlx_impl/tts_turbo.py:no_such"
tests = ["tests/test_turbo_generate.py::test_no_such"]
checkpoints = ["no.such"]
stages = ["no_such_stage"]
[[module]]
model = "vc"
item = "b"
original = "vc.py:ChatterboxVC"
impl = "mlx_impl/vc.py:ChatterboxVC"
''')
    monkeypatch.setattr(coverage, "MAPPING", bad)
    a, b = coverage.module_rows()
    assert a["status"] == b["status"] == "missing"
    assert len(a["problems"]) == 5, a["problems"]
    assert b["problems"] == ["no checkpoint and no test checks it"]
