"""Tests for the weight-initialization catalogue (initdiag.schemes) and how a scheme is written
(initdiag.initspec).

Every scheme registered in SCHEMES has a row in a table below (test_every_registered_scheme_has_a_row
fails otherwise). The expected distributions are written here from the documented formulas,
independently of the library's affine maps and FAMILY_STD.

Statistical tolerances are 5 standard errors of the statistic, derived from the distribution, never
tuned: with fixed seeds each check is deterministic, and a correct implementation would fail any one
of them with probability ~6e-7. Extreme-value checks (a uniform's largest |w| close to its bound, ...)
are set so a correct implementation fails them with probability <= e^-20.
"""

from __future__ import annotations

import math
import pathlib
import sys
import zlib

import numpy as np
import pytest
from scipy import stats

from initdiag import network, schemes, yamlsource
from initdiag import spec as netspec
from initdiag.initspec import parse
from initdiag.yamlsource import SpecErrors

Z = 5.0  # tolerance in standard errors
SHAPES = [(300, 500), (1000, 200), (256, 256)]  # (fan_in, fan_out): wide, tall, square
DTYPES = [np.float32, np.float64]


def _unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2  # 2**-24 for float32, 2**-53 for float64


# --- The 2-sigma truncated normal, derived here ------------------------------------------------
#
# X ~ N(0, 1) conditioned on [-a, a]; phi is the N(0, 1) density, P = P(|X| <= a) = erf(a / sqrt 2),
# and M_k = integral_{-a}^{a} x^k phi(x) dx. Since phi'(x) = -x phi(x), integrating x^(k-1) * x phi(x)
# by parts gives, for even k >= 2,
#     M_k = -[x^(k-1) phi(x)]_{-a}^{a} + (k-1) M_{k-2} = -2 a^(k-1) phi(a) + (k-1) M_{k-2},
# so M_0 = P, M_2 = P - 2 a phi(a), M_4 = 3 M_2 - 2 a^3 phi(a) = 3P - (6a + 2a^3) phi(a).
# E[X^2] = M_2 / P, E[X^4] = M_4 / P, and the kurtosis is kappa = E[X^4] / E[X^2]^2 = P M_4 / M_2^2.
# For a = 2: std = 0.8796256610, kappa = 2.3655 (cross-checked against scipy below).
def truncated_std_and_kurtosis(a: float) -> tuple[float, float]:
    p = math.erf(a / math.sqrt(2))
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    m2 = p - 2 * a * phi
    m4 = 3 * p - (6 * a + 2 * a**3) * phi
    return math.sqrt(m2 / p), p * m4 / m2**2


TRUNC_STD, TRUNC_KURT = truncated_std_and_kurtosis(2.0)


