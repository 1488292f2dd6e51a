"""The Swift fixture pack (parity/pack.py): manifest against its schema and against the files, tensors
against the reference fixtures and the registry, atomic writes, and the tiny seeded variants reproduced
by the MLX implementation (>= 100 dB SNR, integers exact) through the same stage runners as the parity
tests (the English tiny set and Chatterbox Turbo's, tiny_turbo); the Chatterbox Turbo case (stages turbo_*)
beside the English one, and a missing or corrupted Turbo file (case or tiny set) as one error naming it. One
pack is built per module (the tiny original modules are exported)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("chatterbox.tts")

from parity import registry  # noqa: E402
from parity.errors import ParityError  # noqa: E402
from parity.fixtures import default_fixture_root, tensor_sha256  # noqa: E402
from parity import pack as P  # noqa: E402
from parity import pack_tiny_mtl, pack_tiny_turbo  # noqa: E402

SNR_MIN = registry.load().default("float").snr_db  # the registry's float goal
SIZE_LIMIT = 230e6  # espeak_22k + turbo_espeak + vc_espeak_to_long + mtl_de + the tiny sets tiny, tiny_turbo and
# tiny_mtl: measured 216.5 MB (cases 95.4 MB, mtl_de 33.2 of it; tiny 36.8, tiny_turbo 34.9, tiny_mtl 47.7 MB),
# plus 13.5 MB of margin
PACKED_CASES = ["espeak_22k", "turbo_espeak", "vc_espeak_to_long", "mtl_de"]
TINY_SETS = ["tiny", "tiny_turbo", "tiny_mtl"]
TINY_RANDOMS = {"tiny": {"t3.uniform_draws", "flow.start_noise", "hift.sine_phase", "hift.sine_noise"},
                "tiny_turbo": {"turbo.t3.uniform_draws", "turbo.flow.start_noise", "turbo.hift.sine_phase",
                               "turbo.hift.sine_noise"},
                "tiny_mtl": {"mtl.t3.uniform_draws", "mtl.flow.start_noise", "mtl.hift.sine_phase", "mtl.hift.sine_noise"}}


@pytest.fixture(scope="module")
def built(tmp_path_factory, parity_session):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared (2 cores)

    for case in PACKED_CASES:
        parity_session.fixture(case)  # exported when missing
    out = tmp_path_factory.mktemp("pack") / "pack"
    try:
        P.build_pack(out, cases=PACKED_CASES, log=lambda m: print(m))
    finally:
        torch.set_num_threads(threads)
    return out, json.loads((out / P.MANIFEST).read_text())


def load(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def components(manifest):
    for set_name, s in manifest["sets"].items():
        for stage, comp in s["components"].items():
            yield set_name, stage, comp


# ----------------------------------------------------------------------------- manifest and files
def test_manifest_matches_schema_and_schema_rejects_broken(built):
    _, m = built
    P.validate_manifest(m)
    broken = copy.deepcopy(m)
    _, _, comp = next(components(broken))
    del comp["tensors"][0]["role"]
    with pytest.raises(ParityError, match="role"):
        P.validate_manifest(broken)
    broken = copy.deepcopy(m)
    next(components(broken))[2]["tensors"][0]["dtype"] = "float16"
    with pytest.raises(ParityError, match="dtype"):
        P.validate_manifest(broken)
    broken = copy.deepcopy(m)
    broken["sets"]["tiny"]["weights"]["mlx"].pop("t3")
    with pytest.raises(ParityError, match="t3"):
        P.validate_manifest(broken)
    broken = copy.deepcopy(m)  # a Turbo tiny set needs Turbo's hub files, not the English ones
    w = broken["sets"]["tiny_turbo"]["weights"]["torch"]
    w["t3_cfg"] = w.pop("t3_turbo_v1")
    with pytest.raises(ParityError, match="t3_turbo_v1"):
        P.validate_manifest(broken)
    broken = copy.deepcopy(m)
    del broken["sets"]["tiny_turbo"]["model"]
    with pytest.raises(ParityError, match="model"):
        P.validate_manifest(broken)


def test_every_tensor_matches_its_file(built):
    out, m = built
    n = 0
    for set_name, stage, comp in components(m):
        arrays = load(out / comp["file"])
        assert sorted(arrays) == sorted(t["name"] for t in comp["tensors"]), (set_name, stage)
        for t in comp["tensors"]:
            a = arrays[t["name"]]
            assert list(a.shape) == t["shape"] and str(a.dtype) == t["dtype"], (set_name, t["name"])
            assert tensor_sha256(a) == t["sha256"], (set_name, t["name"])
            n += 1
    assert n > 100
    for layout in [s["weights"][layout] for s in m["sets"].values() if s["kind"] == "tiny" for layout in ("torch", "mlx")]:
        for entry in layout.values():
            w = load(out / entry["file"])
            assert len(w) == entry["n_tensors"]
            assert {k: [list(v.shape), str(v.dtype)] for k, v in w.items()} == {
                k: [e["shape"], e["dtype"]] for k, e in entry["tensors"].items()}


def test_files_listing_and_size(built):
    out, m = built
    on_disk = {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    listed = dict(m["files"])
    assert set(on_disk) - set(listed) == {"manifest.json", "README.md"}
    assert all(on_disk[k] == v for k, v in listed.items())
    total = sum(on_disk.values())
    print(f"pack: {len(on_disk)} files, {total / 1e6:.1f} MB")
    assert total < SIZE_LIMIT
    assert not list(out.parent.glob(f".{out.name}.*")), "temporary folder left behind"


def test_roles_tolerances_and_meaning_from_registry(built):
    _, m = built
    reg = registry.load()
    for set_name, stage, comp in components(m):
        roles = {t["name"]: t["role"] for t in comp["tensors"]}
        assert "expected" in roles.values(), (set_name, stage)
        for t in comp["tensors"]:
            cp = reg[t["name"]]
            assert t["tolerance"] == P.tolerance_dict(cp) and set(t["tolerance"]) == set(registry.PRECISIONS)
            assert (t["source"], t["layout"], t["kind"], t["stage"]) == (cp.source, cp.layout, cp.kind, cp.stage)
            assert (t["role"] == "random") == cp.random, t["name"]
            if t["role"] == "expected":
                assert cp.stage == stage
        for name in P.COMPONENT_INPUTS[stage]:
            assert roles[name] == "input", (stage, name)
    assert [k for k, s in m["sets"].items() if s["kind"] == "tiny"] == TINY_SETS
    for set_name in TINY_SETS:
        tiny = m["sets"][set_name]["components"]
        randoms = {t["name"] for c in tiny.values() for t in c["tensors"] if t["role"] == "random"}
        assert randoms == TINY_RANDOMS[set_name], set_name
        builder = P.tiny_builders()[set_name]
        assert list(tiny) == list(builder.STAGES) and m["sets"][set_name]["model"] == builder.MODEL
        assert set(tiny) | {x["component"] for x in m["sets"][set_name]["not_included"]} == set(
            registry.load().models[builder.MODEL])


def test_case_components_equal_the_fixtures(built, parity_session):

    out, m = built
    cases = [k for k, s in m["sets"].items() if s["kind"] == "case"]
    assert sorted(cases) == sorted(PACKED_CASES)
    for name in cases:
        fx = parity_session.fixture(name)
        assert set(m["sets"][name]["components"]) == set(registry.load().models[m["sets"][name]["model"]])
        for stage, comp in m["sets"][name]["components"].items():
            arrays = load(out / comp["file"])
            for t in comp["tensors"]:
                ref = fx.tensor(t["name"])
                if "subset" in t:
                    s = t["subset"]
                    assert t["name"] in P.PER_STEP_LOGITS and s["full_shape"] == list(ref.shape)
                    assert s["stop"] == m["t3_logit_steps"] < ref.shape[0]
                    ref = ref[s["start"]:s["stop"]]
                np.testing.assert_array_equal(arrays[t["name"]], ref, err_msg=f"{name} {t['name']}")
        assets = out / "cases" / name / "assets"
        audio = next(c for s, c in m["sets"][name]["components"].items() if s in P.AUDIO_STAGES + ("vc_source",))
        assert (out / audio["audio_file"]).is_file()
        tokenizer = {"turbo": ("vocab.json", "merges.txt"), "vc": (), "mtl": ("grapheme_mtl_merged_expanded_v1.json",)
                     }.get(m["sets"][name]["model"], ("tokenizer.json",))
        assert all((assets / f).is_file() for f in tokenizer), name


def test_turbo_case_is_packed_with_its_stages_and_validates(built):
    """The Turbo case: model turbo, one component per turbo_* stage with the English components' inputs renamed,
    GPT-2 tokenizer and clip in assets, per-step logits cut to the first steps; the schema holds it and refuses
    a Turbo set without its model or with a stage of no registry model."""
    out, m = built
    reg = registry.load()
    assert m["registry"]["models"]["turbo"] == reg.models["turbo"]
    t = m["sets"]["turbo_espeak"]
    assert t["kind"] == "case" and t["model"] == "turbo" and list(t["components"]) == reg.models["turbo"]
    assert t["checkpoint"]["name"] == "synthetic-turbo-s0" and t["case"]["params"]["norm_loudness"] is True
    comps = t["components"]
    for stage, comp in comps.items():
        english = stage.removeprefix("turbo_")
        assert len(P.COMPONENT_INPUTS[stage]) == len(P.COMPONENT_INPUTS[english]), stage
        assert all(x["name"].startswith("turbo.") for x in comp["tensors"]), stage
    roles = {x["name"]: x["role"] for c in comps.values() for x in c["tensors"]}
    assert {n for n, r in roles.items() if r == "random"} == {"turbo.t3.uniform_draws", "turbo.flow.start_noise",
                                                              "turbo.hift.sine_phase", "turbo.hift.sine_noise"}
    assert roles["turbo.t3.sampling_margin"] == "reference" and roles["turbo.t3.speech_tokens"] == "input"
    raw = next(x for x in comps["turbo_t3_decode"]["tensors"] if x["name"] == "turbo.t3.logits_raw")
    assert raw["shape"][0] == m["t3_logit_steps"] and raw["subset"]["full_shape"][0] == 201
    assert comps["turbo_t3_decode"]["params"]["top_k"] == 1000 and "Turbo" in comps["turbo_flow"]["notes"]
    broken = copy.deepcopy(m)
    del broken["sets"]["turbo_espeak"]["model"]
    with pytest.raises(ParityError, match="model"):
        P.validate_manifest(broken)
    broken = copy.deepcopy(m)
    broken["sets"]["turbo_espeak"]["components"]["turbo_flow"]["stage"] = "turbo_vocoder"
    with pytest.raises(ParityError, match="turbo_vocoder"):
        P.validate_manifest(broken)


def test_vc_case_is_packed_with_both_clips(built):
    """The voice conversion case: model vc, its four stages, the source and target clips in assets (no text,
    no tokenizer), the flow fed the source tokens and the target's reference dict; a VC case without its
    target clip fails the schema."""
    out, m = built
    v = m["sets"]["vc_espeak_to_long"]
    assert v["model"] == "vc" and list(v["components"]) == registry.load().models["vc"]
    comps = v["components"]
    for stage, key in (("vc_source", "source"), ("vc_target", "target_voice")):
        clip = out / comps[stage]["audio_file"]
        assert clip.name == Path(v["case"][key]).name and clip.read_bytes() == (P.ROOT / v["case"][key]).read_bytes()
    assert sorted(p.name for p in (out / "cases" / "vc_espeak_to_long" / "assets").iterdir()) == sorted(
        {Path(v["case"]["source"]).name, Path(v["case"]["target_voice"]).name})
    roles = {t["name"]: t["role"] for t in comps["vc_flow"]["tensors"]}
    assert [n for n, r in roles.items() if r == "input"] == P.COMPONENT_INPUTS["vc_flow"]
    assert roles["vc.flow.start_noise"] == "random" and comps["vc_flow"]["params"] == {"n_cfm_timesteps": 10}
    broken = copy.deepcopy(m)
    del broken["sets"]["vc_espeak_to_long"]["case"]["target_voice"]
    with pytest.raises(ParityError, match="vc_espeak_to_long/case"):
        P.validate_manifest(broken)


def test_mtl_case_is_packed_with_its_stages_and_validates(built, parity_session):
    """The multilingual case: model mtl, one component per mtl_* stage, its language on the case and the text
    component, the multilingual BPE (not the Cangjie mapping: German) in assets, the analyzer's decisions
    and alignment expected in full, per-step logits cut to the first steps; the schema refuses a multilingual
    set without its language."""
    out, m = built
    reg = registry.load()
    t = m["sets"]["mtl_de"]
    assert t["kind"] == "case" and t["model"] == "mtl" and list(t["components"]) == reg.models["mtl"]
    assert t["case"]["language"] == "de" and t["components"]["mtl_text"]["language"] == "de"
    assert t["checkpoint"]["name"] == "synthetic-mtl-s0"
    comps = t["components"]
    for stage, comp in comps.items():
        assert all(x["name"].startswith("mtl.") for x in comp["tensors"]), stage
    assets = out / "cases" / "mtl_de" / "assets"
    ckpt = parity_session.ckpt_for("mtl").path
    assert sorted(p.name for p in assets.iterdir()) == sorted(["grapheme_mtl_merged_expanded_v1.json",
                                                              Path(t["case"]["audio"]).name])
    assert (assets / "grapheme_mtl_merged_expanded_v1.json").read_bytes() == (
        ckpt / "grapheme_mtl_merged_expanded_v1.json").read_bytes()
    tensors = {x["name"]: x for c in comps.values() for x in c["tensors"]}
    roles = {n: x["role"] for n, x in tensors.items()}
    assert {n for n, r in roles.items() if r == "random"} == {"mtl.t3.uniform_draws", "mtl.flow.start_noise",
                                                              "mtl.hift.sine_phase", "mtl.hift.sine_noise"}
    assert roles["mtl.t3.speech_tokens"] == "input" and roles["mtl.t3.analysis"] == "expected"
    n_steps = tensors["mtl.t3.speech_tokens"]["shape"][1]
    assert tensors["mtl.t3.analysis"]["shape"] == [n_steps, 10] and "subset" not in tensors["mtl.t3.analysis"]
    assert tensors["mtl.t3.alignment"]["shape"][0] >= n_steps and "subset" not in tensors["mtl.t3.alignment"]
    analyzed = tensors["mtl.t3.logits_analyzed"]
    assert analyzed["shape"][0] == m["t3_logit_steps"] and analyzed["subset"]["full_shape"][0] == n_steps
    assert tensors["mtl.t3.text_tokens"]["shape"][0] == 2  # the CFG copy, always
    assert comps["mtl_t3_decode"]["params"]["repetition_penalty"] == 2.0 and "AlignmentStreamAnalyzer" in (
        comps["mtl_t3_decode"]["notes"])
    assert [x["name"] for x in comps["mtl_flow"]["tensors"] if x["role"] == "input"] == P.COMPONENT_INPUTS["mtl_flow"]
    broken = copy.deepcopy(m)
    del broken["sets"]["mtl_de"]["case"]["language"]
    with pytest.raises(ParityError, match="language"):
        P.validate_manifest(broken)


def test_mtl_missing_or_corrupted_file_is_one_clear_error(built, tmp_path):
    """check_pack_files names a missing multilingual component file; a multilingual fixture file that is not
    safetensors stops the pack with one error naming it."""
    import shutil

    from parity.fixtures import Fixture

    out, m = built
    copy_dir = tmp_path / "pack"
    shutil.copytree(out, copy_dir)
    (copy_dir / "cases" / "mtl_de" / "mtl_t3_decode.safetensors").unlink()
    with pytest.raises(ParityError, match="pack file missing: .*mtl_de/mtl_t3_decode.safetensors"):
        P.check_pack_files(copy_dir)
    fx_copy = tmp_path / "mtl_de"
    shutil.copytree(default_fixture_root() / "mtl_de", fx_copy)
    (fx_copy / "mtl_t3_decode.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ParityError, match="fixture file .*mtl_t3_decode.safetensors"):
        P.write_case_set(Fixture.open(fx_copy), tmp_path / "set", "cases/mtl_de", 6, None, "mtl")


def test_turbo_missing_or_corrupted_file_is_one_clear_error(built, tmp_path):
    """check_pack_files (pack --verify) names a missing, truncated or altered Turbo component file; a missing
    or unreadable Turbo fixture file stops the pack with one error naming it."""
    import shutil

    from parity.fixtures import Fixture

    out, m = built
    assert P.check_pack_files(out) > 100
    copy_dir = tmp_path / "pack"
    shutil.copytree(out, copy_dir)
    flow = copy_dir / "cases" / "turbo_espeak" / "turbo_flow.safetensors"
    flow.unlink()
    with pytest.raises(ParityError, match="pack file missing: .*turbo_espeak/turbo_flow.safetensors"):
        P.check_pack_files(copy_dir)
    shutil.copyfile(out / "cases" / "turbo_espeak" / "turbo_flow.safetensors", flow)
    decode = copy_dir / "cases" / "turbo_espeak" / "turbo_t3_decode.safetensors"
    data = bytearray(decode.read_bytes())
    data[-8:] = bytes(8 * [0x7F])  # the same size, a tensor's last bytes altered
    decode.write_bytes(bytes(data))
    with pytest.raises(ParityError, match="turbo_t3_decode.safetensors: tensor '.*' differs from the manifest's sha256"):
        P.check_pack_files(copy_dir)
    decode.write_bytes(bytes(data[:1000]))
    with pytest.raises(ParityError, match="turbo_t3_decode.safetensors: 1000 bytes, the manifest lists"):
        P.check_pack_files(copy_dir)

    fx_copy = tmp_path / "turbo_espeak"
    shutil.copytree(default_fixture_root() / "turbo_espeak", fx_copy)
    (fx_copy / "turbo_hift.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ParityError, match="fixture file .*turbo_hift.safetensors"):
        P.write_case_set(Fixture.open(fx_copy), tmp_path / "set", "cases/turbo_espeak", 6, None, "turbo")


def registry_cases():
    from parity.cases import load_cases

    return list(load_cases())


def test_readme_explains_loading_tolerance_and_replay(built):
    out, _ = built
    text = (out / "README.md").read_text()
    for phrase in ("loadArrays(url:", "searchsorted", "cumsum(float64(probs))", "flow.start_noise", "hift.sine_phase",
                   "snr_db = -10 * log10", "Channels-last", "tolerance"):
        assert phrase in text, phrase


# ----------------------------------------------------------------------------- tiny variants
def test_tiny_mlx_weights_are_the_sanitized_torch_weights(built):
    out, m = built
    from mlx_impl.convert import s3gen, t3, t3_turbo, voice_encoder

    sanitize = {"ve": voice_encoder.sanitize, "t3_cfg": t3.sanitize, "t3_turbo_v1": lambda w: t3_turbo.sanitize(w)[0],
                "t3_mtl23ls_v2": t3.sanitize, "s3gen": s3gen.sanitize, "s3gen_meanflow": s3gen.sanitize}
    for set_name in TINY_SETS:
        w = m["sets"][set_name]["weights"]
        torch_files = list(w["torch"])
        assert [f"{k}.safetensors" for k in torch_files] == list(P.tiny_builders()[set_name].TORCH_FILES)
        for source, target in zip(torch_files, ("ve", "t3", "s3gen")):
            ref = sanitize[source](load(out / w["torch"][source]["file"]))
            got = load(out / w["mlx"][target]["file"])
            assert sorted(got) == sorted(ref), (set_name, target)
            for k in ref:
                np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{set_name} {k}")
    # really tiny: the T3 backbones are 2 x 64 wide, the flow encoder 64 wide
    tw = load(out / m["sets"]["tiny"]["weights"]["torch"]["t3_cfg"]["file"])
    assert tw["tfmr.layers.1.self_attn.q_proj.weight"].shape == (64, 64) and "tfmr.layers.2.mlp.up_proj.weight" not in tw
    assert load(out / m["sets"]["tiny"]["weights"]["mlx"]["s3gen"]["file"])[
        "flow.encoder.pre_lookahead_layer.conv1.weight"].shape[0] == 64
    tw = load(out / m["sets"]["tiny_turbo"]["weights"]["torch"]["t3_turbo_v1"]["file"])
    assert tw["tfmr.h.1.attn.c_attn.weight"].shape == (64, 192) and "tfmr.h.2.ln_1.weight" not in tw
    assert tw["speech_emb.weight"].shape == (6563, 64) and tw["text_emb.weight"].shape == (512, 64)
    assert "flow.decoder.estimator.time_embed_mixer.weight" in load(
        out / m["sets"]["tiny_turbo"]["weights"]["torch"]["s3gen_meanflow"]["file"])  # MeanFlow
    tw = load(out / m["sets"]["tiny_mtl"]["weights"]["torch"]["t3_mtl23ls_v2"]["file"])  # the analyzer's layers exist
    assert tw["tfmr.layers.13.self_attn.q_proj.weight"].shape == (64, 64) and "tfmr.layers.14.mlp.up_proj.weight" not in tw
    assert tw["text_emb.weight"].shape == (2454, 64) and not tw["speech_head.weight"][6563:].any()
    for name in ("ve", "s3gen"):  # the same seeds and sizes as the English tiny set's: the same weights
        english, mtl = (load(out / m["sets"][s]["weights"]["mlx"][name]["file"]) for s in ("tiny", "tiny_mtl"))
        assert sorted(english) == sorted(mtl) and all(np.array_equal(english[k], mtl[k]) for k in english), name


def test_tiny_fixtures_exercise_the_model(built):
    out, m = built
    fx = P.PackFixture(out, "tiny")
    assert len(np.unique(fx.tensor("s3tok.prompt_tokens"))) > 20
    f0 = fx.tensor("hift.f0")
    assert (f0 <= 10).any() and (f0 > 10).any(), "F0 should have unvoiced and voiced frames"
    assert np.all(fx.tensor("hift.sine_phase")[:, 0] == 0) and np.any(fx.tensor("hift.sine_phase")[:, 1:] != 0)
    sampled, greedy = fx.tensor("t3.speech_tokens"), fx.tensor("t3_greedy.speech_tokens")
    assert sampled.shape[1] >= 4 and not np.array_equal(sampled, greedy)
    assert np.isinf(fx.tensor("t3.logits_min_p")).any()  # min_p filtering happens
    assert fx.tensor("flow.speech_tokens").shape[1] >= 4


def test_tiny_turbo_fixtures_exercise_the_model(built):
    """The Turbo tiny set runs every part of Turbo's path: a varied T3 prompt, the loudness step, top-k and
    top-p filtering, sampled tokens other than the greedy ones, generate()'s hand-over (three S3GEN_SIL),
    MeanFlow's two steps, voiced and unvoiced F0."""
    out, m = built
    fx = P.PackFixture(out, "tiny_turbo")
    assert m["sets"]["tiny_turbo"]["case"]["params"]["max_gen_len"] == pack_tiny_turbo.CONFIG["case"]["max_gen_len"]
    assert len(np.unique(fx.tensor("turbo.s3tok.prompt_tokens"))) > 20
    sampled, greedy = fx.tensor("turbo.t3.speech_tokens"), fx.tensor("turbo.t3_greedy.speech_tokens")
    assert sampled.shape[1] >= 4 and not np.array_equal(sampled, greedy)
    assert np.isinf(fx.tensor("turbo.t3.logits_top_k")).mean() > 0.5  # top-k 1000 of 6563
    assert np.isinf(fx.tensor("turbo.t3.logits_top_p")).sum() > np.isinf(fx.tensor("turbo.t3.logits_top_k")).sum()
    speech = sampled[sampled < 6561]
    assert fx.tensor("turbo.flow.speech_tokens").tolist() == [speech.tolist() + [4299] * 3]
    assert not np.array_equal(fx.tensor("turbo.flow.estimator_first"), fx.tensor("turbo.flow.estimator_last"))
    f0 = fx.tensor("turbo.hift.f0")
    assert (f0 <= 10).any() and (f0 > 10).any(), "F0 should have unvoiced and voiced frames"


