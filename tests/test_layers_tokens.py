"""Sequences as first-class tensors: patchify, class_token, select (tokens.py), global_avgpool over a sequence's
steps and the per-token layers (dense, layernorm, dropout, activations on [steps, features]), each against
PyTorch in float64, forward and backward; and a ViT-tiny-like network against torch running the same weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import invoke, make_spec, write_spec

from initdiag import network, pipeline, propagate, sampling
from initdiag.layers.conv import from_torch_layout, torch_layout
from initdiag.yamlsource import SpecErrors


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _errors(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as caught:
        make_spec(text)
    return [f"{problem.path}: {problem.message}" for problem in caught.value.problems]


def _built(text: str, seed: int = 0):
    """The spec of YAML `text` (float64) and its built network."""
    spec = make_spec("dtype: float64\nbatch: 3\n" + text, seed=seed)
    return spec, network.build(spec)


def _torch_check(torch, layer, module, x, rtol=1e-12):
    """Our forward and backward against `module`'s on x (float64); returns (grads, module) for the parameters."""
    y, cache = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=rtol, atol=1e-13)
    dy = np.random.default_rng(9).standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=rtol, atol=1e-13)
    return grads


# ------------------------------------------------------------------ patchify
@pytest.mark.parametrize("shape, options", [
    ((3, 8, 8), "{patch: 4, dim: 6}"),
    ((2, 6, 9), "{patch: [2, 3], dim: 5}"),
    ((1, 5, 5), "{patch: 5, dim: 3, bias: false}"),
    ((3, 4, 6), "{patch: 1, dim: 2}"),
])
@pytest.mark.parametrize("activation", ["identity", "gelu"])
def test_patchify_is_torchvisions_conv_proj_flattened(torch, shape, options, activation):
    bias_init = "" if "bias: false" in options else "    bias_init: 0.1\n"
    spec, net = _built(f"input: {list(shape)}\nlayers:\n  - patchify: {options}\n    activation: {activation}\n" + bias_init)
    layer_spec, layer = spec.layers[0], net.layers[0]
    ph, pw = layer_spec.config["patch"]
    dim = layer_spec.config["dim"]
    conv = torch.nn.Conv2d(shape[0], dim, (ph, pw), stride=(ph, pw), bias=layer.bias is not None).double()
    assert (layer_spec.fan_in, layer_spec.fan_out) == torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)
    assert layer_spec.output_shape == ((shape[1] // ph) * (shape[2] // pw), dim)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(torch_layout(layer.weights, (ph, pw))))
        if layer.bias is not None:
            conv.bias.copy_(torch.tensor(layer.bias))
    act = {"identity": lambda z: z, "gelu": torch.nn.functional.gelu}[activation]

    def vit(x):  # VisionTransformer._process_input: conv_proj, reshape (n, dim, h·w), permute(0, 2, 1)
        return act(conv(x).flatten(2).transpose(1, 2))

    x = np.random.default_rng(1).standard_normal((3,) + shape)
    grads = _torch_check(torch, layer, vit, x)
    np.testing.assert_allclose(grads["weights"], from_torch_layout(conv.weight.grad.numpy()), rtol=1e-12, atol=1e-13)
    if layer.bias is not None:
        np.testing.assert_allclose(grads["bias"], conv.bias.grad.numpy(), rtol=1e-12)
    else:
        assert "bias" not in grads


def test_patchify_refuses_an_image_the_patch_does_not_divide():
    errors = _errors("input: [3, 30, 32]\nlayers:\n  - patchify: {patch: 4, dim: 8}\n  - select: 0\n")
    assert len(errors) == 1
    assert errors[0].startswith("layers[0].patchify: patchify: the input [3, 30, 32] does not divide into 4×4 patches "
                                "(height 30 % 4 = 2 rows would be dropped")
    errors = _errors("input: [3, 8, 10]\nlayers:\n  - patchify: {patch: [4, 3], dim: 8}\n")
    assert "width 10 % 3 = 1 columns would be dropped" in errors[0]
    assert "image [channels, height, width]" in _errors("input: [16]\nlayers:\n  - patchify: {patch: 4, dim: 8}\n")[0]
    assert "needs dim" in _errors("input: [3, 8, 8]\nlayers:\n  - patchify: {patch: 4}\n")[0]


def test_patchify_keeps_float32_and_its_memory_facts_count_the_patch_matrix():
    spec = make_spec("input: [3, 8, 8]\nbatch: 2\nlayers:\n  - patchify: {patch: 4, dim: 6}\n  - select: 0\n")
    layer = network.build(spec).layers[0]
    y, cache = layer.forward(np.ones((2, 3, 8, 8), np.float32))
    assert y.dtype == cache.z.dtype == np.float32 and y.shape == (2, 4, 6)
    dx, grads = layer.backward(np.ones_like(y), cache)
    assert dx.dtype == grads["weights"].dtype == np.float32
    assert network._temporary_elements(spec.layers[0]) == 3 * 8 * 8  # the patch matrix: the input's size
    assert network._cache_elements(spec.layers[0], 2) == 0


# ------------------------------------------------------------------ class token
@pytest.mark.parametrize("std", [0.0, 0.3])
def test_class_token_prepends_a_learned_row_as_torchvision(torch, std):
    spec, net = _built(f"input: [5, 4]\nlayers:\n  - class_token: {{std: {std}}}\n")
    layer = net.layers[0]
    assert spec.layers[0].output_shape == (6, 4) and spec.layers[0].init is None
    token = layer.params["token"]
    if std == 0:
        assert not token.any()  # torchvision: nn.Parameter(torch.zeros(1, 1, hidden_dim))
    else:  # what `init: {normal: {std}}` draws on a (dim, 1) matrix from the layer's own weight stream
        expected = sampling.standard_normal(network.stream(spec.seed, network.STREAM_WEIGHTS, 0), (4, 1), np.float64)
        np.testing.assert_array_equal(token, expected[:, 0] * std)
    cls = torch.nn.Parameter(torch.tensor(token).reshape(1, 1, 4))  # torchvision's (1, 1, dim)

    def vit(x):  # VisionTransformer.forward: torch.cat([class_token.expand(n, -1, -1), x], dim=1)
        return torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)

    grads = _torch_check(torch, layer, vit, np.random.default_rng(2).standard_normal((3, 5, 4)))
    np.testing.assert_allclose(grads["token"], cls.grad.numpy().reshape(4), rtol=1e-12)


def test_class_token_std_is_its_spread_and_it_stays_outside_the_schemes():
    spec, net = _built("input: [5, 2000]\nlayers:\n  - class_token: {std: 0.02}\n  - position_embedding: {}\n"
                       "    init: {normal: {std: 0.02}}\n  - select: 0\n")
    assert abs(net.layers[0].params["token"].std() / 0.02 - 1) < 0.05
    assert network._cache_elements(spec.layers[0], 3) == 2 * 2000  # the token and its gradient
    diagnosis = pipeline.diagnose(make_spec("input: [5, 8]\nlayers:\n  - class_token: {std: 1.0e-6}\n  - select: 0\n"
                                            "  - dense: 3\n"))
    assert not [f for f in diagnosis.findings if f.layer == "class_token_0"]
    row = next(row for row in diagnosis.report["layers"] if row["name"] == "class_token_0")
    assert row["init"] is None and row["weight_grad_var"] is None


def test_class_token_errors_are_located():
    assert _errors("input: [3, 9]\nlayers:\n  - conv1d: {filters: 4, kernel: 3}\n  - class_token: {}\n") == [
        "layers[1].class_token: class_token puts a token in front of a sequence [steps, features], but its input is "
        "[4, 7] (a conv feature map [channels, length])"]
    assert "std must be a number >= 0" in _errors("input: [3, 4]\nlayers:\n  - class_token: {std: -1}\n")[0]
    assert "unknown option(s) init" in _errors("input: [3, 4]\nlayers:\n  - class_token: {init: zero}\n")[0]
    assert "layers[0].init" in _errors("input: [3, 4]\nlayers:\n  - class_token: {}\n    init: zero\n")[0]


# ------------------------------------------------------------------ select
@pytest.mark.parametrize("written, index", [("0", 0), ("{index: -1}", -1), ("{}", 0), ("2", 2), ("{index: -4}", -4)])
def test_select_takes_one_token_as_torch_indexing(torch, written, index):
    spec, net = _built(f"input: [4, 3]\nlayers:\n  - select: {written}\n")
    assert spec.layers[0].config["index"] == index and spec.layers[0].output_shape == (3,)
    _torch_check(torch, net.layers[0], lambda x: x[:, index], np.random.default_rng(3).standard_normal((3, 4, 3)))


def test_select_errors_are_located():
    assert _errors("input: [4, 3]\nlayers:\n  - select: 4\n") == [
        "layers[0].select: select: index 4 is out of range for a sequence of 4 steps (0 to 3, or -4 to -1 from the end)"]
    assert "index -5 is out of range" in _errors("input: [4, 3]\nlayers:\n  - select: {index: -5}\n")[0]
    assert "but its input is [7]" in _errors("input: [7]\nlayers:\n  - select: 0\n")[0]
    assert "(a conv feature map [channels, length])" in _errors(
        "input: [3, 9]\nlayers:\n  - conv1d: {filters: 4, kernel: 3}\n  - select: 0\n")[0]
    assert "whole number" in _errors("input: [4, 3]\nlayers:\n  - select: {index: first}\n")[0]
    assert "whole number" in _errors("input: [4, 3]\nlayers:\n  - select: 1.5\n")[0]


def test_select_reads_a_2d_input_no_layer_has_laid_out_as_a_sequence():
    spec = make_spec("input: [4, 3]\nlayers:\n  - select: -1\n  - dense: 2\n")
    assert [layer.output_shape for layer in spec.layers] == [(3,), (2,)]


# ------------------------------------------------------------------ global_avgpool over steps
def test_global_avgpool_over_a_sequence_is_the_mean_over_its_steps(torch):
    spec, net = _built("input: [5, 4]\nlayers:\n  - layernorm: {}\n  - global_avgpool: {}\n")
    assert spec.layers[1].config["sequence"] and spec.layers[1].output_shape == (4,)
    _torch_check(torch, net.layers[1], lambda x: x.mean(1), np.random.default_rng(4).standard_normal((3, 5, 4)))
    spec, net = _built("input: [5, 6]\nlayers:\n  - conv1d: {filters: 4, kernel: 3}\n  - global_avgpool: {}\n")
    assert not spec.layers[1].config["sequence"] and spec.layers[1].output_shape == (4,)  # [channels, length]: over length
    _torch_check(torch, net.layers[1], lambda x: x.mean(2), np.random.default_rng(4).standard_normal((3, 4, 4)))


# ------------------------------------------------------------------ per-token layers
@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "softmax", "{leaky_relu: {alpha: 0.2}}"])
def test_dense_and_its_activation_apply_per_token(torch, activation):
    spec, net = _built(f"input: [5, 4]\nlayers:\n  - layernorm: {{}}\n  - dense: 6\n    activation: {activation}\n"
                       "    bias_init: 0.1\n")
    layer = net.layers[1]
    assert spec.layers[1].output_shape == (5, 6)
    linear = torch.nn.Linear(4, 6).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(layer.weights.T.copy()))
        linear.bias.copy_(torch.tensor(layer.bias))
    F = torch.nn.functional
    act = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "softmax": lambda z: torch.softmax(z, dim=-1)}.get(
        activation, lambda z: F.leaky_relu(z, 0.2))
    grads = _torch_check(torch, layer, lambda x: act(linear(x)), np.random.default_rng(5).standard_normal((3, 5, 4)))
    np.testing.assert_allclose(grads["weights"], linear.weight.grad.numpy().T, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grads["bias"], linear.bias.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_layernorm_normalises_each_token(torch):
    spec, net = _built("input: [5, 6]\nlayers:\n  - layernorm: {eps: 1.0e-3}\n")
    layer = net.layers[0]
    rng = np.random.default_rng(6)
    layer.params["gamma"][:] = rng.standard_normal(6)
    layer.params["beta"][:] = rng.standard_normal(6)
    norm = torch.nn.LayerNorm(6, eps=1e-3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(layer.params["gamma"]))
        norm.bias.copy_(torch.tensor(layer.params["beta"]))
    x = rng.standard_normal((3, 5, 6)) * rng.uniform(0.1, 10, (3, 5, 1)) + rng.standard_normal((3, 5, 1))
    grads = _torch_check(torch, layer, norm, x)
    np.testing.assert_allclose(grads["gamma"], norm.weight.grad.numpy(), rtol=1e-11)
    np.testing.assert_allclose(grads["beta"], norm.bias.grad.numpy(), rtol=1e-11)


def test_dropout_on_a_sequence_masks_each_element_independently():
    spec, net = _built("input: [50, 40]\nlayers:\n  - dropout: 0.25\n")
    layer = net.layers[0]
    x = np.random.default_rng(7).standard_normal((3, 50, 40)) + 5
    y, cache = layer.forward(x)
    kept = y != 0
    assert kept.shape == x.shape and abs(kept.mean() - 0.75) < 0.02  # 6000 elements: ± 0.006 is one sd
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-15)
    per_token = kept.mean(axis=2)  # tokens are masked element by element, not whole
    assert 0 < per_token.min() and per_token.max() < 1 and per_token.std() > 0.03
    assert abs(kept.mean(axis=(0, 1)).std() - np.sqrt(0.75 * 0.25 / 150)) < 0.015  # no feature favoured
    dy = np.random.default_rng(8).standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    np.testing.assert_allclose(dx, np.where(kept, dy / 0.75, 0), rtol=1e-15)
    assert grads == {}