# --- The table ---------------------------------------------------------------------------------
#
# scheme -> (distribution, formula(fan_in, fan_out) -> (loc, scale)) where scale is
#   normal:    the standard deviation sigma of N(loc, sigma^2)
#   uniform:   the half-width b of U(loc - b, loc + b)
#   truncated: the sigma of the normal N(loc, sigma^2) before truncation at loc +- 2 sigma
RANDOM = {
    "xavier": ("normal", lambda fi, fo: (0.0, math.sqrt(2 / (fi + fo)))),
    "xavier_uniform": ("uniform", lambda fi, fo: (0.0, math.sqrt(6 / (fi + fo)))),
    "relu": ("normal", lambda fi, fo: (0.0, math.sqrt(2 / fi))),
    "relu_uniform": ("uniform", lambda fi, fo: (0.0, math.sqrt(6 / fi))),
    "lecun_normal": ("normal", lambda fi, fo: (0.0, math.sqrt(1 / fi))),
    "lecun_uniform": ("uniform", lambda fi, fo: (0.0, math.sqrt(3 / fi))),
    "var_scaling_normal_fan_in": ("normal", lambda fi, fo: (0.0, math.sqrt(1 / fi))),
    "var_scaling_normal_fan_out": ("normal", lambda fi, fo: (0.0, math.sqrt(1 / fo))),
    "var_scaling_normal_fan_avg": ("normal", lambda fi, fo: (0.0, math.sqrt(2 / (fi + fo)))),
    "var_scaling_uniform_fan_in": ("uniform", lambda fi, fo: (0.0, math.sqrt(3 / fi))),
    "var_scaling_uniform_fan_out": ("uniform", lambda fi, fo: (0.0, math.sqrt(3 / fo))),
    "var_scaling_uniform_fan_avg": ("uniform", lambda fi, fo: (0.0, math.sqrt(6 / (fi + fo)))),
    "sigmoid_uniform": ("uniform", lambda fi, fo: (0.0, 4 * math.sqrt(6 / (fi + fo)))),
    "xavier_fan_in": ("normal", lambda fi, fo: (0.0, math.sqrt(1 / fi))),
    "xavier_legacy": ("normal", lambda fi, fo: (0.0, math.sqrt(1 / (fi + fo)))),
    "torch_default": ("uniform", lambda fi, fo: (0.0, 1 / math.sqrt(fi))),
    "normal": ("normal", lambda fi, fo: (0.0, 1.0)),
    "uniform": ("uniform", lambda fi, fo: (0.0, 1.0)),  # U(-1, 1)
    "truncated_normal": ("truncated", lambda fi, fo: (0.0, 1.0)),
}
# Variance-scaling schemes: `gain` multiplies the std and the uniform bound.
GAIN_SCHEMES = [name for name in RANDOM if name not in ("normal", "uniform", "truncated_normal")]
# Schemes that are functions of the shape rather than scaled draws, each with its own tests below.
STRUCTURED = {"zero", "ones", "constant", "identity", "orthogonal", "delta_orthogonal", "supplied", "custom"}


def _with_gain(formula, gain):
    return lambda fi, fo: (formula(fi, fo)[0], gain * formula(fi, fo)[1])


# (id, text as written, distribution, formula)
ROWS = [(name, name, dist, formula) for name, (dist, formula) in RANDOM.items()]
ROWS += [
    (f"{name}-gain1.5", f"{{{name}: {{gain: 1.5}}}}", RANDOM[name][0], _with_gain(RANDOM[name][1], 1.5))
    for name in GAIN_SCHEMES
]
ROWS += [
    ("xavier-gain1.6667", "{xavier: {gain: 1.6667}}", "normal", _with_gain(RANDOM["xavier"][1], 1.6667)),
    ("relu_uniform-gain0.5", "{relu_uniform: {gain: 0.5}}", "uniform", _with_gain(RANDOM["relu_uniform"][1], 0.5)),
    ("normal-mean0.5-std0.01", "{normal: {mean: 0.5, std: 0.01}}", "normal", lambda fi, fo: (0.5, 0.01)),
    # U(-0.05, 0.15): centre 0.05, half-width 0.1
    ("uniform-low-0.05-high0.15", "{uniform: {low: -0.05, high: 0.15}}", "uniform", lambda fi, fo: (0.05, 0.1)),
    ("truncated-mean-1-std0.2", "{truncated_normal: {mean: -1, std: 0.2}}", "truncated", lambda fi, fo: (-1.0, 0.2)),
]


def moments(dist: str, loc: float, scale: float) -> tuple[float, float, float]:
    """(mean, std, kurtosis) of the distribution a row describes."""
    if dist == "normal":
        return loc, scale, 3.0
    if dist == "uniform":
        return loc, scale / math.sqrt(3), 1.8  # U(-b, b): variance b^2 / 3
    return loc, TRUNC_STD * scale, TRUNC_KURT


def draw(text: str, shape, dtype, rng=None, seed=0, **parse_kwargs) -> np.ndarray:
    init = parse(text, "--scheme", **parse_kwargs)
    rng = np.random.default_rng(seed) if rng is None else rng
    return schemes.initial_weights(init.definition, init.params, rng, shape, dtype)


def problems_of(text: str, **parse_kwargs) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        parse(text, "--scheme", **parse_kwargs)
    assert info.value.problems, "SpecErrors raised with no problems"
    return [str(problem) for problem in info.value.problems]


def _id(value) -> str:
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return np.dtype(value).name


# --- Coverage --------------------------------------------------------------------------------


