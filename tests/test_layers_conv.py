"""Convolution, pooling, global-average-pooling and flatten layers.

Forward passes and gradients against PyTorch (skipped without torch, which CI does not have)
and against central finite differences (always run); fans, identity kernels, shape errors,
config normalisation and dtypes. Float64 wherever values are compared, so agreement is to
rounding.
"""

import math

import numpy as np
from gradcheck import numeric_gradient
import pytest

from initdiag import activations, schemes
from initdiag.layers import layer_class
from initdiag.layers.conv import (
    Conv1d, Conv2d, from_torch_layout, normalize_config, release_workspace, torch_layout, workspace_bytes,
)
from initdiag.layers.pooling import GlobalAvgPool

CONV_LAYERS = {kind: layer_class(kind) for kind in ("conv1d", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "flatten")}


# PyTorch warns that 'same' with an even kernel pads a copy of the input: that is what it should do.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


# (input shape per sample, raw config): random shapes covering every option
CONV2D = {
    "k3-valid": ((3, 7, 9), {"filters": 4, "kernel": 3}),
    "k3-stride2-pad1": ((3, 8, 7), {"filters": 5, "kernel": 3, "stride": 2, "padding": 1}),
    "k3-same": ((4, 6, 5), {"filters": 3, "kernel": 3, "padding": "same"}),
    "k2x4-same-even": ((3, 5, 7), {"filters": 2, "kernel": [2, 4], "padding": "same"}),
    "k3-dilation2-same": ((2, 9, 8), {"filters": 3, "kernel": 3, "dilation": 2, "padding": "same"}),
    "k3-dilation2-pad1": ((2, 9, 8), {"filters": 3, "kernel": 3, "dilation": 2, "padding": 1}),
    "groups2": ((4, 6, 7), {"filters": 6, "kernel": 3, "padding": 1, "groups": 2}),
    "depthwise-x2-stride2": ((4, 7, 6), {"filters": 8, "kernel": 3, "stride": 2, "padding": 1, "groups": 4}),
    "depthwise-same": ((3, 5, 6), {"filters": 3, "kernel": 3, "padding": "same", "groups": 3}),
    "k1": ((5, 4, 6), {"filters": 3, "kernel": 1}),
    "k1-stride2": ((2, 5, 6), {"filters": 3, "kernel": 1, "stride": 2}),
    "mixed": ((3, 8, 9), {"filters": 4, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 2]}),
    "same-stride2": ((3, 7, 8), {"filters": 4, "kernel": 3, "stride": 2, "padding": "same"}),
    "same-stride2-even": ((3, 8, 7), {"filters": 2, "kernel": 4, "stride": 2, "padding": "same"}),
    "no-bias": ((3, 6, 6), {"filters": 4, "kernel": 3, "bias": False}),
}
CONV1D = {
    "k3-valid": ((3, 11), {"filters": 4, "kernel": 3}),
    "k5-stride2-pad2": ((2, 12), {"filters": 3, "kernel": 5, "stride": 2, "padding": 2}),
    "k4-same-even": ((3, 9), {"filters": 2, "kernel": 4, "padding": "same"}),
    "dilation2-same": ((2, 10), {"filters": 3, "kernel": 3, "dilation": 2, "padding": "same"}),
    "groups2": ((4, 8), {"filters": 6, "kernel": 3, "groups": 2}),
    "depthwise-x2-stride2": ((3, 9), {"filters": 6, "kernel": 3, "groups": 3, "stride": 2}),
    "k1": ((5, 7), {"filters": 2, "kernel": 1}),
    "same-stride3": ((2, 10), {"filters": 2, "kernel": 3, "stride": 3, "padding": "same"}),
}
CONV_CASES = [("conv2d", *case) for case in CONV2D.values()] + [("conv1d", *case) for case in CONV1D.values()]
CONV_IDS = [f"conv2d-{name}" for name in CONV2D] + [f"conv1d-{name}" for name in CONV1D]

