"""Per-layer statistics of one forward and backward pass: plain data, and the reductions that make it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LayerStats(NamedTuple):
    index: int
    name: str
    kind: str
    activation: str
    init: str
    fan_in: int | None  # None: the layer has no weights (pooling, flatten)
    fan_out: int | None
    weight_mean: float | None
    weight_std: float | None
    weight_std_expected: float | None  # the scheme's formula, where it has one
    preact_mean: float
    preact_var: float
    act_mean: float
    act_var: float
    grad_var: float  # of dLoss/d(layer output)
    weight_grad_var: float | None  # of dLoss/dW
    dead_fraction: float
    saturation: float
    symmetry: float
    units: int = 0  # output units: dense width, conv filters, channels
    grad_var_first_step: float | None = None  # rnn/lstm/gru: Var(dLoss/dh) at the first time step
    grad_var_last_step: float | None = None  # ... and at the last
    cell_grad_var_first_step: float | None = None  # lstm: Var(dLoss/dc) at the first time step (its memory path)
    cell_grad_var_last_step: float | None = None  # ... and at the last

    @property
    def act_second_moment(self) -> float:
        return self.act_var + self.act_mean**2

    @property
    def preact_second_moment(self) -> float:
        return self.preact_var + self.preact_mean**2

    @property
    def signal_second_moment(self) -> float:
        """The scale the layer passes on (see signal_second_moment)."""
        return signal_second_moment(self)

    def as_dict(self) -> dict:
        return self._asdict()


def signal_second_moment(layer) -> float:
    """The scale a layer passes on: its output's second moment, or its logits' for softmax,
    whose probabilities always have second moment about 1/width whatever the logits do.

    A statistic, computed here once: the drift checks judge it, and compare, recommend and the plots
    read it from the LayerStats they are given."""
    return layer.preact_second_moment if _logits(layer.activation) else layer.act_second_moment


def trial_signal_second_moment(activation: str, z: np.ndarray, y: np.ndarray) -> float:
    """signal_second_moment of one layer's forward pass (pre-activation z, output y) without the rest of its
    statistics: recommend's single-layer trials and gain calibration measure this, the same rule."""
    mean, var = mean_var(z if _logits(activation) else y)
    return var + mean**2


def _logits(activation: str) -> bool:
    return activation.startswith("softmax")


class RunStats(NamedTuple):
    """Everything measured in one run: the input's moments and each layer's statistics."""

    input_mean: float
    input_var: float
    loss: str
    layers: tuple
    histograms: tuple = ()  # per layer (counts, edges) of the output, when asked for
    contrast: object = None  # probes.Contrast at the readout's input, or None
    probe_samples: int = 0  # inputs over which dead units were counted

    @property
    def input_second_moment(self) -> float:
        return self.input_var + self.input_mean**2


def mean_var(x: np.ndarray) -> tuple[float, float]:
    """Mean and (population) variance over all entries.

    Computed in the array's dtype with BLAS reductions and no full-size temporary: row sums for the mean
    (gemv with ones), dots of x with itself a block at a time for the second moment (the blocks' sums added
    in float64: float32 rounding of about sqrt(block)·eps, 1.5e-5 at worst, 1e-7 typically, whatever the size),
    var = E[x²] - mean². That difference loses relative accuracy by E[x²]/var, so where the mean is large
    (mean² > E[x²]/2, a factor above 2) the variance is the blocked dot of the deviations instead. Again in
    float64 only when float32 squares overflowed although the data is finite.
    """
    if x.size == 0:
        return 0.0, 0.0
    rows = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
    # Row sums by BLAS (gemv with ones), then their float64 sum: a third of x.mean()'s time.
    mean = (rows @ np.ones(rows.shape[1], rows.dtype)).sum(dtype=np.float64) / x.size
    flat = rows.reshape(-1)
    second = _square_sum(flat) / x.size
    if mean * mean <= 0.5 * second:
        var = max(second - mean * mean, 0.0)
    else:
        var = _square_sum(flat, x.dtype.type(mean)) / x.size
    if not (np.isfinite(mean) and np.isfinite(var)) and x.dtype != np.float64 and np.isfinite(x).all():
        mean, var = x.mean(dtype=np.float64), x.var(dtype=np.float64)
    return float(mean), float(var)


_BLOCK = 1 << 16  # entries: 256 KiB of float32, which stay in cache between a subtraction and its dot


def _square_sum(flat: np.ndarray, mean=None) -> float:
    """sum(flat²), or sum((flat - mean)²) with a block-sized buffer instead of a full-size temporary, for a
    1-d array: a BLAS dot per block (vdot: no overflow warning, handled by the caller), summed in float64."""
    buffer = None if mean is None else np.empty(min(flat.size, _BLOCK), flat.dtype)
    total = 0.0
    for start in range(0, flat.size, _BLOCK):
        block = flat[start:start + _BLOCK]
        if buffer is not None:
            block = np.subtract(block, mean, out=buffer[:block.size])
        total += float(np.vdot(block, block))
    return total


def active_units(y: np.ndarray, unit_axis: int = 1) -> np.ndarray:
    """Per unit (dense: columns; conv: channels), whether its output is non-zero for some sample (and position)."""
    unit_axis %= y.ndim
    return y.any(axis=tuple(axis for axis in range(y.ndim) if axis != unit_axis))


def dead_fraction(y: np.ndarray, unit_axis: int = 1) -> float:
    """Fraction of units whose output is exactly zero for every sample (and position)."""
    return 1.0 - float(active_units(y, unit_axis).mean())


def symmetry(weights: np.ndarray, bias: np.ndarray | None) -> float:
    """Fraction of units that duplicate an earlier unit: identical incoming weights and bias.

    Identical columns have bit-identical column sums (each column is summed in the same
    order), so distinct sums prove distinct units and the exact comparison only runs on the
    columns whose sums collide: all of them for constant inits, a handful by chance among
    50,000 float32 sums (an embedding's vocabulary), which then costs no copy of the matrix.
    """
    units = weights.shape[1]
    if units < 2:
        return 0.0
    sums = weights.sum(axis=0)
    order = np.argsort(sums)
    equal = sums[order[1:]] == sums[order[:-1]]
    if not equal.any():
        return 0.0
    colliding = np.zeros(units, dtype=bool)
    colliding[1:] = equal
    colliding[:-1] |= equal
    picked = order[colliding] if not colliding.all() else slice(None)
    columns = weights[:, picked] if bias is None else np.vstack([weights[:, picked], bias[None, picked]])
    rows = np.ascontiguousarray(columns.T) + 0.0  # + 0.0 turns -0.0 into 0.0 so bytes compare as values
    candidates = rows.shape[0]
    return (candidates - _distinct(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel())) / units


def _distinct(values: np.ndarray) -> int:
    """How many distinct values (np.unique would import numpy.ma: 10 ms of start-up)."""
    ordered = np.sort(values)
    return 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))