def test_every_registered_scheme_has_a_row():
    covered = set(RANDOM) | STRUCTURED
    assert not set(schemes.SCHEMES) - covered, f"schemes with no row in this file: {set(schemes.SCHEMES) - covered}"
    assert not covered - set(schemes.SCHEMES), f"rows for schemes not registered: {covered - set(schemes.SCHEMES)}"
    # Every scheme that takes a gain has a gain row (orthogonal's is in test_orthogonal, delta_orthogonal's in
    # test_schemes_geometry).
    with_gain = {name for name, scheme in schemes.SCHEMES.items() if "gain" in scheme.params}
    assert with_gain == set(GAIN_SCHEMES) | {"orthogonal", "delta_orthogonal"}


def test_truncated_moments_derivation_matches_documentation_and_scipy():
    assert TRUNC_STD == pytest.approx(0.8796256610, abs=1e-10)
    variance, excess_kurtosis = stats.truncnorm(-2, 2).stats(moments="vk")
    assert TRUNC_STD == pytest.approx(math.sqrt(float(variance)), rel=1e-12)
    assert TRUNC_KURT == pytest.approx(float(excess_kurtosis) + 3, rel=1e-9)


# --- 1. Random schemes: moments and support --------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_random_scheme_moments_and_support(row, shape, dtype):
    row_id, text, dist, formula = row
    seed = zlib.crc32(f"{row_id}|{shape}|{np.dtype(dtype).name}".encode())
    w = draw(text, shape, dtype, seed=seed)
    assert w.shape == shape and w.dtype == dtype

    loc, scale = formula(*shape)
    mean, std, kurtosis = moments(dist, loc, scale)
    x = w.astype(np.float64).ravel()
    n = x.size
    se_mean = std / math.sqrt(n)
    se_std = std * math.sqrt((kurtosis - 1) / (4 * n))
    assert abs(x.mean() - mean) <= Z * se_mean, f"mean {x.mean():.6g} vs {mean:.6g}: {abs(x.mean() - mean) / se_mean:.1f} SE"
    assert abs(x.std() - std) <= Z * se_std, f"std {x.std():.6g} vs {std:.6g}: {abs(x.std() - std) / se_std:.1f} SE"

    deviation = float(np.abs(x - loc).max())
    u = _unit_roundoff(dtype)
    if dist == "uniform":
        # w = fl(fl(u01 * fl(b)) + fl(loc)) with |u01| < 1: at most ~4 roundings of relative size u.
        assert deviation <= scale + 4 * u * (scale + abs(loc)), f"max |w - loc| {deviation:.9g} > bound {scale:.9g}"
        # P(all n of U(-b, b) inside (1 - eps) b) = (1 - eps)^n <= e^(-n eps) = e^-20 for eps = 20 / n.
        assert deviation >= scale * (1 - 20 / n), f"max |w - loc| {deviation:.9g} well below bound {scale:.9g}"
    elif dist == "truncated":
        edge = 2 * scale
        assert deviation <= edge + 4 * u * (edge + abs(loc)), f"value {deviation:.9g} from the mean, beyond 2 std {edge:.9g}"
        # The truncated density is >= phi(2) / P(|X| <= 2) within d of the edges (in units of sigma), so
        # P(no value within d of +-2) <= exp(-n * 2 d phi(2) / P) = e^-20 for d below.
        p_inside = math.erf(2 / math.sqrt(2))
        d = 20 * p_inside / (2 * n * stats.norm.pdf(2))
        assert deviation >= (2 - d) * scale, "truncated below 2 std"
    else:
        # A normal sample has tails: P(no |z| > t) = (1 - P(|Z| > t))^n <= e^-20 when P(|Z| > t) = 20 / n.
        # Catches a uniform or truncated draw dressed up with the right std.
        t = stats.norm.isf(10 / n)
        assert deviation >= t * scale, f"max |w - loc| = {deviation / scale:.2f} std, a normal reaches {t:.2f}"


