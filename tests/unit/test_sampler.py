"""The export's RecordedSampler samples the same distribution as torch.multinomial."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="reference stack (torch) not installed")
from reference.recording import RecordedSampler  # noqa: E402

N = 200_000


def _probs():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0, 3.0, -np.inf, 1.5, -np.inf, 0.2])
    return torch.softmax(logits, dim=-1)[None]


def test_recorded_sampler_matches_multinomial_distribution():
    p = _probs()
    sampler = RecordedSampler(seed=1)
    ours = np.bincount([int(sampler(p)) for _ in range(N)], minlength=10)
    g = torch.Generator().manual_seed(2)
    theirs = np.bincount(torch.multinomial(p.expand(N, -1), 1, replacement=True, generator=g)[:, 0].numpy(),
                         minlength=10)
    expected = p[0].double().numpy() * N
    for counts in (ours, theirs):
        assert counts[6] == 0 and counts[8] == 0  # filtered (-inf) tokens never drawn
        live = expected > 0
        chi2 = float((((counts - expected) ** 2)[live] / expected[live]).sum())
        assert chi2 < 27.9, chi2  # 7 degrees of freedom, p = 0.0002
    # two-sample check: the two samplers agree with each other
    live = (ours + theirs) > 0
    chi2 = float((((ours - theirs) ** 2)[live] / (ours + theirs)[live]).sum())
    assert chi2 < 27.9, chi2


def test_recorded_sampler_replays_and_is_greedy_when_asked():
    p = _probs()
    a, b = RecordedSampler(seed=5), RecordedSampler(seed=5)
    assert [int(a(p)) for _ in range(50)] == [int(b(p)) for _ in range(50)]
    assert a.uniforms == b.uniforms and len(a.uniforms) == 50
    g = RecordedSampler(seed=0, greedy=True)
    assert int(g(p)) == 5


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_host_draws_take_half_precision_probabilities(dtype):
    """A half-precision T3's step loop (the multilingual one, or on_step) hands its draws bfloat16 / float16
    probabilities: they are widened, and draw the token the float32 ones draw."""
    import mlx.core as mx

    from mlx_impl.t3.inference.sampling import GreedyDraw, ReplayDraw

    p32 = mx.softmax(mx.array(np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32) * 3), axis=-1)
    half = p32.astype(getattr(mx, dtype))
    uniforms = [0.1, 0.5, 0.9]
    for step, u in enumerate(uniforms):
        assert ReplayDraw(uniforms)(half, step) == ReplayDraw(uniforms)(half.astype(mx.float32), step)
    assert GreedyDraw()(half, 0) == int(np.argmax(np.array(half.astype(mx.float32))))