POOL_CASES = {
    "max-k2": ("maxpool2d", (3, 6, 8), {"kernel": 2}),
    "max-k3-stride2-overlap": ("maxpool2d", (2, 7, 9), {"kernel": 3, "stride": 2}),
    "max-k2x3-stride1x2": ("maxpool2d", (2, 5, 8), {"kernel": [2, 3], "stride": [1, 2]}),
    "max-k2-floor": ("maxpool2d", (2, 7, 5), {"kernel": 2}),
    "max-resnet-stem-3-2-1": ("maxpool2d", (2, 8, 7), {"kernel": 3, "stride": 2, "padding": 1}),
    "max-ceil-odd": ("maxpool2d", (2, 7, 9), {"kernel": 2, "ceil_mode": True}),
    "max-pad-ceil": ("maxpool2d", (2, 6, 5), {"kernel": [3, 2], "stride": 2, "padding": [1, 1], "ceil_mode": True}),
    "avg-k2": ("avgpool2d", (3, 6, 8), {"kernel": 2}),
    "avg-pad1": ("avgpool2d", (2, 7, 6), {"kernel": 3, "stride": 2, "padding": 1}),
    "avg-ceil-odd": ("avgpool2d", (2, 7, 9), {"kernel": 2, "ceil_mode": True}),
    "avg-pad-ceil-partial": ("avgpool2d", (2, 6, 5), {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    "avg-k3-stride2-overlap": ("avgpool2d", (2, 7, 9), {"kernel": 3, "stride": 2}),
    "avg-k3x2-stride1": ("avgpool2d", (2, 5, 6), {"kernel": [3, 2], "stride": 1}),
    "gap-2d": ("global_avgpool", (4, 5, 7), {}),
    "gap-1d": ("global_avgpool", (3, 9), {}),
    "flatten-2d": ("flatten", (3, 4, 5), {}),
    "flatten-1d": ("flatten", (4, 6), {}),
}


def build(kind, input_shape, raw, rng, dtype=np.float64, activation="tanh"):
    """A layer with random parameters; weightless layers take (name, input_shape, config)."""
    config = normalize_config(kind, raw)
    cls = CONV_LAYERS[kind]
    if cls.weight_shape(input_shape, config) is None:
        return cls(kind, input_shape, config)
    weights = rng.standard_normal(cls.weight_shape(input_shape, config)).astype(dtype)
    weights /= math.sqrt(cls.fans(input_shape, config)[0])
    bias = rng.standard_normal(config["filters"]).astype(dtype) * 0.5 if config["bias"] else None
    return cls(kind, weights, bias, activations.make(activation), input_shape, config)


def tf_same_pads(size, kernel, stride, dilation):
    """TensorFlow's 'same': ceil(n / s) outputs; the total padding split with the smaller half first."""
    pads = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def torch_conv(torch, layer, x):
    """PyTorch's output for `layer` on the tensor x, from the weights in PyTorch's layout."""
    functional = torch.nn.functional
    config = layer.config
    conv = functional.conv1d if layer.kind == "conv1d" else functional.conv2d
    weight = torch.from_numpy(torch_layout(layer.weights, config["kernel"])).requires_grad_()
    bias = None if layer.bias is None else torch.from_numpy(layer.bias.copy()).requires_grad_()
    padding = config["padding"]
    if padding == "valid":
        padding = 0
    elif padding == "same" and any(s > 1 for s in config["stride"]):  # PyTorch allows 'same' at stride 1 only
        pads = tf_same_pads(layer.input_shape[1:], config["kernel"], config["stride"], config["dilation"])
        x = functional.pad(x, [p for pair in reversed(pads) for p in pair])  # F.pad lists the last axis first
        padding = 0
    z = conv(x, weight, bias, stride=config["stride"], padding=padding, dilation=config["dilation"],
             groups=config["groups"])
    return torch.tanh(z), weight, bias


def torch_weightless(torch, layer, x):
    functional = torch.nn.functional
    if layer.kind in ("maxpool2d", "avgpool2d"):
        pool = functional.max_pool2d if layer.kind == "maxpool2d" else functional.avg_pool2d
        return pool(x, layer.config["kernel"], layer.config["stride"], layer.config["padding"],
                    ceil_mode=layer.config["ceil_mode"])
    if layer.kind == "global_avgpool":
        pool = functional.adaptive_avg_pool2d if x.dim() == 4 else functional.adaptive_avg_pool1d
        return torch.flatten(pool(x, 1), 1)
    return torch.flatten(x, 1)


def distinct_input(rng, shape):
    """Values at least 0.01 apart, so max-pooling has no ties and finite differences cross no kink."""
    return (rng.permutation(math.prod(shape)) * 0.01 - 1.0).reshape(shape)


# --- weight layout ----------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, in_per_group, filters", [((3, 3), 2, 5), ((2, 4), 3, 1), ((5,), 4, 3), ((1, 1), 6, 2)])
def test_torch_layout_puts_each_column_in_one_output_channel(kernel, in_per_group, filters):
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((in_per_group * math.prod(kernel), filters))
    weight = torch_layout(weights, kernel)
    assert weight.shape == (filters, in_per_group, *kernel)
    for j in range(filters):  # column j = output channel j's kernel, flattened (in, kh, kw) in C order
        np.testing.assert_array_equal(weight[j].ravel(), weights[:, j])
    np.testing.assert_array_equal(from_torch_layout(weight), weights)
    assert from_torch_layout(weight).flags.c_contiguous
    with pytest.raises(ValueError, match=r"\(7, 2\)"):
        torch_layout(np.zeros((7, 2)), (3, 3))


@pytest.mark.parametrize("input_shape, raw", [((4, 5, 5), {"filters": 8, "kernel": 3}),  # 36 x 8: tall
                                              ((3, 5, 5), {"filters": 64, "kernel": 3})])  # 27 x 64: wide
def test_orthogonal_on_the_weight_matrix_is_orthogonal_in_torch_layout(input_shape, raw):
    config = normalize_config("conv2d", raw)
    shape = Conv2d.weight_shape(input_shape, config)
    weights = schemes.initial_weights(schemes.lookup("orthogonal"), {"gain": 1.0}, np.random.default_rng(1),
                                      shape, np.float64)
    flat = torch_layout(weights, config["kernel"]).reshape(config["filters"], -1)  # PyTorch's (out, in·k·k)
    # torch.nn.init.orthogonal_ gives orthonormal rows if out <= in·k·k, else orthonormal columns
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    np.testing.assert_allclose(gram, np.eye(min(flat.shape)), atol=1e-12)


# --- forward and gradients against PyTorch ------------------------------------------------------

@pytest.mark.parametrize("kind, input_shape, raw", CONV_CASES, ids=CONV_IDS)
def test_conv_forward_and_gradients_match_torch(torch, kind, input_shape, raw):
    rng = np.random.default_rng(2)
    layer = build(kind, input_shape, raw, rng)
    x = rng.standard_normal((3, *input_shape))
    y, cache = layer.forward(x)
    assert y.shape == (3, *layer.output_shape(input_shape, layer.config))
    if raw.get("padding") == "same":
        assert y.shape[2:] == tuple(math.ceil(n / s) for n, s in zip(input_shape[1:], layer.config["stride"]))

    x_torch = torch.from_numpy(x.copy()).requires_grad_()
    y_torch, weight, bias = torch_conv(torch, layer, x_torch)
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-12, atol=1e-13)

    upstream = rng.standard_normal(y.shape)
    (y_torch * torch.from_numpy(upstream)).sum().backward()
    dx, grads = layer.backward(upstream, cache)
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(grads["weights"], from_torch_layout(weight.grad.numpy()), rtol=1e-11, atol=1e-12)
    assert grads["weights"].shape == layer.weights.shape
    if bias is None:
        assert "bias" not in grads
    else:
        np.testing.assert_allclose(grads["bias"], bias.grad.numpy(), rtol=1e-11, atol=1e-12)


def test_same_padding_with_stride_1_is_torch_padding_same(torch):
    """PyTorch's own padding='same' (stride 1), even kernels and dilation included, not our reconstruction."""
    rng = np.random.default_rng(3)
    for kernel, dilation in [(3, 1), (4, 1), ([2, 5], [3, 1]), (4, 2)]:
        layer = build("conv2d", (2, 9, 8), {"filters": 3, "kernel": kernel, "dilation": dilation, "padding": "same"}, rng)
        x = rng.standard_normal((2, 2, 9, 8))
        weight = torch.from_numpy(torch_layout(layer.weights, layer.config["kernel"]))
        expected = torch.tanh(torch.nn.functional.conv2d(torch.from_numpy(x), weight, torch.from_numpy(layer.bias),
                                                         padding="same", dilation=layer.config["dilation"]))
        np.testing.assert_allclose(layer.forward(x)[0], expected.numpy(), rtol=1e-12, atol=1e-13)


def assert_weightless_matches_torch(torch, layer, x, torch_forward, rng):
    """A weightless layer's output and input gradient against torch's (float64), for an upstream gradient
    drawn from `rng`; returns our output and cache."""
    y, cache = layer.forward(x)
    x_torch = torch.from_numpy(x.copy()).requires_grad_()
    y_torch = torch_forward(x_torch)
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-13, atol=1e-15)
    upstream = rng.standard_normal(y.shape)
    (y_torch * torch.from_numpy(upstream)).sum().backward()
    dx, grads = layer.backward(upstream, cache)
    assert grads == {}
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-13, atol=1e-15)
    return y, cache