# --- 2. Constant family and identity ---------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("text, value", [("zero", 0.0), ("zeros", 0.0), ("ones", 1.0), ("{constant: -0.25}", -0.25)])
def test_constant_family_is_exact(text, value, dtype):
    w = draw(text, (7, 5), dtype)
    assert w.dtype == dtype and w.shape == (7, 5)
    assert np.array_equal(w, np.full((7, 5), value, dtype=dtype))


def test_constant_needs_a_value():
    assert any("constant needs value" in p for p in problems_of("constant"))


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("text", ["identity", "eye", "IDENTITY"])
def test_identity_is_exact_on_a_square_layer(text, dtype):
    init = parse(text, "--scheme")
    assert init.scheme == "identity"
    assert init.shape_problem((6, 6)) is None
    w = schemes.initial_weights(init.definition, init.params, np.random.default_rng(0), (6, 6), dtype)
    assert w.dtype == dtype
    assert np.array_equal(w, np.eye(6, dtype=dtype))


def test_identity_rejects_a_non_square_layer():
    init = parse("identity", "--scheme")
    message = init.shape_problem((3, 4))
    assert message is not None and "3×4" in message
    # And the same through a whole spec: input 3 -> dense 4 is a 3×4 layer.
    text = "input: [3]\ndefaults: {init: identity}\nlayers:\n  - dense: 4\n"
    with pytest.raises(SpecErrors) as info:
        netspec.parse(yamlsource.loads(text, "t.yaml"), base_dir=".", default_name="t")
    assert any("3×4" in str(problem) for problem in info.value.problems)


# --- 3. Orthogonal -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("shape", [(300, 500), (500, 300), (256, 256)], ids=_id)
@pytest.mark.parametrize("text, gain", [("orthogonal", 1.0), ("{orthogonal: {gain: 2}}", 2.0), ("{orthogonal: {gain: 1.7}}", 1.7)])
def test_orthogonal(text, gain, shape, dtype):
    w = draw(text, shape, dtype, seed=zlib.crc32(f"{text}{shape}{np.dtype(dtype).name}".encode()))
    assert w.shape == shape and w.dtype == dtype
    rows, cols = shape
    short, long = min(shape), max(shape)
    x = w.astype(np.float64)  # products in float64: only the stored entries' error is measured
    gram = x @ x.T if rows < cols else x.T @ x  # wide: W Wᵀ; tall and square: Wᵀ W
    error = float(np.abs(gram - gain**2 * np.eye(short)).max())
    if dtype == np.float64:
        tol = 1e-10
    else:
        # The float32 result is an orthonormal Q (its orthogonality error is what the float64 case bounds
        # by 1e-10: numpy.linalg.qr computes float32 input in double) with each entry rounded to float32,
        # scaled by fl(g) and rounded again: w_ki = g q_ki (1 + d_ki), |d_ki| <= 3u. Then
        # |(WᵀW)_ij - g² (QᵀQ)_ij| <= g² sum_k |q_ki q_kj| (|d_ki| + |d_kj| + |d_ki d_kj|) <= g² (6u + 9u²),
        # by Cauchy-Schwarz with unit columns. So g² (6u + 1e-10) ~ 3.6e-7 g²; a missing transpose, sign
        # or normalisation is an O(1) error, and float32 arithmetic in the QR itself would show (~1e-6).
        tol = gain**2 * (6 * _unit_roundoff(np.float32) + 1e-10)
    assert error <= tol, f"max |Gram - g²I| = {error:.3g} > {tol:.3g}"
    # Haar-random: the diagonal of Q (the first `short` columns of a Haar orthogonal long×long matrix, or
    # its transpose) has E[Q_ii] = 0, Var = 1/long and uncorrelated entries, so its sum has SE sqrt(short/long).
    # A QR without the sign fix makes every Q_ii lean one way (the sum is ~ -0.8 short/sqrt(long)).
    diagonal_sum = float(np.trace(x)) / gain
    assert abs(diagonal_sum) <= Z * math.sqrt(short / long), f"sum of diag(Q) = {diagonal_sum:.2f}: not Haar"


# --- 4. Family sharing ---------------------------------------------------------------------

SHARE_SHAPE = (300, 500)


def _stream_draw(text, dtype, index, seed=11):
    rng = network.stream(seed, network.STREAM_WEIGHTS, index)
    return draw(text, SHARE_SHAPE, dtype, rng=rng).astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("family", ["normal", "uniform"])
