"""Fixtures shared by the unit tests (tests/unit is on sys.path: `from signals import speech_like`)."""
import pytest


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for a module: the 2-core machine is shared, and torch's thread pool
    oversubscribes it (a first LSTM call took 17 s with the default threads, 0.05 s with one)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
