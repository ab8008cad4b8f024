"""`initdiag import onnx model.onnx`: an ONNX graph written as a flat spec graph, initializers as supplied arrays.

A small residual CNN (conv-bn-relu, a residual add, a global pool, a linear head) and an MLP (linear, layernorm,
GELU, a linear with a fused ReLU) are exported by torch.onnx.export in training mode with batchnorm kept
(`dynamo=False`: torch 2.13's dynamo exporter writes batchnorm in inference form, and its optimizer folds it into
the convolutions even with training=TRAINING), imported, and run in float64: every spec layer's output and
gradient must be those of torch running the same module on the same batch and targets (relative error < 1e-4).
An inference export is imported with a header saying batchnorm was folded; bad files and unsupported ops are
located lines with exit 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import invoke, passes
from initdiag import spec, yamlsource
from initdiag.importers import IMPORTERS, ImportProblem, onnx_graph

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOLERANCE = 1e-4  # relative (Frobenius) error per layer, float64


class Add(torch.nn.Module):
    def forward(self, a, b):
        return a + b


class ResidualCNN(torch.nn.Module):
    """Every op a module, so that each spec layer (named after the module) has a torch output to compare."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = torch.nn.BatchNorm2d(8)
        self.stem_relu = torch.nn.ReLU()
        self.conv_a = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_a = torch.nn.BatchNorm2d(8)
        self.relu_a = torch.nn.ReLU()
        self.conv_b = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_b = torch.nn.BatchNorm2d(8, eps=1e-3)
        self.join = Add()
        self.relu_out = torch.nn.ReLU()
        self.down = torch.nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.down_act = torch.nn.Tanh()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x):
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        branch = self.bn_b(self.conv_b(self.relu_a(self.bn_a(self.conv_a(x)))))
        x = self.relu_out(self.join(x, branch))
        x = self.down_act(self.down(x))
        return self.fc(self.flatten(self.pool(x)))


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(20, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.gelu = torch.nn.GELU()
        self.fc2 = torch.nn.Linear(32, 16)
        self.act2 = torch.nn.ReLU()
        self.fc3 = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.gelu(self.norm(self.fc1(x))))))


class Lambda(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, *args):
        return self.function(*args)


class MatLinear(torch.nn.Module):
    """x @ W + b with W (in, out): exported as MatMul and Add, not Gemm."""

    def __init__(self, fan_in, fan_out):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(fan_in, fan_out) / fan_in ** 0.5)
        self.b = torch.nn.Parameter(torch.randn(fan_out) * 0.1)

    def forward(self, x):
        return x @ self.w + self.b


class Branches(torch.nn.Module):
    """Branches joined by concat, a squeeze-excitation gate (1x1 convs on the pooled vector become dense layers),
    max and average pools, a transposed conv, a spatial mean (ReduceMean), and clip / hard activations."""

    def __init__(self):
        super().__init__()
        self.conv0 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act0 = torch.nn.Hardswish()
        self.pool_max = torch.nn.MaxPool2d(3, stride=1, padding=1)
        self.pool_avg = torch.nn.AvgPool2d(3, stride=1, padding=1)
        self.squeeze = torch.nn.Conv2d(8, 4, 1, groups=2)
        self.relu6 = torch.nn.ReLU6()
        self.cat = Lambda(lambda *parts: torch.cat(parts, dim=1))
        self.se_pool = torch.nn.AdaptiveAvgPool2d(1)
        self.se_fc1 = torch.nn.Conv2d(20, 5, 1)
        self.se_relu = torch.nn.ReLU()
        self.se_fc2 = torch.nn.Conv2d(5, 20, 1)
        self.se_gate = torch.nn.Hardsigmoid()
        self.scale = Lambda(lambda x, gate: x * gate)
        self.up = torch.nn.ConvTranspose2d(20, 6, 3, stride=2, padding=1, output_padding=1)
        self.up_act = torch.nn.LeakyReLU(0.2)
        self.mean = Lambda(lambda x: x.mean(dim=(2, 3)))
        self.mat = MatLinear(6, 9)
        self.mat_act = torch.nn.Tanh()
        self.head = torch.nn.Linear(9, 3)

    def forward(self, x):
        x = self.act0(self.conv0(x))
        x = self.cat(self.pool_max(x), self.pool_avg(x), self.relu6(self.squeeze(x)))
        gate = self.se_gate(self.se_fc2(self.se_relu(self.se_fc1(self.se_pool(x)))))
        x = self.up_act(self.up(self.scale(x, gate)))
        return self.head(self.mat_act(self.mat(self.mean(x))))