def test_tiny_mtl_fixtures_exercise_the_analyzer(built):
    """The multilingual tiny set runs the analyzer for real: its decisions change over the steps, it suppresses
    the stop token, the alignment rows follow the text; the CFG copy of the text; F0 voiced and unvoiced."""
    out, m = built
    fx = P.PackFixture(out, "tiny_mtl")
    assert m["sets"]["tiny_mtl"]["case"]["language"] == "de"
    assert fx.tensor("mtl.t3.text_tokens").shape[0] == 2
    for prefix in ("mtl.t3", "mtl.t3_greedy"):
        analysis = fx.tensor(f"{prefix}.analysis")
        assert analysis.shape == (fx.tensor(f"{prefix}.speech_tokens").shape[1], 10)
        assert len(np.unique(analysis[:, 0])) > 1, f"{prefix}: the alignment position never moves"
        assert analysis[:, 8].any(), f"{prefix}: the stop token is never suppressed"
    assert np.isinf(fx.tensor("mtl.t3.logits_min_p")).any()
    assert not np.array_equal(fx.tensor("mtl.t3.speech_tokens"), fx.tensor("mtl.t3_greedy.speech_tokens"))
    f0 = fx.tensor("mtl.hift.f0")
    assert (f0 <= 10).any() and (f0 > 10).any(), "F0 should have unvoiced and voiced frames"