def test_schemes_of_one_family_share_one_draw(family, dtype):
    fi, fo = SHARE_SHAPE
    if family == "normal":
        scales = {"relu": math.sqrt(2 / fi), "xavier": math.sqrt(2 / (fi + fo)),
                  "lecun_normal": math.sqrt(1 / fi), "{normal: {std: 0.3}}": 0.3}
    else:
        scales = {"relu_uniform": math.sqrt(6 / fi), "xavier_uniform": math.sqrt(6 / (fi + fo)),
                  "torch_default": 1 / math.sqrt(fi)}
    (base_text, base_scale), *others = scales.items()
    base = _stream_draw(base_text, dtype, index=3)
    # Each draw is fl(z * fl(m)): relative error <= 2u; a ratio of two, scaled by a float64 ratio,
    # is within 4u + a few float64 roundings, so 8u is a bound.
    rtol = 8 * _unit_roundoff(dtype)
    for text, scale in others:
        w = _stream_draw(text, dtype, index=3)
        np.testing.assert_allclose(w, base * (scale / base_scale), rtol=rtol, atol=0, err_msg=f"{text} vs {base_text}")
    # Another layer's stream gives an independent draw: different values, correlation within 5 SE (1/sqrt n).
    other = _stream_draw(base_text, dtype, index=4)
    assert not np.array_equal(other, base)
    correlation = np.corrcoef(other.ravel(), base.ravel())[0, 1]
    assert abs(correlation) <= Z / math.sqrt(base.size)


# --- 5. Supplied -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("stored", [np.float64, np.float32, np.int16])
def test_supplied_array_is_returned_exactly(tmp_path, stored, dtype):
    array = (np.random.default_rng(1).standard_normal((4, 3)) * 1000).astype(stored)
    np.save(tmp_path / "w.npy", array)
    init = parse("{supplied: w.npy}", "--scheme", base_dir=tmp_path)
    assert init.scheme == "supplied"
    assert init.shape_problem((4, 3)) is None
    w = schemes.initial_weights(init.definition, init.params, np.random.default_rng(0), (4, 3), dtype)
    assert w.dtype == dtype
    assert np.array_equal(w, array.astype(dtype))


def test_supplied_pickled_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):  # unpickling it would create `marker`
            return (pathlib.Path.touch, (marker,))

    objects = np.empty((2, 2), dtype=object)
    objects[0, 0] = Payload()
    np.save(tmp_path / "w.npy", objects, allow_pickle=True)
    found = problems_of("{supplied: w.npy}", base_dir=tmp_path)
    assert any("w.npy" in p for p in found), found
    assert not marker.exists()


def test_supplied_wrong_shape_is_a_shape_problem(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros((4, 3)))
    init = parse("{supplied: w.npy}", "--scheme", base_dir=tmp_path)
    message = init.shape_problem((5, 5))
    assert message is not None and "[4, 3]" in message and "[5, 5]" in message
    # The transpose (PyTorch's layout) is also the wrong shape.
    assert init.shape_problem((3, 4)) is not None


def test_supplied_missing_file_and_non_2d_array_are_problems(tmp_path):
    assert any("no such file" in p for p in problems_of("{supplied: absent.npy}", base_dir=tmp_path))
    np.save(tmp_path / "v.npy", np.zeros(5))
    assert any("2-D" in p for p in problems_of("{supplied: v.npy}", base_dir=tmp_path))


# --- 6. Custom ---------------------------------------------------------------------------

CUSTOM_SOURCE = """
import numpy as np
CALLS = []

def good(shape, fan_in, fan_out, rng):
    CALLS.append((shape, fan_in, fan_out, rng))
    return fan_in * 1000.0 + fan_out + rng.standard_normal(shape)

def transposed(shape, fan_in, fan_out, rng):
    return np.zeros((shape[1], shape[0]))
"""


