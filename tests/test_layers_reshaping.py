"""channel_shuffle, chunk, transpose and layernorm over channels: forward and backward against PyTorch in float64
(torchvision's own channel_shuffle and LayerNorm2d, read from its source), the blocks they make (ShuffleNetV2's
split unit, an MLP-Mixer block, a ConvNeXt stage) against torch layer by layer, and how the parser and the checks
read them.

torchvision's compiled ops can fail to import beside CPU torch (`operator torchvision::nms does not exist`), which
breaks `import torchvision`; the two functions compared here are plain torch, so they are taken from the installed
source file by name (ast) without importing the package, and those comparisons skip only when torchvision is absent.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import make_spec, passes
from gradcheck import assert_layer_gradients

from initdiag import network, pipeline
from initdiag.checks._architecture import NORMALIZING_KINDS, WEIGHTLESS_PASS_KINDS, _feeds_normalization, normalized
from initdiag.layers import LAYERS
from initdiag.layers.conv import torch_layout
from initdiag.layers.norm import LayerNorm
from initdiag.yamlsource import SpecErrors

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _torchvision(module: str, name: str):
    """The function or class `name` of torchvision/models/`module`.py, executed from its source (see the docstring)."""
    found = importlib.util.find_spec("torchvision")
    if found is None or not found.submodule_search_locations:
        pytest.skip("torchvision is not installed")
    path = Path(next(iter(found.submodule_search_locations))) / "models" / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    node = next(node for node in tree.body if getattr(node, "name", None) == name)
    namespace = {"torch": torch, "nn": torch.nn, "F": F, "Tensor": torch.Tensor}
    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)  # noqa: S102  (torchvision's own code)
    return namespace[name]


def _layer(text: str):
    """(LayerSpec, built layer) of the last layer of a float64 spec."""
    spec = make_spec(text)
    return spec.layers[-1], network.build(spec).layers[-1]


def _against(layer, function, x: np.ndarray, params: dict | None = None):
    """Forward and backward of `layer` and the torch `function` on x: y, dx and each parameter's gradient agree."""
    y, cache = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = function(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    dy = np.random.default_rng(7).standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL)
    for ours, theirs in (params or {}).items():
        np.testing.assert_allclose(grads[ours], theirs.grad.numpy().reshape(grads[ours].shape), **TOL)
    return y, dx


# ------------------------------------------------------------------ channel shuffle
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_channel_shuffle_is_torchvisions(groups):
    channel_shuffle = _torchvision("shufflenetv2", "channel_shuffle")
    layer_spec, layer = _layer(f"input: [6, 2, 3]\ndtype: float64\nlayers:\n  - channel_shuffle: {{groups: {groups}}}\n")
    assert layer_spec.output_shape == (6, 2, 3) and layer_spec.units == 6 and layer_spec.fan_in is None
    x = np.random.default_rng(0).standard_normal((4, 6, 2, 3))
    y, _ = _against(layer, lambda t: channel_shuffle(t, groups), x)
    module, names = LAYERS["channel_shuffle"].torch(layer_spec.input_shape, layer_spec.config)
    assert names == {} and not list(module.parameters())
    _against(layer, module, x)  # nn.ChannelShuffle, the twin: the same permutation
    if groups == 2:  # ShuffleNetV2: the two halves interleaved, channel i of each half side by side
        np.testing.assert_array_equal(y[:, [0, 1, 2, 3, 4, 5]], x[:, [0, 3, 1, 4, 2, 5]])


def test_channel_shuffle_takes_a_channels_length_map():
    layer_spec, layer = _layer("input: [6, 5]\ndtype: float64\nlayers:\n  - channel_shuffle: {groups: 3}\n")
    assert layer_spec.output_shape == (6, 5)
    _against(layer, torch.nn.ChannelShuffle(3), np.random.default_rng(1).standard_normal((3, 6, 5)))


# ------------------------------------------------------------------ chunk
CHUNKS = {"feature-map": ("input: [6, 2, 3]", (6, 2, 3), 1), "channels-length": ("input: [6, 4]", (6, 4), 1),
          "flat": ("input: [6]", (6,), 1),
          "sequence": ("input: [4, 6]\nlayers:\n  - layernorm: {}", (4, 6), -1)}  # a layernorm lays it out as a sequence


