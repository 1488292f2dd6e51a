"""Drop-in `nn.LSTM` whose time step is one compiled graph on the CPU.

MLX's `nn.LSTM` builds ~13 operations per time step (the recurrent addmm, the gate split, three
sigmoids and two tanh, the cell update); on the CPU each is a task of MLX's scheduler whose cost is
mostly not its arithmetic, and the VoiceEncoder runs 3 layers x 160 steps. `mx.compile` of the
same step fuses the elementwise part into one kernel: the same operations in the same order, so
the same bits as `nn.LSTM` (unit test), about 3 tasks a step. GPU backends keep `nn.LSTM`."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .device import on_gpu


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


class LSTM(nn.LSTM):
    """nn.LSTM (same parameters, names and outputs: all hidden and cell states, (..., L, H))."""

    def __call__(self, x, hidden=None, cell=None):
        if on_gpu() or (hidden is None) != (cell is None):
            return super().__call__(x, hidden, cell)
        x = mx.addmm(self.bias, x, self.Wx.T) if self.bias is not None else x @ self.Wx.T
        wh_t = self.Wh.T
        all_hidden, all_cell = [], []
        for idx in range(x.shape[-2]):
            ifgo = x[..., idx, :]
            hidden, cell = _first_step(ifgo) if hidden is None else _step(ifgo, hidden, cell, wh_t)
            all_hidden.append(hidden)
            all_cell.append(cell)
        return mx.stack(all_hidden, axis=-2), mx.stack(all_cell, axis=-2)
