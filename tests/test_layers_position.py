"""The learned position embedding against PyTorch (GPT-2's x + wpe(arange(steps))), forward and backward."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_spec

from initdiag import network

torch = pytest.importorskip("torch")


def test_position_embedding_is_gpt2s_wpe_added_to_the_sequence():
    spec = make_spec("""\
        input: [6, 4]
        dtype: float64
        layers:
          - position_embedding: {}
            init: {normal: {std: 0.5}}
        """)
    layer_spec = spec.layers[0]
    assert (layer_spec.fan_in, layer_spec.fan_out) == (4, 6)  # torch's fans of nn.Embedding(6, 4).weight
    layer = network.build(spec).layers[0]
    table = layer.params["weights"]
    assert table.shape == (6, 4) and np.array_equal(layer.weights, table.T)

    wpe = torch.nn.Embedding(6, 4).double()
    assert torch.nn.init._calculate_fan_in_and_fan_out(wpe.weight) == (4, 6)
    with torch.no_grad():
        wpe.weight.copy_(torch.tensor(table))
    x = np.random.default_rng(0).standard_normal((3, 6, 4))
    y, cache = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = tx + wpe(torch.arange(6))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads["weights"], wpe.weight.grad.numpy(), rtol=1e-12)


def test_position_embeddings_are_outside_the_rules_of_thumb():
    """Like token embeddings, a position table is a lookup: no scheme-activation-mismatch for its N(0, 0.01)."""
    from initdiag import pipeline

    spec = make_spec("input: [6, 4]\nlayers:\n  - position_embedding: {}\n    init: {normal: {std: 0.01}}\n  - dense: 3\n")
    codes = {(f.code, f.layer) for f in pipeline.diagnose(spec).findings}
    assert ("scheme-activation-mismatch", "position_embedding_0") not in codes
