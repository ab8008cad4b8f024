"""Forward, backward and statistics of whole networks: finite differences, theory and findings."""

import math
import warnings

import numpy as np
import pytest
from gradcheck import numeric_gradient

from initdiag import checks, losses, network, propagate, stats
from initdiag.yamlsource import SpecErrors
from conftest import make_spec as make


def mlp(init: str, activation: str, depth: int, width: int, batch: int = 256, head: str | None = None) -> str:
    text = f"input: [{width}]\nbatch: {batch}\ndefaults: {{init: {init}, activation: {activation}}}\nlayers:\n"
    text += f"  - dense: {width}\n" * depth
    if head:
        text += f"  - dense: 10\n    activation: {head}\n"
    return text


def run(text: str, seed: int | None = None):
    net_spec = make(text, seed)
    result = propagate.run(network.build(net_spec))
    return net_spec, result, checks.find(result, net_spec)


def codes(findings, severity=None) -> set:
    return {f.code for f in findings if severity is None or f.severity == severity}


# --- the backward pass against central finite differences, float64 -------------------------

LOSS_VALUES = {
    "cross_entropy": lambda y, t: -np.mean(np.log(np.sum(y * t, axis=1))),
    "binary_cross_entropy": lambda y, t: -np.mean(t * np.log(y) + (1 - t) * np.log(1 - y)),
    "mse": lambda y, t: np.mean((y - t) ** 2),
}


def _forward(layers, x):
    caches = []
    for layer in layers:
        x, cache = layer.forward(x)
        caches.append(cache)
    return x, caches


def _backward(layers, caches, loss, y, targets):
    dy = loss.output_gradient(y, targets)
    dz = loss.logit_gradient(y, targets) if loss.fused else None
    grads = [None] * len(layers)
    for i in reversed(range(len(layers))):
        dx, grads[i] = layers[i].backward(dy, caches[i], dz=dz)
        dy, dz = dx, None
    return dx, grads


@pytest.mark.parametrize("head", ["softmax", "sigmoid", "identity", "tanh"])
def test_backward_matches_finite_differences(head):
    text = (
        "input: [6]\nbatch: 5\ndtype: float64\ndefaults: {init: relu_uniform, bias_init: 0.1}\nlayers:\n"
        "  - {dense: 7, activation: tanh}\n  - {dense: 8, activation: gelu}\n"
        "  - {dense: 7, activation: {leaky_relu: {alpha: 0.2}}}\n  - {dense: 6, activation: swish}\n"
        f"  - {{dense: 4, activation: {head}}}\n"
    )
    built = network.build(make(text))
    loss = losses.resolve("auto", head)
    y, caches = _forward(built.layers, built.inputs)
    targets = loss.targets(np.random.default_rng(1), y.shape, y.dtype)
    dx, grads = _backward(built.layers, caches, loss, y, targets)
    value = LOSS_VALUES[loss.name]

    def loss_at():
        return value(_forward(built.layers, built.inputs)[0], targets)

    # central differences (tests/gradcheck.py): about 1e-9 absolute for these O(1) losses
    for layer, grad in zip(built.layers, grads):
        for name, param in (("weights", layer.weights), ("bias", layer.bias)):
            np.testing.assert_allclose(grad[name], numeric_gradient(loss_at, param), rtol=1e-6, atol=1e-9,
                                       err_msg=f"{layer.name}.{name}")
    numeric_dx = numeric_gradient(loss_at, built.inputs)
    np.testing.assert_allclose(dx, numeric_dx, rtol=1e-6, atol=1e-9)


def test_unit_loss_passes_standard_normal_noise():
    _, result, _ = run("input: [64]\nbatch: 512\nloss: unit\nlayers:\n  - {dense: 256, activation: identity}\n")
    # var of 512·256 N(0,1) draws: SE of a sample variance is sqrt(2/n) = 0.0039
    assert result.layers[-1].grad_var == pytest.approx(1.0, abs=5 * math.sqrt(2 / (512 * 256)))


# --- theory -------------------------------------------------------------------------------

