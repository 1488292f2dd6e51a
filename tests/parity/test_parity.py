"""One test per (case, checkpoint) of parity/checkpoints.toml: MLX (isolated mode) vs the reference."""
import pytest

from parity import registry
from parity.cases import load_cases
from parity.session import NOT_IMPLEMENTED


def parity_params():
    reg = registry.load()
    out = []
    for case in load_cases():
        for cp in reg.ordered():
            if cp.compared:  # recorded random draws are replay inputs, reference-only tensors measurements
                out.append(pytest.param(case, cp.name, id=f"{case}-{cp.name}"))
    return out


@pytest.mark.parity
@pytest.mark.parametrize("case,checkpoint", parity_params())
def test_parity(case, checkpoint, parity_session):
    res = parity_session.run_checkpoint(case, checkpoint)
    if res.status == NOT_IMPLEMENTED:
        pytest.xfail(f"not implemented: {res.message}")
    assert res.status == "passed", f"{case}/{checkpoint}: {res.status}: {res.message}"
