"""Schemes that need the parameter's geometry: identity as the Dirac kernel, delta_orthogonal, orthogonal
on a conv, supplied and custom arrays, and the located error of a scheme on a role it does not take.

A conv's matrix is (in/groups · taps, filters) with rows in PyTorch's (in/groups, *kernel) order, so
PyTorch's weight is W.T.reshape(filters, in/groups, *kernel) (`_torch`).
"""

from __future__ import annotations

import json
import re
import math
import textwrap

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from initdiag import network, schemes, spec, weightgeometry, yamlsource
from initdiag.cli import app
from initdiag.schemes import Fans, Geometry
from initdiag.yamlsource import SpecErrors

RUNNER = CliRunner()


def conv_geometry(channels: int, filters: int, kernel: tuple, groups: int = 1) -> Geometry:
    taps = math.prod(kernel)
    return Geometry((channels // groups * taps, filters), "conv", Fans(channels // groups * taps, filters * taps),
                    kernel, groups)


def _torch(weights: np.ndarray, geometry: Geometry) -> np.ndarray:
    rows, filters = geometry.shape
    return weights.T.reshape((filters, rows // geometry.taps) + tuple(geometry.kernel))


def draw(name: str, geometry, params=None, seed=0, dtype=np.float64) -> np.ndarray:
    scheme = schemes.lookup(name)
    return schemes.initial_weights(scheme, {**scheme.params, **(params or {})}, np.random.default_rng(seed), geometry, dtype)


def make(text: str) -> spec.NetworkSpec:
    return spec.parse(yamlsource.loads(textwrap.dedent(text), "t.yaml"), base_dir=".", default_name="t")


def run_cli(*args):
    result = RUNNER.invoke(app, [str(a) for a in args], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


# --- delta_orthogonal ---------------------------------------------------------------------------

DELTA_CASES = [  # (in_channels, filters, kernel, groups)
    (8, 8, (3, 3), 1), (4, 12, (3, 3), 1), (12, 4, (5,), 1), (8, 8, (3, 5), 2), (6, 12, (3,), 3), (4, 4, (4, 4), 1),
]


@pytest.mark.parametrize("gain", [1.0, 1.7])
@pytest.mark.parametrize("channels, filters, kernel, groups", DELTA_CASES)
def test_delta_orthogonal_is_orthogonal_at_the_centre_tap_and_zero_elsewhere(channels, filters, kernel, groups, gain):
    geometry = conv_geometry(channels, filters, kernel, groups)
    w = _torch(draw("delta_orthogonal", geometry, {"gain": gain}, seed=channels * filters), geometry)
    centre = tuple(k // 2 for k in kernel)
    mask = np.zeros(kernel, dtype=bool)
    mask[centre] = True
    assert not w[..., ~mask].any(), "a tap other than the centre is non-zero"
    per_out = filters // groups
    for g in range(groups):
        h = w[(slice(g * per_out, (g + 1) * per_out), slice(None)) + centre].T  # (in/groups, filters/groups)
        gram = h @ h.T if h.shape[0] <= h.shape[1] else h.T @ h
        np.testing.assert_allclose(gram, gain**2 * np.eye(min(h.shape)), atol=1e-12)
    if groups > 1:  # the groups' matrices are independent draws, not one matrix repeated
        assert not np.allclose(w[:per_out], w[per_out:2 * per_out])


def test_delta_orthogonal_centre_is_haar_and_float32_keeps_orthogonality():
    geometry = conv_geometry(64, 64, (3, 3))
    w = draw("delta_orthogonal", geometry, dtype=np.float32)
    assert w.dtype == np.float32
    h = _torch(w, geometry)[:, :, 1, 1].T.astype(np.float64)
    np.testing.assert_allclose(h.T @ h, np.eye(64), atol=1e-6)
    # diag(H) of a Haar orthogonal 64x64 sums to ~N(0, 1): without QR's sign fix it would be ~ -0.8·sqrt(64)
    assert abs(np.trace(h)) <= 5.0


@pytest.mark.parametrize("gain", [1.0, 2.0])
@pytest.mark.parametrize("layer, shape", [("conv2d: {filters: 8, kernel: 3, padding: same, groups: 2}", [4, 7, 6]),
                                          ("conv1d: {filters: 6, kernel: 5, padding: same}", [6, 11]),
                                          ("conv2d: {filters: 8, kernel: [3, 5], padding: same}", [8, 5, 9])])
def test_a_delta_orthogonal_same_padded_conv_scales_the_input_norm_by_gain(layer, shape, gain):
    net = make(f"""\
        input: {shape}
        batch: 3
        dtype: float64
        loss: mse
        layers:
          - {layer}
            init: {{delta_orthogonal: {{gain: {gain}}}}}
            activation: identity
        """)
    conv = network.build(net).layers[0]
    x = np.random.default_rng(5).standard_normal((3, *shape))
    y, _ = conv.forward(x)
    # in <= filters per group: H Hᵀ = gain² I, so at every position |Hᵀ x| = gain |x| (the bias is 0)
    np.testing.assert_allclose(np.linalg.norm(y), gain * np.linalg.norm(x), rtol=1e-12)


def test_delta_orthogonal_from_a_spec_on_conv1d():
    net = make("""\
        input: [3, 8]
        layers:
          - conv1d: {filters: 8, kernel: 3, padding: same}
            init: delta_orthogonal
          - conv1d: {filters: 8, kernel: 3}
            init: {DELTA_ORTHOGONAL: {gain: 1.5}}
          - flatten: {}
          - dense: 10
            init: xavier
        """)
    assert [layer.init.scheme for layer in net.layers if layer.init] == ["delta_orthogonal"] * 2 + ["xavier"]
    assert net.layers[1].init.params == {"gain": 1.5}
    network.build(net)


def test_delta_orthogonal_on_a_dense_layer_is_one_located_error():
    text = "input: [3, 8, 8]\nlayers:\n  - conv2d: {filters: 4, kernel: 3}\n    init: delta_orthogonal\n" \
           "  - flatten: {}\n  - dense: 10\n    init: delta_orthogonal\n"
    with pytest.raises(SpecErrors) as info:
        make(text)
    (problem,) = info.value.problems
    assert str(problem).startswith("t.yaml:7:11: layers[2].init: delta_orthogonal cannot initialise dense matrices"), str(problem)
    assert "conv kernels only" in str(problem)


def test_delta_orthogonal_on_the_cli(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [3, 8, 8]\nlayers:\n  - conv2d: {filters: 4, kernel: 3, padding: same}\n    init: delta_orthogonal\n"
                    "  - global_avgpool: {}\n  - dense: 10\n    init: xavier\n    activation: softmax\n")
    report = json.loads(run_cli("check", path, "--format", "json").stdout)
    assert report["layers"][0]["init"] == "delta_orthogonal"
    listing = run_cli("schemes").stdout
    assert re.search(r"^delta_orthogonal .*conv kernels", listing, re.MULTILINE), listing
    # compare: with --keep-overrides the dense head keeps its own xavier; without, delta_orthogonal cannot fill it
    kept = json.loads(run_cli("compare", path, "--schemes", "delta_orthogonal,relu", "--keep-overrides",
                              "--format", "json").stdout)
    assert set(kept["ranking"]) == {"delta_orthogonal", "relu"}
    assert kept["reports"][0]["layers"][0]["init"] in ("delta_orthogonal", "relu")
    refused = run_cli("compare", path, "--schemes", "delta_orthogonal")
    assert refused.exit_code == 2
    assert "layers[2].init" in refused.output and "delta_orthogonal cannot initialise dense matrices" in refused.output


# --- identity: the Dirac kernel -------------------------------------------------------------------

@pytest.mark.parametrize("kernel, groups", [((3, 3), 1), ((3, 3), 2), ((4, 4), 1), ((2, 3), 4), ((5, 4), 4), ((3,), 1)])
def test_identity_on_a_conv_is_torch_dirac(kernel, groups):
    torch = pytest.importorskip("torch")
    geometry = conv_geometry(4, 4, kernel, groups)
    w = draw("identity", geometry, dtype=np.float32)
    assert w.dtype == np.float32
    dirac = torch.zeros(4, 4 // groups, *kernel)
    torch.nn.init.dirac_(dirac, groups=groups)
    np.testing.assert_array_equal(_torch(w, geometry), dirac.numpy())


def test_identity_on_a_conv_needs_as_many_filters_as_input_channels():
    problem = schemes.problem(schemes.SCHEMES["identity"], {}, conv_geometry(3, 6, (3, 3)))
    assert problem and "3 input channels and 6 filters" in problem
    with pytest.raises(SpecErrors) as info:
        make("input: [3, 5, 5]\nlayers:\n  - conv2d: {filters: 6, kernel: 3}\n    init: identity\n")
    (found,) = info.value.problems
    assert found.path == "layers[0].init" and "3 input channels and 6 filters" in str(found)


def test_identity_is_refused_on_an_embedding_and_on_a_transformers_non_square_matrix():
    with pytest.raises(SpecErrors, match=r"identity cannot initialise embedding tables"):
        make("input: [5]\ninput_distribution: tokens\nlayers:\n  - {embedding: {vocab: 8, dim: 8}, init: identity}\n")
    with pytest.raises(SpecErrors) as info:
        make("input: [5, 8]\nlayers:\n  - {transformer: {heads: 2, dim: 8, ffn: 16}, init: identity}\n")
    (found,) = info.value.problems
    assert "8×16" in str(found) and "ffn" in str(found)


# --- orthogonal: unchanged, and PyTorch's on a conv ------------------------------------------------

def test_orthogonal_draws_the_same_matrix_whatever_the_role():
    geometry = conv_geometry(8, 16, (3, 3))
    as_conv = draw("orthogonal", geometry, seed=7, dtype=np.float32)
    as_matrix = draw("orthogonal", geometry.shape, seed=7, dtype=np.float32)
    np.testing.assert_array_equal(as_conv, as_matrix)


@pytest.mark.parametrize("channels, filters", [(8, 16), (3, 64)])  # tall 72x16; wide 27x64
def test_orthogonal_on_a_conv_matches_torch_orthogonal_in_distribution(channels, filters):
    torch = pytest.importorskip("torch")
    geometry = conv_geometry(channels, filters, (3, 3))
    ours = np.stack([_torch(draw("orthogonal", geometry, seed=s), geometry) for s in range(200)])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = np.stack([torch.nn.init.orthogonal_(torch.empty(filters, channels, 3, 3, dtype=torch.float64)).numpy()
                           for _ in range(200)])
    for w in (ours[0], theirs[0]):  # both orthogonalise the (out, in·k·k) matrix
        flat = w.reshape(filters, -1)
        gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        np.testing.assert_allclose(gram, np.eye(min(flat.shape)), atol=1e-12)
    # One entry across 200 independent draws, and the trace of each draw's leading square block: the same
    # distributions (two-sample KS; a missing sign fix or transpose moves the trace by several standard deviations).
    m = min(filters, channels * 9)
    for statistic in (lambda w: w[:, 0, 0, 0, 0], lambda w: np.einsum("nii->n", w.reshape(200, filters, -1)[:, :m, :m])):
        assert stats.ks_2samp(statistic(ours), statistic(theirs)).pvalue > 1e-4


# --- supplied and custom see the geometry ----------------------------------------------------------

def test_supplied_is_checked_against_the_conv_geometry(tmp_path):
    geometry = conv_geometry(2, 3, (3, 3))
    np.save(tmp_path / "w.npy", np.arange(54.0).reshape(18, 3))
    params = {"path": str(tmp_path / "w.npy"), "shape": (18, 3)}
    np.testing.assert_array_equal(draw("supplied", geometry, params), np.arange(54.0).reshape(18, 3))
    problem = schemes.problem(schemes.SCHEMES["supplied"], params, conv_geometry(2, 4, (3, 3)))
    assert "[18, 3]" in problem and "[18, 4]" in problem


def test_custom_keeps_its_four_arguments_and_may_ask_for_the_geometry():
    calls = []

    def plain(shape, fan_in, fan_out, rng):
        calls.append((shape, fan_in, fan_out))
        return np.ones(shape)

    def aware(shape, fan_in, fan_out, rng, geometry=None):
        calls.append(geometry)
        return np.full(shape, geometry.taps)

    geometry = conv_geometry(2, 3, (3, 3))
    assert draw("custom", geometry, {"function": plain}).sum() == 54
    assert calls.pop() == ((18, 3), 18, 27)
    assert (draw("custom", geometry, {"function": aware}) == 9).all()
    assert calls.pop() is geometry


# --- where the geometry comes from -----------------------------------------------------------------

def test_layer_geometries_carry_kernel_groups_roles_and_fans():
    net = make("""\
        input: [4, 9, 9]
        layers:
          - conv2d: {filters: 8, kernel: [3, 5], groups: 2}
          - flatten: {}
          - dense: 10
        """)
    conv, _, dense = net.layers
    assert weightgeometry.main(conv) == Geometry((2 * 15, 8), "conv", Fans(30, 8 * 15), (3, 5), 2)
    assert weightgeometry.main(dense) == Geometry((dense.fan_in, 10), "dense", Fans(dense.fan_in, 10))
    lstm = make("input: [5, 3]\nlayers:\n  - lstm: 4\n").layers[0]
    assert weightgeometry.main(lstm).role == "dense" and weightgeometry.main(lstm).shape == (3, 16)
    assert weightgeometry.recurrent(lstm) == Geometry((4, 16), "recurrent", Fans(4, 16))


@pytest.mark.parametrize("layer, shape", [("conv2d: {filters: 4, kernel: 3, padding: same, groups: 2}", [4, 6, 5]),
                                          ("conv2d: {filters: 4, kernel: [3, 5], padding: same, groups: 4}", [4, 6, 5]),
                                          ("conv1d: {filters: 3, kernel: 5, padding: same, groups: 3}", [3, 8])])
def test_an_identity_conv_built_from_a_spec_passes_its_input_through(layer, shape):
    net = make(f"input: {shape}\nbatch: 2\ndtype: float64\nloss: mse\nlayers:\n  - {layer}\n    init: identity\n"
               "    activation: identity\n")
    x = np.random.default_rng(11).standard_normal((2, *shape))
    np.testing.assert_array_equal(network.build(net).layers[0].forward(x)[0], x)