@pytest.mark.parametrize("case", CHUNKS.values(), ids=CHUNKS.keys())
@pytest.mark.parametrize("chunks, index", [(2, 0), (2, 1), (3, 2), (1, 0)])
def test_chunk_is_torch_chunk(case, chunks, index):
    head, shape, dim = case
    layers = "\n" if "layers:" in head else "\nlayers:\n"
    layer_spec, layer = _layer(f"{head}{layers}  - chunk: {{chunks: {chunks}, index: {index}}}\ndtype: float64\n")
    assert layer_spec.units == layer_spec.output_shape[dim if dim < 0 else 0] == 6 // chunks
    x = np.random.default_rng(2).standard_normal((3,) + shape)
    _against(layer, lambda t: torch.chunk(t, chunks, dim=dim)[index], x)
    module, _ = LAYERS["chunk"].torch(layer_spec.input_shape, layer_spec.config)
    _against(layer, module, x)


def test_two_chunks_of_one_input_are_a_split_and_their_gradients_add():
    spec = make_spec("""
        input: [4, 3, 3]
        dtype: float64
        loss: mse
        layers:
          - {layer_scale: {value: 2.0}, name: stem}
          - {chunk: {chunks: 2, index: 0}, inputs: stem, name: left}
          - {chunk: {chunks: 2, index: 1}, inputs: stem, name: right}
          - {concat: {}, inputs: [right, left]}
    """)
    run = passes(spec)
    stem = run.outputs[0]
    np.testing.assert_array_equal(run.outputs[1], stem[:, :2])
    np.testing.assert_array_equal(run.outputs[3], np.concatenate([stem[:, 2:], stem[:, :2]], axis=1))
    np.testing.assert_array_equal(run.gradients[0], np.concatenate([run.gradients[1], run.gradients[2]], axis=1))


# ------------------------------------------------------------------ transpose
def test_transpose_swaps_a_sequence_and_a_dense_after_it_mixes_tokens():
    spec = make_spec("input: [4, 6]\ndtype: float64\nlayers:\n  - transpose: {}\n  - dense: 5\n")
    transpose, dense = spec.layers
    assert transpose.output_shape == (6, 4) and transpose.units == 4 and transpose.fan_in is None
    assert dense.output_shape == (6, 5) and dense.fan_in == 4  # per "token", over the 4 steps
    layer = network.build(spec).layers[0]
    x = np.random.default_rng(3).standard_normal((3, 4, 6))
    _against(layer, lambda t: t.transpose(1, 2), x)
    module, _ = LAYERS["transpose"].torch(transpose.input_shape, transpose.config)
    _against(layer, module, x)


def test_transpose_makes_a_channels_length_map_a_sequence():
    spec = make_spec("input: [3, 8]\nlayers:\n  - conv1d: {filters: 5, kernel: 3}\n  - transpose: {}\n  - dense: 2\n")
    assert [layer.output_shape for layer in spec.layers] == [(5, 6), (6, 5), (6, 2)]


# ------------------------------------------------------------------ layernorm over channels
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_layernorm_over_channels_is_convnexts_layernorm2d(eps):
    layer_norm_2d = _torchvision("convnext", "LayerNorm2d")
    layer_spec, layer = _layer(f"input: [5, 3, 4]\ndtype: float64\nlayers:\n  - layernorm: {{over: channels, eps: {eps}}}\n")
    assert layer_spec.units == 5 and layer.unit_axis == 1
    assert LAYERS["layernorm"].parameter_shapes(layer_spec.input_shape, layer_spec.config) == {"gamma": (5,), "beta": (5,)}
    rng = np.random.default_rng(4)
    layer.params = {"gamma": rng.uniform(0.5, 1.5, 5), "beta": rng.uniform(-0.5, 0.5, 5)}
    twin, _ = LAYERS["layernorm"].torch(layer_spec.input_shape, layer_spec.config)
    x = 3 * rng.standard_normal((4, 5, 3, 4)) + 1
    for module in (layer_norm_2d(5, eps=eps), twin):
        module = module.double()
        with torch.no_grad():
            module.weight.copy_(torch.tensor(layer.params["gamma"]))
            module.bias.copy_(torch.tensor(layer.params["beta"]))
        _against(layer, module, x, {"gamma": module.weight, "beta": module.bias})
    y, _ = layer.forward(x)
    plain = LayerNorm("ln", layer.params, eps=eps)  # over: last on the channels-last array, permuted back
    np.testing.assert_allclose(y, plain.forward(x.transpose(0, 2, 3, 1))[0].transpose(0, 3, 1, 2), **TOL)


def test_layernorm_over_channels_backward_matches_finite_differences():
    rng = np.random.default_rng(5)
    layer = LayerNorm("ln", {"gamma": rng.uniform(0.5, 1.5, 3), "beta": rng.uniform(-0.5, 0.5, 3)}, over="channels")
    assert_layer_gradients(layer, rng.standard_normal((2, 3, 2, 3)), rng, ("gamma", "beta"))


