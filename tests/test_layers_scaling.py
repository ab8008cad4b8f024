"""rmsnorm, layer_scale, stochastic_depth and the standalone activation layer: forward and backward against
PyTorch in float64, stochastic depth's statistics at a fixed seed, and how the spec parser reads them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_spec

from initdiag import network, yamlsource
from initdiag.layers import LAYERS
from initdiag.layers.scaling import StochasticDepth

torch = pytest.importorskip("torch")


def _built(text: str):
    spec = make_spec(text)
    return spec, network.build(spec)


def _against_torch(layer, module, x, params: dict):
    """Forward and backward of `layer` and `module` on x (float64): y, dx and each param's gradient agree."""
    y, cache = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    dy = np.random.default_rng(7).standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    for ours, theirs in params.items():
        np.testing.assert_allclose(grads[ours], module.get_parameter(theirs).grad.numpy(), rtol=1e-10, atol=1e-13)
    return y, dx


# ------------------------------------------------------------------ rmsnorm
@pytest.mark.parametrize("shape", [(6,), (4, 6)], ids=["flat", "sequence"])
@pytest.mark.parametrize("eps", [None, 1e-2])
def test_rmsnorm_is_torchs_forward_and_backward(shape, eps):
    options = "{}" if eps is None else f"{{eps: {eps}}}"
    spec, net = _built(f"input: {list(shape)}\ndtype: float64\nlayers:\n  - rmsnorm: {options}\n")
    assert spec.layers[0].config["eps"] == (eps or 1e-6)  # Hugging Face Llama's default
    layer = net.layers[0]
    gamma = np.random.default_rng(3).uniform(0.5, 1.5, shape[-1])
    layer.params["gamma"] = gamma
    module = torch.nn.RMSNorm(shape[-1], eps=eps or 1e-6).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor(gamma))
    x = 3 * np.random.default_rng(0).standard_normal((5,) + shape)
    _against_torch(layer, module, x, {"gamma": "weight"})


def test_rmsnorm_starts_at_gamma_one_and_normalizes_per_token():
    _, net = _built("input: [4, 8]\ndtype: float64\nlayers:\n  - rmsnorm: {}\n")
    layer = net.layers[0]
    assert np.array_equal(layer.params["gamma"], np.ones(8))
    y, _ = layer.forward(5 * np.random.default_rng(1).standard_normal((3, 4, 8)))
    np.testing.assert_allclose(np.mean(y * y, axis=-1), 1.0, rtol=1e-6)


# ------------------------------------------------------------------ layer scale
@pytest.mark.parametrize("shape", [(6,), (4, 6), (3, 5, 5)], ids=["flat", "sequence", "feature-map"])
def test_layer_scale_is_a_per_unit_gamma_against_torch(shape):
    layout = "  - position_embedding: {}\n" if len(shape) == 2 else ""  # lays [4, 6] out as a sequence
    spec, net = _built(f"input: {list(shape)}\ndtype: float64\nlayers:\n{layout}  - layer_scale: {{value: 0.01}}\n")
    layer_spec, layer = spec.layers[-1], net.layers[-1]
    units = shape[0] if len(shape) == 3 else shape[-1]
    assert np.array_equal(layer.params["gamma"], np.full(units, 0.01))
    module, _ = LAYERS["layer_scale"].torch(layer_spec.input_shape, layer_spec.config)
    module = module.double()
    gamma = np.random.default_rng(4).uniform(-1, 1, units)
    layer.params["gamma"] = gamma
    with torch.no_grad():
        module.gamma.copy_(torch.tensor(gamma))
    x = np.random.default_rng(2).standard_normal((3,) + shape)
    y, _ = _against_torch(layer, module, x, {"gamma": "gamma"})
    broadcast = gamma.reshape(-1, 1, 1) if len(shape) == 3 else gamma  # torchvision's CNBlock: (C, 1, 1)
    np.testing.assert_allclose(y, x * broadcast, rtol=1e-15)


def test_layer_scale_defaults_to_convnexts_1e_6():
    spec, net = _built("input: [8]\nlayers:\n  - layer_scale: {}\n")
    assert spec.layers[0].config["value"] == 1e-6 and net.layers[0].params["gamma"].dtype == np.float32