# spec layer -> the torch module whose output it is (an activation fused into the layer above)
FUSED = {"down": "down_act", "fc2": "act2", "conv0": "act0", "squeeze": "relu6", "se_fc1": "se_relu",
         "se_fc2": "se_gate", "up": "up_act", "mat": "mat_act"}


def _export(model, shape, path: Path, training: bool = True) -> Path:
    torch.manual_seed(0)
    example = torch.randn(2, *shape)
    options = ({"training": torch.onnx.TrainingMode.TRAINING, "do_constant_folding": False} if training else {})
    model.train(training)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, **options)
    return path


def _import(model_path: Path, tmp_path: Path, *extra) -> tuple[Path, str]:
    out = tmp_path / "model.yaml"
    result = invoke("import", "onnx", model_path, "-o", out, *extra)
    assert result.exit_code == 0, result.output + result.stderr
    return out, out.read_text(encoding="utf-8")


def _float64(spec_path: Path):
    data = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    data["dtype"] = "float64"
    return spec.parse(yamlsource.loads(json.dumps(data), spec_path.name), base_dir=spec_path.parent, default_name="t")


def _torch_outputs(model, inputs, targets, loss: str, names):
    captured = {}

    def keep(name):
        def hook(module, args, output):
            output.retain_grad()
            captured[name] = output
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in model.named_modules() if name in names]
    logits = model(torch.tensor(inputs, dtype=torch.float64))
    if loss == "cross_entropy":
        value = torch.nn.functional.cross_entropy(logits, torch.tensor(targets.argmax(axis=-1)))
    else:
        value = torch.nn.functional.mse_loss(logits, torch.tensor(targets))
    value.backward()
    for handle in handles:
        handle.remove()
    return captured


def _relative(mine, theirs) -> float:
    theirs = theirs.detach().numpy().reshape(mine.shape)
    return float(np.linalg.norm(mine - theirs) / max(np.linalg.norm(theirs), 1e-300))


@pytest.mark.parametrize("make, shape", [(ResidualCNN, (3, 10, 10)), (MLP, (20,)), (Branches, (3, 8, 8))],
                         ids=["residual_cnn", "mlp", "branches"])
def test_a_training_export_runs_as_torch_runs_the_module_layer_by_layer(make, shape, tmp_path):
    model = make()
    spec_path, text = _import(_export(model, shape, tmp_path / "model.onnx"), tmp_path)
    # Branches has no batchnorm and conv biases everywhere: what an eval export of a batchnorm model looks like,
    # so the header says "probably" and "if the model has batchnorm"
    assert ("Inference export (probably)" in text) == (make is Branches)
    parsed = _float64(spec_path)
    run = passes(parsed)
    model = model.to(torch.float64).train()  # the exported float32 values, exactly, in float64
    modules = {FUSED.get(layer.name, layer.name) for layer in parsed.layers}
    theirs = _torch_outputs(model, run.built.inputs, run.targets, parsed.loss, modules)
    problems = []
    for index, layer in enumerate(parsed.layers):
        tensor = theirs[FUSED.get(layer.name, layer.name)]
        forward, backward = _relative(run.outputs[index], tensor), _relative(run.gradients[index], tensor.grad)
        if not (forward < TOLERANCE and backward < TOLERANCE):
            problems.append(f"{layer.name}: output off by {forward:.1e}, gradient by {backward:.1e}")
    assert not problems, "; ".join(problems)
    kinds = [next(iter(raw)) for raw in yaml.safe_load(text)["layers"]]
    if make is ResidualCNN:
        assert kinds == ["conv2d", "batchnorm", "activation", "conv2d", "batchnorm", "activation", "conv2d",
                         "batchnorm", "add", "activation", "conv2d", "global_avgpool", "dense"]
        assert "{add: {}, name: join, inputs: [stem_relu, bn_b]}" in text
        assert "{batchnorm: {eps: 0.001}, name: bn_b" in text
        assert "{conv2d: {filters: 12, kernel: 3, stride: 2, padding: 1}, activation: tanh, name: down" in text
    elif make is MLP:
        assert kinds == ["dense", "layernorm", "activation", "dense", "dense"]
        assert "{dense: 16, activation: relu, name: fc2" in text
    else:
        assert kinds == ["conv2d", "maxpool2d", "avgpool2d", "conv2d", "concat", "global_avgpool", "dense", "dense",
                         "multiply", "conv_transpose2d", "global_avgpool", "dense", "dense"]
        for line in ("{concat: {}, name: cat, inputs: [pool_max, pool_avg, squeeze]}",
                     "{multiply: {}, name: scale, inputs: [cat, se_fc2]}",
                     "{conv2d: {filters: 4, kernel: 1, groups: 2}, activation: relu6, name: squeeze, inputs: conv0",
                     "{dense: 20, activation: hard_sigmoid, name: se_fc2",
                     "output_padding: 1}, activation: {leaky_relu: {alpha: 0.2}}, name: up"):
            assert line in text


