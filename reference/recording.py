"""Hooks and wrappers that record the original modules' intermediates, and the recorded samplers.

Everything here wraps the ORIGINAL code: forward hooks, instance-attribute wrappers around the
original methods, and module-namespace patches (restored on exit). No model math is redone.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List

import torch


class Recorder:
    """Collects named tensors; `prefix` routes the T3 decoding recordings of one run."""

    def __init__(self):
        self.values: Dict[str, torch.Tensor] = {}
        self.lists: Dict[str, List[torch.Tensor]] = {}
        self.prefix = "t3"
        self.active = True

    def put(self, name: str, value) -> None:
        if not self.active:
            return
        if name in self.values:
            raise RuntimeError(f"checkpoint '{name}' captured twice")
        self.values[name] = value.detach().clone() if torch.is_tensor(value) else value

    def append(self, name: str, value: torch.Tensor) -> None:
        if self.active:
            self.lists.setdefault(name, []).append(value.detach().clone())

    def stacked(self, name: str, n: int = None) -> torch.Tensor:
        items = self.lists.get(name, [])
        if n is not None:
            items = items[:n]
        return torch.stack(items)


class ModelRecorder(Recorder):
    """A Recorder that files each value under another model's checkpoint, `model` + "." + the English name
    the shared hooks use (a name already so prefixed stays); the per-step lists keep the names they were
    appended under."""

    def __init__(self, model: str):
        super().__init__()
        self.model_prefix = model + "."

    def put(self, name, value) -> None:
        super().put(name if name.startswith(self.model_prefix) else self.model_prefix + name, value)


@contextlib.contextmanager
def patched(obj, attr: str, new):
    """Temporarily replace `obj.attr` (a module global, a class attribute or an instance attribute)."""
    own = attr in getattr(obj, "__dict__", {})
    old = getattr(obj, attr)
    setattr(obj, attr, new)
    try:
        yield old
    finally:
        if own:
            setattr(obj, attr, old)
        else:
            delattr(obj, attr)


@contextlib.contextmanager
def forward_hook(module: torch.nn.Module, fn: Callable):
    handle = module.register_forward_hook(fn)
    try:
        yield
    finally:
        handle.remove()


def wrap_method(obj, name: str, before: Callable = None, after: Callable = None):
    """Context manager: replace bound method `obj.name` by a wrapper calling before(*args, **kw)
    and after(result, *args, **kw) around the original."""
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        if before is not None:
            before(*args, **kwargs)
        result = original(*args, **kwargs)
        if after is not None:
            after(result, *args, **kwargs)
        return result

    return patched(obj, name, wrapper)


class RecordedSampler:
    """Stands in for `torch.multinomial(probs, 1)` inside T3.inference so that its draws can be
    replayed: inverse CDF on a recorded uniform (float64), or argmax (greedy).

        cdf = cumsum(float64(probs));  token = min(searchsorted(cdf, u * cdf[-1], side="right"), V-1)

    It samples the same distribution as torch.multinomial (tests/unit/test_sampler.py checks it
    over many draws)."""

    def __init__(self, seed: int, greedy: bool = False):
        self.generator = torch.Generator().manual_seed(seed)
        self.greedy = greedy
        self.uniforms: List[float] = []
        self.tokens: List[int] = []

    def __call__(self, probs: torch.Tensor, num_samples: int = 1, replacement=False, *, generator=None, out=None):
        assert probs.dim() == 2 and probs.size(0) == 1 and num_samples == 1, "T3.inference draws one token"
        p = probs[0].detach().to("cpu", torch.float64)  # the draw on the host, also for CUDA runs
        if self.greedy:
            token = int(torch.argmax(probs[0]).item())
            u = float("nan")
        else:
            u = float(torch.rand((), generator=self.generator, dtype=torch.float64).item())
            token = inverse_cdf(p, u)
        self.uniforms.append(u)
        self.tokens.append(token)
        return torch.tensor([[token]], dtype=torch.long, device=probs.device)


def inverse_cdf(p64: torch.Tensor, u: float) -> int:
    cdf = torch.cumsum(p64, dim=0)
    idx = int(torch.searchsorted(cdf, torch.tensor([u * cdf[-1].item()], dtype=torch.float64), right=True).item())
    return min(idx, p64.numel() - 1)
