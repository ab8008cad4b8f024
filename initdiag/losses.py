"""Losses that start the backward pass, with PyTorch's default reductions.

cross_entropy: mean over the batch (nn.CrossEntropyLoss / NLLLoss on log-probabilities); on a sequence
(batch, steps, classes), one label per token and the mean over every token, as a language model's
F.cross_entropy(logits.view(-1, classes), labels.view(-1));
binary_cross_entropy and mse: mean over every output element (nn.BCELoss, nn.MSELoss);
unit: N(0,1) noise as dLoss/dy, to probe the backward pass without a loss.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from initdiag import sampling

# nn.BCELoss clamps the denominator y(1-y) of its gradient at this value.
BCE_EPSILON = 1e-12


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


class OneHot:
    """Cross-entropy targets kept as their labels, never as a (batch[, steps], classes) array of 0s and 1s (a
    50,257-token vocabulary would need 200 KB per token): `labels` (batch[, steps]) int64, the class of each row.

    Reads like the one-hot array where callers read targets: `shape`, `dtype`, `argmax` over the classes (the
    labels themselves); anything else (`np.asarray`, arithmetic with arrays, `sum`) materialises it, for tests."""

    __slots__ = ("labels", "classes", "dtype")

    def __init__(self, labels: np.ndarray, classes: int, dtype):
        self.labels, self.classes, self.dtype = labels, int(classes), np.dtype(dtype)

    @property
    def shape(self) -> tuple:
        return (*self.labels.shape, self.classes)

    @property
    def ndim(self) -> int:
        return self.labels.ndim + 1

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes

    def argmax(self, axis: int = -1) -> np.ndarray:
        if axis not in (-1, self.ndim - 1):
            raise ValueError(f"one-hot targets have their classes on the last axis, not axis {axis}")
        return self.labels.copy()  # a fresh array, as ndarray.argmax gives: callers may write into it

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=dtype or self.dtype)
        np.put_along_axis(dense, self.labels[..., None], 1, axis=-1)
        return dense

    def sum(self, axis=None):
        return np.asarray(self).sum(axis=axis)

    def minus_from(self, values: np.ndarray, copy: bool = True) -> np.ndarray:
        """values - one_hot: values (a copy, or values itself, contiguous, if not `copy`) with 1 subtracted at each
        row's label."""
        out = np.array(values, dtype=np.result_type(values, self.dtype)) if copy else values
        rows = out.reshape(-1, self.classes)  # a view: out is a fresh contiguous array
        rows[np.arange(rows.shape[0]), self.labels.reshape(-1)] -= 1
        return out

    def __repr__(self) -> str:
        return f"OneHot(shape={self.shape}, dtype={self.dtype})"


class Loss(NamedTuple):
    """A loss bound to the output activation; `targets` then `output_gradient` / `logit_gradient`."""

    name: str
    output_activation: str

    @property
    def fused(self) -> bool:
        """Whether the output activation and this loss have a joint, stable gradient in the logits."""
        return (self.name, self.output_activation) in {("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")}

    def targets(self, rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray | OneHot:
        """Targets for an output of `shape`: one-hot labels over its last axis for cross-entropy
        (a flat (batch, classes) output, or one label per token of a (batch, steps, classes) one), kept as
        their labels (OneHot); random 0/1 for binary cross-entropy, N(0,1) otherwise."""
        if self.name == "cross_entropy":
            if len(shape) not in (2, 3):
                raise ValueError(f"cross_entropy needs a (batch, classes) or (batch, steps, classes) output, not {shape}")
            return OneHot(rng.integers(0, shape[-1], size=shape[:-1]), shape[-1], dtype)
        if self.name == "binary_cross_entropy":
            return rng.integers(0, 2, size=shape).astype(dtype)
        return sampling.standard_normal(rng, shape, dtype)

    def output_gradient(self, y: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """dLoss/dy for the network output y (batch, outputs) or (batch, steps, outputs)."""
        if self.name == "cross_entropy":
            rows = y.size // y.shape[-1]  # samples, or every sample's tokens: the mean is over them
            if self.output_activation == "softmax":
                # Only the label's probability enters -log(y_label); elsewhere the gradient is exactly 0.
                labels = targets.argmax(axis=-1)[..., None]
                gradient = np.zeros_like(y)
                np.put_along_axis(gradient, labels, -1 / (rows * np.take_along_axis(y, labels, axis=-1)), axis=-1)
                return gradient
            gradient = targets.minus_from(_softmax(y), copy=False)  # y are logits, as nn.CrossEntropyLoss takes them
            gradient /= rows
            return gradient
        if self.name == "binary_cross_entropy":
            if self.output_activation == "sigmoid":
                return (y - targets) / np.maximum(y * (1 - y), BCE_EPSILON) / y.size
            return (_sigmoid(y) - targets) / y.size  # nn.BCEWithLogitsLoss
        if self.name == "mse":
            return 2 * (y - targets) / y.size
        return targets  # unit: the noise itself is the output gradient

    def logit_gradient(self, y: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """dLoss/dz through the output activation, for fused pairs only."""
        if self.name == "cross_entropy":
            gradient = targets.minus_from(y)  # p - onehot, the same roundings as the subtraction of the array
            gradient /= y.size // y.shape[-1]
            return gradient
        return (y - targets) / y.size


def resolve(name: str, output_activation: str) -> Loss:
    """`auto`: cross-entropy after softmax, binary cross-entropy after sigmoid, else mean squared error."""
    if name == "auto":
        name = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(output_activation, "mse")
    return Loss(name, output_activation)