# ------------------------------------------------------------------ a ViT-tiny-like network
VIT = """\
name: vit-tiny-like
input: [3, 32, 32]
batch: 4
dtype: float64
layers:
  - patchify: {patch: 4, dim: 64}
    init: lecun_normal
  - class_token: {std: CLS_STD}
  - position_embedding: {}
    init: {normal: {std: 0.02}}
  - transformer: {dim: 64, heads: 4, ffn: 256, activation: gelu, norm: pre}
    init: {truncated_normal: {std: 0.02}}
  - transformer: {dim: 64, heads: 4, ffn: 256, activation: gelu, norm: pre}
    init: {truncated_normal: {std: 0.02}}
  - layernorm: {}
  - select: 0
  - dense: 10
    activation: softmax
"""


def test_the_vit_tiny_like_spec_runs_through_check(tmp_path):
    path = write_spec(tmp_path, VIT.replace("CLS_STD", "0"), "vit.yaml")
    result = invoke("check", path)
    assert result.exit_code in (0, 1), result.output
    assert "patchify_0" in result.output and "class_token_1" in result.output and "verdict:" in result.output
    result = invoke("check", path, "--format", "json")
    assert result.exit_code in (0, 1)
    report = json.loads(result.stdout)
    assert [row["kind"] for row in report["layers"]] == ["patchify", "class_token", "position_embedding", "transformer", "transformer",
                                             "layernorm", "select", "dense"]