@pytest.mark.parametrize("set_name", TINY_SETS)
def test_mlx_reproduces_the_tiny_set(built, set_name):
    out, m = built
    results = P.verify_tiny(out, set_name)
    expected = {t["name"] for c in m["sets"][set_name]["components"].values() for t in c["tensors"]
                if t["role"] == "expected"}
    assert set(results) == expected
    fails = []
    for name, r in results.items():
        met = r["metrics"]
        assert met is not None, f"{name}: no MLX runner output"
        print(f"{set_name} {name}: {met.headline(r['kind'])}")
        if met.length_mismatch:
            fails.append(f"{name}: shape")
        elif r["kind"] == "int":
            if met.exact != 1.0:
                fails.append(f"{name}: exact {met.exact}")
        elif met.nonfinite_mismatch or met.snr_db < SNR_MIN:
            fails.append(f"{name}: SNR {met.snr_db:.1f} dB, nonfinite mismatch {met.nonfinite_mismatch}")
    assert not fails, fails


@pytest.mark.parametrize("set_name, file, key, broken, intact", [
    ("tiny", "s3gen", "flow.decoder.estimator.final_proj.weight", "flow.estimator_first", "ve.speaker_emb"),
    ("tiny_turbo", "t3", "tfmr.h.1.mlp.c_proj.weight", "turbo.t3.logits_raw", "turbo.flow.output_mel"),
    ("tiny_mtl", "t3", "tfmr.layers.12.self_attn.v_proj.weight", "mtl.t3.logits_raw", "mtl.ve.speaker_emb"),
])
def test_verify_detects_a_wrong_weight(built, tmp_path, set_name, file, key, broken, intact):
    """The check can fail: one perturbed MLX weight breaks the outputs of its module, and only those."""
    import shutil

    from safetensors.numpy import save_file

    out, m = built
    copy_dir = tmp_path / "pack"
    shutil.copytree(out, copy_dir)
    f = copy_dir / m["sets"][set_name]["weights"]["mlx"][file]["file"]
    w = load(f)
    w[key] = w[key] * np.float32(1.001)
    save_file(w, str(f))
    results = P.verify_tiny(copy_dir, set_name)
    assert results[broken]["metrics"].snr_db < SNR_MIN
    assert results[intact]["metrics"].snr_db >= SNR_MIN  # the others are unaffected


