"""Forward-only probes beside the measured batch: what one batch cannot tell reliably.

- never_active: dead units over at least DEAD_PROBE independent inputs (run only when the batch shows a
  dead unit: more inputs can only reveal activity, never hide it). A unit that is zero on all
  16 samples of a batch is often just a unit that is off for most inputs, seen on too few of them
  (deep ReLU features are strongly correlated across samples); one that is zero on 256 fresh
  inputs is active on fewer than ~1% of inputs (a unit active with probability p survives 256 draws
  with probability (1-p)^256: 8% at p = 1%, 0.6% at p = 2%).
- input_contrast: how much of the input's geometry survives to the features the readout layer sees
  (Poole et al. 2016; Schoenholz et al. 2017). Each of n samples x_i gets a near copy
  x'_i = c·x_i + sqrt(1-c²)·x_{i+n/2}; every other sample is a far partner. At the features, the mean
  centred cosine of near pairs minus that of far pairs, over the same difference at the input, is
  the contrast D: 1 when the features keep the input's geometry, → 0 when every pair of inputs
  looks alike (the ordered phase: all inputs collapse onto one point) or equally unlike (the
  chaotic phase: near inputs decorrelate like far ones). Mean-field theory has D ≈ exp(-L/ξ_c) at
  depth L, and networks train up to about 6·ξ_c (Schoenholz et al. 2017, §5). Centring (removing
  each unit's mean over the batch) drops what a bias can absorb, such as a sigmoid's 0.5 offset.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from initdiag.layers import LAYERS
from initdiag.layers.dropout import Dropout

DEAD_PROBE = 256  # independent inputs over which a unit must stay at 0 to count as dead
DEAD_PROBE_PASSES = 3  # at most this many extra forward passes (a transformer at batch 4 is not run 64 times)
NEAR = 0.9  # input correlation of a near pair
CONTRAST_SAMPLES = 96  # at most this many pairs of the measured batch (one forward pass of 2·96: ~13% of a check at batch 512)


class Contrast(NamedTuple):
    layer_index: int  # the readout layer; the features are its input
    contrast: float  # D, near-minus-far centred cosine at the features over the input's
    standard_error: float  # of D, from the spread over pairs
    signal_fraction: float  # the features' variance across inputs over their second moment
    samples: int  # pairs measured

    def as_dict(self) -> dict:
        return self._asdict()


def readout_index(spec) -> int | None:
    """The last layer with weights (the readout): its input is what the network offers to learn from.
    None when that is the first layer (no hidden features to judge)."""
    weighted = [layer.index for layer in spec.layers if layer.init is not None and not LAYERS[layer.kind].block]
    return weighted[-1] if weighted and weighted[-1] > 0 else None


def _near_far(x: np.ndarray, near: np.ndarray) -> tuple[float, float, float]:
    """(near-minus-far centred cosine, its standard error, the signal fraction). Near: the mean over the n
    pairs (x_i, near_i); far: over all n(n-1)/2 pairs of distinct samples, which costs one n×n Gram
    matrix and halves the estimate's variance against far partners taken one per sample."""
    n = x.shape[0]
    x = x.reshape(n, -1).astype(np.float64)
    near = near.reshape(n, -1).astype(np.float64)
    mean = (x.mean(axis=0) + near.mean(axis=0)) / 2
    a, b = x - mean, near - mean
    with np.errstate(all="ignore"):
        a_unit = a / np.linalg.norm(a, axis=1, keepdims=True)
        b_unit = b / np.linalg.norm(b, axis=1, keepdims=True)
        near_cosines = np.einsum("ij,ij->i", a_unit, b_unit)
        gram = a_unit @ a_unit.T
    far_cosines = gram[np.triu_indices(n, 1)]
    near_cosines, far_cosines = near_cosines[np.isfinite(near_cosines)], far_cosines[np.isfinite(far_cosines)]
    second = float(np.mean(x * x))
    fraction = float(np.mean((x - x.mean(axis=0)) ** 2)) / second if second > 0 else 0.0
    if near_cosines.size < 2 or far_cosines.size < 2:
        return math.nan, math.nan, fraction
    gap = float(near_cosines.mean() - far_cosines.mean())
    error = math.sqrt(near_cosines.var() / near_cosines.size + far_cosines.var() * 2 / n)  # far pairs share samples: ~n independent
    return gap, error, fraction


