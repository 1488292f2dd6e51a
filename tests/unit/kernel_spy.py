"""A stand-in for the `mlx_impl.backend.native` module that runs the real kernels and counts the
calls by kernel name (tests check which model paths go through the kernels)."""
from __future__ import annotations


class SpyKernels:
    def __init__(self, real):
        self.real, self._kernels, self.calls = real, real.kernels(), {}

    def available(self):
        return True

    def applies_to(self, x):
        return self.real.applies_to(x)

    def kernels(self):
        return self

    def __getattr__(self, name):
        fn = getattr(self._kernels, name)

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted
