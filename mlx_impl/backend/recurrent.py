"""Drop-in `nn.LSTM` whose recurrence is one kernel per layer on the CPU.

MLX's `nn.LSTM` builds ~13 operations per time step (the recurrent addmm, the gate split, three
sigmoids and two tanh, the cell update); on the CPU each is a task of MLX's scheduler whose cost is
mostly not its arithmetic, and the VoiceEncoder runs 3 layers x 160 steps. The input projection
of all steps is one product up front (as in nn.LSTM); then, where the kernels are built, the whole
recurrence is one primitive (kernels/recurrent.cpp: each step the addmm through the same BLAS call
and MLX's sigmoid / tanh arithmetic, in the same order), else each step is one `mx.compile`d graph
(the same operations fused into one kernel). Both give nn.LSTM's bits (unit tests). With an
initial state given, and on GPU backends, it is `nn.LSTM`."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .device import on_gpu
from .native import applies_to, kernels


def _gates(ifgo: mx.array):
    i, f, g, o = mx.split(ifgo, 4, axis=-1)
    return mx.sigmoid(i), mx.sigmoid(f), mx.tanh(g), mx.sigmoid(o)


@mx.compile
def _first_step(ifgo: mx.array):
    i, _, g, o = _gates(ifgo)
    cell = i * g
    return o * mx.tanh(cell), cell


@mx.compile
def _step(ifgo: mx.array, hidden: mx.array, cell: mx.array, wh_t: mx.array):
    i, f, g, o = _gates(mx.addmm(ifgo, hidden, wh_t))
    cell = f * cell + i * g
    return o * mx.tanh(cell), cell


def _compiled_steps(x: mx.array, wh_t: mx.array):
    """All hidden and cell states from the input projection x (..., L, 4H), one compiled step each."""
    hidden = cell = None
    all_hidden, all_cell = [], []
    for idx in range(x.shape[-2]):
        ifgo = x[..., idx, :]
        hidden, cell = _first_step(ifgo) if hidden is None else _step(ifgo, hidden, cell, wh_t)
        all_hidden.append(hidden)
        all_cell.append(cell)
    return mx.stack(all_hidden, axis=-2), mx.stack(all_cell, axis=-2)


def _kernel_layer(x: mx.array, wh: mx.array):
    """The same states from the recurrence kernel: x (..., L, 4H) as rows (B, L, 4H)."""
    lead, (length, gates) = x.shape[:-2], x.shape[-2:]
    states = kernels().lstm(x.reshape(-1, length, gates), wh)
    shape = (*lead, length, wh.shape[1])
    return states[0].reshape(shape), states[1].reshape(shape)


class LSTM(nn.LSTM):
    """nn.LSTM (same parameters, names and outputs: all hidden and cell states, (..., L, H))."""

    def __call__(self, x, hidden=None, cell=None):
        if on_gpu() or hidden is not None or cell is not None:
            return super().__call__(x, hidden, cell)
        x = mx.addmm(self.bias, x, self.Wx.T) if self.bias is not None else x @ self.Wx.T
        if applies_to(x) and applies_to(self.Wh):
            return _kernel_layer(x, self.Wh)
        return _compiled_steps(x, self.Wh.T)
