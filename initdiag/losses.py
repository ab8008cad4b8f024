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


class Loss(NamedTuple):
    """A loss bound to the output activation; `targets` then `output_gradient` / `logit_gradient`."""

    name: str
    output_activation: str

    @property
    def fused(self) -> bool:
        """Whether the output activation and this loss have a joint, stable gradient in the logits."""
        return (self.name, self.output_activation) in {("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")}

    def targets(self, rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
        """Targets for an output of `shape`: one-hot labels over its last axis for cross-entropy
        (a flat (batch, classes) output, or one label per token of a (batch, steps, classes) one),
        random 0/1 for binary cross-entropy, N(0,1) otherwise."""
        if self.name == "cross_entropy":
            if len(shape) not in (2, 3):
                raise ValueError(f"cross_entropy needs a (batch, classes) or (batch, steps, classes) output, not {shape}")
            labels = rng.integers(0, shape[-1], size=shape[:-1])
            one_hot = np.zeros(shape, dtype=dtype)  # (no classes x classes identity: a 50k vocabulary would need GBs)
            np.put_along_axis(one_hot, labels[..., None], 1, axis=-1)
            return one_hot
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
            return (_softmax(y) - targets) / rows  # y are logits, as nn.CrossEntropyLoss takes them
        if self.name == "binary_cross_entropy":
            if self.output_activation == "sigmoid":
                return (y - targets) / np.maximum(y * (1 - y), BCE_EPSILON) / y.size
            return (_sigmoid(y) - targets) / y.size  # nn.BCEWithLogitsLoss
        if self.name == "mse":
            return 2 * (y - targets) / y.size
        return targets  # unit: the noise itself is the output gradient

    def logit_gradient(self, y: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """dLoss/dz through the output activation, for fused pairs only."""
        scale = y.size // y.shape[-1] if self.name == "cross_entropy" else y.size
        return (y - targets) / scale


def resolve(name: str, output_activation: str) -> Loss:
    """`auto`: cross-entropy after softmax, binary cross-entropy after sigmoid, else mean squared error."""
    if name == "auto":
        name = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(output_activation, "mse")
    return Loss(name, output_activation)