def test_layernorm_over_last_is_unchanged_and_channels_float32_stays_float32():
    spec = make_spec("input: [5, 3, 4]\nlayers:\n  - layernorm: {}\n  - {layernorm: {over: Channels}}\n")
    assert [layer.units for layer in spec.layers] == [4, 5]
    assert [layer.config["over"] for layer in spec.layers] == ["last", "channels"]
    built = network.build(spec)
    y, cache = built.layers[1].forward(built.inputs)
    assert y.dtype == np.float32 and built.layers[1].backward(np.ones_like(y), cache)[0].dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)


def test_layer_scale_on_a_feature_map_is_convnexts_c11_gamma():
    """torchvision's CNBlock: `self.layer_scale * x` with a (C, 1, 1) Parameter; ours holds it as (C,)."""
    layer_spec, layer = _layer("input: [5, 3, 4]\ndtype: float64\nlayers:\n  - layer_scale: {value: 1.0e-6}\n")
    gamma = np.random.default_rng(6).uniform(-1, 1, 5)
    layer.params["gamma"] = gamma
    parameter = torch.nn.Parameter(torch.tensor(gamma).reshape(5, 1, 1))
    _against(layer, lambda t: parameter * t, np.random.default_rng(7).standard_normal((3, 5, 3, 4)), {"gamma": parameter})


# ------------------------------------------------------------------ the blocks they make, against torch
def _run(text: str):
    """(parsed spec, {name: built layer}, the pass, {name: index})."""
    parsed = make_spec(text)
    run = passes(parsed)
    return parsed, {s.name: layer for s, layer in zip(parsed.layers, run.built.layers)}, run


def _compare(parsed, run, ours: list, targets=None) -> None:
    """Every layer's output and gradient (mse loss) against the torch tensors `ours`, in spec order."""
    for tensor in ours:
        tensor.retain_grad()
    F.mse_loss(ours[-1], torch.tensor(run.targets), reduction="mean").backward()
    for i, (mine, theirs) in enumerate(zip(run.outputs, ours)):
        name = parsed.layers[i].name
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=f"{name} output")
        np.testing.assert_allclose(run.gradients[i], theirs.grad.numpy(), rtol=1e-8, atol=1e-14, err_msg=f"{name} gradient")


def _conv(x, layer, **options):
    weight = torch.tensor(torch_layout(layer.weights, layer.config["kernel"]))
    return F.conv2d(x, weight, None if layer.bias is None else torch.tensor(layer.bias), **options)


def _linear(x, layer):
    return F.linear(x, torch.tensor(layer.weights.T.copy()), torch.tensor(layer.bias))


SHUFFLE_UNIT = """
    input: [8, 5, 5]
    batch: 4
    dtype: float64
    seed: 3
    loss: mse
    defaults: {init: relu}
    layers:
      - {chunk: {chunks: 2, index: 0}, inputs: input, name: left}
      - {chunk: {chunks: 2, index: 1}, inputs: input, name: right}
      - {conv2d: {filters: 4, kernel: 1, bias: false}, name: pw1}
      - {batchnorm: {}, name: bn1}
      - {activation: relu, name: relu1}
      - {conv2d: {filters: 4, kernel: 3, padding: 1, groups: 4, bias: false}, name: dw}
      - {batchnorm: {}, name: bn2}
      - {conv2d: {filters: 4, kernel: 1, bias: false}, name: pw2}
      - {batchnorm: {}, name: bn3}
      - {activation: relu, name: branch}
      - {concat: {}, inputs: [left, branch], name: joined}
      - {channel_shuffle: {groups: 2}, name: shuffled}
      - {global_avgpool: {}, name: pooled}
      - {dense: 3, name: head}
"""


def test_shufflenet_v2s_stride_1_unit_matches_torch_layer_by_layer():
    """torchvision's InvertedResidual (stride 1): x1, x2 = x.chunk(2, dim=1); cat(x1, branch2(x2)); channel_shuffle."""
    channel_shuffle = _torchvision("shufflenetv2", "channel_shuffle")
    parsed, layers, run = _run(SHUFFLE_UNIT)
    x = torch.tensor(run.built.inputs, requires_grad=True)
    bn = lambda t: F.batch_norm(t, None, None, training=True, eps=1e-5)  # noqa: E731  (gamma 1, beta 0)
    left, right = x.chunk(2, dim=1)
    pw1 = _conv(right, layers["pw1"])
    bn1 = bn(pw1)
    relu1 = torch.relu(bn1)
    dw = _conv(relu1, layers["dw"], padding=1, groups=4)
    bn2 = bn(dw)
    pw2 = _conv(bn2, layers["pw2"])
    bn3 = bn(pw2)
    branch = torch.relu(bn3)
    joined = torch.cat([left, branch], dim=1)
    shuffled = channel_shuffle(joined, 2)
    pooled = shuffled.mean(dim=(2, 3))
    head = _linear(pooled, layers["head"])
    _compare(parsed, run, [left, right, pw1, bn1, relu1, dw, bn2, pw2, bn3, branch, joined, shuffled, pooled, head])


