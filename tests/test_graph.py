"""Graph specs: layers that name their inputs, the merge layers (add, concat, multiply), shortcut lists, and
the located problems of a graph. Forward and backward are compared with torch running the same graph on the
same batch and weights (float64), layer by layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import invoke, make_spec, passes, write_spec
from initdiag import propagate
from initdiag.layers.conv import torch_layout
from initdiag.yamlsource import SpecErrors

torch = pytest.importorskip("torch")
F = torch.nn.functional

INCEPTION = """
    input: [3, 8, 8]
    batch: 6
    dtype: float64
    seed: 2
    loss: mse
    defaults: {init: relu, bias_init: 0.05}
    layers:
      - conv2d: {filters: 4, kernel: 3, padding: same}
        activation: relu
        name: stem
      - conv2d: {filters: 2, kernel: 1}
        activation: relu
        name: branch_a
      - conv2d: {filters: 3, kernel: 3, padding: same}
        inputs: stem
        activation: tanh
        name: branch_b
      - maxpool2d: {kernel: 3, stride: 1, padding: 1}
        inputs: [stem]
        name: branch_c
      - concat: {}
        inputs: [branch_a, branch_b, branch_c]
        name: joined
      - global_avgpool: {}
        name: squeeze
      - dense: 9
        activation: sigmoid
        name: gate
      - multiply: {}
        inputs: [joined, gate]
        name: excited
      - add: {scales: [1.0, 0.5]}
        inputs: [excited, joined]
        name: summed
      - flatten: {}
      - dense: 5
"""


def _outputs_and_gradients(spec_text: str):
    """(parsed, built, per-layer outputs, dLoss/d(output), weight gradients, targets) of one pass (float64)."""
    parsed = make_spec(spec_text)
    run = passes(parsed)
    weights = [grads.get("weights") for grads in run.weight_grads]
    return parsed, run.built, run.outputs, run.gradients, weights, run.targets


def _conv(x, layer, padding):
    weight = torch.tensor(torch_layout(layer.weights, layer.config["kernel"]), requires_grad=True)
    return F.conv2d(x, weight, torch.tensor(layer.bias), padding=padding), weight


def test_an_inception_block_with_concat_gating_and_a_scaled_add_matches_torch_layer_by_layer():
    parsed, built, outputs, gradients, weight_grads, targets = _outputs_and_gradients(INCEPTION)
    layers = {spec_layer.name: layer for spec_layer, layer in zip(parsed.layers, built.layers)}
    x = torch.tensor(built.inputs)
    stem, stem_w = _conv(x, layers["stem"], 1)
    stem = torch.relu(stem)
    a, a_w = _conv(stem, layers["branch_a"], 0)
    a = torch.relu(a)
    b, b_w = _conv(stem, layers["branch_b"], 1)
    b = torch.tanh(b)
    c = F.max_pool2d(stem, 3, 1, 1)
    joined = torch.cat([a, b, c], dim=1)
    squeeze = joined.mean(dim=(2, 3))
    gate_w = torch.tensor(layers["gate"].weights.T.copy(), requires_grad=True)
    gate = torch.sigmoid(F.linear(squeeze, gate_w, torch.tensor(layers["gate"].bias)))
    excited = joined * gate[:, :, None, None]
    summed = excited + 0.5 * joined
    flat = summed.flatten(1)
    out_w = torch.tensor(layers["dense_10"].weights.T.copy(), requires_grad=True)
    out = F.linear(flat, out_w, torch.tensor(layers["dense_10"].bias))
    ours = [stem, a, b, c, joined, squeeze, gate, excited, summed, flat, out]
    for tensor in ours:
        tensor.retain_grad()
    F.mse_loss(out, torch.tensor(targets), reduction="mean").backward()
    for i, (mine, theirs) in enumerate(zip(outputs, ours)):
        name = parsed.layers[i].name
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=f"{name} output")
        np.testing.assert_allclose(gradients[i], theirs.grad.numpy(), rtol=1e-8, atol=1e-14, err_msg=f"{name} gradient")
    for name, weight in (("stem", stem_w), ("branch_a", a_w), ("branch_b", b_w)):
        index = next(layer.index for layer in parsed.layers if layer.name == name)
        ours_grad = weight_grads[index].T.reshape(weight.shape)
        np.testing.assert_allclose(ours_grad, weight.grad.numpy(), rtol=1e-8, atol=1e-14, err_msg=f"{name} weight gradient")


RESNET_HEAD = """
    input: [4, 9, 9]
    batch: 5
    dtype: float64
    seed: 1
    loss: mse
    defaults: {init: relu}
    layers:
