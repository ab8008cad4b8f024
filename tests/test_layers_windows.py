"""The window machinery's edge cases (shifted-slice im2col, shifted-add col2im, per-tap and per-window pools)
against PyTorch's forward and backward and float64 finite differences: stride larger than the kernel,
dilation, groups, padding, ceil_mode, windows as large as the map (pooled per output position), ties, NaN
and infinite gradients, and the workspace each path takes."""

from __future__ import annotations

import numpy as np
import pytest

import test_layers_conv as conv_tests
import test_layers_upsampling as upsampling_tests
from initdiag.layers.conv import from_torch_layout, release_workspace, workspace_bytes


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


CONV = {
    "2d-stride3-gt-kernel2-pad1": ("conv2d", (3, 8, 10), {"filters": 4, "kernel": 2, "stride": 3, "padding": 1}),
    "2d-stride2-gt-kernel1": ("conv2d", (2, 7, 6), {"filters": 3, "kernel": 1, "stride": 2, "padding": 1}),
    "2d-dilation3-stride2-pad2": ("conv2d", (2, 11, 10), {"filters": 3, "kernel": 3, "dilation": 3, "stride": 2,
                                                         "padding": 2}),
    "2d-dilation-gt-stride-groups": ("conv2d", (4, 9, 9), {"filters": 6, "kernel": [2, 3], "dilation": [4, 2],
                                                          "stride": [1, 3], "padding": [1, 2], "groups": 2}),
    "2d-depthwise-stride4-kernel3": ("conv2d", (3, 13, 9), {"filters": 3, "kernel": 3, "stride": 4, "padding": 1,
                                                           "groups": 3}),
    "2d-kernel-as-large-as-the-map": ("conv2d", (2, 5, 4), {"filters": 3, "kernel": [5, 4]}),
    "1d-stride4-gt-kernel2": ("conv1d", (3, 13), {"filters": 2, "kernel": 2, "stride": 4, "padding": 1}),
}
POOL = {
    "max-stride3-gt-kernel2": ("maxpool2d", (2, 8, 10), {"kernel": 2, "stride": 3}),
    "avg-stride3-gt-kernel2": ("avgpool2d", (2, 8, 10), {"kernel": 2, "stride": 3}),
    "max-stride3-gt-kernel2-pad1-ceil": ("maxpool2d", (2, 8, 9), {"kernel": 2, "stride": 3, "padding": 1,
                                                                 "ceil_mode": True}),
    "avg-stride3-gt-kernel2-pad1-ceil": ("avgpool2d", (2, 8, 9), {"kernel": 2, "stride": 3, "padding": 1,
                                                                 "ceil_mode": True}),
    "max-stride1-k3-pad1": ("maxpool2d", (2, 6, 7), {"kernel": 3, "stride": 1, "padding": 1}),
    "avg-stride1-k3-pad1": ("avgpool2d", (2, 6, 7), {"kernel": 3, "stride": 1, "padding": 1}),
    # a window as large as the map, or with more taps than the output has positions: pooled per output position
    "max-whole-map": ("maxpool2d", (3, 7, 9), {"kernel": [7, 9]}),
    "avg-whole-map": ("avgpool2d", (3, 7, 9), {"kernel": [7, 9]}),
    "max-large-overlapping": ("maxpool2d", (2, 8, 7), {"kernel": 5, "stride": 2}),
    "avg-large-overlapping": ("avgpool2d", (2, 8, 7), {"kernel": 5, "stride": 2}),
    "max-large-pad-ceil": ("maxpool2d", (2, 9, 8), {"kernel": 6, "stride": 3, "padding": 2, "ceil_mode": True}),
    "avg-large-pad-ceil": ("avgpool2d", (2, 9, 8), {"kernel": 6, "stride": 3, "padding": 2, "ceil_mode": True}),
}
CONV_TRANSPOSE = {
    "2d-stride3-gt-kernel2": ("conv_transpose2d", (3, 4, 5), {"filters": 2, "kernel": 2, "stride": 3, "padding": 1}),
    "2d-dilation2-stride3-groups": ("conv_transpose2d", (4, 3, 4), {"filters": 2, "kernel": 3, "stride": 3,
                                                                   "dilation": 2, "groups": 2, "output_padding": 1}),
}


