"""One test per (case, checkpoint) of parity/checkpoints.toml: MLX (isolated mode) vs the reference.
Each model's cases meet that model's checkpoints: the English cases the tts ones, the vc_* cases the
vc.* ones (voice conversion)."""
import pytest

from parity import registry
from parity.session import NOT_IMPLEMENTED, all_cases, case_model


def parity_params():
    reg = registry.load()
    out = []
    for name, case in all_cases().items():
        for cp in reg.of_model(case_model(case)):
            if cp.compared:  # recorded random draws are replay inputs, reference-only tensors measurements
                out.append(pytest.param(name, cp.name, id=f"{name}-{cp.name}"))
    return out


@pytest.mark.parity
@pytest.mark.parametrize("case,checkpoint", parity_params())
def test_parity(case, checkpoint, parity_session):
    res = parity_session.run_checkpoint(case, checkpoint)
    if res.status == NOT_IMPLEMENTED:
        pytest.xfail(f"not implemented: {res.message}")
    assert res.status == "passed", f"{case}/{checkpoint}: {res.status}: {res.message}"
