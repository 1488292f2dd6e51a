"""The Swift fixture pack (parity/pack.py): manifest against its schema and against the files, tensors
against the reference fixtures and the registry, atomic writes, and the tiny seeded variants reproduced
by the MLX implementation (>= 100 dB SNR, integers exact) through the same stage runners as the parity
tests. One pack is built per module (about a minute: the tiny original modules are exported)."""
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

SNR_MIN = registry.load().default("float").snr_db  # the registry's float goal
SIZE_LIMIT = 80e6  # one case + the tiny set (measured 59.9 MB for espeak_22k)
PACKED_CASES = ["espeak_22k"]


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
    for layout in ("torch", "mlx"):
        for entry in m["sets"]["tiny"]["weights"][layout].values():
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
    tiny = m["sets"]["tiny"]["components"]
    randoms = {t["name"] for c in tiny.values() for t in c["tensors"] if t["role"] == "random"}
    assert randoms == {"t3.uniform_draws", "flow.start_noise", "hift.sine_phase", "hift.sine_noise"}
    assert set(tiny) == set(P.TINY_STAGES)


def test_case_components_equal_the_fixtures(built, parity_session):

    out, m = built
    cases = [k for k, s in m["sets"].items() if s["kind"] == "case"]
    assert sorted(cases) == sorted(PACKED_CASES)
    for name in cases:
        fx = parity_session.fixture(name)
        assert set(m["sets"][name]["components"]) == set(registry.load().stages)
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
        assert (assets / "tokenizer.json").is_file() and (out / m["sets"][name]["components"]["audio"]["audio_file"]).is_file()


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
    w = m["sets"]["tiny"]["weights"]
    torch_dir = out / "tiny" / "weights" / "torch"
    from mlx_impl.convert import s3gen, t3, voice_encoder

    converted = {"ve.safetensors": voice_encoder.sanitize(load(torch_dir / "ve.safetensors")),
                 "t3.safetensors": t3.sanitize(load(torch_dir / "t3_cfg.safetensors")),
                 "s3gen.safetensors": s3gen.sanitize(load(torch_dir / "s3gen.safetensors"))}
    for fname, ref in converted.items():
        got = load(out / w["mlx"][fname.split(".")[0]]["file"])
        assert sorted(got) == sorted(ref), fname
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    # really tiny: the T3 backbone is 2 x 64 wide, the flow encoder 64 wide
    tw = load(out / w["torch"]["t3_cfg"]["file"])
    assert tw["tfmr.layers.1.self_attn.q_proj.weight"].shape == (64, 64) and "tfmr.layers.2.mlp.up_proj.weight" not in tw
    assert load(out / w["mlx"]["s3gen"]["file"])["flow.encoder.pre_lookahead_layer.conv1.weight"].shape[0] == 64


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


def test_mlx_reproduces_the_tiny_set(built):
    out, m = built
    results = P.verify_tiny(out)
    expected = {t["name"] for c in m["sets"]["tiny"]["components"].values() for t in c["tensors"] if t["role"] == "expected"}
    assert set(results) == expected
    fails = []
    for name, r in results.items():
        met = r["metrics"]
        assert met is not None, f"{name}: no MLX runner output"
        print(f"tiny {name}: {met.headline(r['kind'])}")
        if met.length_mismatch:
            fails.append(f"{name}: shape")
        elif r["kind"] == "int":
            if met.exact != 1.0:
                fails.append(f"{name}: exact {met.exact}")
        elif met.nonfinite_mismatch or met.snr_db < SNR_MIN:
            fails.append(f"{name}: SNR {met.snr_db:.1f} dB, nonfinite mismatch {met.nonfinite_mismatch}")
    assert not fails, fails


def test_verify_detects_a_wrong_weight(built, tmp_path):
    """The check can fail: one perturbed MLX weight of the flow estimator breaks the flow's outputs."""
    import shutil

    from safetensors.numpy import save_file

    out, m = built
    copy_dir = tmp_path / "pack"
    shutil.copytree(out, copy_dir)
    f = copy_dir / m["sets"]["tiny"]["weights"]["mlx"]["s3gen"]["file"]
    w = load(f)
    key = "flow.decoder.estimator.final_proj.weight"
    w[key] = w[key] * np.float32(1.001)
    save_file(w, str(f))
    results = P.verify_tiny(copy_dir)
    assert results["flow.estimator_first"]["metrics"].snr_db < SNR_MIN
    assert results["ve.speaker_emb"]["metrics"].snr_db >= SNR_MIN  # the others are unaffected


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
