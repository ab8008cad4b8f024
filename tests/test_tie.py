"""`tie: embedding_0`: a dense layer (GPT-2's and BERT's language-model head) whose matrix is the embedding's
(vocab, dim) table, transposed: the same array, no draw of its own; checked against torch's tied weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import invoke, make_spec, write_spec

from initdiag import network, propagate
from initdiag.yamlsource import SpecErrors

LM = """\
    input: [6]
    input_distribution: tokens
    dtype: float64
    batch: 4
    loss: cross_entropy
    layers:
      - {embedding: {vocab: 11, dim: 8}, init: {normal: {std: 0.5}}}
      - {layernorm: {}}
      - {dense: 11, tie: embedding_0, bias: false}
"""


def test_the_tied_matrix_is_the_embeddings_table_itself():
    net = network.build(make_spec(LM))
    embedding, dense = net.layers[0], net.layers[2]
    assert dense.weights.shape == (8, 11)
    assert np.shares_memory(dense.weights, embedding.params["weights"])
    np.testing.assert_array_equal(dense.weights, embedding.params["weights"].T)
    embedding.params["weights"][3, 2] = 42.0  # one array: a change shows in both
    assert dense.weights[2, 3] == 42.0


def test_the_tied_head_matches_torch_with_tied_weights_forward_and_backward():
    torch = pytest.importorskip("torch")
    net = network.build(make_spec(LM))
    embedding, norm, dense = net.layers
    tokens = net.inputs
    h, cache_e = embedding.forward(tokens)
    u, cache_n = norm.forward(h)
    y, cache_d = dense.forward(u)

    wte = torch.nn.Embedding(11, 8).double()
    ln = torch.nn.LayerNorm(8).double()
    head = torch.nn.Linear(8, 11, bias=False).double()
    with torch.no_grad():
        wte.weight.copy_(torch.tensor(embedding.params["weights"]))
    head.weight = wte.weight  # GPT-2's tie: one Parameter
    ty = head(ln(wte(torch.tensor(tokens))))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)

    dy = np.random.default_rng(1).standard_normal(y.shape)
    du, grads_d = dense.backward(dy, cache_d)
    dh, _ = norm.backward(du, cache_n)
    _, grads_e = embedding.backward(dh, cache_e)
    ty.backward(torch.tensor(dy))
    # each layer reports its own gradient; torch accumulates both into the one tied tensor
    np.testing.assert_allclose(grads_d["weights"].T + grads_e["weights"], wte.weight.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_the_report_says_tied_and_a_check_runs(tmp_path):
    path = write_spec(tmp_path, LM)
    result = invoke("check", path, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    layers = json.loads(result.stdout)["layers"]
    assert layers[2]["init"] == "tied to embedding_0"
    run = propagate.run(network.build(make_spec(LM)))
    assert run.layers[2].weight_std == pytest.approx(run.layers[0].weight_std, rel=1e-6)


def test_check_scheme_keeps_the_tie():
    net = make_spec(LM)
    again = net.with_init(make_spec("input: [3]\nlayers:\n  - {dense: 2, init: orthogonal}\n").layers[0].init)
    assert again.layers[2].init.display == "tied to embedding_0" and again.layers[0].init.scheme == "orthogonal"
    built = network.build(again)
    assert np.shares_memory(built.layers[2].weights, built.layers[0].params["weights"])


def test_a_bias_of_a_tied_head_is_its_own():
    net = network.build(make_spec(LM.replace("bias: false", "bias_init: 0.25")))
    np.testing.assert_array_equal(net.layers[2].bias, np.full(11, 0.25))


@pytest.mark.parametrize("layer, words", [
    ("{dense: 11, tie: embeding_0}", "no layer is named 'embeding_0' (embedding layers: embedding_0)"),
    ("{dense: 11, tie: layernorm_1}", "'layernorm_1' is a layernorm layer, not an embedding"),
    ("{dense: 12, tie: embedding_0}", "the table of 'embedding_0' is [vocab, dim] = [11, 8], so a tied dense layer is "
                                      "[fan_in, units] = [8, 11]; this one is [8, 12]"),
    ("{dense: 11, tie: embedding_0, init: xavier}", "tie and init on one layer"),
])
def test_tie_errors_are_located(layer, words):
    text = LM.replace("{dense: 11, tie: embedding_0, bias: false}", layer)
    with pytest.raises(SpecErrors) as info:
        make_spec(text)
    (problem,) = info.value.problems
    assert problem.path == "layers[2].tie" and words in problem.message, str(problem)
    assert str(problem).startswith("t.yaml:9:")


def test_tie_with_a_supplied_matrix_is_refused(tmp_path):
    np.savez(tmp_path / "w.npz", weights=np.zeros((8, 11)))
    with pytest.raises(SpecErrors) as info:
        make_spec(LM.replace("bias: false", "bias: false, supplied: w.npz"), base_dir=tmp_path)
    assert "tie and a supplied weights" in info.value.problems[0].message


def test_only_a_dense_layer_ties():
    with pytest.raises(SpecErrors) as info:
        make_spec(LM.replace("{layernorm: {}}", "{layernorm: {}, tie: embedding_0}"))
    assert "unknown key 'tie'" in info.value.problems[0].message
