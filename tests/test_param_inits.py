"""bias_init as any scheme that fits a vector, and `inits:`, one scheme per named parameter (GPT-2's scaled
residual projections, a zero-initialised last projection), each parameter on its own random stream."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_spec

from initdiag import network, theory
from initdiag.yamlsource import SpecErrors

Z = 5.0  # standard errors
UNITS = 20_000


def _bias(text: str, seed: int = 0) -> np.ndarray:
    return network.build(make_spec(text, seed=seed)).layers[0].bias.astype(np.float64)


def _dense(bias_init: str, fan_in: int = 9, init: str = "xavier") -> str:
    return f"input: [{fan_in}]\ndtype: float64\nbatch: 2\nlayers:\n  - {{dense: {UNITS}, init: {init}, bias_init: {bias_init}}}\n"


def _within(sample: np.ndarray, mean: float, std: float, kurtosis: float) -> None:
    se_std = std * math.sqrt((kurtosis - 1) / (4 * sample.size))
    assert abs(sample.std() - std) <= Z * se_std, (sample.std(), std)
    assert abs(sample.mean() - mean) <= Z * std / math.sqrt(sample.size), (sample.mean(), mean)


def test_a_number_and_the_constant_schemes_are_constants():
    np.testing.assert_array_equal(_bias(_dense("0.1")), np.full(UNITS, 0.1))
    np.testing.assert_array_equal(_bias(_dense("zeros", init="torch_default")), np.zeros(UNITS))
    np.testing.assert_array_equal(_bias(_dense("{constant: -0.5}")), np.full(UNITS, -0.5))
    assert make_spec(_dense("ones")).layers[0].bias_init == 1.0


def test_normal_and_uniform_draw_the_declared_distribution():
    _within(_bias(_dense("{normal: {mean: 0.1, std: 0.02}}")), 0.1, 0.02, 3.0)
    uniform = _bias(_dense("{uniform: {low: -0.3, high: 0.1}}"))
    _within(uniform, -0.1, 0.2 / math.sqrt(3), 1.8)
    assert uniform.min() >= -0.3 and uniform.max() <= 0.1


def test_torch_default_is_uniform_over_one_over_the_root_of_fan_in():
    bias = _bias(_dense("torch_default", fan_in=25))
    _within(bias, 0.0, 1 / math.sqrt(3 * 25), 1.8)
    assert np.abs(bias).max() <= 1 / 5
    # written out, it is what an init: torch_default layer's own bias draws (the same stream)
    np.testing.assert_allclose(bias, _bias(f"input: [25]\ndtype: float64\nlayers:\n  - {{dense: {UNITS}, init: torch_default}}\n"),
                               rtol=1e-12)


def test_torch_default_matches_nn_linears_default_bias_in_distribution():
    torch = pytest.importorskip("torch")
    from scipy import stats

    fan_in = 16
    ours = _bias(_dense("torch_default", fan_in=fan_in))
    torch.manual_seed(0)
    theirs = torch.nn.Linear(fan_in, UNITS).bias.detach().double().numpy()
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-4
    assert abs(ours.std() / theirs.std() - 1) < 0.05


def test_a_conv_bias_takes_the_kernels_fan_in():
    text = "input: [3, 8, 8]\ndtype: float64\nlayers:\n  - conv2d: {filters: 4000, kernel: 3}\n    bias_init: torch_default\n"
    bias = _bias(text)
    assert np.abs(bias).max() <= 1 / math.sqrt(27)
    _within(bias, 0.0, 1 / math.sqrt(3 * 27), 1.8)


@pytest.mark.parametrize("scheme, words", [("orthogonal", "orthogonal cannot initialise vectors"),
                                           ("identity", "identity cannot initialise vectors"),
                                           ("xavier", "a bias has no fans"),
                                           ("{supplied: b.npy}", "supplied: FILE.npz")])
def test_a_scheme_that_fits_no_vector_is_a_located_error(scheme, words):
    with pytest.raises(SpecErrors) as info:
        make_spec(f"input: [4]\nlayers:\n  - {{dense: 3, bias_init: {scheme}}}\n")
    problem = info.value.problems[-1]
    assert problem.path.startswith("layers[0].bias_init") and words in problem.message
    assert str(problem).startswith("t.yaml:3:")


def test_defaults_bias_init_takes_a_scheme_too():
    net = make_spec("input: [4]\ndefaults: {bias_init: {normal: {std: 0.5}}}\nlayers:\n  - {dense: 3000}\n  - {dense: 3000}\n")
    built = network.build(net)
    first, second = (layer.bias.astype(np.float64) for layer in built.layers)
    assert 0.45 < first.std() < 0.55 and not np.array_equal(first, second)  # one stream per layer


def test_every_bias_of_a_block_draws_from_a_stream_of_its_own():
    net = make_spec("input: [3, 8]\nlayers:\n  - attention: {dim: 8, heads: 2}\n    bias_init: {normal: {std: 1}}\n")
    params = network.build(net).layers[0].params
    biases = [params[name] for name in ("query_bias", "key_bias", "value_bias", "output_bias")]
    assert all(not np.array_equal(a, b) for i, a in enumerate(biases) for b in biases[i + 1:])


def test_a_recurrent_bias_scheme_and_the_lstm_forget_bias():
    net = make_spec("input: [4, 3]\ndtype: float64\nlayers:\n  - {lstm: 5, bias_init: {uniform: {low: -0.1, high: 0.1}}}\n")
    bias = network.build(net).layers[0].params["bias"]
    forget = slice(5, 10)  # PyTorch's gate order i, f, g, o: the forget bias (1.0) is added to the drawn one
    assert np.all(np.abs(np.delete(bias, np.s_[5:10])) <= 0.1) and np.all(np.abs(bias[forget] - 1.0) <= 0.1)


def test_theory_reads_a_bias_schemes_moments():
    net = make_spec("input: [4]\nlayers:\n  - {dense: 3, bias_init: {normal: {mean: 0.2, std: 0.1}}}\n")
    assert theory.bias_moments(net.layers[0]) == pytest.approx((0.2, 0.01))
    net = make_spec("input: [16]\nlayers:\n  - {dense: 3, bias_init: torch_default}\n")
    assert theory.bias_moments(net.layers[0]) == pytest.approx((0.0, 1 / 48))


# ---------------------------------------------------------------- inits: one scheme per parameter
GPT2 = """\
    input: [5, 8]
    layers:
      - transformer: {dim: 8, heads: 2, ffn: 32}
        init: {normal: {std: 0.02}}
