"""What the tests of a converted MLX folder check alike (test_tts_cli.py: Chatterbox Turbo,
test_mtl_generate.py: Chatterbox Multilingual): the pipeline loaded from it holds what the pipeline loaded
from the hub's layout holds."""
import numpy as np


def assert_same_parameters_and_voice(hub, mlx) -> None:
    """Every parameter of `ve`, `t3` and `s3gen` in both pipelines and bit-exact, and the same built-in voice
    (T3's prompt tokens, S3Gen's prompt features)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    for part in ("ve", "t3", "s3gen"):
        a, b = dict(tree_flatten(getattr(hub, part).parameters())), dict(tree_flatten(getattr(mlx, part).parameters()))
        assert a.keys() == b.keys() and len(a) > 0, part
        assert all(mx.array_equal(a[k], b[k]).item() for k in a), part
    assert np.array_equal(np.array(hub.conds.t3.cond_prompt_speech_tokens), np.array(mlx.conds.t3.cond_prompt_speech_tokens))
    assert np.array_equal(np.array(hub.conds.gen["prompt_feat"]), np.array(mlx.conds.gen["prompt_feat"]))
