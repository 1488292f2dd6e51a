"""Voice conversion on the synthetic checkpoint (issue 20): the original ChatterboxVC loads it
unmodified; its export is deterministic and fails cleanly on bad input; `chatterbox-parity vc` and
`python -m mlx_impl.vc_cli` write a playable 24 kHz wav of the original's length."""
import sys

import numpy as np
import pytest

from tests.export_checks import (CLI, assert_one_error_line_and_no_fixture, assert_same_bytes, linked_checkpoint,
                                 run_without_warnings)

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def original_vc(parity_session):
    from reference.export_vc import load_original_vc

    return load_original_vc(parity_session.ckpt)


@pytest.fixture(scope="module")
def short_vc_case(tmp_path_factory):
    """A short VC case (time): the first 1.2 s of stereo_44k to the first 1.5 s of espeak_22k."""
    import soundfile as sf

    from parity.cases import VCCase, load_vc_cases

    d = tmp_path_factory.mktemp("vc_short")
    base = load_vc_cases()["vc_stereo_to_espeak"]
    for name, path, seconds in (("source.wav", base.source_path, 1.2), ("target.wav", base.target_path, 1.5)):
        audio, sr = sf.read(str(path), dtype="float32")
        sf.write(d / name, audio[: int(seconds * sr)], sr)
    return VCCase(name="vc_short", source=str(d / "source.wav"), target_voice=str(d / "target.wav"), seed=7,
                  params=dict(base.params))


def test_vc_original_loads_the_synthetic_checkpoint_unmodified(parity_session, original_vc):
    """ChatterboxVC.from_local reads s3gen.safetensors with strict=False: only the two buffers the
    tokenizer computes itself may be missing, nothing unexpected; conds.pt gives the built-in voice."""
    from safetensors.torch import load_file

    result = original_vc.s3gen.load_state_dict(load_file(parity_session.ckpt.path / "s3gen.safetensors"), strict=False)
    assert sorted(result.missing_keys) == ["tokenizer._mel_filters", "tokenizer.window"]
    assert result.unexpected_keys == []
    assert original_vc.ref_dict is not None and original_vc.ref_dict["prompt_feat"].shape[-1] == 80


@pytest.fixture(scope="module")
def short_export(tmp_path_factory, parity_session, original_vc, short_vc_case):
    """The reference export of the short case (its folder)."""
    from reference.export_vc import export_vc_case

    out = tmp_path_factory.mktemp("vc_short_fx")
    return export_vc_case(parity_session.ckpt, short_vc_case, out_root=out, vc=original_vc, log=lambda m: None)


def test_vc_export_twice_is_bit_identical(tmp_path, parity_session, original_vc, short_vc_case, short_export):
    from reference.export_vc import export_vc_case

    a = short_export
    b = export_vc_case(parity_session.ckpt, short_vc_case, out_root=tmp_path, vc=original_vc, log=lambda m: None)
    files = sorted(p.name for p in a.iterdir())
    assert files == ["manifest.json", "vc_flow.safetensors", "vc_hift.safetensors", "vc_source.safetensors",
                     "vc_target.safetensors"]
    assert_same_bytes(a, b, files)
    from parity.fixtures import Fixture

    fx = Fixture.open(a)
    assert fx.manifest["sanity"]["ok"], fx.manifest["sanity"]
    assert fx.tensor("vc.source_tokens").dtype == np.int32 and fx.tensor("vc.ref_dict.prompt_token").dtype == np.int32
    # the flow's output: 2 mel frames a token over prompt + source, minus the prompt's own mel frames (an odd
    # count when the target's length is not a multiple of 40 ms: one frame fewer), 480 samples a frame
    n_prompt, n_feat = fx.tensor("vc.ref_dict.prompt_token").shape[-1], fx.tensor("vc.ref_dict.prompt_feat").shape[1]
    n_mel = 2 * (n_prompt + fx.tensor("vc.source_tokens").shape[-1]) - n_feat
    assert fx.tensor("vc.output_mel").shape[-1] == n_mel and fx.tensor("vc.wav").shape[-1] == 480 * n_mel