@pytest.mark.parametrize("kind, input_shape, raw", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_weightless_forward_and_gradients_match_torch(torch, kind, input_shape, raw):
    rng = np.random.default_rng(4)
    layer = build(kind, input_shape, raw, rng)
    x = rng.standard_normal((3, *input_shape))
    y, cache = assert_weightless_matches_torch(torch, layer, x, lambda x_torch: torch_weightless(torch, layer, x_torch), rng)
    assert y.shape == (3, *layer.output_shape(input_shape, layer.config))
    assert cache.z is y


def test_max_pool_sends_tied_gradients_where_torch_does(torch):
    """Ties (integer inputs): each window's gradient goes to its first maximum, as PyTorch's CPU kernel."""
    rng = np.random.default_rng(5)
    for raw in ({"kernel": 2}, {"kernel": 3, "stride": 1}, {"kernel": [2, 3], "stride": [1, 2]}):
        layer = build("maxpool2d", (3, 7, 8), raw, rng)
        x = rng.integers(0, 3, size=(4, 3, 7, 8)).astype(np.float64)
        y, cache = layer.forward(x)
        x_torch = torch.from_numpy(x.copy()).requires_grad_()
        y_torch = torch.nn.functional.max_pool2d(x_torch, layer.config["kernel"], layer.config["stride"])
        upstream = rng.standard_normal(y.shape)
        (y_torch * torch.from_numpy(upstream)).sum().backward()
        # overlapping windows add in another order: equal to rounding; a misplaced tie would be off by O(1)
        np.testing.assert_allclose(layer.backward(upstream, cache)[0], x_torch.grad.numpy(), rtol=1e-14, atol=1e-15)


def test_max_pool_gradient_goes_to_the_first_maximum_without_torch():
    layer = build("maxpool2d", (1, 2, 2), {"kernel": 2}, None)
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])
    y, cache = layer.forward(x)
    dx, _ = layer.backward(np.array([[[[5.0]]]]), cache)
    np.testing.assert_array_equal(dx, [[[[0.0, 5.0], [0.0, 0.0]]]])