# ------------------------------------------------------------------ stochastic depth
def test_stochastic_depth_drops_whole_samples_and_backward_uses_the_same_mask():
    layer = StochasticDepth("sd", 0.3, "row", rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((64, 3, 4))
    y, cache = layer.forward(x)
    kept = np.any(y != 0, axis=(1, 2))
    assert 0 < kept.sum() < 64
    np.testing.assert_allclose(y, x * kept[:, None, None] / 0.7, rtol=1e-15)  # torchvision's x · m / (1 - p)
    dy = np.random.default_rng(2).standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    assert grads == {}
    np.testing.assert_allclose(dx, dy * kept[:, None, None] / 0.7, rtol=1e-15)


def test_stochastic_depth_batch_mode_keeps_or_drops_the_whole_batch():
    outcomes = set()
    for seed in range(20):
        layer = StochasticDepth("sd", 0.5, "batch", rng=np.random.default_rng(seed))
        y, _ = layer.forward(np.ones((8, 5)))
        assert np.unique(y).size == 1
        outcomes.add(float(y[0, 0]))
    assert outcomes == {0.0, 2.0}


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_stochastic_depth_keeps_the_mean_and_scales_the_second_moment_by_1_over_1_minus_p(p):
    """With x = 1 and N samples, K ~ Binomial(N, 1 - p) are kept: mean(y) = K/(N(1 - p)), expected 1, standard
    error sqrt(p/(N(1 - p))); mean(y²) = K/(N(1 - p)²), expected 1/(1 - p), standard error that / (1 - p)."""
    n = 20000
    layer = StochasticDepth("sd", p, rng=np.random.default_rng(123))
    y, _ = layer.forward(np.ones((n, 4)))
    error = np.sqrt(p / (n * (1 - p)))
    assert abs(y.mean() - 1.0) < 4 * error
    assert abs(np.mean(y * y) - 1 / (1 - p)) < 4 * error / (1 - p)


def test_stochastic_depth_is_the_identity_in_eval_and_matches_torch_there():
    spec, net = _built("input: [6]\nlayers:\n  - stochastic_depth: {p: 0.2, eval: true}\n")
    layer = net.layers[0]
    x = np.random.default_rng(0).standard_normal((4, 6))
    y, cache = layer.forward(x)
    assert y is x
    module, _ = LAYERS["stochastic_depth"].torch((6,), spec.layers[0].config)
    assert torch.equal(module.eval()(torch.tensor(x)), torch.tensor(x))
    assert np.array_equal(layer.backward(x, cache)[0], x)


def test_stochastic_depth_reads_the_build_contexts_eval():
    spec = make_spec("input: [6]\nlayers:\n  - drop_path: 0.2\n")
    assert spec.layers[0].kind == "stochastic_depth" and spec.layers[0].config == {"p": 0.2, "mode": "row", "eval": False}
    from initdiag import layers

    layer = layers.make(spec.layers[0], None, None, None, rng=np.random.default_rng(0), eval=True)
    assert layer.eval


def test_stochastic_depth_p_one_is_a_located_error():
    with pytest.raises(yamlsource.SpecErrors, match=r"layers\[0\]\.stochastic_depth.*\[0, 1\)"):
        make_spec("input: [6]\nlayers:\n  - stochastic_depth: {p: 1}\n")


# ------------------------------------------------------------------ the standalone activation layer
@pytest.mark.parametrize("written, module", [
    ("relu", torch.nn.ReLU()), ("{leaky_relu: {alpha: 0.1}}", torch.nn.LeakyReLU(0.1)), ("tanh", torch.nn.Tanh()),
    ("{gelu: {approximate: tanh}}", torch.nn.GELU(approximate="tanh")), ("softmax", torch.nn.Softmax(dim=-1)),
])
def test_an_activation_layer_is_the_torch_module(written, module):
    spec, net = _built(f"input: [5]\ndtype: float64\nlayers:\n  - dense: 6\n  - activation: {written}\n")
    layer_spec, layer = spec.layers[1], net.layers[1]
    assert layer_spec.kind == "activation" and layer_spec.init is None
    assert layer_spec.activation.name == written.strip("{").split(":")[0]
    x = np.random.default_rng(0).standard_normal((4, 6))
    _against_torch(layer, module, x, {})
    ours, _ = LAYERS["activation"].torch((6,), layer_spec.config)
    assert type(ours) is type(module)


def test_an_activation_layer_acts_per_element_on_feature_maps_and_softmax_is_refused_there():
    spec = make_spec("input: [2, 4, 4]\nlayers:\n  - activation: relu\n")
    assert spec.layers[0].output_shape == (2, 4, 4)
    with pytest.raises(yamlsource.SpecErrors, match=r"layers\[0\]\.activation: softmax acts on the last axis"):
        make_spec("input: [2, 4, 4]\nlayers:\n  - activation: softmax\n")


def test_an_activation_layer_takes_no_init_and_other_layers_keep_their_activation_key():
    with pytest.raises(yamlsource.SpecErrors, match=r"layers\[0\]\.init: unknown key 'init'"):
        make_spec("input: [4]\nlayers:\n  - activation: relu\n    init: xavier\n")
    spec = make_spec("input: [4]\nlayers:\n  - dense: 3\n    activation: tanh\n")
    assert spec.layers[0].kind == "dense" and spec.layers[0].activation.name == "tanh"
    with pytest.raises(yamlsource.SpecErrors, match="unknown activation"):
        make_spec("input: [4]\nlayers:\n  - activation: relux\n")


def test_a_softmax_activation_layer_last_takes_the_fused_cross_entropy():
    from initdiag import pipeline

    spec = make_spec("input: [8]\nlayers:\n  - dense: 5\n    init: xavier\n  - activation: softmax\n")
    run = pipeline.diagnose(spec).run
    assert run.loss == "cross_entropy"
    assert np.isfinite(run.layers[0].grad_var) and run.layers[0].grad_var > 0
