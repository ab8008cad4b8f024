"""The statistics stage (`initdiag.stats`): the signal second moment is one of its statistics, computed in one
place for the checks, compare, recommend and the plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from initdiag import network, propagate, spec, stats

SAMPLES = Path(__file__).resolve().parent.parent / "sample_specs"


@pytest.fixture(scope="module")
def run():
    return propagate.run(network.build(spec.load(SAMPLES / "mnist_relu_he.yaml")))  # relu layers, a softmax head


def test_the_signal_is_the_output_second_moment_and_the_logits_for_softmax(run):
    hidden, head = run.layers[0], run.layers[-1]
    assert head.activation.startswith("softmax")
    assert hidden.signal_second_moment == hidden.act_var + hidden.act_mean**2
    assert head.signal_second_moment == head.preact_var + head.preact_mean**2


def test_a_single_layer_trial_measures_the_same_rule():
    z = np.array([[3.0, -1.0], [2.0, 0.5]], dtype=np.float32)
    y = np.array([[0.9, 0.1], [0.8, 0.2]], dtype=np.float32)
    mean, var = stats.mean_var(z)
    assert stats.trial_signal_second_moment("softmax", z, y) == var + mean**2
    mean, var = stats.mean_var(y)
    assert stats.trial_signal_second_moment("relu", z, y) == var + mean**2


def test_run_statistics_pickle_for_jobs(run):
    """compare --jobs and check --jobs send statistics across processes."""
    import pickle

    from initdiag import pipeline

    diagnosis = pipeline.diagnose(spec.load(SAMPLES / "mnist_relu_he.yaml"))
    again = pickle.loads(pickle.dumps(diagnosis))
    assert again.run == diagnosis.run and again.findings == diagnosis.findings
    assert again.run.layers[-1].signal_second_moment == diagnosis.run.layers[-1].signal_second_moment


@pytest.mark.parametrize("offset", [0.0, 0.5, 1.0, 30.0])  # 30: mean² > E[x²]/2, the blocked deviations' path
def test_mean_var_without_a_full_size_temporary_matches_float64(offset):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 70_001)) + offset).astype(np.float32)  # 3 blocks and a remainder
    mean, var = stats.mean_var(x)
    reference = x.astype(np.float64)
    # float32 dots over n entries, ~sqrt(n)·eps32 relative, times E[x²]/var <= 2 where it subtracts the means
    tolerance = 2 * np.sqrt(x.size) * float(np.finfo(np.float32).eps)
    assert var == pytest.approx(reference.var(), rel=tolerance)
    assert abs(mean - reference.mean()) <= tolerance * reference.std()


def test_mean_var_of_a_constant_is_exactly_zero():
    assert stats.mean_var(np.full((64, 33), 0.7, dtype=np.float32)) == (pytest.approx(0.7), 0.0)
    assert stats.mean_var(np.zeros((5, 5), dtype=np.float32)) == (0.0, 0.0)


def test_symmetry_compares_only_the_columns_whose_sums_collide():
    rng = np.random.default_rng(5)
    weights = rng.standard_normal((6, 9)).astype(np.float32)
    weights[:, 4] = weights[:, 1]  # a duplicate
    weights[:, 7] = weights[::-1, 2]  # a permutation: the same sum, a different unit
    assert stats.symmetry(weights, None) == pytest.approx(1 / 9)
    bias = np.zeros(9, dtype=np.float32)
    bias[4] = 1.0  # the bias tells the duplicate apart
    assert stats.symmetry(weights, bias) == 0.0
    assert stats.symmetry(np.full((3, 5), 0.5, dtype=np.float32), None) == pytest.approx(4 / 5)  # constant init
