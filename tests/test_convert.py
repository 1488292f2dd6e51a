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