def test_relu_he_keeps_preactivation_variance_at_twice_the_input():
    width = 512
    _, result, findings = run(mlp("relu", "relu", 20, width))
    q = [layer.preact_var for layer in result.layers]
    second = [layer.act_second_moment for layer in result.layers]
    # Layer 1: Var(z) = fan_in · 2/fan_in · E[x²] = 2·Var(x) exactly in expectation; the sample
    # over width² weights and batch·width entries has a relative error of order sqrt(2/width).
    tolerance = 5 * math.sqrt(2 / width)
    assert q[0] / (2 * result.input_second_moment) == pytest.approx(1, abs=tolerance)
    for layer in range(1, 20):
        # One step of the He recursion: q_l = 2 · E[relu(z_{l-1})²], given the previous layer.
        assert q[layer] / (2 * second[layer - 1]) == pytest.approx(1, abs=tolerance)
        # And E[relu(z)²] = q/2 for a symmetric z.
        assert second[layer] / (q[layer] / 2) == pytest.approx(1, abs=tolerance)
    # Over depth, finite-width fluctuations of log q accumulate like a random walk with
    # variance about 5·l/width (Hanin & Rolnick 2018); 4 of those standard deviations at l = 20:
    band = 4 * math.sqrt(5 * 20 / width)
    assert abs(math.log(q[-1] / (2 * result.input_second_moment))) < band
    assert not codes(findings) & {"exploding-activations", "vanishing-activations", "exploding-gradients", "vanishing-gradients"}


def test_deep_tanh_under_xavier_shrinks_slowly_as_mean_field_predicts():
    width = 512
    _, result, findings = run(mlp("xavier", "tanh", 12, width))
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    second = [layer.act_second_moment for layer in result.layers]
    tolerance = 5 * math.sqrt(2 / width)
    for layer in result.layers:
        # Given the measured pre-activation variance q, a Gaussian z gives E[tanh(z)²] = Σ w·tanh(√q·x)².
        predicted = float(np.sum(weights * np.tanh(math.sqrt(layer.preact_var) * nodes) ** 2))
        assert layer.act_second_moment == pytest.approx(predicted, rel=tolerance)
    assert all(b < a for a, b in zip(second, second[1:])), "tanh under xavier must shrink layer after layer"
    # slowly: q_{l+1} ≈ q_l - 2·q_l² for small q, so each step keeps most of the signal
    assert all(b / a > 0.5 for a, b in zip(second, second[1:]))
    assert "exploding-activations" not in codes(findings)


def test_normal_on_deep_relu_explodes():
    _, result, findings = run(mlp("normal", "relu", 10, 512))
    assert "exploding-activations" in codes(findings, "error")
    # N(0,1) weights multiply E[z²] by fan_in/2 = 256 per ReLU layer
    ratios = [b.preact_var / a.preact_var for a, b in zip(result.layers, result.layers[1:])]
    assert np.exp(np.mean(np.log(ratios))) == pytest.approx(256, rel=0.25)


def test_small_std_vanishes():
    _, _, findings = run(mlp("{normal: {std: 0.01}}", "relu", 10, 512))
    assert "vanishing-activations" in codes(findings, "error")


def test_zero_gives_symmetry_and_zero_weight_gradients_below_the_last_layer():
    _, result, findings = run(mlp("zero", "relu", 4, 64, head="softmax"))
    assert "symmetry" in codes(findings, "error")
    assert all(layer.weight_grad_var == 0 for layer in result.layers[:-1])
    assert all(layer.symmetry == pytest.approx((layer.fan_out - 1) / layer.fan_out) for layer in result.layers)


def test_ones_gives_symmetry():
    _, result, findings = run(mlp("ones", "tanh", 3, 32))
    assert "symmetry" in codes(findings, "error")
    assert result.layers[0].symmetry == pytest.approx(31 / 32)


# --- statistics ---------------------------------------------------------------------------

