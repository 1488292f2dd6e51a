"""Strict conversion of the (synthetic) checkpoint to the MLX single-file layout."""
import numpy as np
import pytest

from mlx_impl.convert.cli import PUBLISHED_COUNTS, SOURCE_FILES, check_assignment, convert_state
from mlx_impl.convert import s3gen as s3gen_conv
from mlx_impl.convert.common import ConversionError


@pytest.fixture(scope="module")
def states(parity_session):
    ck = parity_session.ckpt
    return {c: ck.state(c) for c in ("ve", "t3", "s3gen")}


def test_round_trip_assigns_everything(states):
    weights, ignored, n_source = convert_state(states)
    counts = {p: sum(k.startswith(p) for k in weights) for p in PUBLISHED_COUNTS}
    # every source tensor is either converted (1:1, weight-norm pairs folded) or ignored with a reason
    assert all(ignored.values())
    assert all(k.endswith("num_batches_tracked") for k in ignored)
    assert counts["ve."] == PUBLISHED_COUNTS["ve."]
    assert sum(counts.values()) == len(weights)
    check_assignment(weights, int(weights["t3.text_emb.weight"].shape[0]))  # zero unassigned, shapes match


@pytest.mark.parametrize("component,key", [
    ("s3gen", "flow.encoder.encoders.0.self_attn.linear_out.bias"),
    ("t3", "tfmr.layers.3.mlp.gate_proj.weight"),
    ("s3gen", "mel2wav.conv_post.parametrizations.weight.original1"),
    ("ve", "lstm.weight_hh_l2"),
])
def test_missing_tensor_fails_with_its_name(states, component, key):
    broken = {c: dict(s) for c, s in states.items()}
    assert key in broken[component], key
    del broken[component][key]
    with pytest.raises(ConversionError) as e:
        weights, _, _ = convert_state(broken)
        check_assignment(weights, 704)
    assert key.split(".")[-2] in str(e.value) or key in str(e.value), str(e.value)
    assert SOURCE_FILES[component] in str(e.value), str(e.value)  # the file that lacks it


@pytest.mark.parametrize("component,key", [
    ("s3gen", "flow.decoder.estimator.down_blocks.0.0.block1.block.0.weight"),
    ("t3", "cond_enc.spkr_enc.weight"),
])
def test_wrong_shape_fails_with_its_name(states, component, key):
    broken = {c: dict(s) for c, s in states.items()}
    assert key in broken[component], key
    w = broken[component][key]
    broken[component][key] = np.zeros(w.shape[:-1] + (w.shape[-1] + 1,), w.dtype)
    with pytest.raises(ConversionError) as e:
        weights, _, _ = convert_state(broken)
        check_assignment(weights, 704, s3gen_conv.source_names(broken["s3gen"]))
    msg = str(e.value)
    assert "shape" in msg and any(part in msg for part in (key, key.rsplit(".", 1)[0])), msg
    assert SOURCE_FILES[component] in msg, msg


def test_unknown_source_tensor_is_an_error(states):
    broken = {c: dict(s) for c, s in states.items()}
    broken["s3gen"]["flow.surprise.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match="surprise"):
        weights, _, _ = convert_state(broken)
        check_assignment(weights, 704)
    broken["s3gen"].pop("flow.surprise.weight")
    broken["s3gen"]["elsewhere.weight"] = np.zeros(3, np.float32)  # outside every known module
    with pytest.raises(ConversionError, match="elsewhere"):
        convert_state(broken)


def test_float16_layout_keeps_the_front_end_float32_and_prepares_conditionals(parity_session, tmp_path):
    """`convert --dtype float16`: T3, the flow and HiFT in float16; the VoiceEncoder, S3 tokenizer and CAMPPlus
    stay float32 in the file and when loaded (their kernels take float32 only: the S3 tokenizer's depthwise
    convolution refused a float16 layout's input before), so the folder conditions on a clip and decodes."""
    import subprocess
    import sys

    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_impl.tts import ChatterboxTTS
    from mlx_impl.validate import safetensors_header
    from parity.cases import get_case

    out = tmp_path / "fp16"
    r = subprocess.run([sys.executable, "-m", "mlx_impl.convert", "--checkpoint", str(parity_session.ckpt.path),
                        "--out", str(out), "--dtype", "float16"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    header = safetensors_header(out / "model.safetensors")
    dtypes = {k: v["dtype"] for k, v in header.items() if isinstance(v, dict) and "dtype" in v}
    front_end = {dtypes[k] for k in dtypes if k.startswith(("ve.", "s3_tokenizer.", "s3gen.speaker_encoder."))}
    assert front_end == {"F32"}
    assert dtypes["t3.speech_head.weight"] == dtypes["s3gen.mel2wav.conv_post.weight"] == "F16"

    tts = ChatterboxTTS.from_pretrained(str(out))
    assert dict(tree_flatten(tts.t3.parameters()))["speech_head.weight"].dtype == mx.float16
    assert dict(tree_flatten(tts.ve.parameters()))["proj.weight"].dtype == mx.float32
    case = get_case("espeak_22k")
    conds = tts.prepare_conditionals(str(case.audio_path))
    assert conds.t3.speaker_emb.dtype == mx.float32
    tokens = tts.t3.inference(t3_cond=conds.t3, text_tokens=tts.text_tokens(case.text), max_new_tokens=4)
    assert tokens.shape[1] >= 1