@pytest.fixture
def custom_module(tmp_path):
    name = "initdiag_test_custom_init"
    (tmp_path / f"{name}.py").write_text(CUSTOM_SOURCE)
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def test_custom_needs_allow_custom(tmp_path, custom_module):
    found = problems_of(f'{{custom: "{custom_module}:good"}}', base_dir=tmp_path)
    assert any("--allow-custom" in p for p in found), found
    assert custom_module not in sys.modules  # refused before importing anything


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_custom_returns_what_the_function_returns(tmp_path, custom_module, dtype):
    shape = (4, 3)
    rng = np.random.default_rng(9)
    w = draw(f'{{custom: "{custom_module}:good"}}', shape, dtype, rng=rng, allow_custom=True, base_dir=tmp_path)
    expected = 4 * 1000.0 + 3 + np.random.default_rng(9).standard_normal(shape)
    assert w.dtype == dtype
    assert np.array_equal(w, expected.astype(dtype))
    (call,) = sys.modules[custom_module].CALLS
    assert call[:3] == (shape, 4, 3) and call[3] is rng


def test_custom_wrong_shape_raises_naming_both_shapes(tmp_path, custom_module):
    with pytest.raises(ValueError) as info:
        draw(f'{{custom: "{custom_module}:transposed"}}', (4, 3), np.float64, allow_custom=True, base_dir=tmp_path)
    assert "[3, 4]" in str(info.value) and "[4, 3]" in str(info.value)


def test_custom_bad_target_is_a_problem(tmp_path, custom_module):
    assert any("package.module:function" in p for p in problems_of('{custom: "no_colon"}', allow_custom=True))
    found = problems_of(f'{{custom: "{custom_module}:absent"}}', allow_custom=True, base_dir=tmp_path)
    assert any("cannot import" in p for p in found), found


# --- 7. Names ----------------------------------------------------------------------------

EXPECTED_ALIASES = {
    "glorot_normal": "xavier", "xavier_normal": "xavier", "glorot_uniform": "xavier_uniform",
    "he_normal": "relu", "kaiming_normal": "relu", "he_uniform": "relu_uniform", "kaiming_uniform": "relu_uniform",
    "pytorch_default": "torch_default", "zeros": "zero", "eye": "identity",
}


def test_documented_aliases_are_registered_and_every_alias_names_a_scheme():
    assert EXPECTED_ALIASES.items() <= schemes.ALIASES.items()
    assert not set(schemes.ALIASES.values()) - set(schemes.SCHEMES), "an alias names an unregistered scheme"
    assert not set(schemes.ALIASES) & set(schemes.SCHEMES), "an alias shadows a scheme's own name"


@pytest.mark.parametrize("alias, target", sorted(EXPECTED_ALIASES.items()))
def test_alias_resolves_to_its_target_in_any_case(alias, target):
    for spelling in (alias, alias.upper(), alias.title(), f"  {alias}  "):
        assert schemes.lookup(spelling) is schemes.SCHEMES[target]
        assert parse(repr(spelling), "--scheme").scheme == target


@pytest.mark.parametrize("text, target", [("XAVIER", "xavier"), ("He_Normal", "relu"), ("Relu_Uniform", "relu_uniform"),
                                          ("{XAVIER: {gain: 2}}", "xavier")])
def test_names_are_case_insensitive(text, target):
    assert parse(text, "--scheme").scheme == target


def test_unknown_name_suggests_the_closest():
    (problem,) = problems_of("xavir")
    assert problem.startswith("--scheme:1:1: ")
    assert "did you mean 'xavier'" in problem


def test_unknown_parameter_suggests_the_closest():
    (problem,) = problems_of("{xavier: {gian: 2}}")
    assert problem.startswith("--scheme:1:")
    assert "'gian'" in problem and "did you mean 'gain'" in problem


@pytest.mark.parametrize("text, words", [
    ("{uniform: {low: 1, high: 0}}", "low < high"),
    ("{uniform: {low: 0.5, high: 0.5}}", "low < high"),
    ("{normal: {std: -1}}", "std must be positive"),
    ("{normal: {std: 0}}", "std must be positive"),
    ("{truncated_normal: {std: -0.1}}", "std must be positive"),
    ("{xavier: {gain: 0}}", "gain must be positive"),
    ("{relu: {gain: -1}}", "gain must be positive"),
    ("{orthogonal: {gain: 0}}", "gain must be positive"),
    ("{xavier: {gain: .nan}}", "finite"),
    ("{xavier: {gain: two}}", "expected a number"),
    ("{xavier: {gain: true}}", "expected a number"),
    ("{zero: {value: 1}}", "takes none"),
    ("{xavier: 2}", "takes a mapping"),
])
def test_invalid_parameters_are_refused(text, words):
    found = problems_of(text)
    assert any(words in p for p in found), found


