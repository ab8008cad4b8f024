"""The mean-field prediction: quadrature, closed forms, None propagation, phase, and the simulation."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate

from initdiag import activations, network, propagate, theory
from initdiag.theory import LayerTheory, Phase, mean_field, phase
from conftest import make_spec


def make(text: str, seed: int = 0, base_dir=".", allow_custom: bool = False):
    return make_spec(text, seed, base_dir, allow_custom)


def mlp(init: str, activation: str, widths, input_width: int | None = None, batch: int = 256,
        head: str | None = None, extra: str = "") -> str:
    text = f"input: [{input_width or widths[0]}]\nbatch: {batch}\n{extra}"
    text += f"defaults: {{init: {init}, activation: {activation}}}\nlayers:\n"
    text += "".join(f"  - dense: {width}\n" for width in widths)
    if head:
        text += f"  - dense: 10\n    activation: {head}\n"
    return text


def simulate(text: str, seed: int = 0):
    net_spec = make(text, seed)
    return net_spec, propagate.run(network.build(net_spec))


def phi(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def Phi(x):
    return 0.5 * math.erfc(-x / math.sqrt(2))


# --- the quadrature against adaptive integration --------------------------------------------

def reference_moments(act, mean, var):
    """(E[φ²], E[φ'²]) by scipy's adaptive quad, told where the kinks and the activation's scale are."""
    scale = math.sqrt(var)
    points = sorted(p for p in ((h - mean) / scale for h in act.kinks + (0.0, -1.0, 1.0, -3.0, 3.0)) if abs(p) < 12)
    result = []
    for f in (lambda h: act.forward(h) ** 2, lambda h: act.backward(h, act.forward(h), np.ones_like(h)) ** 2):
        def integrand(z):
            return f(np.array([mean + scale * z]))[0] * phi(z)
        result.append(integrate.quad(integrand, -12, 12, points=points, limit=500, epsabs=0, epsrel=1e-13)[0])
    return result


ELEMENTWISE = [(name, {}) for name, cls in activations.ACTIVATIONS.items() if cls.elementwise]
ELEMENTWISE += [("leaky_relu", {"alpha": 0.2}), ("elu", {"alpha": 0.5})]


@pytest.mark.parametrize("name, params", ELEMENTWISE)
def test_gaussian_moments_match_adaptive_quadrature(name, params):
    act = activations.make(name, params)
    # q from 1e-4 to 1e4: at q = 1e4 a tanh' feature is 1/100 wide in z, which a 100-node
    # Gauss–Hermite rule misses by orders of magnitude; the means put kinks off-centre.
    for mean in (0.0, 0.3, -2.0):
        for var in (1e-4, 1.0, 20.0, 1e4):
            got = list(theory.gaussian_moments(act, mean, var))
            want = reference_moments(act, mean, var)
            # quad is asked for 1e-13; the two agree to ~2e-12 at worst
            assert got == pytest.approx(want, rel=1e-10, abs=1e-300), (mean, var)


def test_gaussian_rule_integrates_polynomials_and_point_masses():
    h, w = theory.gaussian_rule(0.3, 2.0, kinks=(0.0, 1.0))
    assert w.sum() == pytest.approx(1, abs=1e-14)
    assert w @ h == pytest.approx(0.3, abs=1e-14)
    assert w @ (h - 0.3) ** 2 == pytest.approx(2.0, rel=1e-13)
    assert w @ (h - 0.3) ** 4 == pytest.approx(3 * 2.0**2, rel=1e-13)
    h, w = theory.gaussian_rule(0.5, 0.0)
    assert h.tolist() == [0.5] and w.tolist() == [1.0]


def test_module_leaves_numpy_polynomial_unimported():
    code = (
        "import sys\nfrom initdiag import spec, yamlsource, theory\n"
        "s = spec.parse(yamlsource.loads('input: [8]\\nlayers: [{dense: 8, activation: tanh}]', 't'), '.', 't')\n"
        "theory.mean_field(s, 1.0)\nprint('numpy.polynomial' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- closed forms ---------------------------------------------------------------------------

def test_linear_network_multiplies_by_sigma_squared_fan_in():
    text = (
        "input: [300]\nlayers:\n"
        "  - {dense: 500, init: xavier, activation: identity}\n"
        "  - {dense: 200, init: lecun_uniform, activation: identity, bias_init: 0.5}\n"
        "  - {dense: 700, init: {truncated_normal: {std: 0.05}}, activation: identity}\n"
        "  - {dense: 700, init: identity, activation: identity}\n"
        "  - {dense: 400, init: {orthogonal: {gain: 1.3}}, activation: identity}\n"
        "  - {dense: 900, init: {orthogonal: {gain: 0.7}}, activation: identity}\n"
    )
    trunc_std = 0.05 * math.sqrt(1 - 2 * 2 * phi(2) / math.erf(2 / math.sqrt(2)))
    variances = [2 / 800, 1 / 500, trunc_std**2, 1 / 700, 1.3**2 / 700, 0.7**2 / 900]
    means = [0, 0.5, 0, 0, 0, 0]
    got = mean_field(make(text), 1 / 3)
    second, fan_in = 1 / 3, 300
    for layer, var_w, mean, width in zip(got, variances, means, [500, 200, 700, 700, 400, 900]):
        q = var_w * fan_in * second
        assert layer.preact_var_theory == pytest.approx(q, rel=1e-12)
        assert layer.chi == pytest.approx(var_w * width, rel=1e-12)  # φ' = 1
        second, fan_in = q + mean**2, width  # a constant bias b adds b² to E[y²], not to q


def test_relu_under_he_keeps_twice_the_input_second_moment():
    widths = [512, 256, 1024, 512]
    got = mean_field(make(mlp("relu", "relu", widths, input_width=100, head="identity")), 0.7)
    for layer in got:
        assert layer.preact_var_theory == pytest.approx(2 * 0.7, rel=1e-13)
    for layer, fan_in, fan_out in zip(got, [100] + widths, widths):
        # χ = (2/fan_in)·fan_out·P(z > 0): 1 on equal widths, the width ratio otherwise
        assert layer.chi == pytest.approx(fan_out / fan_in, rel=1e-13)
    assert got[-1].chi == pytest.approx(2 / 512 * 10, rel=1e-13)  # the identity head: φ' = 1


def test_tanh_under_xavier_shrinks_towards_the_critical_point():
    got = mean_field(make(mlp("xavier", "tanh", [256] * 30)), 1.0)
    q = [layer.preact_var_theory for layer in got]
    chi = [layer.chi for layer in got]
    assert all(b < a for a, b in zip(q, q[1:]))
    assert all(a < b < 1 for a, b in zip(chi, chi[1:]))
    # q_{l+1} = E[tanh(√q_l z)²] ≈ q_l - 2q_l² for small q, so q_l ≈ 1/(2l) and χ_l ≈ 1 - 2q_l → 1
    assert q[-1] == pytest.approx(1 / (2 * 30), rel=0.25)
    assert 1 - chi[-1] == pytest.approx(2 * q[-1], rel=0.1)
    # one step against an independent integral
    expected = integrate.quad(lambda z: math.tanh(math.sqrt(q[4]) * z) ** 2 * phi(z), -12, 12, epsrel=1e-13)[0]
    assert q[5] == pytest.approx(expected, rel=1e-11)


def test_standard_normal_weights_on_wide_relu_explode_by_half_the_width():
    got = mean_field(make(mlp("normal", "relu", [512] * 6)), 1.0)
    assert got[0].preact_var_theory == pytest.approx(512, rel=1e-13)
    for a, b in zip(got, got[1:]):
        assert b.preact_var_theory / a.preact_var_theory == pytest.approx(256, rel=1e-12)
    assert all(layer.chi == pytest.approx(256, rel=1e-12) for layer in got)


@pytest.mark.parametrize("bias", [0.3, -0.5])
def test_constant_bias_shifts_the_relu_integrals(bias):
    text = mlp("relu", "relu", [64, 64, 64]).replace("defaults: {", f"defaults: {{bias_init: {bias}, ")
    got = mean_field(make(text), 1.5)
    q = 2 * 1.5  # a constant bias adds no variance
    assert got[0].preact_var_theory == pytest.approx(q, rel=1e-13)
    for layer in got:
        assert layer.preact_var_theory == pytest.approx(q, rel=1e-12)
        s = bias / math.sqrt(q)
        # E[relu(b + √q z)²] = (b² + q)Φ(b/√q) + b√q φ(b/√q) and E[relu'²] = Φ(b/√q)
        second = (bias**2 + q) * Phi(s) + bias * math.sqrt(q) * phi(s)
        assert layer.chi == pytest.approx(2 / 64 * 64 * Phi(s), rel=1e-12)
        q = 2 / 64 * 64 * second


def test_torch_default_bias_adds_its_variance_and_an_explicit_bias_does_not():
    text = "input: [30]\ndefaults: {init: torch_default, activation: identity}\nlayers:\n  - dense: 20\n  - {dense: 20, bias_init: 0.1}\n"
    got = mean_field(make(text), 2.0)
    q1 = 1 / (3 * 30) * 30 * 2.0 + 1 / (3 * 30)  # U(±1/√fan_in) weights and bias, variance 1/(3·fan_in)
    assert got[0].preact_var_theory == pytest.approx(q1, rel=1e-13)
    assert got[1].preact_var_theory == pytest.approx(1 / (3 * 20) * 20 * q1, rel=1e-13)


def test_selu_under_lecun_normal_converges_to_unit_variance():
    got = mean_field(make(mlp("lecun_normal", "selu", [256] * 40)), 3.0)
    q = [layer.preact_var_theory for layer in got]
    distances = [abs(v - 1) for v in q]
    assert all(b < a for a, b in zip(distances, distances[1:]))  # a stable fixed point
    assert distances[-1] < 1e-4  # the map's slope at q* = 1 is about 0.78: 0.78^40 · 2 ≈ 1e-4
    at_one = mean_field(make(mlp("lecun_normal", "selu", [256] * 3)), 1.0)
    # scale and alpha are chosen so that E[selu(z)²] = 1 for z ~ N(0, 1)
    assert all(layer.preact_var_theory == pytest.approx(1, abs=1e-12) for layer in at_one)


# --- where the assumptions fail -------------------------------------------------------------

def layers_text(*inits: str, activation: str = "tanh", width: int = 32) -> str:
    return f"input: [{width}]\nlayers:\n" + "".join(
        f"  - {{dense: {width}, init: {init}, activation: {activation}}}\n" for init in inits
    )


@pytest.mark.parametrize("bad", ["ones", "{constant: 0.1}", "{normal: {mean: 0.5}}", "{uniform: {low: 0, high: 1}}",
                                 "{truncated_normal: {mean: -0.1, std: 0.2}}"])
def test_constant_and_mean_shifted_weights_give_none_from_that_layer_on(bad):
    got = mean_field(make(layers_text("xavier", bad, "xavier")), 1.0)
    assert got[0].preact_var_theory is not None and got[0].chi is not None
    assert got[1:] == [LayerTheory(None, None)] * 2


def test_zero_weights_are_exact_not_unknown():
    # zero weights: the pre-activation is the bias exactly (q = 0), nothing flows back (χ = 0), and
    # the next layer sees the constant relu(b) on every unit: q = σ_w²·fan_in·relu(b)²
    text = "input: [512]\nbatch: 64\nlayers:\n  - {dense: 512, init: zero, activation: relu, bias_init: 0.2}\n" \
           "  - {dense: 512, init: relu, activation: relu}\n"
    net_spec, result = simulate(text)
    got = mean_field(net_spec, result.input_second_moment)
    assert got[0] == LayerTheory(0.0, 0.0)
    assert got[1].preact_var_theory == pytest.approx(2 * 0.2**2, rel=1e-13)
    assert result.layers[0].preact_var == pytest.approx(0, abs=1e-12)  # float32 rounding of a constant
    # the variance over 512 units of 0.2·Σ_j W_ji: relative error sqrt(2/512)
    assert result.layers[1].preact_var == pytest.approx(got[1].preact_var_theory, rel=5 * math.sqrt(2 / 512))
    assert mean_field(make(layers_text("{constant: 0}", "xavier")), 1.0)[0] == LayerTheory(0.0, 0.0)


def test_softmax_has_no_chi_and_nothing_after_it():
    got = mean_field(make(mlp("xavier", "tanh", [64, 64], head="softmax")), 1.0)
    second = theory.gaussian_moments(activations.make("tanh"), 0.0, got[-2].preact_var_theory)[0]
    assert got[-1].chi is None and got[-1].preact_var_theory == pytest.approx(2 / 74 * 64 * second, rel=1e-13)
    assert all(layer.chi is not None for layer in got[:-1])
    middle = mean_field(make(layers_text("xavier", "xavier").replace("tanh}", "softmax}", 1)), 1.0)
    assert middle[0].chi is None and middle[0].preact_var_theory is not None
    assert middle[1] == LayerTheory(None, None)


def test_overflowing_variance_is_inf_then_none():
    got = mean_field(make(mlp("{normal: {std: 1.0e+100}}", "identity", [16] * 3)), 1.0)
    assert got[0].preact_var_theory == pytest.approx(16e200)
    assert got[1] == LayerTheory(math.inf, None)
    assert got[2] == LayerTheory(None, None)


def test_supplied_weights_use_the_measured_second_moment(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "w.npy"
    np.save(path, rng.normal(0.0, 0.03, size=(256, 512)))
    text = (f"input: [256]\nbatch: 512\nlayers:\n  - {{dense: 512, init: {{supplied: '{path}'}}, activation: identity}}\n"
            "  - {dense: 256, init: xavier, activation: tanh}\n")
    net_spec, result = simulate(text)
    assert mean_field(net_spec, result.input_second_moment) == [LayerTheory(None, None)] * 2
    moments = [layer.weight_std**2 + layer.weight_mean**2 for layer in result.layers]
    got = mean_field(net_spec, result.input_second_moment, moments)
    assert got[0].preact_var_theory == pytest.approx(moments[0] * 256 * result.input_second_moment, rel=1e-12)
    # zero-mean N(0,1) input: relative std of the sample q is sqrt(2(1/fan_in + 1/batch)/fan_out)
    tolerance = 5 * math.sqrt(2 * (1 / 256 + 1 / 512) / 512)
    assert result.layers[0].preact_var == pytest.approx(got[0].preact_var_theory, rel=tolerance)
    # only supplied and custom layers read the measured moments
    assert mean_field(net_spec, result.input_second_moment, [moments[0], 123.0])[1] == got[1]


def test_custom_weights_use_the_measured_second_moment(tmp_path):
    (tmp_path / "theory_test_custom_init.py").write_text(
        "def draw(shape, fan_in, fan_out, rng):\n    return rng.standard_normal(shape) * 0.1\n")
    text = "input: [16]\nlayers:\n  - {dense: 8, init: {custom: 'theory_test_custom_init:draw'}, activation: identity}\n"
    net_spec = make(text, base_dir=tmp_path, allow_custom=True)
    assert mean_field(net_spec, 1.0) == [LayerTheory(None, None)]
    assert mean_field(net_spec, 1.0, [0.01]) == [LayerTheory(pytest.approx(0.16), pytest.approx(0.08))]


# --- phase ----------------------------------------------------------------------------------

def test_small_xavier_gain_on_tanh_is_ordered():
    result = phase(mean_field(make(mlp("{xavier: {gain: 0.5}}", "tanh", [512] * 10)), 1.0))
    assert result.phase == "ordered" and result.chi < 0.3
    assert result.depth_scale == pytest.approx(-1 / math.log(result.chi), rel=1e-12)


def test_wide_normal_on_tanh_is_chaotic():
    got = mean_field(make(mlp("{normal: {std: 0.2}}", "tanh", [512] * 10)), 1.0)
    assert 0.04 * 512 == pytest.approx(20.48)  # σ_w²·n; χ = 20.48·E[tanh'²] with q ≈ 17
    result = phase(got)
    assert result.phase == "chaotic" and result.chi > 2
    assert result.depth_scale == pytest.approx(1 / math.log(result.chi), rel=1e-12)


def test_relu_under_he_is_critical_even_with_a_narrow_head():
    got = mean_field(make(mlp("relu", "relu", [512] * 8, head="softmax")), 1.0)
    assert got[-1].chi is None
    headed = mean_field(make(mlp("relu", "relu", [512] * 8, head="identity")), 1.0)
    assert headed[-1].chi == pytest.approx(2 / 512 * 10)  # excluded: it measures the head, not the body
    for theory_list in (got, headed):
        assert phase(theory_list) == Phase("critical", pytest.approx(1, rel=1e-12), None)


def test_critical_band_scales_with_depth():
    for depth, expected in ((10, "critical"), (40, "ordered")):
        got = phase([LayerTheory(1.0, 0.95)] * depth + [LayerTheory(1.0, 0.01)])
        assert got.phase == expected  # depth·|ln 0.95| = 0.51 vs 2.05, against tolerance 1
        assert got.chi == pytest.approx(0.95, rel=1e-12)
    assert phase([LayerTheory(1.0, 0.95)] * 40 + [LayerTheory(1.0, 1.0)], tolerance=3).phase == "critical"
    assert phase([LayerTheory(1.0, 0.95)] * 40 + [LayerTheory(1.0, 1.0)]).depth_scale == pytest.approx(-1 / math.log(0.95))


def test_phase_without_hidden_chi_is_none_and_zero_chi_is_ordered():
    assert phase(mean_field(make(mlp("relu", "relu", [64])), 1.0)) is None  # only an output layer
    assert phase(mean_field(make(mlp("ones", "relu", [64] * 3)), 1.0)) is None
    assert phase([LayerTheory(1.0, 1.0), LayerTheory(0.0, 0.0), LayerTheory(1.0, 1.0)]) == Phase("ordered", 0.0, 0.0)
    # a None-cut network: the mean runs over the hidden layers that have a χ
    cut = [LayerTheory(1.0, 2.0), LayerTheory(1.0, 8.0), LayerTheory(None, None), LayerTheory(None, None)]
    assert phase(cut).chi == pytest.approx(4.0)


# --- against the simulation on wide networks --------------------------------------------------
#
# Layer 1 sees zero-mean N(0,1) input: its sample q = (1/n)Σ_i w_iᵀĈw_i has relative standard
# deviation sqrt(2·tr(Ĉ²)/n)/tr(Ĉ) ≈ sqrt(2(1/fan_in + 1/batch)/n). Deeper inputs have a mean
# (relu outputs, a bias), and the per-unit offsets Σ_j W_ji·mean(x_j) are n samples only: at most
# sqrt(2/n) relative per layer. Errors in log q carry over with slope ≤ 1 (ReLU: exactly 1), so
# they add up like a random walk. Five standard deviations.

def q_tolerances(batch: int, input_width: int, widths) -> list:
    variances, fan_in, out = [], input_width, []
    for index, width in enumerate(widths):
        variances.append(2 * (1 / fan_in + 1 / batch) / width if index == 0 else 2 / width)
        out.append(5 * math.sqrt(sum(variances)))
        fan_in = width
    return out


WIDE = {
    "tanh-xavier": ("xavier", "tanh", [2048, 1024, 1536, 1024], ""),
    "tanh-chaotic": ("{normal: {std: 0.2}}", "tanh", [1024, 1024, 1024], ""),
    "relu-he-bias": ("relu", "relu", [2048, 1536, 2048], "bias_init: 0.2, "),
    "gelu-uniform-input": ("relu_uniform", "gelu", [1536, 2048], ""),
}


@pytest.mark.parametrize("case", list(WIDE))
def test_preact_var_matches_wide_simulation(case):
    init, activation, widths, bias = WIDE[case]
    extra = "loss: unit\n" + ("input_distribution: uniform\n" if "uniform-input" in case else "")
    text = mlp(init, activation, widths, input_width=1024, batch=512, extra=extra).replace("defaults: {", "defaults: {" + bias)
    net_spec, result = simulate(text, seed=1)
    got = mean_field(net_spec, result.input_second_moment)
    for layer, predicted, tolerance in zip(result.layers, got, q_tolerances(512, 1024, widths)):
        assert layer.preact_var == pytest.approx(predicted.preact_var_theory, rel=tolerance), layer.index


# The ratio grad_var[l-1]/grad_var[l] averages φ'(h)² over layer l's n units, whose own
# offsets and norms differ by O(1) relative (a ReLU unit's firing rate): 3·sqrt(2/n).
@pytest.mark.parametrize("case", ["tanh-xavier", "tanh-chaotic", "relu-he-bias"])
def test_gradient_ratio_matches_chi_on_wide_simulation(case):
    init, activation, widths, bias = WIDE[case]
    text = mlp(init, activation, widths, input_width=1024, batch=512, extra="loss: unit\n")
    text = text.replace("defaults: {", "defaults: {" + bias)
    net_spec, result = simulate(text, seed=2)
    got = mean_field(net_spec, result.input_second_moment)
    grad = [layer.grad_var for layer in result.layers]
    assert grad[-1] == pytest.approx(1, rel=5 * math.sqrt(2 / (512 * widths[-1])))  # the unit loss
    for index in range(1, len(widths)):
        tolerance = 3 * math.sqrt(2 / widths[index])
        assert grad[index - 1] / grad[index] == pytest.approx(got[index].chi, rel=tolerance), index


def test_phase_is_width_free_he_relu_with_a_narrowing_first_layer_is_critical():
    net_spec = make("input: [784]\ndefaults: {init: relu, activation: relu}\nlayers:\n"
                    "  - dense: 256\n  - dense: 256\n  - dense: 256\n  - {dense: 10, activation: softmax}\n")
    predicted = mean_field(net_spec, 1.0)
    assert predicted[0].chi == pytest.approx(256 / 784, rel=1e-9)  # per-unit gradient variance ratio
    assert phase(predicted, net_spec).phase == "critical"
    assert phase(predicted).phase == "ordered"  # without the width normalisation
