"""Cumulative mode: MLX chained end to end (e2e: from the raw audio file; s3gen: from the
reference's tokens), against the reference, with the [cumulative.<mode>] tolerances."""
import pytest

from parity import registry
from parity.cases import load_cases
from parity.session import NOT_IMPLEMENTED


def _params():
    reg = registry.load()
    return [pytest.param(case, mode, name, id=f"{case}-{mode}-{name}")
            for mode, entries in reg.cumulative.items() for case in load_cases() for name in entries]


@pytest.mark.parity
@pytest.mark.parametrize("case,mode,checkpoint", _params())
def test_cumulative(case, mode, checkpoint, parity_session):
    res = parity_session.run_cumulative(case, mode, checkpoint)
    if res.status == NOT_IMPLEMENTED:
        pytest.xfail(f"not implemented: {res.message}")
    assert res.status == "passed", f"{case}/{mode}/{checkpoint}: {res.status}: {res.message}"