# --- 8. torch_default biases -------------------------------------------------------------

def _build(defaults: str, layer_extra: str = ""):
    text = f"input: [1000]\nbatch: 4\nseed: 21\ndtype: float64\ndefaults: {defaults}\nlayers:\n  - dense: 1000{layer_extra}\n"
    return network.build(netspec.parse(yamlsource.loads(text, "t.yaml"), base_dir=".", default_name="t"))


def test_torch_default_bias_is_uniform_within_one_over_sqrt_fan_in():
    built = _build("{init: torch_default}")
    bias = built.layers[0].bias.astype(np.float64)
    assert bias.shape == (1000,)
    n, bound = bias.size, 1 / math.sqrt(1000)
    std = bound / math.sqrt(3)
    assert np.abs(bias).max() <= bound
    assert np.abs(bias).max() >= bound * (1 - 20 / n)  # e^-20, as for the weights
    assert abs(bias.mean()) <= Z * std / math.sqrt(n)
    assert abs(bias.std() - std) <= Z * std * math.sqrt((1.8 - 1) / (4 * n))
    # The bias has its own stream: not a copy of (part of) the weights' draw.
    weights = built.layers[0].weights
    assert not any(np.allclose(bias, weights[i]) or np.allclose(bias, weights[:, i]) for i in range(3))


@pytest.mark.parametrize("defaults, layer_extra, value", [
    ("{init: torch_default, bias_init: 0.5}", "", 0.5),
    ("{init: torch_default}", "\n    bias_init: 0.5", 0.5),
    ("{init: torch_default, bias_init: 0}", "", 0.0),  # an explicit 0 is set, not "unset"
    ("{init: xavier}", "", 0.0),  # other schemes: zero bias unless set
])
def test_bias_init_overrides_torch_default_bias(defaults, layer_extra, value):
    bias = _build(defaults, layer_extra).layers[0].bias
    assert np.array_equal(bias, np.full(1000, value))


# --- 9. Fans and formulas against PyTorch ------------------------------------------------


@pytest.mark.parametrize("shape", [(300, 500), (1000, 200), (7, 3), (1, 64), (256, 256)], ids=_id)
def test_fans_match_pytorch(shape):
    torch = pytest.importorskip("torch")
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape[1], shape[0]))
    assert (fan_in, fan_out) == shape
    assert torch.nn.Linear(shape[0], shape[1]).weight.shape == (shape[1], shape[0])  # our layout, transposed
    fans = schemes.Fans(*shape)
    assert (fans.fan_in, fans.fan_out) == (fan_in, fan_out)


TORCH_SHAPE = (1000, 1500)  # (fan_in, fan_out); PyTorch's tensor is (1500, 1000)