MIXER_BLOCK = """
    input: [4, 6]
    batch: 3
    dtype: float64
    seed: 4
    loss: mse
    defaults: {init: lecun_normal, bias_init: 0.1}
    layers:
      - {layernorm: {eps: 1.0e-6}, name: norm1}
      - {transpose: {}, name: to_tokens}
      - {dense: 8, activation: gelu, name: token_fc1}
      - {dense: 4, name: token_fc2}
      - {transpose: {}, name: back}
      - {add: {}, inputs: [input, back], name: mixed}
      - {layernorm: {eps: 1.0e-6}, name: norm2}
      - {dense: 12, activation: gelu, name: channel_fc1}
      - {dense: 6, name: channel_fc2}
      - {add: {}, inputs: [mixed, channel_fc2], name: out}
      - {global_avgpool: {}, name: pooled}
      - {dense: 2, name: head}
"""


def test_an_mlp_mixer_block_matches_torch_layer_by_layer():
    """timm's MixerBlock: x + mlp_tokens(norm1(x).transpose(1, 2)).transpose(1, 2), then x + mlp_channels(norm2(x))."""
    parsed, layers, run = _run(MIXER_BLOCK)
    assert [layer.units for layer in parsed.layers[:5]] == [6, 4, 8, 4, 6]
    x = torch.tensor(run.built.inputs, requires_grad=True)
    norm1 = F.layer_norm(x, (6,), eps=1e-6)
    to_tokens = norm1.transpose(1, 2)
    token_fc1 = F.gelu(_linear(to_tokens, layers["token_fc1"]))
    token_fc2 = _linear(token_fc1, layers["token_fc2"])
    back = token_fc2.transpose(1, 2)
    mixed = x + back
    norm2 = F.layer_norm(mixed, (6,), eps=1e-6)
    channel_fc1 = F.gelu(_linear(norm2, layers["channel_fc1"]))
    channel_fc2 = _linear(channel_fc1, layers["channel_fc2"])
    out = mixed + channel_fc2
    pooled = out.mean(dim=1)
    head = _linear(pooled, layers["head"])
    _compare(parsed, run, [norm1, to_tokens, token_fc1, token_fc2, back, mixed, norm2, channel_fc1, channel_fc2, out,
                           pooled, head])


CONVNEXT_STAGE = """
    input: [4, 6, 6]
    batch: 3
    dtype: float64
    seed: 5
    loss: mse
    defaults: {init: {truncated_normal: {std: 0.2}}, bias_init: 0.05}
    layers:
      - {layernorm: {over: channels, eps: 1.0e-6}, name: down_norm}
      - {conv2d: {filters: 8, kernel: 2, stride: 2}, name: down}
      - {conv2d: {filters: 8, kernel: 3, padding: 1, groups: 8}, name: dwconv}
      - {layernorm: {over: channels, eps: 1.0e-6}, name: norm}
      - {conv2d: {filters: 16, kernel: 1}, activation: gelu, name: pwconv1}
      - {conv2d: {filters: 8, kernel: 1}, name: pwconv2}
      - {layer_scale: {value: 0.5}, name: gamma}
      - {add: {}, inputs: [down, gamma], name: out}
      - {global_avgpool: {}, name: pooled}
      - {dense: 2, name: head}
"""


def test_a_convnext_stage_matches_torchvisions_layers():
    """torchvision's ConvNeXt: a downsampling LayerNorm2d + 2x2 conv, then a CNBlock (dwconv, permute, LayerNorm,
    Linear, GELU, Linear, permute back, (C, 1, 1) layer scale, + input); the Linears as 1x1 convs and the
    permuted LayerNorm as over: channels."""
    layer_norm_2d = _torchvision("convnext", "LayerNorm2d")
    parsed, layers, run = _run(CONVNEXT_STAGE)
    x = torch.tensor(run.built.inputs, requires_grad=True)
    down_norm = layer_norm_2d(4, eps=1e-6).double()(x)
    down = _conv(down_norm, layers["down"], stride=2)
    dwconv = _conv(down, layers["dwconv"], padding=1, groups=8)
    # CNBlock: Permute, nn.LayerNorm, Linear, GELU, Linear, Permute back (each permuted back here to compare it)
    last, first = (0, 2, 3, 1), (0, 3, 1, 2)
    norm = F.layer_norm(dwconv.permute(last), (8,), eps=1e-6).permute(first)
    fc1 = F.gelu(_linear(norm.permute(last), _as_dense(layers["pwconv1"]))).permute(first)
    fc2 = _linear(fc1.permute(last), _as_dense(layers["pwconv2"])).permute(first)
    gamma = torch.full((8, 1, 1), 0.5, dtype=torch.float64) * fc2  # self.layer_scale * ...
    out = gamma + down
    pooled = out.mean(dim=(2, 3))
    head = _linear(pooled, layers["head"])
    _compare(parsed, run, [down_norm, down, dwconv, norm, fc1, fc2, gamma, out, pooled, head])


