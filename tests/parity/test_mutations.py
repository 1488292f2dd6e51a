"""A handful of the mutation catalogue (parity/mutations.py: bugs real ports made), planted in the MLX
implementation: the parity checks of the stages each one touches, in isolated mode, must catch it,
and the implementation must pass the same checks again once the patch is undone. The whole catalogue,
with cumulative mode and bisect, is `chatterbox-parity mutate` (reports/mutations.json)."""
import pytest

from parity.mutate import Runner
from parity.mutations import by_name

# fast (isolated stages without T3), each from another part of the pipeline; Chatterbox Turbo's loudness step
# and generate()'s hand-over to MeanFlow S3Gen (turbo_espeak); Chatterbox Multilingual's text front end (the
# language tag on mtl_de, the Cangjie codes on mtl_zh)
CI_MUTATIONS = ("punc_norm_no_ellipsis", "s3gen_mel_htk", "campplus_stats_eps", "ve_lstm_gate_order",
                "hift_final_leaky_slope", "turbo_loudness_minus_23", "turbo_no_s3gen_silence",
                "mtl_language_tag_missing", "mtl_cangjie_index_from_one")


@pytest.fixture(scope="module")
def runner(parity_session):
    return Runner(parity_session.ckpt, parity_session.fx_root, do_bisect=False, log=lambda msg: None)


@pytest.mark.parity
@pytest.mark.parametrize("name", CI_MUTATIONS)
def test_mutation_is_caught(runner, name):
    m = by_name()[name]
    out = runner.run(m, cumulative="never", every_case=False)
    assert out.caught, f"{name} ({m.source}) was not caught: {out.moved or out.error}"
    print(f"\n[mutation {name}] first failing {out.first_failing_checkpoint}: {out.measured} "
          f"(tolerance {out.tolerance})")
    # restored: the same checks pass again without it
    runner.mutated.outputs.clear()
    for label in out.failing:
        res = runner.mutated.run_checkpoint(m.case, label)
        assert res.status == "passed", f"after {name} was undone, {label} still fails: {res.message}"
