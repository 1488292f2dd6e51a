"""Loading without holding a model twice: load_strict consumes its dict (so each source array can be
released as its copy is made), set_half_precision casts one parameter at a time (cast_in_place), and
both give exactly what the plain forms give."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_impl.convert.common import ConversionError, load_strict
from mlx_impl.load import cast_in_place


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(8, 16), nn.Linear(16, 4, bias=False)]
        self.norm = nn.RMSNorm(4)
        self.table = nn.Embedding(10, 4)
        self.ids = mx.arange(5)  # an integer array: never cast
        self.scale = mx.ones(4)  # a float array of a module with children (not a leaf)


def params(module) -> dict:
    return {k: np.array(v.astype(mx.float32)) if v.dtype == mx.bfloat16 else np.array(v)
            for k, v in tree_flatten(module.parameters())}


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_cast_in_place_equals_set_dtype(dtype):
    mx.random.seed(0)
    a = Nested()
    b = Nested()
    b.update(a.parameters())
    a.set_dtype(dtype)
    cast_in_place(b, dtype)
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert pa[k].dtype == pb[k].dtype and np.array_equal(pa[k], pb[k]), k
    assert b.ids.dtype == mx.int32 and b.layers[0].weight.dtype == dtype and b.scale.dtype == dtype


def test_load_strict_consumes_the_dict_it_assigns():
    m = Nested()
    weights = {k: np.full(v.shape, 0.5, dtype=np.float32) if mx.issubdtype(v.dtype, mx.floating) else np.array(v)
               for k, v in tree_flatten(m.parameters())}
    expected = {k: v.copy() for k, v in weights.items()}
    load_strict(m, weights, what="nested")
    assert weights == {}
    got = params(m)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_a_refused_dict_is_left_as_it_was():
    m = Nested()
    weights = {k: np.zeros(v.shape, dtype=np.float32) for k, v in tree_flatten(m.parameters())}
    weights["norm.weight"] = np.zeros(5, dtype=np.float32)  # the wrong shape
    with pytest.raises(ConversionError, match="norm.weight"):
        load_strict(m, weights, what="nested")
    assert len(weights) == len(tree_flatten(m.parameters()))