@pytest.mark.parametrize("problem", ["missing_s3gen", "missing_source"])
def test_vc_export_bad_input_one_clear_error_no_fixture(tmp_path, parity_session, problem):
    ckpt = parity_session.ckpt.path
    out = tmp_path / "fx"
    args = CLI + ["export", "--case", "vc_stereo_to_espeak", "--out", str(out)]
    if problem == "missing_s3gen":
        args += ["--checkpoint", str(linked_checkpoint(ckpt, tmp_path, drop="s3gen.safetensors"))]
        expect = "s3gen.safetensors"
    else:
        args += ["--checkpoint", str(ckpt), "--case", "vc_nothere"]
        expect = "unknown case"
    r = run_without_warnings(args, tmp_path)
    assert r.returncode == 2
    assert_one_error_line_and_no_fixture(r, expect, out)


@pytest.mark.parametrize("command", [["-m", "parity.cli", "vc"]], ids=["chatterbox-parity"])
def test_vc_command_writes_a_playable_wav_of_the_reference_length(tmp_path, command, parity_session, short_vc_case,
                                                                  short_export):
    """The short case's source and target: the output has the original's length (the same S3 tokens,
    960 samples each), and the progress bar runs through the three stages. (python -m mlx_impl.vc_cli
    is the same command: tests/unit/test_vc_cli.py runs both entry points.)"""
    import soundfile as sf

    from parity.fixtures import Fixture

    case = short_vc_case
    ref_wav = Fixture.open(short_export).tensor("vc.wav")
    out = tmp_path / "out.wav"
    r = run_without_warnings([sys.executable, *command, "--source", str(case.source_path),
                              "--target-voice", str(case.target_path), "--out", str(out),
                              "--model", str(parity_session.ckpt.path)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no hidden temporary left beside it
    audio, sr = sf.read(str(out), dtype="float32")
    assert sr == 24000 and audio.ndim == 1 and np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert len(audio) == ref_wav.shape[-1]
    assert "3/3" in r.stderr and "VC" in r.stderr, r.stderr[-500:]


def test_vc_loads_the_mlx_layout_like_the_hubs(tmp_path, parity_session):
    """ChatterboxVC.from_pretrained on an MLX-layout folder (model.safetensors with the s3gen. and
    s3_tokenizer. tensors of `convert`, conds.safetensors) holds the same S3Gen and built-in voice as
    on the hub's folder."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_impl.conditionals import Conditionals
    from mlx_impl.convert import s3gen as s3gen_conv
    from mlx_impl.load import read_state_dict
    from mlx_impl.vc import ChatterboxVC

    hub = parity_session.ckpt.path
    weights = {("s3_tokenizer." + k[len("tokenizer."):]) if k.startswith("tokenizer.") else "s3gen." + k: mx.array(v)
               for k, v in s3gen_conv.sanitize(read_state_dict(hub / "s3gen.safetensors")).items()}
    mx.save_safetensors(str(tmp_path / "model.safetensors"), weights)
    Conditionals.load(hub / "conds.pt").save(tmp_path / "conds.safetensors")
    a, b = ChatterboxVC.from_pretrained(str(hub)), ChatterboxVC.from_pretrained(str(tmp_path))
    pa, pb = dict(tree_flatten(a.s3gen.parameters())), dict(tree_flatten(b.s3gen.parameters()))
    assert pa.keys() == pb.keys() and len(pa) > 1000
    assert all(mx.array_equal(pa[k], pb[k]).item() for k in pa)
    for k in ("prompt_token", "prompt_feat", "embedding"):
        assert mx.array_equal(a.ref_dict[k], b.ref_dict[k]).item(), k
