"""One test per (case, checkpoint) of parity/checkpoints.toml: MLX (isolated mode) vs the reference."""
import pytest

from tests.conftest import parity_params, parity_session
from parity.session import NOT_IMPLEMENTED


@pytest.mark.parity
@pytest.mark.parametrize("case,checkpoint", parity_params())
def test_parity(case, checkpoint):
    res = parity_session().run_checkpoint(case, checkpoint)
    if res.status == NOT_IMPLEMENTED:
        pytest.xfail(f"not implemented: {res.message}")
    assert res.status == "passed", f"{case}/{checkpoint}: {res.status}: {res.message}"
