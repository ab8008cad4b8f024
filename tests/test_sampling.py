"""Tests for initdiag.sampling.

Statistical tolerances come from the sampling distribution of the statistic, never from
trial and error: with fixed seeds each check either passes or fails deterministically,
and a correct sampler fails a 5-standard-error check with probability ~6e-7.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import stats

from initdiag.sampling import (
    TRUNCATED_STD,
    standard_normal,
    standard_uniform,
    truncated_standard_normal,
)

DTYPES = [np.float32, np.float64]
SAMPLERS = [standard_normal, standard_uniform, truncated_standard_normal]


def truncated_moments(a: float) -> tuple[float, float]:
    """(std, kurtosis) of N(0, 1) conditioned on [-a, a], from the closed forms
    E[X^2] = 1 - 2 a phi(a) / Z and E[X^4] = 3 - 2 (a^3 + 3a) phi(a) / Z, Z = erf(a / sqrt 2)."""
    z = math.erf(a / math.sqrt(2.0))
    phi = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    var = 1.0 - 2.0 * a * phi / z
    m4 = 3.0 - 2.0 * (a**3 + 3.0 * a) * phi / z
    return math.sqrt(var), m4 / var**2


# name -> (sampler call, true std, true kurtosis, scipy distribution); all have mean 0.
CASES = {
    "normal": (lambda rng, n, dt: standard_normal(rng, n, dt), 1.0, 3.0, stats.norm()),
    "uniform": (lambda rng, n, dt: standard_uniform(rng, n, dt), 1 / math.sqrt(3), 1.8,
                stats.uniform(loc=-1, scale=2)),
    "truncated": (lambda rng, n, dt: truncated_standard_normal(rng, n, dt), *truncated_moments(2.0),
                  stats.truncnorm(-2, 2)),
    "truncated_0.5": (lambda rng, n, dt: truncated_standard_normal(rng, n, dt, bound=0.5),
                      *truncated_moments(0.5), stats.truncnorm(-0.5, 0.5)),
}


def moment_errors(x: np.ndarray, std: float, kurt: float) -> tuple[float, float]:
    """Deviation of the sample mean and std from (0, std), in standard errors."""
    x = x.astype(np.float64)
    n = x.size
    se_mean = std / math.sqrt(n)
    se_std = std * math.sqrt((kurt - 1.0) / (4.0 * n))
    return abs(x.mean()) / se_mean, abs(x.std() - std) / se_std


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_mean_and_std_within_5_standard_errors(case, dtype):
    draw, std, kurt, _ = CASES[case]
    # 1M values: more than one chunk, so chunk boundaries and batched redraws are exercised.
    x = draw(np.random.default_rng(20240611), 1_000_000, dtype)
    z_mean, z_std = moment_errors(x, std, kurt)
    assert z_mean < 5, f"mean off by {z_mean:.1f} SE"
    assert z_std < 5, f"std off by {z_std:.1f} SE"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_kolmogorov_smirnov(case, dtype):
    draw, _, _, dist = CASES[case]
    x = draw(np.random.default_rng(777), 200_000, dtype)
    assert stats.kstest(x.astype(np.float64), dist.cdf).pvalue > 0.001


def test_the_statistical_checks_can_fail():
    """The tolerances above are tight enough to catch plausible bugs."""
    rng = np.random.default_rng(5)
    x = standard_normal(rng, 1_000_000, np.float64)
    assert moment_errors(x * 1.01, 1.0, 3.0)[1] > 5  # std off by 1%
    assert moment_errors(x + 0.01, 1.0, 3.0)[0] > 5  # mean off by 0.01
    t = truncated_standard_normal(rng, 200_000)
    assert stats.kstest(t, stats.norm().cdf).pvalue < 0.001  # truncation ignored
    u = standard_uniform(rng, 200_000)
    assert stats.kstest((u + 1) / 2, stats.uniform(loc=-1, scale=2).cdf).pvalue < 0.001


def test_truncated_std_constant_matches_formula_and_scipy():
    assert TRUNCATED_STD == pytest.approx(0.8796256610, abs=1e-10)
    assert TRUNCATED_STD == pytest.approx(stats.truncnorm(-2, 2).std(), rel=1e-12)
    # Cross-check the test's own kurtosis formula against scipy (excess kurtosis).
    for a in (0.5, 2.0):
        assert truncated_moments(a)[1] - 3 == pytest.approx(
            float(stats.truncnorm(-a, a).stats(moments="k")), rel=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bound", [2.0, 0.5, 1.7])
def test_truncated_never_outside_bound(dtype, bound):
    x = truncated_standard_normal(np.random.default_rng(11), 1_000_000, dtype, bound=bound)
    # Compared in float64, so a float32 value that rounds above `bound` would be caught.
    assert np.abs(x.astype(np.float64)).max() <= bound


@pytest.mark.parametrize("bound", [0.0, -1.0, float("nan")])
def test_truncated_rejects_nonpositive_bound(bound):
    with pytest.raises(ValueError):
        truncated_standard_normal(np.random.default_rng(0), 10, bound=bound)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, expected", [
    ((3, 5), (3, 5)), (7, (7,)), ((2, 3, 4), (2, 3, 4)), (0, (0,)), ((4, 0), (4, 0)), ((), ()),
])
def test_shape_dtype_and_layout(sampler, dtype, shape, expected):
    x = sampler(np.random.default_rng(3), shape, dtype)
    assert x.shape == expected
    assert x.dtype == dtype
    assert x.flags.c_contiguous
    assert np.isfinite(x).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_default_dtype_is_float32_and_bad_arguments_rejected(sampler):
    assert sampler(np.random.default_rng(0), 4).dtype == np.float32
    with pytest.raises(TypeError):
        sampler(np.random.default_rng(0), 4, np.float16)
    with pytest.raises(TypeError):
        sampler(np.random.RandomState(0), 4)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 65537])
def test_odd_sizes_fill_every_element(sampler, dtype, n):
    # The last element of an odd-sized draw is the one a pairwise transform could skip;
    # across seeds it must vary like a real sample, not repeat leftover memory.
    last = np.array([sampler(np.random.default_rng(s), n, dtype)[-1] for s in range(40)])
    assert np.isfinite(last).all()
    assert np.unique(last).size == last.size
    assert np.abs(last).max() < 7


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_determinism(sampler, dtype):
    a = sampler(np.random.default_rng(42), (64, 33), dtype)
    b = sampler(np.random.default_rng(42), (64, 33), dtype)
    c = sampler(np.random.default_rng(43), (64, 33), dtype)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    rng = np.random.default_rng(42)
    first, second = sampler(rng, (64, 33), dtype), sampler(rng, (64, 33), dtype)
    assert np.array_equal(first, a)
    assert not np.array_equal(first, second)  # the generator state advances


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_threads_on_separate_generators_match_sequential(sampler):
    # Would fail if calls shared scratch buffers or any other mutable state.
    def draw(seed):
        return sampler(np.random.default_rng(seed), (300, 700))

    sequential = [draw(s) for s in range(8)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(draw, range(8)))
    assert all(np.array_equal(a, b) for a, b in zip(sequential, threaded))


class _RiggedBits:
    """Returns the given 64-bit words over and over, to force extreme uniforms."""

    def __init__(self, words):
        self.words = np.array(words, dtype=np.uint64)

    def random_raw(self, n):
        return np.resize(self.words, n)


class _RiggedGenerator(np.random.Generator):
    def __init__(self, words):
        super().__init__(np.random.PCG64(0))
        self._rigged = _RiggedBits(words)

    @property
    def bit_generator(self):
        return self._rigged


# Signed-extreme and around-zero bit patterns, both as 32-bit halves (float32 takes one
# half per uniform) and as whole 64-bit words (float64 uniforms take one word each).
EXTREME_WORDS = [0x7FFFFFFF7FFFFFFF, 0x8000000080000000, 0, 0xFFFFFFFFFFFFFFFF,
                 0x7FFFFFFF80000000, 0x000000007FFFFFFF,
                 0x7FFFFFFFFFFFFFFF, 0x8000000000000000]


def test_float32_normal_tails_are_finite_and_reach_the_documented_limit():
    x = standard_normal(_RiggedGenerator(EXTREME_WORDS), 1000, np.float32)
    assert np.isfinite(x).all()
    reach = math.sqrt(48 * math.log(2))  # smallest uniform is 2**-24
    assert np.abs(x).max() == pytest.approx(reach, rel=1e-6)
    # And a large real draw stays finite.
    y = standard_normal(np.random.default_rng(9), 4_000_000, np.float32)
    assert np.isfinite(y).all() and np.abs(y).max() <= reach * (1 + 1e-6)


@pytest.mark.parametrize("dtype, bits", [(np.float32, 24), (np.float64, 53)])
def test_uniform_extremes_are_inside_the_open_interval_and_never_zero(dtype, bits):
    x = standard_uniform(_RiggedGenerator(EXTREME_WORDS), 1000, dtype).astype(np.float64)
    step = 2.0**-bits
    assert x.max() == 1 - step and x.min() == -(1 - step)
    assert np.abs(x).min() == step  # the values nearest 0 are ±2**-bits, never 0
