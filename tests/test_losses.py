"""Losses against PyTorch: the gradient each one starts the backward pass with, flat and per token."""

from __future__ import annotations

import numpy as np
import pytest

from initdiag import losses

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 7)], ids=["flat", "per-token"])
@pytest.mark.parametrize("activation", ["softmax", "identity"])
def test_cross_entropy_gradient_is_torchs_mean_over_samples_or_tokens(shape, activation):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape)
    loss = losses.resolve("cross_entropy", activation)
    targets = loss.targets(np.random.default_rng(1), shape, np.float64)
    assert targets.shape == shape and (targets.sum(axis=-1) == 1).all() and set(np.unique(targets)) == {0.0, 1.0}
    z = torch.tensor(logits, requires_grad=True)
    labels = torch.tensor(targets.argmax(axis=-1)).reshape(-1)
    F.cross_entropy(z.reshape(-1, shape[-1]), labels).backward()  # a language model's flattening
    if activation == "softmax":  # fused: the gradient enters at the logits; dLoss/dp only at the label
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(loss.logit_gradient(probabilities, targets), z.grad.numpy(), rtol=1e-12, atol=1e-15)
        p = torch.tensor(probabilities, requires_grad=True)
        F.nll_loss(torch.log(p).reshape(-1, shape[-1]), labels).backward()
        np.testing.assert_allclose(loss.output_gradient(probabilities, targets), p.grad.numpy(), rtol=1e-12, atol=1e-15)
    else:  # logits straight into the loss, as nn.CrossEntropyLoss takes them
        np.testing.assert_allclose(loss.output_gradient(logits, targets), z.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_targets_are_drawn_as_before_one_label_per_row():
    """The labels come from the same draws as ever (rng.integers over the rows), now without an identity matrix."""
    loss = losses.resolve("cross_entropy", "softmax")
    labels = np.random.default_rng(7).integers(0, 11, size=9)
    targets = loss.targets(np.random.default_rng(7), (9, 11), np.float32)
    assert targets.dtype == np.float32 and (targets.argmax(axis=1) == labels).all()


def test_cross_entropy_needs_classes_on_the_last_axis_of_a_flat_or_sequence_output():
    with pytest.raises(ValueError, match="cross_entropy needs"):
        losses.resolve("cross_entropy", "softmax").targets(np.random.default_rng(0), (2, 3, 4, 5), np.float64)


def test_cross_entropy_targets_stay_labels_and_read_as_the_one_hot_array():
    """A 50,257-token vocabulary: 8 bytes a token, not 200 KB; what callers read is the one-hot array's."""
    loss = losses.resolve("cross_entropy", "identity")
    targets = loss.targets(np.random.default_rng(2), (2, 3, 50_257), np.float32)
    assert targets.shape == (2, 3, 50_257) and targets.dtype == np.float32 and targets.nbytes == 2 * 3 * 8
    dense = np.asarray(targets)
    assert dense.dtype == np.float32 and (dense.argmax(axis=-1) == targets.argmax(axis=-1)).all()
    assert (dense.sum(axis=-1) == 1).all()
    logits = np.random.default_rng(3).standard_normal((2, 3, 50_257)).astype(np.float32)
    # bit for bit the gradients the dense one-hot gives
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    fused = losses.resolve("cross_entropy", "softmax")
    np.testing.assert_array_equal(fused.logit_gradient(probabilities, targets), (probabilities - dense) / 6)
    np.testing.assert_array_equal(loss.output_gradient(logits, targets), (losses._softmax(logits) - dense) / 6)