# --- gradients against central finite differences (no torch needed) -----------------------------

def check_finite_differences(layer, x, rng):
    """dLoss/dx, dW, db for Loss = Σ y·R against central differences of the float64 forward pass.

    Error budget: a central difference has truncation error h²/6 · |L'''| (about 1e-13 for these
    smooth O(1) terms at h = 1e-6) and rounding error about ε·S/h, where S = Σ|y·R| bounds the
    rounding in evaluating L (ε = 2.2e-16). h = 1e-6 roughly balances the two; atol = 10·ε·S/h
    covers the rounding with margin, and rtol = 1e-6 leaves room for the truncation on the
    larger derivatives. Our analytic gradients are exact up to rounding (~1e-15 relative).
    """
    h = 1e-6
    y, cache = layer.forward(x)
    upstream = rng.standard_normal(y.shape)
    dx, grads = layer.backward(upstream, cache)

    def loss():
        return float(np.sum(layer.forward(x)[0] * upstream))

    atol = 10 * np.finfo(np.float64).eps * float(np.sum(np.abs(y * upstream))) / h
    np.testing.assert_allclose(dx, numeric_gradient(loss, x, h), rtol=1e-6, atol=atol, err_msg="dx")
    for name in ("weights", "bias"):
        param = getattr(layer, name)
        if param is not None:
            np.testing.assert_allclose(grads[name], numeric_gradient(loss, param, h), rtol=1e-6, atol=atol, err_msg=name)


@pytest.mark.parametrize("kind, input_shape, raw", CONV_CASES, ids=CONV_IDS)
def test_conv_gradients_match_finite_differences(kind, input_shape, raw):
    rng = np.random.default_rng(6)
    layer = build(kind, input_shape, raw, rng)  # tanh: smooth, so no kink inside ±h
    check_finite_differences(layer, rng.standard_normal((2, *input_shape)), rng)


