"""Decoder layers (conv_transpose1d/2d, upsample) and hardsigmoid against PyTorch in float64, forward and
backward; finite differences; located errors; the inits on a transposed conv's kernel; a whole `check`
of a small decoder from the CLI; the memory estimate against a measured peak."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from conftest import invoke, make_spec, write_spec
from gradcheck import FD_TOL, numeric_gradient

from initdiag import activations, network, pipeline, schemes, weightgeometry
from initdiag.layers import normalize_config
from initdiag.layers.conv import release_workspace
from initdiag.layers.upsampling import ConvTranspose1d, ConvTranspose2d, Upsample, from_torch_layout, torch_layout
from initdiag.yamlsource import SpecErrors


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


CONV_TRANSPOSE = {
    "2d-stride2-outpad1": ("conv_transpose2d", (3, 4, 5), {"filters": 4, "kernel": 3, "stride": 2, "padding": 1,
                                                          "output_padding": 1}),
    "2d-k4-stride2-pad1": ("conv_transpose2d", (2, 3, 3), {"filters": 3, "kernel": 4, "stride": 2, "padding": 1}),
    "2d-valid-k2": ("conv_transpose2d", (3, 3, 4), {"filters": 2, "kernel": 2}),
    "2d-dilation2": ("conv_transpose2d", (2, 4, 3), {"filters": 3, "kernel": 3, "dilation": 2, "padding": 2}),
    "2d-outpad-below-dilation": ("conv_transpose2d", (2, 3, 3), {"filters": 2, "kernel": 3, "dilation": 3,
                                                                "output_padding": 2}),
    "2d-groups2-nonsquare": ("conv_transpose2d", (4, 3, 5), {"filters": 6, "kernel": [3, 2], "stride": [2, 1],
                                                            "padding": [1, 0], "output_padding": [1, 0], "groups": 2}),
    "2d-depthwise-no-bias": ("conv_transpose2d", (3, 4, 4), {"filters": 3, "kernel": 3, "stride": 2, "groups": 3,
                                                            "bias": False}),
    "1d-stride2-outpad1": ("conv_transpose1d", (3, 7), {"filters": 4, "kernel": 3, "stride": 2, "padding": 1,
                                                       "output_padding": 1}),
    "1d-stride3-dilation2-groups": ("conv_transpose1d", (4, 5), {"filters": 2, "kernel": 4, "stride": 3, "dilation": 2,
                                                                "padding": 2, "groups": 2}),
}
CLASSES = {"conv_transpose1d": ConvTranspose1d, "conv_transpose2d": ConvTranspose2d}


def build(kind, input_shape, raw, rng, activation="tanh"):
    config = normalize_config(kind, raw)
    cls = CLASSES[kind]
    weights = rng.standard_normal(cls.weight_shape(input_shape, config)) / math.sqrt(cls.fans(input_shape, config)[0])
    bias = rng.standard_normal(config["filters"]) * 0.5 if config["bias"] else None
    return cls(kind, weights, bias, activations.make(activation), input_shape, config)


def torch_module(torch, layer):
    c = layer.config
    module = (torch.nn.ConvTranspose1d if layer.kind == "conv_transpose1d" else torch.nn.ConvTranspose2d)(
        layer.input_shape[0], c["filters"], c["kernel"], stride=c["stride"], padding=c["padding"],
        output_padding=c["output_padding"], groups=c["groups"], bias=c["bias"], dilation=c["dilation"]).double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(torch_layout(layer.weights, layer.input_shape[0], c["groups"], c["kernel"])))
        if layer.bias is not None:
            module.bias.copy_(torch.from_numpy(layer.bias))
    return module


@pytest.mark.parametrize("kind, input_shape, raw", CONV_TRANSPOSE.values(), ids=CONV_TRANSPOSE)
def test_conv_transpose_forward_and_backward_are_pytorchs(torch, kind, input_shape, raw):
    rng = np.random.default_rng(0)
    layer = build(kind, input_shape, raw, rng)
    module = torch_module(torch, layer)
    x = rng.standard_normal((3,) + input_shape)
    y, cache = layer.forward(x)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.tanh(module(tx))
    assert y.shape[1:] == layer.out_shape == tuple(ty.shape[1:])
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(grads["weights"], from_torch_layout(module.weight.grad.numpy(), layer.groups),
                               rtol=1e-11, atol=1e-12)
    if layer.bias is not None:
        np.testing.assert_allclose(grads["bias"], module.bias.grad.numpy(), rtol=1e-11, atol=1e-12)
    assert layer.fans(input_shape, layer.config) == torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
    assert dx.dtype == y.dtype == np.float64


@pytest.mark.parametrize("name", ["2d-stride2-outpad1", "2d-groups2-nonsquare", "1d-stride3-dilation2-groups"])
def test_conv_transpose_backward_agrees_with_finite_differences(name):
    kind, input_shape, raw = CONV_TRANSPOSE[name]
    rng = np.random.default_rng(1)
    layer = build(kind, input_shape, raw, rng)
    x = rng.standard_normal((2,) + input_shape)
    y, cache = layer.forward(x)
    target = rng.standard_normal(y.shape)
    dx, grads = layer.backward(target, cache)

    def loss():
        return float(np.sum(layer.forward(x)[0] * target))

    np.testing.assert_allclose(dx, numeric_gradient(loss, x), **FD_TOL)
    np.testing.assert_allclose(grads["weights"], numeric_gradient(loss, layer.weights), **FD_TOL)
    np.testing.assert_allclose(grads["bias"], numeric_gradient(loss, layer.bias), **FD_TOL)


def test_conv_transpose_keeps_float32_and_need_dx_false_skips_dx():
    rng = np.random.default_rng(2)
    kind, input_shape, raw = CONV_TRANSPOSE["2d-stride2-outpad1"]
    layer = build(kind, input_shape, raw, rng)
    layer.weights, layer.bias = layer.weights.astype(np.float32), layer.bias.astype(np.float32)
    y, cache = layer.forward(rng.standard_normal((2,) + input_shape).astype(np.float32))
    dx, grads = layer.backward(np.ones_like(y), cache, need_dx=False)
    assert y.dtype == grads["weights"].dtype == np.float32 and dx is None


def test_the_torch_layout_round_trips():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((6, 2, 3, 2))  # (in, filters/groups, kh, kw), groups 3: 6 filters
    assert from_torch_layout(weight, 3).shape == (2 * 6, 6)
    np.testing.assert_array_equal(torch_layout(from_torch_layout(weight, 3), 6, 3, (3, 2)), weight)


# ------------------------------------------------------------------ upsample
UPSAMPLE = {
    "nearest-2d": ((3, 4, 5), {"scale": 2}),
    "nearest-2d-per-axis": ((2, 3, 4), {"scale": [3, 2], "mode": "nearest"}),
    "nearest-1d": ((3, 5), {"scale": 3}),
    "bilinear": ((2, 4, 5), {"scale": 2, "mode": "bilinear"}),
    "bilinear-align-corners": ((2, 4, 5), {"scale": 2, "mode": "bilinear", "align_corners": True}),
    "bilinear-nonsquare-scales": ((2, 3, 5), {"scale": [3, 2], "mode": "bilinear"}),
    "bilinear-nonsquare-align": ((2, 3, 5), {"scale": [2, 3], "mode": "bilinear", "align_corners": True}),
    "bilinear-single-row": ((2, 1, 4), {"scale": 2, "mode": "bilinear", "align_corners": True}),
    "linear-1d": ((3, 6), {"scale": 4, "mode": "linear"}),
    "linear-1d-align": ((3, 6), {"scale": 2, "mode": "linear", "align_corners": True}),
}


def _torch_upsample(torch, input_shape, config):
    spatial = len(input_shape) - 1
    scale = config["scale"]
    scales = tuple(float(s) for s in ((scale,) * spatial if isinstance(scale, int) else scale))
    align = None if config["mode"] == "nearest" else config["align_corners"]
    return torch.nn.Upsample(scale_factor=scales, mode=config["mode"], align_corners=align)


@pytest.mark.parametrize("input_shape, raw", UPSAMPLE.values(), ids=UPSAMPLE)
def test_upsample_forward_and_backward_are_pytorchs(torch, input_shape, raw):
    rng = np.random.default_rng(4)
    config = normalize_config("upsample", raw)
    layer = Upsample("up", input_shape, config)
    x = rng.standard_normal((3,) + input_shape)
    y, cache = layer.forward(x)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = _torch_upsample(torch, input_shape, config)(tx)
    assert y.shape[1:] == layer.out_shape == tuple(ty.shape[1:])
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert grads == {} and dx.shape == x.shape

    def loss():
        return float(np.sum(layer.forward(x)[0] * dy))

    np.testing.assert_allclose(dx, numeric_gradient(loss, x), **FD_TOL)


def test_upsample_keeps_float32_and_takes_a_bare_scale():
    assert normalize_config("upsample", 3) == {"scale": 3, "mode": "nearest", "align_corners": False}
    assert normalize_config("upsample", None)["scale"] == 2  # the default: a 2x decoder step
    layer = Upsample("up", (2, 3, 3), normalize_config("upsample", {"mode": "bilinear"}))
    y, cache = layer.forward(np.ones((1, 2, 3, 3), dtype=np.float32))
    assert y.dtype == layer.backward(y, cache)[0].dtype == np.float32
    np.testing.assert_array_equal(y, 1.0)


# ------------------------------------------------------------------ hardsigmoid
def test_hardsigmoid_is_pytorchs(torch):
    act = activations.make("hardsigmoid")
    assert act.name == "hard_sigmoid"
    z = np.concatenate([np.linspace(-5, 5, 101), [-3.0, 3.0, 0.0]])
    tz = torch.from_numpy(z.copy()).requires_grad_()
    ty = torch.nn.functional.hardsigmoid(tz)
    y = act.forward(z)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-15, atol=0)
    dy = np.random.default_rng(5).standard_normal(z.shape)
    ty.backward(torch.from_numpy(dy))
    # PyTorch's CPU kernel multiplies by the float constant 1.0f / 6.0f, in float64 too: 3e-8 apart there
    np.testing.assert_allclose(act.backward(z, y, dy), tz.grad.numpy(), rtol=5e-8, atol=0)
    np.testing.assert_array_equal(act.backward(z, y, dy) == 0, tz.grad.numpy() == 0)  # 0 at and beyond ±3
    z32, dy32 = z.astype(np.float32), dy.astype(np.float32)
    t32 = torch.from_numpy(z32.copy()).requires_grad_()
    torch.nn.functional.hardsigmoid(t32).backward(torch.from_numpy(dy32))
    np.testing.assert_allclose(act.backward(z32, act.forward(z32), dy32), t32.grad.numpy(), rtol=2e-7, atol=0)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kind, raw, message", [
    ("conv_transpose2d", {"kernel": 3}, "conv_transpose2d needs filters"),
    ("conv_transpose2d", {"filters": 4}, "conv_transpose2d needs kernel"),
    ("conv_transpose2d", {"filters": 4, "kernel": 3, "stride": 2, "output_padding": 2}, "output_padding (2, 2) must be smaller"),
    ("conv_transpose2d", {"filters": 4, "kernel": 3, "output_padding": 1}, "smaller than the stride (1, 1) or the dilation"),
    ("conv_transpose2d", {"filters": 3, "kernel": 3, "groups": 2}, "filters=3 is not divisible by groups=2"),
    ("conv_transpose2d", {"filters": 4, "kernel": 3, "padding": "same"}, "padding must be"),
    ("conv_transpose1d", {"filters": 4, "kernel": [3, 3]}, "kernel must be a positive integer"),
    ("conv_transpose2d", {"filters": 4, "kernel": 3, "strides": 2}, "unknown option(s) strides"),
    ("upsample", {"scale": 0}, "scale must be a positive integer"),
    ("upsample", {"mode": "bicubic"}, "mode must be one of nearest, linear, bilinear"),
    ("upsample", {"align_corners": True}, "align_corners applies to mode linear or bilinear only"),
    ("upsample", {"mode": "bilinear", "align_corners": "yes"}, "align_corners must be true or false"),
])
def test_bad_options_name_the_problem(kind, raw, message):
    with pytest.raises(ValueError) as raised:
        normalize_config(kind, raw)
    assert message in str(raised.value)


@pytest.mark.parametrize("layers, path, message", [
    ("- {conv_transpose2d: {filters: 4, kernel: 3, groups: 2}}", "layers[0]", "has 3 channels, not divisible by groups=2"),
    ("- {conv_transpose2d: {filters: 4, kernel: 1, padding: 3}}", "layers[0]", "padding (3, 3) leaves no output"),
    ("- {conv_transpose1d: {filters: 4, kernel: 3}}", "layers[0]", "conv_transpose1d expects a per-sample input of shape "
                                                                   "(channels, length)"),
    ("- {upsample: {mode: linear}}", "layers[0]", "use mode bilinear"),
    ("- {flatten: }\n- {upsample: 2}", "layers[1]", "upsample expects a per-sample input of shape"),
    ("- {upsample: {scale: [2, 2, 2]}}", "layers[0]", "scale must be a positive integer, or a list of two"),
    ("- {conv_transpose2d: {filters: 4, kernel: 3}, init: {identity: }}", "layers[0].init",
     "identity (the Dirac kernel) needs filters equal to the input channels"),
])
def test_bad_layers_are_located_spec_problems(layers, path, message):
    text = "input: [3, 4, 4]\nlayers:\n" + "\n".join("  " + line for line in layers.splitlines()) + "\n"
    with pytest.raises(SpecErrors) as raised:
        make_spec(text)
    (problem,) = raised.value.problems
    assert problem.path.startswith(path) and message in problem.message, str(problem)
    assert str(problem).startswith("t.yaml:")


def test_the_wrong_interpolating_mode_names_the_right_one():
    with pytest.raises(SpecErrors, match="use mode linear"):
        make_spec("input: [3, 8]\nlayers:\n  - {upsample: {mode: bilinear}}\n")
    with pytest.raises(SpecErrors, match="has one spatial axis: give an int"):
        make_spec("input: [3, 8]\nlayers:\n  - {upsample: [2, 2]}\n")


# ------------------------------------------------------------------ inits on a transposed conv's kernel
def _kernel_layer(raw, init):
    spec = make_spec(f"input: [4, 3, 3]\ndtype: float64\nlayers:\n  - {{conv_transpose2d: {raw}, init: {init}}}\n")
    return spec.layers[0], network.build(spec).layers[0]


def test_identity_is_torchs_dirac_kernel_and_passes_the_input_through(torch):
    layer_spec, layer = _kernel_layer("{filters: 4, kernel: 3, padding: 1, groups: 2}", "identity")
    weight = torch.empty(4, 2, 3, 3, dtype=torch.float64)
    torch.nn.init.dirac_(weight, groups=2)
    np.testing.assert_array_equal(torch_layout(layer.weights, 4, 2, (3, 3)), weight.numpy())
    x = np.random.default_rng(6).standard_normal((2, 4, 3, 3))
    np.testing.assert_allclose(layer.forward(x)[1].z, x, atol=1e-15)


def test_orthogonal_is_orthogonal_in_pytorchs_layout():
    _, layer = _kernel_layer("{filters: 6, kernel: 2, stride: 2, groups: 2}", "{orthogonal: {gain: 2.0}}")
    flat = torch_layout(layer.weights, 4, 2, (2, 2)).reshape(4, -1)  # (in, filters/groups · taps): wide
    np.testing.assert_allclose(flat @ flat.T, 4.0 * np.eye(4), atol=1e-12)


def test_delta_orthogonal_fills_the_centre_tap():
    layer_spec, layer = _kernel_layer("{filters: 4, kernel: 3, padding: 1}", "delta_orthogonal")
    taps = torch_layout(layer.weights, 4, 1, (3, 3))
    centre = taps[:, :, 1, 1]
    np.testing.assert_allclose(centre @ centre.T, np.eye(4), atol=1e-12)
    assert np.count_nonzero(taps) == np.count_nonzero(centre)
    assert weightgeometry.main(layer_spec).role == "conv_transpose"


def test_family_draws_shared_by_compare_have_the_drawn_shape():
    spec = make_spec("input: [4, 3, 3]\nlayers:\n  - {conv_transpose2d: {filters: 2, kernel: 3, stride: 2}, init: relu}\n")
    layer_spec = spec.layers[0]
    assert (layer_spec.fan_in, layer_spec.fan_out) == (18, 36)  # PyTorch's: filters·taps, in·taps
    built = network.build(spec, draws={})
    assert built.layers[0].weights.shape == (36, 2)
    std = schemes.lookup("relu").std(schemes.Fans(18, 36), {"gain": 1.0})
    assert std == pytest.approx(math.sqrt(2 / 18))


# ------------------------------------------------------------------ a whole decoder
DECODER = """\
    # a tiny encoder-decoder: a stride-2 conv halves the map, a transposed conv and an upsample bring it back up
    input: [3, 8, 8]
    batch: 16
    defaults: {activation: relu, init: relu}
    loss: mse
    layers:
      - conv2d: {filters: 8, kernel: 3, stride: 2, padding: 1}
      - conv_transpose2d: {filters: 4, kernel: 3, stride: 2, padding: 1, output_padding: 1}
      - upsample: {scale: 2, mode: bilinear}
      - conv2d: {filters: 3, kernel: 3, padding: same}
        activation: identity
        init: xavier
    """


def test_a_decoder_runs_through_check_from_the_cli(tmp_path):
    path = write_spec(tmp_path, DECODER)
    result = invoke("check", path)
    assert result.exit_code in (0, 1), result.output
    for name in ("conv_transpose2d_1", "upsample_2"):
        assert name in result.output
    layers = make_spec(DECODER).layers
    assert [layer.output_shape for layer in layers] == [(8, 4, 4), (4, 8, 8), (4, 16, 16), (3, 16, 16)]


def test_the_memory_estimate_covers_a_decoders_measured_peak():
    spec = make_spec(DECODER.replace("batch: 16", "batch: 32").replace("[3, 8, 8]", "[3, 16, 16]"))
    release_workspace()
    tracemalloc.start()
    try:
        pipeline.diagnose(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        release_workspace()
    estimate = network.estimate_memory(spec).total
    assert estimate >= peak, f"estimate {estimate} < measured peak {peak}"


def test_the_declared_scratch_is_what_a_pass_takes():
    from initdiag.layers.conv import workspace_bytes

    for kind, input_shape, raw in CONV_TRANSPOSE.values():
        release_workspace()
        layer = build(kind, input_shape, raw, np.random.default_rng(7))
        y, cache = layer.forward(np.ones((3,) + input_shape))
        layer.backward(np.ones_like(y), cache)
        assert workspace_bytes() == sum(layer.scratch(input_shape, layer.config, 3, 8).values()), kind
    release_workspace()