@pytest.mark.parametrize("set_name, t3_file", [("tiny_turbo", "t3_turbo_v1"), ("tiny_mtl", "t3_mtl23ls_v2")])
def test_tiny_missing_or_corrupted_file_is_one_clear_error(built, tmp_path, set_name, t3_file):
    """check_pack_files (pack --verify) names a missing or altered tiny Turbo / multilingual weight file;
    verify_tiny names an MLX weight file that is not safetensors."""
    import shutil

    out, m = built
    copy_dir = tmp_path / "pack"
    shutil.copytree(out, copy_dir)
    weights = m["sets"][set_name]["weights"]
    t3_path = copy_dir / weights["torch"][t3_file]["file"]
    t3_path.unlink()
    with pytest.raises(ParityError, match=f"pack file missing: .*{set_name}/weights/torch/{t3_file}.safetensors"):
        P.check_pack_files(copy_dir)
    shutil.copyfile(out / weights["torch"][t3_file]["file"], t3_path)
    mlx_file = copy_dir / weights["mlx"]["s3gen"]["file"]
    data = bytearray(mlx_file.read_bytes())
    data[-4:] = bytes(4 * [0x7F])  # the same size, the last weight's last bytes altered
    mlx_file.write_bytes(bytes(data))
    with pytest.raises(ParityError, match=f"{set_name}/weights/mlx/s3gen.safetensors: its sha256 differs"):
        P.check_pack_files(copy_dir)
    mlx_file.write_bytes(b"not a safetensors file")
    with pytest.raises(ParityError, match=f"tiny weights .*{set_name}/weights/mlx/s3gen.safetensors: not a readable"):
        P.verify_tiny(copy_dir, set_name)