def test_symmetry_counts_duplicated_units_exactly():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((20, 10))
    weights[:, 7] = weights[:, 2]
    weights[:, 9] = weights[:, 2]
    assert stats.symmetry(weights, np.zeros(10)) == pytest.approx(2 / 10)
    bias = np.zeros(10)
    bias[9] = 1.0  # same weights, different bias: a different unit
    assert stats.symmetry(weights, bias) == pytest.approx(1 / 10)
    permuted = weights.copy()
    permuted[:, 3] = weights[::-1, 4]  # equal column sums, different columns
    permuted[:, 7], permuted[:, 9] = rng.standard_normal(20), rng.standard_normal(20)
    assert stats.symmetry(permuted, np.zeros(10)) == 0.0


def test_dead_fraction_counts_units_dead_for_every_sample():
    y = np.ones((4, 5))
    y[:, 1] = 0
    y[:3, 2] = 0  # alive for one sample
    assert stats.dead_fraction(y) == pytest.approx(1 / 5)


def test_overflow_is_a_finding_not_a_warning_or_crash():
    text = mlp("{normal: {std: 1000}}", "relu", 12, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, result, findings = run(text)
    overflow = [f for f in findings if f.code == "overflow"]
    assert overflow and overflow[0].severity == "error"
    first_bad = next(l for l in result.layers if not math.isfinite(l.act_var))
    assert overflow[0].layer == first_bad.name


# --- random streams -----------------------------------------------------------------------

def test_same_seed_same_numbers_and_layers_draw_independently():
    base = "input: [32]\nbatch: 16\nlayers:\n  - {dense: 64, init: relu}\n  - {dense: 48, init: xavier}\n  - {dense: 8}\n"
    a, b = network.build(make(base)), network.build(make(base))
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.weights, lb.weights)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    changed = network.build(make(base.replace("{dense: 48, init: xavier}", "{dense: 40, init: orthogonal}")))
    np.testing.assert_array_equal(a.layers[0].weights, changed.layers[0].weights)
    np.testing.assert_array_equal(a.inputs, changed.inputs)
    other = network.build(make(base, seed=1))
    assert not np.array_equal(a.layers[0].weights, other.layers[0].weights)


def test_float64_on_request():
    built = network.build(make("input: [8]\ndtype: float64\nlayers:\n  - {dense: 4, activation: tanh}\n"))
    assert built.inputs.dtype == np.float64 and built.layers[0].weights.dtype == np.float64
    built32 = network.build(make("input: [8]\nlayers:\n  - {dense: 4, activation: tanh}\n"))
    assert built32.inputs.dtype == np.float32 and built32.layers[0].weights.dtype == np.float32
    y, _ = built32.layers[0].forward(built32.inputs)
    assert y.dtype == np.float32


def test_memory_estimate_refuses_before_allocating():
    huge = make("input: [100000]\nlayers:\n  - {dense: 100000, name: wide}\n  - {dense: 10}\n")
    estimate = network.estimate_memory(huge)
    assert estimate.largest_layer.name == "wide"
    assert estimate.total >= 2 * 4 * 100000 * 100000  # the weights and their gradient, float32
    with pytest.raises(SpecErrors) as raised:
        network.build(huge, max_memory=10**9)
    message = str(raised.value.problems[0])
    assert "wide" in message and "GB" in message


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (3.0, 1.0), (0.05, 0.5), (1e18, 0.0), (1e-20, 0.0)])
def test_mean_var_float32_matches_float64_reference(scale, offset):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((512, 1024)) * scale + offset * scale).astype(np.float32)
    mean, var = stats.mean_var(x)
    reference = x.astype(np.float64)
    # float32 reductions over n = 2^19 entries: rounding error about sqrt(n)·eps32 = 4e-5 at worst
    # in relative terms (a random walk of n roundings of size eps32 = 6e-8); the mean's error is
    # relative to the spread, since it is a sum of terms of that size.
    tolerance = math.sqrt(x.size) * float(np.finfo(np.float32).eps)
    assert var == pytest.approx(reference.var(), rel=tolerance)
    assert abs(mean - reference.mean()) <= tolerance * reference.std()


def test_mean_var_propagates_non_finite_values():
    x = np.ones((4, 4), dtype=np.float32)
    x[1, 2] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="ignore"):
            mean, var = stats.mean_var(x)
    assert not math.isfinite(var)