def _torch_vit(torch, net):
    """torch modules holding the built network's parameters, one per layer, float64."""
    patchify, cls, pos, block1, block2, norm, _, head = net.layers
    nn = torch.nn
    conv = nn.Conv2d(3, 64, 4, stride=4).double()
    linear = nn.Linear(64, 10).double()
    final = nn.LayerNorm(64).double()
    blocks = []
    for layer in (block1, block2):
        module = nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, activation="gelu", batch_first=True, norm_first=True,
                                            dtype=torch.float64)
        p = lambda name: torch.tensor(np.ascontiguousarray(layer.params[name]))  # noqa: E731,B023
        with torch.no_grad():
            attention = module.self_attn
            attention.in_proj_weight.copy_(torch.cat([p(f"attention.{n}_weights").T for n in ("query", "key", "value")]))
            attention.in_proj_bias.copy_(torch.cat([p(f"attention.{n}_bias") for n in ("query", "key", "value")]))
            attention.out_proj.weight.copy_(p("attention.output_weights").T)
            attention.out_proj.bias.copy_(p("attention.output_bias"))
            module.linear1.weight.copy_(p("ffn.in_weights").T)
            module.linear1.bias.copy_(p("ffn.in_bias"))
            module.linear2.weight.copy_(p("ffn.out_weights").T)
            module.linear2.bias.copy_(p("ffn.out_bias"))
            for name in ("norm1", "norm2"):
                getattr(module, name).weight.copy_(p(name + ".gamma"))
                getattr(module, name).bias.copy_(p(name + ".beta"))
        module.train()  # the reference path, not the fused fast path; dropout is 0
        blocks.append(module)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(torch_layout(patchify.weights, (4, 4))))
        conv.bias.copy_(torch.tensor(patchify.bias))
        final.weight.copy_(torch.tensor(norm.params["gamma"]))
        final.bias.copy_(torch.tensor(norm.params["beta"]))
        linear.weight.copy_(torch.tensor(head.weights.T.copy()))
        linear.bias.copy_(torch.tensor(head.bias))
    class_token = torch.tensor(cls.params["token"]).reshape(1, 1, 64)
    pos_embedding = torch.tensor(pos.params["weights"]).unsqueeze(0)  # torchvision's (1, seq_length, hidden_dim)
    return [
        lambda x: conv(x).flatten(2).transpose(1, 2),
        lambda x: torch.cat([class_token.expand(x.shape[0], -1, -1), x], dim=1),
        lambda x: x + pos_embedding,
        blocks[0], blocks[1], final,
        lambda x: x[:, 0],
        lambda x: torch.softmax(linear(x), dim=-1),
    ]


@pytest.mark.parametrize("cls_std", ["0", "0.02"])
def test_the_vit_tiny_like_network_matches_torch_layer_by_layer(torch, cls_std):
    spec = make_spec(VIT.replace("CLS_STD", cls_std))
    net = network.build(spec)
    assert [layer.output_shape for layer in spec.layers] == [
        (64, 64), (65, 64), (65, 64), (65, 64), (65, 64), (65, 64), (64,), (10,)]
    run = propagate.run(net)
    x = torch.tensor(net.inputs)
    with torch.no_grad():
        for i, (module, (_, ours, _)) in enumerate(zip(_torch_vit(torch, net), propagate.forward_pass(net))):
            x = module(x)
            np.testing.assert_allclose(ours, x.numpy(), rtol=1e-10, atol=1e-12, err_msg=spec.layers[i].name)
            measured = run.layers[i]
            np.testing.assert_allclose([measured.act_mean, measured.act_var], [x.mean().item(), x.var(unbiased=False).item()],
                                       rtol=1e-9, atol=1e-15, err_msg=spec.layers[i].name)
