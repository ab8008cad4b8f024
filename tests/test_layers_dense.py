"""The dense layer on a flat input and per token on a sequence [steps, features], against PyTorch's
nn.Linear (which applies to the last axis) and finite differences; and what a spec may say about it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_spec
from gradcheck import numeric_gradient

from initdiag import activations, losses, network, pipeline, propagate
from initdiag.layers.dense import Dense
from initdiag.yamlsource import SpecErrors

torch = pytest.importorskip("torch")


def test_per_token_dense_is_nn_linear_on_the_last_axis_forward_and_backward():
    rng = np.random.default_rng(0)
    weights, bias = rng.standard_normal((5, 3)), rng.standard_normal(3)
    layer = Dense("d", weights, bias, activations.make("tanh"))
    x = rng.standard_normal((4, 6, 5))  # (batch, steps, features)
    y, cache = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)

    linear = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weights.T)), linear.bias.copy_(torch.tensor(bias))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tanh(linear(xt))
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads["weights"], linear.weight.grad.numpy().T, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads["bias"], linear.bias.grad.numpy(), rtol=1e-12, atol=1e-14)

    loss = lambda: float(np.sum(layer.forward(x)[0] * dy))  # noqa: E731
    np.testing.assert_allclose(grads["weights"], numeric_gradient(loss, weights), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dx, numeric_gradient(loss, x), rtol=1e-6, atol=1e-8)


LM = """\
    input: [12]
    input_distribution: tokens
    batch: 6
    layers:
      - embedding: {vocab: 40, dim: 16}
      - transformer: {dim: 16, heads: 2, ffn: 32}
      - dense: 40
        activation: softmax
    """


def test_a_language_model_head_is_a_per_token_dense_with_per_token_cross_entropy():
    spec = make_spec(LM)
    head = spec.layers[-1]
    assert head.output_shape == (12, 40) and (head.fan_in, head.fan_out) == (16, 40) and head.units == 40
    report = pipeline.diagnose(spec).report
    assert report["loss"] == "cross_entropy" and report["layers"][-1]["units"] == 40
    # the head's grad_var is that of torch's F.cross_entropy gradient at the logits, mean over batch · steps
    built = network.build(spec)
    *_, (_, _, head_cache) = propagate.forward_pass(built)
    logits = head_cache.z
    targets = losses.resolve("cross_entropy", "softmax").targets(built.target_rng, logits.shape, logits.dtype)
    z = torch.tensor(logits.astype(np.float64), requires_grad=True)
    torch.nn.functional.cross_entropy(z.reshape(-1, 40), torch.tensor(targets.argmax(axis=-1)).reshape(-1)).backward()
    assert report["layers"][-1]["grad_var"] == pytest.approx(float(z.grad.numpy().var()), rel=1e-4)


def test_dense_on_a_feature_map_still_asks_for_flatten():
    with pytest.raises(SpecErrors, match=r"dense takes a flat input \[features\] or a sequence .*add a layer '- flatten"):
        make_spec("input: [3, 8, 8]\nlayers:\n  - dense: 4\n")


def test_cross_entropy_on_a_sequence_is_per_token_and_on_a_feature_map_an_error():
    make_spec("input: [5, 8]\nloss: cross_entropy\nlayers:\n  - layernorm: {}\n  - dense: 4\n    activation: softmax\n")
    with pytest.raises(SpecErrors, match=r"cross_entropy needs a flat \[classes\] output \(or a sequence's"):
        make_spec("input: [3, 8]\nloss: cross_entropy\nlayers:\n  - conv1d: {filters: 4, kernel: 3}\n")


def test_a_two_axis_input_read_first_by_a_dense_is_a_sequence():
    spec = make_spec("input: [5, 8]\nlayers:\n  - dense: 4\n  - layernorm: {}\n")
    assert spec.layers[0].output_shape == (5, 4) and spec.layers[0].config["sequence"]
    assert spec.layers[1].output_shape == (5, 4)  # the layernorm then normalises each token's 4 features