@pytest.mark.parametrize("kind, input_shape, raw", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_weightless_gradients_match_finite_differences(kind, input_shape, raw):
    rng = np.random.default_rng(7)
    layer = build(kind, input_shape, raw, rng)
    check_finite_differences(layer, distinct_input(rng, (2, *input_shape)), rng)


def test_a_small_stack_chains_gradients():
    """conv -> maxpool -> depthwise conv -> global average pool: dx against finite differences."""
    rng = np.random.default_rng(8)
    stack = [build("conv2d", (2, 8, 7), {"filters": 4, "kernel": 3, "padding": "same"}, rng),
             build("maxpool2d", (4, 8, 7), {"kernel": 2}, rng),
             build("conv2d", (4, 4, 3), {"filters": 4, "kernel": [3, 2], "groups": 4, "padding": 1}, rng),
             build("global_avgpool", (4, 5, 4), {}, rng)]
    x = rng.standard_normal((2, 2, 8, 7))
    upstream = rng.standard_normal((2, 4))

    def forward():
        out, caches = x, []
        for layer in stack:
            out, cache = layer.forward(out)
            caches.append(cache)
        return out, caches

    out, caches = forward()
    grad = upstream
    for layer, cache in zip(reversed(stack), reversed(caches)):
        grad, _ = layer.backward(grad, cache)
    h = 1e-6
    numeric = numeric_gradient(lambda: float(np.sum(forward()[0] * upstream)), x, h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_given_dz_skips_the_activation_and_need_dx_false_skips_dx():
    rng = np.random.default_rng(9)
    layer = build("conv2d", (3, 6, 5), {"filters": 4, "kernel": 3, "padding": 1}, rng)
    x = rng.standard_normal((2, 3, 6, 5))
    y, cache = layer.forward(x)
    dz = rng.standard_normal(y.shape)
    identity = build("conv2d", (3, 6, 5), {"filters": 4, "kernel": 3, "padding": 1}, rng, activation="identity")
    identity.weights, identity.bias = layer.weights, layer.bias
    dx_ref, grads_ref = identity.backward(dz, identity.forward(x)[1])
    dx, grads = layer.backward(None, cache, dz=dz)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-14)
    np.testing.assert_allclose(grads["weights"], grads_ref["weights"], rtol=1e-14)
    none, grads = layer.backward(None, cache, dz=dz, need_dx=False)
    assert none is None and set(grads) == {"weights", "bias"}
    for kind, shape, raw in POOL_CASES.values():
        pool = build(kind, shape, raw, rng)
        y, cache = pool.forward(distinct_input(rng, (2, *shape)))
        assert pool.backward(np.ones_like(y), cache, need_dx=False) == (None, {})


def test_results_do_not_share_memory_with_reused_scratch_buffers():
    rng = np.random.default_rng(10)
    layer = build("conv2d", (3, 6, 6), {"filters": 3, "kernel": 3, "padding": "same"}, rng)
    x1, x2 = rng.standard_normal((2, 2, 3, 6, 6))
    y1, cache1 = layer.forward(x1)
    dx1, grads1 = layer.backward(np.ones_like(y1), cache1)
    kept = [a.copy() for a in (y1, cache1.z, dx1, grads1["weights"], grads1["bias"])]
    y2, cache2 = layer.forward(x2)
    layer.backward(np.ones_like(y2), cache2)
    for before, after in zip(kept, (y1, cache1.z, dx1, grads1["weights"], grads1["bias"])):
        np.testing.assert_array_equal(before, after)
    release_workspace()
    np.testing.assert_array_equal(layer.forward(x1)[0], y1)


# --- global average pooling of a sequence ----------------------------------------------------------

SEQUENCE = {"sequence": True}  # what the spec sets when the input is [steps, features]


def test_global_avgpool_on_a_sequence_averages_over_the_steps(torch):
    """(batch, steps, features) -> (batch, features): a sequence model's mean pooling, x.mean(dim=1)."""
    rng = np.random.default_rng(12)
    layer = GlobalAvgPool("gap", (7, 5), SEQUENCE)
    assert layer.out_shape == (5,) and GlobalAvgPool.output_shape((7, 5), SEQUENCE) == (5,)
    x = rng.standard_normal((3, 7, 5))
    assert_weightless_matches_torch(torch, layer, x, lambda x_torch: x_torch.mean(dim=1), rng)


def test_global_avgpool_on_a_sequence_matches_finite_differences():
    rng = np.random.default_rng(13)
    layer = GlobalAvgPool("gap", (6, 4), SEQUENCE)
    check_finite_differences(layer, rng.standard_normal((2, 6, 4)), rng)
    # the same (6, 4) array as a feature map [channels, length] still pools over the length
    assert GlobalAvgPool("gap", (6, 4), {}).forward(np.ones((2, 6, 4)))[0].shape == (2, 6)
    assert GlobalAvgPool("gap", (6, 4), {"sequence": False}).out_shape == (6,)


def test_global_avgpool_sequence_is_set_by_the_spec_not_an_option():
    with pytest.raises(ValueError, match="unknown option"):
        normalize_config("global_avgpool", {"sequence": True})
    with pytest.raises(ValueError, match=r"\(steps, features\).*\(3, 4, 5\)"):
        GlobalAvgPool.output_shape((3, 4, 5), SEQUENCE)


# --- fans and weight shapes -------------------------------------------------------------------

FAN_CASES = [
    ("conv2d", (3, 32, 32), {"filters": 64, "kernel": 3}),
    ("conv2d", (16, 9, 9), {"filters": 8, "kernel": [5, 3], "stride": 2, "padding": "same"}),
    ("conv2d", (8, 10, 10), {"filters": 12, "kernel": 3, "groups": 4}),
    ("conv2d", (6, 10, 10), {"filters": 12, "kernel": 3, "groups": 6, "dilation": 2}),  # depthwise
    ("conv2d", (7, 4, 4), {"filters": 5, "kernel": 1}),
    ("conv1d", (4, 20), {"filters": 6, "kernel": 7}),
    ("conv1d", (6, 20), {"filters": 9, "kernel": 5, "groups": 3}),
]


@pytest.mark.parametrize("kind, input_shape, raw", FAN_CASES)
def test_fans_and_weight_shape_follow_the_formula(kind, input_shape, raw):
    config = normalize_config(kind, raw)
    cls = CONV_LAYERS[kind]
    taps = math.prod(config["kernel"])
    in_per_group = input_shape[0] // config["groups"]
    assert cls.fans(input_shape, config) == (in_per_group * taps, config["filters"] * taps)
    assert cls.weight_shape(input_shape, config) == (in_per_group * taps, config["filters"])


@pytest.mark.parametrize("kind, input_shape, raw", FAN_CASES)
def test_fans_match_torch(torch, kind, input_shape, raw):
    config = normalize_config(kind, raw)
    cls = CONV_LAYERS[kind]
    weight = torch.from_numpy(torch_layout(np.zeros(cls.weight_shape(input_shape, config)), config["kernel"]))
    assert cls.fans(input_shape, config) == torch.nn.init._calculate_fan_in_and_fan_out(weight)


def test_registry():
    for kind, cls in CONV_LAYERS.items():
        assert cls.kind == kind
        for method in ("output_shape", "fans", "weight_shape", "scratch", "forward", "backward"):
            assert callable(getattr(cls, method))


def test_weightless_layers_have_no_fans_or_weights():
    for kind, shape, raw in POOL_CASES.values():
        cls = CONV_LAYERS[kind]
        config = normalize_config(kind, raw)
        assert cls.fans(shape, config) is None and cls.weight_shape(shape, config) is None
        layer = cls("p", shape, config)
        assert layer.weights is None and layer.bias is None and layer.activation.name == "identity"
        assert layer.unit_axis == 1
    assert Conv2d.unit_axis == Conv1d.unit_axis == 1


# --- shapes and errors ------------------------------------------------------------------------

@pytest.mark.parametrize("kind, input_shape, raw, expected", [
    ("conv2d", (3, 32, 32), {"filters": 8, "kernel": 3, "padding": "same"}, (8, 32, 32)),
    ("conv2d", (3, 32, 31), {"filters": 8, "kernel": 3, "stride": 2, "padding": "same"}, (8, 16, 16)),
    ("conv2d", (3, 32, 32), {"filters": 8, "kernel": 5, "stride": 2}, (8, 14, 14)),
    ("conv2d", (3, 10, 12), {"filters": 2, "kernel": 3, "dilation": [2, 3], "padding": [1, 0]}, (2, 8, 6)),
    ("conv1d", (2, 100), {"filters": 4, "kernel": 5, "stride": 3, "padding": 2}, (4, 34)),
    ("maxpool2d", (5, 9, 8), {"kernel": 2}, (5, 4, 4)),
    ("avgpool2d", (5, 9, 8), {"kernel": 3, "stride": 2}, (5, 4, 3)),
    ("global_avgpool", (5, 9, 8), {}, (5,)),
    ("global_avgpool", (5, 9), {}, (5,)),
    ("flatten", (5, 9, 8), {}, (360,)),
])
def test_output_shapes(kind, input_shape, raw, expected):
    assert CONV_LAYERS[kind].output_shape(input_shape, normalize_config(kind, raw)) == expected


@pytest.mark.parametrize("kind, input_shape, raw, fragments", [
    ("conv2d", (3, 2, 2), {"filters": 4, "kernel": 3}, ["kernel (3, 3)", "(3, 2, 2)"]),
    ("conv2d", (1, 2, 2), {"filters": 4, "kernel": 5, "padding": 1}, ["kernel (5, 5)", "(1, 2, 2)", "padded to (4, 4)"]),
    ("conv2d", (1, 6, 6), {"filters": 4, "kernel": 3, "dilation": 3}, ["dilation (3, 3)", "spans (7, 7)", "(1, 6, 6)"]),
    ("conv2d", (3, 32), {"filters": 4, "kernel": 3}, ["(channels, height, width)", "(3, 32)"]),
    ("conv2d", (3, 8, 8), {"filters": 4, "kernel": 3, "groups": 2}, ["(3, 8, 8)", "3 channels", "groups=2"]),
    ("conv1d", (3, 4, 4), {"filters": 4, "kernel": 3}, ["(channels, length)", "(3, 4, 4)"]),
    ("conv1d", (3, 4), {"filters": 4, "kernel": 5}, ["kernel (5,)", "(3, 4)"]),
    ("maxpool2d", (2, 4, 9), {"kernel": 5}, ["kernel (5, 5)", "(2, 4, 9)"]),
    ("avgpool2d", (2, 9), {"kernel": 2}, ["(channels, height, width)", "(2, 9)"]),
    ("global_avgpool", (5,), {}, ["(channels, length) or (channels, height, width)", "(5,)"]),
])
def test_impossible_shapes_are_named(kind, input_shape, raw, fragments):
    config = normalize_config(kind, raw)
    with pytest.raises(ValueError) as error:
        CONV_LAYERS[kind].output_shape(input_shape, config)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_filters_not_divisible_by_groups_is_an_error():
    with pytest.raises(ValueError, match="filters=6 is not divisible by groups=4"):
        normalize_config("conv2d", {"filters": 6, "kernel": 3, "groups": 4})
    config = {**normalize_config("conv2d", {"filters": 8, "kernel": 3, "groups": 4}), "filters": 6}
    with pytest.raises(ValueError, match="filters=6 is not divisible by groups=4"):
        Conv2d.output_shape((8, 5, 5), config)


def test_constructor_checks_parameter_shapes_and_activation():
    config = normalize_config("conv2d", {"filters": 4, "kernel": 3})
    relu = activations.make("relu")
    with pytest.raises(ValueError, match=r"weights \(9, 4\), expected \(27, 4\)"):
        Conv2d("c", np.zeros((9, 4)), np.zeros(4), relu, (3, 8, 8), config)
    with pytest.raises(ValueError, match=r"bias \(3,\), expected \(4,\)"):
        Conv2d("c", np.zeros((27, 4)), np.zeros(3), relu, (3, 8, 8), config)
    with pytest.raises(ValueError, match="softmax"):
        Conv2d("c", np.zeros((27, 4)), np.zeros(4), activations.make("softmax"), (3, 8, 8), config)


# --- normalize_config -------------------------------------------------------------------------

def test_normalize_config_fills_defaults_and_broadcasts():
    assert normalize_config("conv2d", {"filters": 8, "kernel": 3}) == {
        "kernel": (3, 3), "stride": (1, 1), "filters": 8, "padding": "valid", "dilation": (1, 1), "groups": 1,
        "bias": True}
    assert normalize_config("conv2d", {"filters": 8, "kernel": [3, 5], "stride": 2, "padding": "SAME",
                                       "dilation": [1, 2], "groups": 2, "bias": False}) == {
        "kernel": (3, 5), "stride": (2, 2), "filters": 8, "padding": "same", "dilation": (1, 2), "groups": 2,
        "bias": False}
    conv1d = normalize_config("conv1d", {"filters": 2, "kernel": 5, "padding": 2})
    assert conv1d["kernel"] == (5,) and conv1d["padding"] == (2,) and conv1d["stride"] == (1,)
    assert normalize_config("conv2d", {"filters": 2, "kernel": 3, "padding": [1, 0]})["padding"] == (1, 0)
    assert normalize_config("maxpool2d", {"kernel": 2}) == {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0),
                                                            "ceil_mode": False}
    assert normalize_config("avgpool2d", {"kernel": [2, 3], "stride": 1, "padding": [1, 0], "ceil_mode": True}) == {
        "kernel": (2, 3), "stride": (1, 1), "padding": (1, 0), "ceil_mode": True}
    assert normalize_config("flatten", {}) == normalize_config("global_avgpool", None) == {}
    for kind, raw in [("conv2d", {"filters": 8, "kernel": [3, 5], "padding": "same", "groups": 2}),
                      ("conv1d", {"filters": 8, "kernel": 3, "padding": 1}), ("maxpool2d", {"kernel": 3})]:
        once = normalize_config(kind, raw)
        assert normalize_config(kind, once) == once  # idempotent