def test_supplied_arrays_are_in_initdiags_layout(tmp_path):
    model = ResidualCNN()
    spec_path, _ = _import(_export(model, (3, 10, 10), tmp_path / "model.onnx"), tmp_path)
    folder = tmp_path / "model.init"
    fc = np.load(folder / "fc.npz")
    np.testing.assert_array_equal(fc["weights"], model.fc.weight.detach().numpy().T)
    stem = np.load(folder / "stem.npz")
    np.testing.assert_array_equal(stem["weights"], model.stem.weight.detach().numpy().reshape(8, -1).T)
    assert set(np.load(folder / "bn_a.npz")) == {"gamma", "beta"}
    result = invoke("check", spec_path)
    assert result.exit_code in (0, 1), result.output


def test_an_inference_export_is_imported_and_said_to_be_folded(tmp_path):
    model = ResidualCNN()
    _, text = _import(_export(model, (3, 10, 10), tmp_path / "model.onnx", training=False), tmp_path)
    header = " ".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    assert "Inference export" in header and "folded into the convolutions" in header
    assert "TrainingMode.TRAINING" in header and "do_constant_folding=False" in header
    assert "batchnorm" not in "".join(line for line in text.splitlines() if not line.startswith("#"))


# ---------------------------------------------------------------------------------- hand-built graphs


def _graph_file(tmp_path: Path, nodes, initializers=(), input_dims=(1, 4, 6, 6), output="y", metadata=None) -> Path:
    graph = helper.make_graph(
        nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(value, dtype=np.float32), name) for name, value in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for node, (key, value) in (metadata or {}).items():
        entry = model.graph.node[node].metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    return path


KERNEL = [("w", np.ones((5, 4, 3, 3)) * 0.1), ("b", np.zeros(5))]


def test_dropout_softmax_reshape_and_a_bias_free_matmul(tmp_path):
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="/mean/ReduceMean", axes=[2, 3], keepdims=1),
             helper.make_node("Constant", [], ["shape"], name="shape",
                              value=numpy_helper.from_array(np.array([0, -1], dtype=np.int64))),
             helper.make_node("Reshape", ["m", "shape"], ["flat"], name="/Reshape"),
             helper.make_node("MatMul", ["flat", "w"], ["h"], name="/proj/MatMul"),
             helper.make_node("Clip", ["h"], ["c"], name="/act/Clip", min=0.0, max=6.0),
             helper.make_node("Constant", [], ["ratio"], name="ratio",
                              value=numpy_helper.from_array(np.array(0.25, dtype=np.float32))),
             helper.make_node("Constant", [], ["on"], name="on", value=numpy_helper.from_array(np.array(True))),
             helper.make_node("Dropout", ["c", "ratio", "on"], ["d", "mask"], name="/drop/Dropout"),
             helper.make_node("Identity", ["d"], ["i"], name="keep"),
             helper.make_node("Softmax", ["i"], ["y"], name="/soft/Softmax", axis=-1)]
    path = _graph_file(tmp_path, nodes, [("w", np.ones((4, 6)))])
    draft = onnx_graph.import_model(str(path))
    assert draft.layers == [{"global_avgpool": {}, "name": "mean"},
                            {"dense": 6, "activation": "relu6", "bias": False, "name": "proj"},
                            {"dropout": 0.25, "name": "drop"},
                            {"activation": "softmax", "name": "soft"}]
    assert "batch" in draft.keys and draft.keys["input"] == [4, 6, 6]
    spec_path = tmp_path / "hand.yaml"
    draft.write(spec_path)
    assert invoke("check", spec_path).exit_code in (0, 1)