@pytest.mark.parametrize("text, gain, dist, torch_init", [
    ("xavier", 1.0, "normal", lambda nn, t: nn.init.xavier_normal_(t)),
    ("{xavier: {gain: 1.6667}}", 1.6667, "normal", lambda nn, t: nn.init.xavier_normal_(t, gain=1.6667)),
    ("relu", 1.0, "normal", lambda nn, t: nn.init.kaiming_normal_(t, nonlinearity="relu")),
    ("xavier_uniform", 1.0, "uniform", lambda nn, t: nn.init.xavier_uniform_(t)),
    ("relu_uniform", 1.0, "uniform", lambda nn, t: nn.init.kaiming_uniform_(t, nonlinearity="relu")),
    ("torch_default", 1.0, "uniform", lambda nn, t: nn.init.kaiming_uniform_(t, a=math.sqrt(5))),  # nn.Linear's
], ids=["xavier", "xavier-gain", "relu", "xavier_uniform", "relu_uniform", "torch_default"])
def test_formula_std_matches_pytorch(text, gain, dist, torch_init):
    torch = pytest.importorskip("torch")
    name = parse(text, "--scheme").scheme
    loc, scale = _with_gain(RANDOM[name][1], gain)(*TORCH_SHAPE)
    _, std, kurtosis = moments(dist, loc, scale)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        t = torch_init(torch.nn, torch.empty(TORCH_SHAPE[1], TORCH_SHAPE[0], dtype=torch.float64))
    x = t.numpy().ravel()
    n = x.size
    assert abs(x.mean()) <= Z * std / math.sqrt(n)
    assert abs(x.std() - std) <= Z * std * math.sqrt((kurtosis - 1) / (4 * n)), f"PyTorch std {x.std():.6g} vs {std:.6g}"
    if dist == "uniform":
        # uniform_(-b, b) computes -b + 2b * u in float64: a few roundings of relative size 2**-53.
        assert np.abs(x).max() <= scale * (1 + 4 * _unit_roundoff(np.float64))
    # And ours, at the same fans, against the same formula.
    ours = draw(text, TORCH_SHAPE, np.float64, seed=5).ravel()
    assert abs(ours.std() - std) <= Z * std * math.sqrt((kurtosis - 1) / (4 * n))


def test_torch_default_bias_matches_pytorch_linear():
    torch = pytest.importorskip("torch")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        linear = torch.nn.Linear(1000, 20000, dtype=torch.float64)
    bias = linear.bias.detach().numpy()
    bound = 1 / math.sqrt(1000)
    assert np.abs(bias).max() <= bound
    assert np.abs(bias).max() >= bound * (1 - 20 / bias.size)
    std = bound / math.sqrt(3)  # the std our torch_default bias test expects
    assert abs(bias.std() - std) <= Z * std * math.sqrt((1.8 - 1) / (4 * bias.size))


TRUNCATABLE = [name for name, scheme in schemes.SCHEMES.items() if scheme.family == "normal" and scheme.rule is not None]


@pytest.mark.parametrize("name", TRUNCATABLE)
def test_a_normal_variance_scaling_scheme_draws_keras_truncated_variant_with_the_same_variance(name):
    """`truncated: true` is Keras'/JAX's variance scaling with distribution 'truncated_normal': a normal cut at ±2σ'
    with σ' = sqrt(variance)/0.87962566103423978 (Keras' constant), so the variance is the scheme's."""
    from initdiag.schemes import Fans, dense, initial_weights

    scheme = schemes.SCHEMES[name]
    params = {**scheme.params, "truncated": True}
    fans, shape = Fans(256, 512), (256, 512)
    w = initial_weights(scheme, params, np.random.default_rng(0), dense(shape), np.float64)
    target = scheme.std(fans, {**scheme.params})  # the plain normal's std: the variance is kept
    assert scheme.std(fans, params) == pytest.approx(target, rel=1e-12)
    sigma = target / 0.87962566103423978
    assert np.abs(w).max() <= 2 * sigma * (1 + 1e-12)
    # the sample std of n draws has a relative standard error of about sqrt((kurtosis - 1) / (4 n)); the
    # truncated normal's kurtosis is below 3, so 1/sqrt(2n) bounds it; 5 of those is a 1-in-a-million miss
    n = w.size
    assert w.std() == pytest.approx(target, rel=5 / math.sqrt(2 * n))


def test_truncated_is_a_boolean_and_uniform_schemes_do_not_take_it(tmp_path):
    from conftest import make_spec

    spec = make_spec("input: [4]\nlayers:\n  - {dense: 3, init: {lecun_normal: {truncated: true}}}\n")
    assert spec.layers[0].init.display == "lecun_normal(truncated=True)"
    for text, words in (("{relu: {truncated: 2}}", "true or false"), ("{relu_uniform: {truncated: true}}", "truncated")):
        with pytest.raises(SpecErrors) as raised:
            make_spec(f"input: [4]\nlayers:\n  - {{dense: 3, init: {text}}}\n")
        assert any(words in problem.message for problem in raised.value.problems), raised.value.problems
