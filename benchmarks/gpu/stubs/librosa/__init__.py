"""Import stand-in for librosa on the GPU machine (numba/llvmlite are too big to copy there).

The original imports librosa at module level; the speed benchmark never runs its audio front ends
(the conditioning comes from the checkpoint's conds.pt). Only the mel filterbank that the
S3Tokenizer builds in its constructor is called: it gets zeros of the right shape (the tokenizer
is not used by the benchmark). Any other use fails loudly."""
from . import filters  # noqa: F401


def __getattr__(name):
    raise RuntimeError(f"librosa.{name} is not available on the GPU machine (import stub)")