@pytest.mark.parametrize("kind, input_shape, raw", CONV.values(), ids=CONV)
def test_conv_edge_cases_match_torch_and_finite_differences(torch, kind, input_shape, raw):
    rng = np.random.default_rng(20)
    layer = conv_tests.build(kind, input_shape, raw, rng)
    x = rng.standard_normal((3, *input_shape))
    y, cache = layer.forward(x)
    x_torch = torch.from_numpy(x.copy()).requires_grad_()
    y_torch, weight, bias = conv_tests.torch_conv(torch, layer, x_torch)
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-12, atol=1e-13)
    upstream = rng.standard_normal(y.shape)
    (y_torch * torch.from_numpy(upstream)).sum().backward()
    dx, grads = layer.backward(upstream, cache)
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(grads["weights"], from_torch_layout(weight.grad.numpy()), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(grads["bias"], bias.grad.numpy(), rtol=1e-11, atol=1e-12)
    conv_tests.check_finite_differences(layer, rng.standard_normal((2, *input_shape)), rng)


@pytest.mark.parametrize("kind, input_shape, raw", POOL.values(), ids=POOL)
def test_pool_edge_cases_match_torch_and_finite_differences(torch, kind, input_shape, raw):
    rng = np.random.default_rng(21)
    layer = conv_tests.build(kind, input_shape, raw, rng)
    conv_tests.assert_weightless_matches_torch(
        torch, layer, rng.standard_normal((3, *input_shape)), lambda x: conv_tests.torch_weightless(torch, layer, x), rng)
    conv_tests.check_finite_differences(layer, conv_tests.distinct_input(rng, (2, *input_shape)), rng)


@pytest.mark.parametrize("raw", [{"kernel": 2}, {"kernel": 3, "stride": 1, "padding": 1}, {"kernel": [7, 8]},
                                 {"kernel": 5, "stride": 1}], ids=["k2", "k3-s1-pad1", "whole-map", "large-overlapping"])
def test_max_pool_ties_go_where_torch_sends_them_on_every_path(torch, raw):
    """Integer inputs after a ReLU-like floor: many tied maxima (zeros); each window's gradient goes to its
    first maximum in row-major order, as PyTorch's CPU kernel, by tap masks and by per-window argmax alike."""
    rng = np.random.default_rng(22)
    layer = conv_tests.build("maxpool2d", (3, 7, 8), raw, rng)
    x = np.maximum(rng.integers(-2, 3, size=(4, 3, 7, 8)), 0).astype(np.float64)
    conv_tests.assert_weightless_matches_torch(
        torch, layer, x, lambda x_torch: conv_tests.torch_weightless(torch, layer, x_torch), rng)


@pytest.mark.parametrize("raw", [{"kernel": 2}, {"kernel": 3, "stride": 2, "padding": 1}, {"kernel": [4, 5]}],
                         ids=["disjoint", "overlapping", "whole-map"])
def test_max_pool_infinite_gradients_reach_only_the_maximum(torch, raw):
    """An infinite upstream gradient lands on the window's maximum and nowhere else (no inf·0 = NaN)."""
    rng = np.random.default_rng(23)
    layer = conv_tests.build("maxpool2d", (2, 4, 5), raw, rng)
    x = conv_tests.distinct_input(rng, (3, 2, 4, 5))
    y, cache = layer.forward(x)
    upstream = np.where(rng.random(y.shape) < 0.5, np.inf, 1.0)
    x_torch = torch.from_numpy(x.copy()).requires_grad_()
    conv_tests.torch_weightless(torch, layer, x_torch).backward(torch.from_numpy(upstream))
    np.testing.assert_array_equal(layer.backward(upstream, cache)[0], x_torch.grad.numpy())


@pytest.mark.parametrize("raw", [{"kernel": 2}, {"kernel": [4, 5]}], ids=["per-tap", "whole-map"])
def test_max_pool_nan_is_the_maximum_and_takes_the_gradient(torch, raw):
    """A NaN in a window makes its maximum NaN (as PyTorch); its gradient goes to the window's first NaN."""
    layer = conv_tests.build("maxpool2d", (1, 4, 5), raw, None)
    x = conv_tests.distinct_input(np.random.default_rng(24), (1, 1, 4, 5))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = np.nan
    y, cache = layer.forward(x)
    np.testing.assert_array_equal(y, conv_tests.torch_weightless(torch, layer, torch.from_numpy(x)).numpy())
    dx, _ = layer.backward(np.full(y.shape, 2.0), cache)
    assert dx[0, 0, 1, 0] == 2.0 and dx[0, 0, 1, 1] == 0.0 and np.isfinite(dx).all()


def test_a_whole_map_pool_takes_workspace_of_the_input_size_not_taps_times_it():
    """A 112x112 window on a 224x224 map: O(input) scratch (once a kh·kw-times-the-input col2im buffer)."""
    for kind in ("maxpool2d", "avgpool2d"):
        layer = conv_tests.build(kind, (4, 224, 224), {"kernel": 112}, None)
        x = np.random.default_rng(25).standard_normal((2, 4, 224, 224)).astype(np.float32)
        release_workspace()
        y, cache = layer.forward(x)
        dx, _ = layer.backward(np.ones_like(y), cache)
        assert dx.shape == x.shape and workspace_bytes() <= x.nbytes
        assert workspace_bytes() == sum(layer.scratch((4, 224, 224), layer.config, 2, 4).values())
    release_workspace()


@pytest.mark.parametrize("kind, input_shape, raw", [*CONV.values(), *POOL.values(), *CONV_TRANSPOSE.values()],
                         ids=[*CONV, *POOL, *CONV_TRANSPOSE])
def test_scratch_predicts_the_workspace_on_every_path(kind, input_shape, raw):
    rng = np.random.default_rng(26)
    transposed = kind.startswith("conv_transpose")
    layer = (upsampling_tests.build if transposed else conv_tests.build)(kind, input_shape, raw, rng)
    release_workspace()
    y, cache = layer.forward(rng.standard_normal((3, *input_shape)))
    layer.backward(np.ones_like(y), cache)
    assert workspace_bytes() == sum(layer.scratch(input_shape, layer.config, 3, 8).values())
    release_workspace()


@pytest.mark.parametrize("kind, input_shape, raw", CONV_TRANSPOSE.values(), ids=CONV_TRANSPOSE)
def test_conv_transpose_edge_cases_match_torch(torch, kind, input_shape, raw):
    rng = np.random.default_rng(27)
    layer = upsampling_tests.build(kind, input_shape, raw, rng)
    module = upsampling_tests.torch_module(torch, layer)
    x = rng.standard_normal((3,) + input_shape)
    y, cache = layer.forward(x)
    x_torch = torch.from_numpy(x.copy()).requires_grad_()
    y_torch = torch.tanh(module(x_torch))
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-12, atol=1e-12)
    upstream = rng.standard_normal(y.shape)
    dx, grads = layer.backward(upstream, cache)
    y_torch.backward(torch.from_numpy(upstream))
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(grads["weights"], upsampling_tests.from_torch_layout(module.weight.grad.numpy(), layer.groups),
                               rtol=1e-11, atol=1e-12)