def test_not_an_onnx_file_is_a_located_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a protobuf\n", encoding="utf-8")
    result = invoke("import", "onnx", bad, "-o", tmp_path / "out.yaml")
    assert result.exit_code == 2
    assert f"{bad}: not an ONNX model" in result.output + result.stderr


def test_an_unsupported_op_names_the_node_and_its_op(tmp_path):
    path = _graph_file(tmp_path, [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
                                  helper.make_node("Sin", ["c"], ["y"], name="the_sine")], KERNEL)
    result = invoke("import", "onnx", path, "-o", tmp_path / "out.yaml")
    assert result.exit_code == 2
    assert "node 'the_sine' (Sin) has no spec equivalent" in result.output + result.stderr
    assert not (tmp_path / "out.yaml").exists()


def test_asymmetric_pads_are_refused(tmp_path):
    path = _graph_file(tmp_path, [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv0", pads=[0, 0, 1, 1])],
                       KERNEL)
    with pytest.raises(ImportProblem, match=r"node 'conv0' \(Conv\) pads \[0, 0, 1, 1\] are asymmetric"):
        onnx_graph.import_model(str(path))


def test_a_symbolic_input_needs_input_and_takes_it(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu0"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flat", axis=1)]
    path = _graph_file(tmp_path, nodes, KERNEL, input_dims=("N", 4, "H", "W"))
    with pytest.raises(ImportProblem, match="symbolic dimensions.*give --input"):
        onnx_graph.import_model(str(path))
    draft = onnx_graph.import_model(str(path), input="4,9,9", batch=3)
    assert draft.keys["input"] == [4, 9, 9] and draft.keys["batch"] == 3
    assert [layer["name"] for layer in draft.layers] == ["conv0", "gap"]  # relu fused, flatten nothing
    assert draft.layers[0]["activation"] == "relu"
    with pytest.raises(ImportProblem, match="--input 5,9,9"):
        onnx_graph.import_model(str(path), input="5,9,9")


def test_the_dynamo_exporters_folded_batchnorm_is_said(tmp_path):
    rule = ("pkg.onnxscript.rewriter.rule_name", "RemoveOptionalBiasFromConv, FuseBatchNormIntoConv")
    path = _graph_file(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], name="node_Conv_1")], KERNEL[:1],
                       metadata={0: rule})
    header = " ".join(onnx_graph.import_model(str(path)).header)
    assert "folded batchnorm into 1 node(s)" in header and "dynamo=True" in header


def test_batchnorm_in_inference_form_is_said(tmp_path):
    norm = [("g", np.ones(4)), ("beta", np.zeros(4)), ("mean", np.full(4, 0.5)), ("var", np.full(4, 2.0))]
    path = _graph_file(tmp_path, [helper.make_node("BatchNormalization", ["x", "g", "beta", "mean", "var"], ["y"],
                                                   name="/bn/BatchNormalization", epsilon=1e-3)], norm)
    draft = onnx_graph.import_model(str(path))
    assert draft.layers == [{"batchnorm": {"eps": 0.001}, "name": "bn"}]
    assert set(draft.arrays["bn"]) == {"gamma", "beta"}
    header = " ".join(draft.header)
    assert "1 BatchNormalization node(s) in inference form" in header and "TrainingMode.TRAINING" in header


def test_without_the_onnx_package_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportProblem, match=r"pip install 'initdiag\[onnx\]'"):
        onnx_graph.import_model(str(tmp_path / "any.onnx"))


def test_the_importer_is_registered_with_its_options():
    assert IMPORTERS["onnx"].takes == ("input", "batch")
    result = invoke("import", "onnx", "m.onnx", "--steps", "3")
    assert result.exit_code == 2 and "--steps" in result.output + result.stderr