@pytest.mark.parametrize("kind, raw, fragments", [
    ("conv2d", {"filters": 8, "kernel": 0}, ["kernel must be a positive integer or a list of 2 positive integers", "0"]),
    ("conv2d", {"filters": 8, "kernel": True}, ["kernel must be a positive integer", "True"]),
    ("conv2d", {"filters": 8, "kernel": [3, 3, 3]}, ["kernel", "list of 2", "[3, 3, 3]"]),
    ("conv1d", {"filters": 8, "kernel": [3, 3]}, ["kernel must be a positive integer, got [3, 3]"]),
    ("conv2d", {"filters": 8, "kernel": 3, "stride": 0}, ["stride must be a positive integer"]),
    ("conv2d", {"filters": 8, "kernel": 3, "dilation": -1}, ["dilation must be a positive integer"]),
    ("conv2d", {"filters": 8, "kernel": 3, "padding": "full"}, ["'valid', 'same'", "'full'"]),
    ("conv2d", {"filters": 8, "kernel": 3, "padding": -1}, ["'valid', 'same'", "non-negative", "-1"]),
    ("conv2d", {"filters": 0, "kernel": 3}, ["filters must be a positive integer, got 0"]),
    ("conv2d", {"filters": 2.5, "kernel": 3}, ["filters must be a positive integer, got 2.5"]),
    ("conv2d", {"filters": 8, "kernel": 3, "groups": 0}, ["groups must be a positive integer"]),
    ("conv2d", {"filters": 8, "kernel": 3, "bias": "yes"}, ["bias must be true or false", "'yes'"]),
    ("conv2d", {"kernel": 3}, ["conv2d needs filters"]),
    ("maxpool2d", {}, ["maxpool2d needs kernel"]),
    ("conv2d", {"filters": 8, "kernel": 3, "filter": 2}, ["unknown option(s) filter",
                                                          "filters, kernel, stride, padding, dilation, groups, bias"]),
    ("maxpool2d", {"kernel": 2, "dilation": 1}, ["unknown option(s) dilation", "valid options: kernel, stride, padding, ceil_mode"]),
    ("maxpool2d", {"kernel": 2, "padding": 2}, ["padding (2, 2) must be at most half the kernel (2, 2)"]),
    ("avgpool2d", {"kernel": 2, "ceil_mode": "yes"}, ["ceil_mode must be true or false"]),
    ("flatten", {"kernel": 2}, ["unknown option(s) kernel", "valid options: none"]),
    ("conv3d", {}, ["unknown layer kind 'conv3d'"]),
])
def test_normalize_config_rejects_bad_values_with_the_choices(kind, raw, fragments):
    with pytest.raises(ValueError) as error:
        normalize_config(kind, raw)
    for fragment in fragments:
        assert fragment in str(error.value)


