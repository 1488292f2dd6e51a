"""Cumulative mode: MLX chained end to end (e2e: from the raw audio file; s3gen: from the
reference's tokens; vc: ChatterboxVC from the source and target files), against the reference, with
the [cumulative.<mode>] tolerances. A mode runs on the cases of its model."""
import pytest

from parity import registry
from parity.session import NOT_IMPLEMENTED, all_cases, case_model


def _params():
    reg = registry.load()
    return [pytest.param(name, mode, cp, id=f"{name}-{mode}-{cp}")
            for mode, entries in reg.cumulative.items()
            for name, case in all_cases().items() if case_model(case) == reg.mode_model(mode)
            for cp in entries]


@pytest.mark.parity
@pytest.mark.parametrize("case,mode,checkpoint", _params())
def test_cumulative(case, mode, checkpoint, parity_session):
    res = parity_session.run_cumulative(case, mode, checkpoint)
    if res.status == NOT_IMPLEMENTED:
        pytest.xfail(f"not implemented: {res.message}")
    assert res.status == "passed", f"{case}/{mode}/{checkpoint}: {res.status}: {res.message}"