"""

RESNET_BLOCK = RESNET_HEAD + """\
      - residual:
          - conv2d: {filters: 8, kernel: 3, stride: 2, padding: 1, bias: false}
          - batchnorm: {}
          - conv2d: {filters: 8, kernel: 3, padding: 1, bias: false}
          - batchnorm: {}
        shortcut:
          - conv2d: {filters: 8, kernel: 1, stride: 2, bias: false}
          - batchnorm: {}
      - flatten: {}
      - dense: 3
"""

# the same block as a graph: the layers keep their indices, so every layer draws the same numbers
RESNET_GRAPH = RESNET_HEAD + """\
      - conv2d: {filters: 8, kernel: 3, stride: 2, padding: 1, bias: false}
      - batchnorm: {}
      - conv2d: {filters: 8, kernel: 3, padding: 1, bias: false}
      - {batchnorm: {}, name: branch}
      - {conv2d: {filters: 8, kernel: 1, stride: 2, bias: false}, inputs: input}
      - {batchnorm: {}, name: skip}
      - {add: {}, inputs: [branch, skip]}
      - flatten: {}
      - dense: 3
"""


def test_a_shortcut_list_matches_torch_and_is_the_same_network_as_its_graph():
    """ResNet's downsampling block on an odd size (9 → 5 at stride 2) with a 1x1-conv + batchnorm shortcut
    written as a list of layers; the same block written as a graph with an add gives the same numbers."""
    parsed, built, outputs, gradients, _, targets = _outputs_and_gradients(RESNET_BLOCK)
    assert parsed.layers[6].output_shape == (8, 5, 5) and parsed.layers[4].input_shape == (4, 9, 9)
    x = torch.tensor(built.inputs, requires_grad=True)
    convs = [layer for layer in built.layers if layer.kind == "conv2d"]

    def conv(h, layer, stride, padding):
        weight = torch.tensor(torch_layout(layer.weights, layer.config["kernel"]))
        return F.conv2d(h, weight, None, stride=stride, padding=padding)

    def bn(h):
        return F.batch_norm(h, None, None, training=True, eps=1e-5)

    branch = bn(conv(bn(conv(x, convs[0], 2, 1)), convs[1], 1, 1))
    skip = bn(conv(x, convs[2], 2, 0))
    y = branch + skip
    dense = built.layers[-1]
    out = F.linear(y.flatten(1), torch.tensor(dense.weights.T.copy()), torch.tensor(dense.bias))
    for tensor in (branch, skip, y):
        tensor.retain_grad()
    F.mse_loss(out, torch.tensor(targets)).backward()
    for index, tensor in ((3, branch), (5, skip), (6, y)):
        np.testing.assert_allclose(outputs[index], tensor.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=parsed.layers[index].name)
        np.testing.assert_allclose(gradients[index], tensor.grad.numpy(), rtol=1e-8, atol=1e-14, err_msg=parsed.layers[index].name)

    _, _, graph_outputs, graph_gradients, _, _ = _outputs_and_gradients(RESNET_GRAPH)
    for index, (mine, theirs) in enumerate(zip(outputs, graph_outputs)):
        np.testing.assert_array_equal(mine, theirs, err_msg=f"layer {index}")
        np.testing.assert_array_equal(gradients[index], graph_gradients[index], err_msg=f"layer {index} gradient")


def test_a_chain_spec_reads_each_layer_above_and_runs_as_before():
    parsed = make_spec("input: [4]\nlayers:\n  - dense: 3\n  - dense: 2\n")
    assert [layer.inputs for layer in parsed.layers] == [(-1,), (0,)]
    assert propagate.sources(parsed) == [(-1,), (0,)]


# ------------------------------------------------------------------ located problems
def _problems(text: str) -> list:
    with pytest.raises(SpecErrors) as raised:
        make_spec(text)
    return [(problem.path, problem.message, problem.location.line if problem.location else None)
            for problem in raised.value.problems]


HEAD = "input: [4]\nlayers:\n"


@pytest.mark.parametrize("layers, path, words, line", [
    ("  - {dense: 3, name: a}\n  - {dense: 3, inputs: [b]}\n", "layers[1].inputs[0]", ("'b'", "a"), 4),
    ("  - {dense: 3, name: a, inputs: [c]}\n  - {dense: 3, name: c}\n", "layers[0].inputs[0]", ("written below", "layers[1]"), 3),
    ("  - {dense: 3, name: a, inputs: [c]}\n  - {dense: 3, name: c, inputs: a}\n", "layers[0].inputs[0]", ("cycle", "a → c → a"), 3),
    ("  - {dense: 3, name: a, inputs: [a]}\n", "layers[0].inputs[0]", ("reads itself",), 3),
    ("  - {dense: 3, name: a}\n  - {dense: 5, name: b, inputs: input}\n  - {add: {}, inputs: [a, b]}\n",
     "layers[2].add", ("one shape", "'a' [3]", "'b' [5]"), 5),
    ("  - {dense: 3, name: a}\n  - {dense: 2, name: b, inputs: input}\n  - {dense: 2, inputs: [a, b]}\n",
     "layers[2].inputs", ("reads one input", "add, concat or multiply"), 5),
    ("  - {dense: 3, name: a}\n  - {add: {}}\n", "layers[1]", ("two or more",), 4),
    ("  - {dense: 3, name: a}\n  - {dense: 3, inputs: input}\n", "layers[0]", ("never used",), 3),
    ("  - {dense: 3, name: input}\n", "layers[0].name", ("spec's input",), 3),
    ("  - {dense: 3, inputs: 7}\n", "layers[0].inputs", ("layer name",), 3),
    ("  - {dense: 3, name: a}\n  - {add: {scales: [1, 2, 3]}, inputs: [a, input]}\n", "layers[1].add", ("3 scales for 2",), 4),
])
def test_graph_problems_are_located_and_say_what_is_wrong(layers, path, words, line):
    text = HEAD.replace("[4]", "[3]") + layers if "inputs: [a, input]" in layers else HEAD + layers
    problems = _problems(text)
    matching = [p for p in problems if p[0] == path]
    assert matching, f"no problem at {path}: {problems}"
    message = matching[0][1]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert matching[0][2] == line


def test_a_concat_of_feature_maps_of_different_sizes_names_both():
    problems = _problems("input: [2, 8, 8]\nlayers:\n  - {conv2d: {filters: 2, kernel: 3}, name: a}\n"
                         "  - {conv2d: {filters: 2, kernel: 1}, name: b, inputs: input}\n  - {concat: {}, inputs: [a, b]}\n"
                         "  - {flatten: {}}\n")
    assert any("'a' [2, 6, 6]" in message and "'b' [2, 8, 8]" in message for _, message, _ in problems), problems


def test_a_multiply_gate_must_have_one_value_per_channel():
    problems = _problems("input: [4, 5, 5]\nlayers:\n  - {conv2d: {filters: 4, kernel: 1}, name: maps}\n"
                         "  - {global_avgpool: {}}\n  - {dense: 3, activation: sigmoid, name: gate}\n"
                         "  - {multiply: {}, inputs: [maps, gate]}\n  - {flatten: {}}\n")
    assert any("[4] gate" in message for _, message, _ in problems), problems


def test_the_cli_reports_a_graph_error_with_its_line_and_exit_2(tmp_path):
    path = write_spec(tmp_path, HEAD + "  - {dense: 3, name: a}\n  - {dense: 3, inputs: [stme]}\n")
    result = invoke("check", path)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "net.yaml:4:" in lines[0] and "unknown layer name 'stme'" in lines[0], lines


def test_check_runs_a_graph_spec_end_to_end_with_a_json_report(tmp_path):
    path = write_spec(tmp_path, INCEPTION.replace("    dtype: float64\n", ""))
    result = invoke("check", path, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    assert [row["name"] for row in report["layers"]][:5] == ["stem", "branch_a", "branch_b", "branch_c", "joined"]
    joined = report["layers"][4]
    assert joined["units"] == 2 + 3 + 4


def test_the_units_of_layers_that_keep_a_sequence_are_its_features():
    """An activation layer, a layer scale and a merge on [steps, features] report features as units (not steps)."""
    parsed = make_spec("input: [6, 4]\nlayers:\n  - {layernorm: {}, name: a}\n  - activation: relu\n"
                       "  - layer_scale: {value: 0.5}\n  - {add: {}, inputs: [a, layer_scale_2]}\n  - dense: 3\n")
    assert [layer.units for layer in parsed.layers] == [4, 4, 4, 4, 3]


def test_an_odd_size_maps_through_a_strided_1x1_shortcut_and_a_block_error_is_the_only_error():
    """9 → 5 at stride 2 (ceil) fits a strided 1x1 shortcut; 9 → 4 does not, and that one problem is reported alone
    (no second, spurious complaint about the loss on a layer that is not the output)."""
    block = "input: [4, 9, 9]\nloss: cross_entropy\nlayers:\n  - residual:\n      - conv2d: {filters: 8, kernel: 3, stride: 2%s}\n" \
            "    shortcut: conv\n  - global_avgpool: {}\n  - {dense: 10, activation: softmax}\n"
    assert make_spec(block % ", padding: 1").layers[1].output_shape == (8, 5, 5)
    problems = _problems(block % "")
    assert [path for path, _, _ in problems] == ["layers[0].shortcut"], problems
    assert "list of layers" in problems[0][1]


@pytest.mark.parametrize("scale", ["0.1", "1.0"])
def test_the_checks_judge_a_residual_written_as_a_graph_as_they_judge_the_sugar(scale):
    """The same blocks, from the spec's input on: with `residual:` and with `inputs:` and `add`, the findings (code,
    severity, layer index) and the verdict agree; branch layers are found from the graph."""
    from initdiag import pipeline
    from initdiag.checks._architecture import branch_layers

    sugar = ("input: [16]\nbatch: 64\ndefaults: {init: {normal: {std: 1.0}}, activation: relu}\nlayers:\n"
             + "".join(f"  - residual:\n      - dense: 16\n      - {{dense: 16, activation: identity}}\n    scale: {scale}\n"
                       for _ in range(4)) + "  - dense: 3\n")
    graph = ("input: [16]\nbatch: 64\ndefaults: {init: {normal: {std: 1.0}}, activation: relu}\nlayers:\n"
             + "".join(f"  - {{dense: 16, inputs: {'input' if i == 0 else f'sum{i - 1}'}}}\n"
                       f"  - {{dense: 16, activation: identity, name: branch{i}}}\n"
                       f"  - {{add: {{scales: [{scale}, 1]}}, inputs: [branch{i}, {'input' if i == 0 else f'sum{i - 1}'}], name: sum{i}}}\n"
                       for i in range(4)) + "  - dense: 3\n")
    written, joined = make_spec(sugar), make_spec(graph)
    assert branch_layers(written) == branch_layers(joined) == {0, 1, 3, 4, 6, 7, 9, 10}
    found = [pipeline.diagnose(spec).report for spec in (written, joined)]
    summary = [(report["verdict"], sorted((f["code"], f["severity"], f.get("layer") and f["layer"][-1]) for f in report["findings"]))
               for report in found]
    assert summary[0][0] == summary[1][0], summary
    assert [(code, severity) for code, severity, _ in summary[0][1]] == [(code, severity) for code, severity, _ in summary[1][1]], summary