# --- dtypes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, input_shape, raw", [
    ("conv2d", *CONV2D["groups2"]), ("conv2d", *CONV2D["same-stride2"]), ("conv1d", *CONV1D["k3-valid"]),
    *POOL_CASES.values()])
def test_float32_stays_float32(kind, input_shape, raw):
    layer64 = build(kind, input_shape, raw, np.random.default_rng(12))
    layer32 = build(kind, input_shape, raw, np.random.default_rng(12), dtype=np.float32)
    x = distinct_input(np.random.default_rng(13), (2, *input_shape))
    y64, cache64 = layer64.forward(x)
    y32, cache32 = layer32.forward(x.astype(np.float32))
    assert y32.dtype == cache32.z.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    upstream = np.random.default_rng(14).standard_normal(y64.shape)
    dx64, grads64 = layer64.backward(upstream, cache64)
    dx32, grads32 = layer32.backward(upstream.astype(np.float32), cache32)
    assert dx32.dtype == np.float32 and dx32.shape == x.shape
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-5)
    for name, grad in grads32.items():
        assert grad.dtype == np.float32
        np.testing.assert_allclose(grad, grads64[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind, input_shape, raw", [
    ("conv2d", *CONV2D["k3-stride2-pad1"]), ("conv2d", *CONV2D["k3-valid"]), ("conv2d", *CONV2D["groups2"]),
    ("conv1d", *CONV1D["k4-same-even"]), *POOL_CASES.values()])
def test_scratch_predicts_the_workspace_a_pass_takes(kind, input_shape, raw):
    layer = build(kind, input_shape, raw, np.random.default_rng(15))
    release_workspace()
    y, cache = layer.forward(distinct_input(np.random.default_rng(16), (3, *input_shape)))
    layer.backward(np.ones_like(y), cache)
    assert workspace_bytes() == sum(layer.scratch(input_shape, layer.config, 3, 8).values())
    release_workspace()
    assert workspace_bytes() == 0


@pytest.mark.parametrize("shape, size", [((3, 2, 2), (7, 7)), ((2, 5, 7), (3, 4)), ((2, 6, 6), (3, 3)), ((1, 4, 3), (4, 3))])
def test_adaptive_avgpool2d_matches_torch_forward_and_backward(shape, size):
    torch = pytest.importorskip("torch")
    from initdiag.layers.pooling import AdaptiveAvgPool2d

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, *shape))
    dy = rng.standard_normal((4, shape[0], *size))
    layer = AdaptiveAvgPool2d("pool", shape, {"size": size})
    y, cache = layer.forward(x)
    dx, grads = layer.backward(dy, cache)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, size)
    ty.backward(torch.tensor(dy))
    assert grads == {} and np.allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert np.allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