def _as_dense(conv_layer):
    """A 1x1 conv's (in, filters) matrix is a Linear's (x @ W): the same weights for F.linear."""
    class Dense:
        weights, bias = conv_layer.weights, conv_layer.bias
    return Dense


# ------------------------------------------------------------------ the parser and the checks
def _problems(text: str) -> list:
    with pytest.raises(SpecErrors) as raised:
        make_spec(text)
    return [problem.message for problem in raised.value.problems]


@pytest.mark.parametrize("layers, words", [
    ("[{chunk: {chunks: 4, index: 0}}]", "6 channels do not split into 4 equal parts"),
    ("[{chunk: {chunks: 2, index: 2}}]", "index 2 is not one of the 2 parts"),
    ("[{chunk: {chunks: 2}}]", "chunk: missing index"),
    ("[{channel_shuffle: {groups: 4}}]", "6 channels do not split into 4 groups"),
    ("[{channel_shuffle: {}}]", "channel_shuffle: missing groups"),
    ("[transpose: {}]", "transpose swaps the two axes of a sequence"),
    ("[{layernorm: {over: rows}}]", "over must be one of last, channels"),
    ("[flatten: {}, {layernorm: {over: channels}}]", "over: channels normalises each position of a feature map"),
    ("[flatten: {}, {channel_shuffle: {groups: 2}}]", "shuffles the channels of a feature map"),
])
def test_problems_are_located_and_say_what_is_wrong(layers, words):
    problems = _problems(f"input: [6, 2, 2]\nlayers: {layers}\n")
    assert len(problems) == 1 and words in problems[0], problems


def test_a_channel_shuffle_of_a_sequence_is_refused():
    problems = _problems("input: [4, 6]\nlayers:\n  - layernorm: {}\n  - channel_shuffle: {groups: 2}\n")
    assert "a sequence [steps, features]" in problems[0]


def test_the_checks_read_them_as_weightless_scale_keeping_and_layernorm_over_channels_as_a_normalization():
    assert {"channel_shuffle", "chunk", "transpose"} <= set(WEIGHTLESS_PASS_KINDS)
    assert "layernorm" in NORMALIZING_KINDS
    parsed = make_spec(CONVNEXT_STAGE)
    feeding = [layer.name for layer in parsed.layers if layer.init is not None and _feeds_normalization(parsed, layer.index)]
    assert feeding == ["dwconv"]  # into the layernorm over channels, as into ConvNeXt's LayerNorm
    assert normalized(make_spec(SHUFFLE_UNIT))  # each conv feeds its batchnorm
    diagnosis = pipeline.diagnose(make_spec(SHUFFLE_UNIT.replace("float64", "float32")))
    rows = {row["name"]: row for row in diagnosis.report["layers"]}
    for name in ("left", "right", "shuffled"):
        assert rows[name]["weight_std"] is None and rows[name]["fan_in"] is None
        assert not [f for f in diagnosis.report["findings"] if f.get("layer") == name]
    assert rows["shuffled"]["units"] == 8


@pytest.mark.parametrize("text", [SHUFFLE_UNIT, MIXER_BLOCK, CONVNEXT_STAGE], ids=["shufflenet", "mixer", "convnext"])
def test_the_memory_estimate_covers_the_measured_peak(text):
    import tracemalloc

    from initdiag.layers.conv import release_workspace

    larger = {"batch: 4": "batch: 32", "batch: 3": "batch: 32", "[8, 5, 5]": "[8, 16, 16]", "[4, 6, 6]": "[4, 32, 32]",
              "[4, 6]": "[16, 24]", "dense: 4,": "dense: 16,", "dense: 6,": "dense: 24,"}  # (fixed costs dominate tiny runs)
    for small, large in larger.items():
        text = text.replace(small, large)
    spec = make_spec(text)
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