# ----------------------------------------------------------------------------- writing
def test_failed_pack_leaves_the_old_one_and_no_temporary(built, tmp_path):
    target = tmp_path / "p"
    target.mkdir()
    (target / "marker").write_text("old")
    with pytest.raises(ParityError, match="sets"):  # nothing to pack: the manifest fails its schema
        P.build_pack(target, cases=[], tiny=False)
    assert (target / "marker").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["p"]
    with pytest.raises(ParityError, match="unknown case"):
        P.build_pack(target, cases=["no_such_case"], tiny=False)


def test_pack_replaces_an_existing_folder(tmp_path, built):
    present = PACKED_CASES
    target = tmp_path / "p"
    target.mkdir()
    (target / "marker").write_text("old")
    P.build_pack(target, cases=present[:1], tiny=False, t3_steps=2)
    m = json.loads((target / "manifest.json").read_text())
    assert not (target / "marker").exists() and "tiny" not in m["sets"] and m["t3_logit_steps"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_cli_has_pack():
    from parity.cli import build_parser

    args = build_parser().parse_args(["pack", "--out", "x", "--cases", "espeak_22k", "--t3-steps", "3", "--verify"])
    assert args.fn is P.cmd_pack and args.cases == ["espeak_22k"] and args.t3_steps == 3 and args.verify
