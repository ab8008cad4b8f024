"""Tests for initdiag.activations, generated from the registry where possible.

A newly registered activation is picked up by every parametrised test below; the tests that
need per-activation knowledge (reference formula, rule-of-thumb scheme, saturation case, kink
convention) fail until that knowledge is added here, rather than silently skipping it.
"""

import math
import warnings

import numpy as np
import pytest
from scipy import special

from initdiag import activations as act
from initdiag.registry import UnknownNameError

NAMES = sorted(act.ACTIVATIONS)
EPS = np.finfo(np.float64).eps
SELU_ALPHA = 1.6732632423543772848170429916717  # PyTorch's constants
SELU_SCALE = 1.0507009873554804934193349852946


def _non_default(cls):
    explicit = {"leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.5}, "gelu": {"approximate": "tanh"}}
    if cls.name in explicit:
        return explicit[cls.name]
    return {k: 2.0 * v + 0.1 for k, v in cls.params.items()}


# Every activation with its defaults, plus every parametrised one with other values.
CONFIGS = [(n, {}) for n in NAMES] + [
    (n, _non_default(act.ACTIVATIONS[n])) for n in NAMES if act.ACTIVATIONS[n].params
]
CONFIG_IDS = [f"{n}-{p}" if p else n for n, p in CONFIGS]


def _points(a, shape, seed=0):
    """Random float64 pre-activations spread over both tails, kept 1e-3 away from kinks."""
    z = np.random.default_rng(seed).normal(0.0, 3.0, shape)
    for k in a.kinks:
        near = np.abs(z - k) < 1e-3
        z[near] = k + np.where(z[near] >= k, 1e-2, -1e-2)
    return z


# ------------------------------------------------------------------ forward vs independent formulas
def _elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


REFERENCE = {
    "identity": lambda x, p: x,
    "relu": lambda x, p: np.where(x > 0, x, 0.0),
    "leaky_relu": lambda x, p: np.where(x > 0, x, p["alpha"] * x),
    "elu": lambda x, p: _elu(x, p["alpha"]),
    "selu": lambda x, p: SELU_SCALE * _elu(x, SELU_ALPHA),
    "tanh": lambda x, p: np.tanh(x),
    "sigmoid": lambda x, p: special.expit(x),
    "hard_sigmoid": lambda x, p: np.clip(x / 6 + 0.5, 0, 1),
    "hardtanh": lambda x, p: np.clip(x, -1, 1),
    "relu6": lambda x, p: np.minimum(np.maximum(x, 0.0), 6.0),
    "hardswish": lambda x, p: x * np.minimum(np.maximum(x + 3, 0.0), 6.0) / 6,
    "softplus": lambda x, p: np.logaddexp(0, x),
    "softsign": lambda x, p: x / (1 + np.abs(x)),
    "gelu": lambda x, p: (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
                          if p.get("approximate") == "tanh" else x * special.ndtr(x)),
    "swish": lambda x, p: x * special.expit(x),
    "mish": lambda x, p: x * np.tanh(np.logaddexp(0, x)),
    "softmax": lambda x, p: special.softmax(x, axis=-1),
}


@pytest.mark.parametrize("name,params", CONFIGS, ids=CONFIG_IDS)
def test_forward_matches_reference(name, params):
    assert name in REFERENCE, f"add an independent reference formula for '{name}'"
    a = act.make(name, params)
    z = _points(a, (64, 33))
    full = {**type(a).params, **params}
    # Both sides are a few float64 operations deep; 1e-13 relative leaves ~450 ulps.
    np.testing.assert_allclose(a.forward(z), REFERENCE[name](z, full), rtol=1e-13, atol=1e-300)


KNOWN_VALUES = [  # (name, params, z, expected)
    ("gelu", {}, 1.0, 0.8413447460685429),
    ("gelu", {}, -1.0, -0.15865525393145707),
    ("gelu", {}, 0.0, 0.0),
    ("selu", {}, 1.0, SELU_SCALE),
    ("selu", {}, -1.0, SELU_SCALE * SELU_ALPHA * math.expm1(-1.0)),
    ("hard_sigmoid", {}, -3.0, 0.0),
    ("hard_sigmoid", {}, 3.0, 1.0),
    ("hard_sigmoid", {}, 0.0, 0.5),
    ("hard_sigmoid", {}, 1.5, 0.75),
    ("hardtanh", {}, -2.0, -1.0),
    ("sigmoid", {}, 0.0, 0.5),
    ("softplus", {}, 0.0, math.log(2.0)),
    ("softsign", {}, 1.0, 0.5),
    ("swish", {}, 1.0, 1.0 / (1.0 + math.exp(-1.0))),
    ("mish", {}, 1.0, math.tanh(math.log1p(math.e))),
    ("elu", {"alpha": 0.5}, -1.0, 0.5 * math.expm1(-1.0)),
    ("leaky_relu", {}, -2.0, -0.02),
    ("leaky_relu", {"alpha": 0.2}, -2.0, -0.4),
]


@pytest.mark.parametrize("name,params,z,expected", KNOWN_VALUES)
def test_forward_known_values(name, params, z, expected):
    y = act.make(name, params).forward(np.array([[z]]))
    assert y[0, 0] == pytest.approx(expected, rel=4 * EPS, abs=1e-300)


def test_softmax_known_values_and_shift_invariance():
    a = act.make("softmax")
    z = np.array([[0.0, math.log(3.0)], [5.0, 5.0]])
    np.testing.assert_allclose(a.forward(z), [[0.25, 0.75], [0.5, 0.5]], rtol=4 * EPS)
    np.testing.assert_allclose(a.forward(z + 1e4), a.forward(z), rtol=1e-12)


# ------------------------------------------------------------------ backward vs finite differences
H = 1e-6  # central-difference step


@pytest.mark.parametrize("name,params", CONFIGS, ids=CONFIG_IDS)
def test_backward_matches_finite_differences(name, params):
    a = act.make(name, params)
    rng = np.random.default_rng(1)
    z = _points(a, (48, 20))
    dy = rng.normal(size=z.shape)
    got = a.backward(z, a.forward(z), dy)
    fp, fm = a.forward(z + H), a.forward(z - H)
    # Error of (f(z+H) - f(z-H))/2H per unit of dy: rounding, with f(z+-H) each within a couple
    # of ulps, is <= 4*EPS*max|f|/2H (~1e-9 for |f| ~ 1); truncation is H^2/6*|f'''| <= H^2 here
    # (|f'''| <= 6 for all of these). A wrong derivative is off by far more (>= 1e-4 relative).
    if a.elementwise:
        expected = dy * (fp - fm) / (2 * H)
        per_unit = 4 * EPS * np.maximum(1.0, np.maximum(np.abs(fp), np.abs(fm))) / (2 * H) + H**2
        tol = np.abs(dy) * per_unit
    else:
        # Full finite-difference Jacobian, J[b, i, j] = dy_i/dz_j, one column per perturbed unit
        # (rows of the batch are independent, so a whole column is perturbed at once).
        n = z.shape[-1]
        jac = np.empty(z.shape + (n,))
        for j in range(n):
            e = np.zeros(n)
            e[j] = H
            jac[:, :, j] = (a.forward(z + e) - a.forward(z - e)) / (2 * H)
        expected = np.einsum("bi,bij->bj", dy, jac)
        tol = np.abs(dy).sum(axis=-1, keepdims=True) * (4 * EPS / (2 * H) + H**2)
    assert np.all(np.abs(got - expected) <= tol + 1e-9 * np.abs(expected)), (
        f"max error {np.max(np.abs(got - expected)):.3g}")


# PyTorch's choice at each kink, as (params, z, derivative). Every kinked activation needs one.
KINK_DERIVATIVES = {
    "relu": [({}, 0.0, 0.0)],
    "leaky_relu": [({}, 0.0, 0.01), ({"alpha": 0.2}, 0.0, 0.2)],
    "elu": [({}, 0.0, 1.0), ({"alpha": 0.5}, 0.0, 0.5)],  # alpha * e^0 from the x <= 0 side
    "selu": [({}, 0.0, SELU_SCALE * SELU_ALPHA)],
    "hardtanh": [({}, -1.0, 0.0), ({}, 1.0, 0.0), ({}, -1.0 + 1e-12, 1.0), ({}, 1.0 - 1e-12, 1.0),
                 ({}, 1.5, 0.0)],
    "hard_sigmoid": [({}, -3.0, 0.0), ({}, 3.0, 0.0), ({}, -3.0 + 1e-12, 1 / 6),
                     ({}, 3.0 - 1e-12, 1 / 6), ({}, -4.0, 0.0), ({}, 4.0, 0.0)],
    "relu6": [({}, 0.0, 0.0), ({}, 6.0, 0.0), ({}, 1e-12, 1.0), ({}, 6.0 - 1e-12, 1.0), ({}, 7.0, 0.0)],
    "hardswish": [({}, -3.0, 0.0), ({}, 3.0, 1.0), ({}, 0.0, 0.5), ({}, -3.0 + 2**-40, (-3.0 + 2**-40) / 3 + 0.5), ({}, 4.0, 1.0)],
}


@pytest.mark.parametrize("name", NAMES)
def test_kink_derivatives(name):
    cls = act.ACTIVATIONS[name]
    if not cls.kinks:
        assert name not in KINK_DERIVATIVES, f"'{name}' declares no kinks"
        return
    assert name in KINK_DERIVATIVES, f"pin the derivative convention at the kinks of '{name}'"
    assert {z for _, z, _ in KINK_DERIVATIVES[name]} >= set(cls.kinks)
    for params, z, expected in KINK_DERIVATIVES[name]:
        a = act.make(name, params)
        zz = np.array([[z]])
        got = a.backward(zz, a.forward(zz), np.ones_like(zz))[0, 0]
        assert got == pytest.approx(expected, rel=4 * EPS, abs=0), (params, z)


# ------------------------------------------------------------------ erf
def test_erf_matches_math_erf_on_dense_grid():
    x = np.linspace(-10.0, 10.0, 200_001)
    ref = np.array([math.erf(v) for v in x])
    err = np.abs(act.erf(x) - ref)
    # Both sides are within ~1 ulp of the truth; an ulp of a value in [0.5, 1) is EPS/2, so the
    # difference stays under 2*EPS (~4.4e-16 < 1e-15) everywhere ...
    assert err.max() <= 2 * EPS
    # ... and near 0, where erf(x) ~ 1.13x is small, it must be relatively accurate as well.
    small = (np.abs(x) < 1) & (x != 0)
    assert np.max(err[small] / np.abs(ref[small])) <= 4 * EPS


def test_erf_special_values_and_tiny_arguments():
    x = np.array([0.0, -0.0, np.inf, -np.inf, 1e-300, -1e-20, 30.0, 1e300])
    y = act.erf(x)
    np.testing.assert_array_equal(y[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(y[1])
    np.testing.assert_allclose(y[4:6], [2 / math.sqrt(math.pi) * 1e-300,
                                        -2 / math.sqrt(math.pi) * 1e-20], rtol=2 * EPS)
    np.testing.assert_array_equal(y[6:], [1.0, 1.0])
    assert np.isnan(act.erf(np.array([np.nan]))).all()


def test_erfc_keeps_relative_accuracy_in_the_tail():
    x = np.linspace(-6.0, 26.0, 32_001)
    ref = np.array([math.erfc(v) for v in x])
    # exp(-x*x) inherits the rounding of x*x (at most half an ulp, EPS/2 relative) multiplied
    # by x^2, a relative error up to x^2*EPS/2 (~7.5e-14 at x = 26). On top: a few ulps from the
    # rational fit and exp, and near |x| = 1 the cancellation in 1 - erf(x), which turns erf's
    # ulp into up to erf/erfc ~ 5 ulps of erfc; 12 ulps covers these.
    assert np.all(np.abs(act.erfc(x) - ref) <= (x * x / 2 + 12) * EPS * ref)


def test_erf_float32_stays_float32_and_accurate():
    x = np.linspace(-6, 6, 4001, dtype=np.float32)
    y = act.erf(x)
    assert y.dtype == np.float32
    ref = np.array([math.erf(float(v)) for v in x])
    assert np.max(np.abs(y - ref)) <= 4 * np.finfo(np.float32).eps


# ------------------------------------------------------------------ dtypes and extreme inputs
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_dtype_is_preserved(name, dtype):
    a = act.make(name, _non_default(act.ACTIVATIONS[name]))
    z = _points(a, (16, 9)).astype(dtype)
    y = a.forward(z)
    dz = a.backward(z, y, np.ones_like(z))
    assert y.dtype == dtype and dz.dtype == dtype
    assert isinstance(a.saturation(z, y), float)
    # The float32 computation itself is accurate, not just the label on the array.
    z64 = z.astype(np.float64)
    y64 = a.forward(z64)
    np.testing.assert_allclose(y, y64, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(dz, a.backward(z64, y64, np.ones_like(z64)), rtol=2e-6, atol=1e-6)


def test_numpy_float_parameter_does_not_upcast_float32():
    a = act.make("leaky_relu", {"alpha": np.float64(0.2)})
    z = np.array([[-1.0, 1.0]], dtype=np.float32)
    assert a.forward(z).dtype == np.float32
    assert a.backward(z, a.forward(z), np.ones_like(z)).dtype == np.float32


def _extremes(dtype):
    huge = [1e4, 1e30] + ([1e300] if dtype == np.float64 else [])
    finite = [0.0, -0.0, 1.0, -1.0] + huge + [-h for h in huge]
    n = len(finite)
    rows = [finite, [np.inf, -np.inf] + finite[: n - 2], [-np.inf] * n, [np.inf] * n]
    return np.array(rows, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_extreme_inputs_are_warning_free_and_finite(name, dtype):
    a = act.make(name)
    z = _extremes(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = a.forward(z)
        dz = a.backward(z, y, np.ones_like(z))
        s = a.saturation(z, y)
    assert not np.isnan(y).any() and not np.isnan(dz).any()
    assert np.isfinite(y[0]).all() and np.isfinite(dz[0]).all()  # row 0 is finite input
    assert np.isfinite(dz).all()  # derivatives are bounded even at +-inf
    assert 0.0 <= s <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_nan_in_nan_out(name):
    a = act.make(name)
    z = np.array([[np.nan, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = a.forward(z)
    assert np.isnan(y[0, 0])


# ------------------------------------------------------------------ saturation
SATURATION_CASES = {  # name: (z, exact fraction); elementwise cases are 8 values
    "tanh": ([-5, -1, 0, 1, 5, 10, 0.5, 2], 3 / 8),  # |tanh| > 0.99 iff |z| > 2.647
    "sigmoid": ([-10, -4, 0, 4, 6, 20, 1, -7], 4 / 8),  # iff |z| > ln 99 = 4.595
    "hard_sigmoid": ([-3, -2.9, 0, 2.9, 2.95, 100, 1, -1], 3 / 8),  # iff |z| > 2.94
    "hardtanh": ([-1, 1, 0.999, -0.5, 2, 0, -3, 0.25], 4 / 8),  # |z| >= 1, boundary included
    "relu6": ([6, 5.999, 100, -1, 0, 3, 7, 2], 3 / 8),  # z >= 6, boundary included
    "softsign": ([100, -100, 98, -50, 0, 1e6, 1, -1], 3 / 8),  # iff |z| > 99
    # rows: p_max = 0.99991, 1/3, 0.9867, ~1
    "softmax": ([[10, 0, 0], [0, 0, 0], [5, 0, 0], [0, -20, 30]], 2 / 4),
}


@pytest.mark.parametrize("name", NAMES)
def test_saturation_fraction(name):
    a = act.make(name)
    if not a.saturation_rule:
        assert name not in SATURATION_CASES
        z = _extremes(np.float64)
        assert a.saturation(z, a.forward(z)) == 0.0
        return
    assert name in SATURATION_CASES, f"add a saturation case for '{name}'"
    values, expected = SATURATION_CASES[name]
    z = np.array(values, dtype=float)
    z = z.reshape(2, 4) if a.elementwise else z
    assert a.saturation(z, a.forward(z)) == expected
    assert a.saturation(z[:0], a.forward(z[:0])) == 0.0  # empty batch


# ------------------------------------------------------------------ metadata and lookup
# The Deeplearning4j rules of thumb; hard_sigmoid, hardtanh, softsign and softplus by analogy.
RECOMMENDED = {
    "relu": ("relu",), "leaky_relu": ("relu",), "elu": ("relu",), "softplus": ("relu",),
    "tanh": ("xavier",), "sigmoid": ("xavier",), "hard_sigmoid": ("xavier",),
    "hardtanh": ("xavier",), "softsign": ("xavier",), "softmax": ("xavier",), "relu6": ("relu",), "hardswish": ("relu",),
    "identity": ("xavier",), "selu": ("lecun_normal",),
    "gelu": ("xavier", "relu"), "mish": ("xavier", "relu"), "swish": ("xavier", "relu"),
}


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    cls = act.ACTIVATIONS[name]
    assert cls.name == name == name.lower()
    assert cls.recommended == RECOMMENDED.get(name), f"recommended schemes for '{name}'"
    for text in (cls.formula, cls.saturation_rule):
        assert isinstance(text, str) and "\n" not in text
    assert cls.formula
    assert all(isinstance(v, float) or v in cls.choices.get(k, ()) for k, v in cls.params.items())


def test_params_defaults_binding_and_repr():
    assert act.make("leaky_relu").alpha == 0.01
    a = act.make("leaky_relu", {"alpha": 0.2})
    assert a.params == {"alpha": 0.2} and act.ACTIVATIONS["leaky_relu"].params == {"alpha": 0.01}
    assert repr(a) == "leaky_relu(alpha=0.2)"
    assert repr(act.make("elu")) == "elu(alpha=1.0)"
    assert repr(act.make("relu")) == "relu"


def test_unknown_param_raises_type_error_naming_valid_ones():
    with pytest.raises(TypeError, match="slope.*alpha"):
        act.make("leaky_relu", {"slope": 0.1})
    with pytest.raises(TypeError, match="none"):
        act.make("relu", {"alpha": 0.1})


@pytest.mark.parametrize("spelling,expected", [
    ("linear", "identity"), ("None", "identity"), ("SiLU", "swish"), ("LeakyReLU", "leaky_relu"),
    ("HardSigmoid", "hard_sigmoid"), ("hard_tanh", "hardtanh"), ("logistic", "sigmoid"),
    ("ReLU", "relu"), ("GELU", "gelu"), (" Tanh ", "tanh"), ("Hard_Sigmoid", "hard_sigmoid"),
])
def test_aliases_and_case_insensitive_lookup(spelling, expected):
    assert type(act.make(spelling)) is act.ACTIVATIONS[expected]


def test_alias_table_is_consistent():
    for alias, target in act.ALIASES.items():
        assert alias == alias.lower() and alias not in act.ACTIVATIONS and target in act.ACTIVATIONS


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownNameError, match="did you mean 'tanh'") as info:
        act.make("tanhh")
    assert info.value.suggestion == "tanh" and info.value.what == "activation"
    with pytest.raises(UnknownNameError) as info:
        act.make("foo")
    assert info.value.suggestion is None


def test_a_variant_parameter_takes_only_its_choices():
    assert repr(act.make("gelu", {"approximate": "tanh"})) == "gelu(approximate='tanh')"
    assert act.make("gelu").approximate == "none"
    with pytest.raises(ValueError, match="approximate must be one of none, tanh"):
        act.make("gelu", {"approximate": "sigmoid"})


# ------------------------------------------------------------------ GELU against PyTorch, tails included
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_and_its_derivative_match_torch_on_a_dense_grid(approximate, dtype):
    torch = pytest.importorskip("torch")
    a = act.make("gelu", {"approximate": approximate})
    x = np.linspace(-10.0, 10.0, 200_001).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt, approximate=approximate)
    yt.sum().backward()
    yt = yt.detach().numpy()
    y = a.forward(x)
    dx = a.backward(x, y, np.ones_like(x))
    assert y.dtype == dx.dtype == dtype
    eps = np.finfo(dtype).eps
    scale = np.maximum(np.abs(x.astype(np.float64)), 1.0)
    # Both sides are a few roundings of values of size |x| (y) or 1 (the derivative) away from the truth; PyTorch
    # forms 1 + erf(x/sqrt 2), which cancels for x < 0, so the comparison is absolute, in ulps of max(|x|, 1).
    # The tanh form's derivative carries (1 - t^2) * x^3 terms, t's ulp times up to ~35 near x = 5 (the two
    # sides differ by 11 float32 and 23 float64 ulps there, the same formula in another order of operations).
    y_ulps, dx_ulps = (4, 4) if approximate == "none" else (4, 32)
    if dtype == np.float64:  # and relatively accurate wherever PyTorch's float64 is
        np.testing.assert_allclose(y[np.abs(y) > 1e-3], yt[np.abs(y) > 1e-3], rtol=1e-12)
    assert np.all(np.abs(y - yt) <= y_ulps * eps * scale)
    assert np.all(np.abs(dx - xt.grad.numpy()) <= dx_ulps * eps)


def test_gelu_float32_keeps_relative_accuracy_in_the_negative_tail():
    # Phi(x) = y/x down to x = -10 (Phi = 7.6e-24), against the float64 truth at the same float32 points:
    # the rounding of x*x/2 (half an ulp of it, times x^2/2 relatively) plus a few ulps of the fit and exp.
    x = np.linspace(-10.0, 0.0, 100_001, dtype=np.float32)[:-1]
    phi = (act.make("gelu").forward(x) / x).astype(np.float64)
    ref = special.ndtr(x.astype(np.float64))
    assert np.all(np.abs(phi - ref) <= (x.astype(np.float64) ** 2 / 2 + 4) * np.finfo(np.float32).eps * ref)