"""


def test_gpt2s_scaled_residual_projections_and_a_zero_last_projection():
    text = GPT2 + "        inits: {attention.output_weights: {normal: {std: 0.00289}}, ffn.out_weights: zeros}\n"
    plain = network.build(make_spec(GPT2)).layers[0].params
    params = network.build(make_spec(text)).layers[0].params
    assert not params["ffn.out_weights"].any()
    # the same stream, another scale: the drawn numbers are the plain block's times 0.00289 / 0.02
    np.testing.assert_allclose(params["attention.output_weights"], plain["attention.output_weights"] * (0.00289 / 0.02),
                               rtol=1e-5)
    for name in ("attention.query_weights", "attention.key_weights", "attention.value_weights", "ffn.in_weights"):
        np.testing.assert_array_equal(params[name], plain[name])  # every other parameter keeps its own numbers


def test_inits_draw_vectors_and_a_blocks_norm_parameters():
    text = GPT2 + "        inits: {ffn.out_bias: {constant: 0.5}, norm2.gamma: {normal: {mean: 1, std: 0.1}}}\n"
    layer = network.build(make_spec(text)).layers[0]
    np.testing.assert_array_equal(layer.params["ffn.out_bias"], np.full(8, 0.5, np.float32))
    assert layer.norm2.params["gamma"] is layer.params["norm2.gamma"] and not np.all(layer.params["norm2.gamma"] == 1)
    np.testing.assert_array_equal(layer.params["norm1.gamma"], np.ones(8, np.float32))


def test_a_dense_layers_bias_by_name():
    net = make_spec("input: [4]\nlayers:\n  - {dense: 3, bias_init: 0.3, inits: {bias: {constant: 0.7}}}\n")
    np.testing.assert_array_equal(network.build(net).layers[0].bias, np.full(3, 0.7, np.float32))


def test_check_scheme_replaces_per_parameter_matrix_inits_and_keeps_vector_ones():
    text = GPT2 + "        inits: {ffn.out_weights: zeros, ffn.out_bias: {constant: 0.5}}\n"
    net = make_spec(text)
    other = make_spec(GPT2.replace("{normal: {std: 0.02}}", "orthogonal"))
    again = net.with_init(other.layers[0].init)
    assert set(again.layers[0].inits) == {"ffn.out_bias"}
    params = network.build(again).layers[0].params
    np.testing.assert_array_equal(params["ffn.out_weights"], network.build(other).layers[0].params["ffn.out_weights"])


@pytest.mark.parametrize("inits, words", [
    ("{ffn.outweights: zeros}", "'ffn.outweights' is not a parameter of transformer_0 (its parameters: attention.query_weights,"),
    ("{attention.query_weights: zeros}", "is the matrix the layer's init draws: set init instead"),
    ("{ffn.in_weights: identity}", "identity needs a square layer"),
    ("{ffn.in_bias: orthogonal}", "orthogonal cannot initialise vectors"),
    ("[zeros]", "expected a mapping of parameter names to schemes"),
])
def test_inits_errors_are_located(inits, words):
    with pytest.raises(SpecErrors) as info:
        make_spec(GPT2 + f"        inits: {inits}\n")
    (problem,) = info.value.problems
    assert problem.path.startswith("layers[0].inits") and words in problem.message, str(problem)
    assert str(problem).startswith("t.yaml:5:")


def test_recurrent_weights_belong_to_recurrent_init():
    with pytest.raises(SpecErrors) as info:
        make_spec("input: [4, 3]\nlayers:\n  - {gru: 5, inits: {recurrent_weights: orthogonal}}\n")
    assert "set recurrent_init instead" in info.value.problems[0].message
    net = make_spec("input: [4, 3]\nlayers:\n  - {gru: 5, inits: {recurrent_bias: {constant: 0.25}}}\n")
    np.testing.assert_array_equal(network.build(net).layers[0].params["recurrent_bias"], np.full(5, 0.25, np.float32))  # b_hn


def test_a_table_takes_no_inits():
    with pytest.raises(SpecErrors) as info:
        make_spec("input: [5]\ninput_distribution: tokens\nlayers:\n  - {embedding: {vocab: 7, dim: 3}, inits: {weights: zeros}}\n")
    assert "unknown key 'inits'" in info.value.problems[0].message


def test_the_schema_accepts_what_the_parser_accepts():
    pytest.importorskip("jsonschema")
    from jsonschema import Draft202012Validator

    from initdiag.schema import spec_schema

    validator = Draft202012Validator(spec_schema())

    def valid(layer, defaults=None):
        data = {"input": [4], "layers": [layer], **({"defaults": defaults} if defaults else {})}
        return validator.is_valid(data)

    for bias_init in (0.1, "zeros", "torch_default", {"normal": {"std": 0.02}}, {"uniform": {"low": -1, "high": 1}},
                      {"constant": 0.5}, "pytorch_default", "Ones"):
        assert valid({"dense": 3, "bias_init": bias_init}), bias_init
        assert valid({"dense": 3}, {"bias_init": bias_init}), bias_init
        make_spec(f"input: [4]\nlayers:\n  - {{dense: 3, bias_init: {bias_init!r}}}\n".replace("'", '"'))
    for bias_init in ("orthogonal", "xavier", "identity", {"supplied": "b.npy"}, "he_normal", True):
        assert not valid({"dense": 3, "bias_init": bias_init}), bias_init
    assert valid({"dense": 3, "inits": {"bias": "zeros"}})
    assert not valid({"dense": 3, "inits": {}})
    assert not valid({"dense": 3, "inits": {"bias": "no_such_scheme"}})