def input_contrast(network, readout: int) -> Contrast | None:
    """D at the readout's input (see the module docstring), from up to CONTRAST_SAMPLES samples of the
    batch and their near copies, in one forward pass together: a batchnorm then normalizes both with the
    same batch statistics, as it would any one batch (two passes would differ by their statistics alone,
    which compounds over depth). None for token inputs or batches under 8."""
    from initdiag.propagate import forward_pass, sources

    x = network.inputs
    if x.dtype.kind in "iu" or x.shape[0] < 8:
        return None
    n = min(x.shape[0] // 2, CONTRAST_SAMPLES)  # the joint pass of 2n samples is at most one batch
    x = x[:n]
    near = (NEAR * x + math.sqrt(1 - NEAR * NEAR) * np.roll(x, n // 2, axis=0)).astype(x.dtype)
    reference, _, _ = _near_far(x, near)
    if not reference > 0:
        return None
    joint = np.concatenate([x, near])
    source = sources(network.spec)[readout][0]  # what the readout reads (the layer above it, in a chain)
    # dropout off: its masks differ between a sample and its near copy, which would count noise as lost geometry
    dropping = [layer for layer in _all_layers(network.layers) if isinstance(layer, Dropout) and not layer.eval]
    for layer in dropping:
        layer.eval = True
    try:
        with np.errstate(all="ignore"):
            features = joint if source < 0 else None
            for i, y, _ in forward_pass(network._replace(inputs=joint)) if source >= 0 else ():
                if i == source:
                    features = y
                    break
    finally:
        for layer in dropping:
            layer.eval = False
    gap, error, fraction = _near_far(features[:n], features[n:])
    if not (math.isfinite(gap) and math.isfinite(fraction)):  # features all 0 or non-finite: nothing kept
        return Contrast(readout, 0.0, 0.0, fraction if math.isfinite(fraction) else 0.0, n)
    return Contrast(readout, gap / reference, error / reference, fraction, n)


def _all_layers(layers):
    """The built layers, a residual block's inner layers included."""
    for layer in layers:
        yield layer
        yield from _all_layers(getattr(layer, "layers", None) or ())


def never_active(network, forward_pass, caches) -> tuple[list[float], int]:
    """Per layer, the fraction of units that are 0 on every one of DEAD_PROBE inputs (or of the batch and
    DEAD_PROBE_PASSES fresh batches of its size, when that is fewer): the measured batch (its outputs are
    in `caches`) and fresh batches. Returns (fractions, inputs seen)."""
    from initdiag.network import STREAM_PROBE, stream
    from initdiag.spec import input_batch

    from initdiag.stats import active_units

    spec = network.spec
    active = [active_units(cache.y, getattr(layer, "unit_axis", 1)) for layer, cache in zip(network.layers, caches)]
    if spec.input_distribution.endswith(".npy"):
        return [1.0 - float(a.mean()) for a in active], network.inputs.shape[0]  # supplied data: nothing else to draw
    seen, rng, passes = network.inputs.shape[0], stream(spec.seed, STREAM_PROBE), 0
    with np.errstate(all="ignore"):
        while seen < DEAD_PROBE and passes < DEAD_PROBE_PASSES:
            passes += 1
            fresh = input_batch(spec, rng)
            for i, y, _ in forward_pass(network._replace(inputs=fresh)):
                active[i] |= active_units(y, getattr(network.layers[i], "unit_axis", 1))
            seen += fresh.shape[0]
    return [1.0 - float(a.mean()) for a in active], seen
