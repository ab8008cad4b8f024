"""The PyTorch importer against PyTorch: real torchvision and timm classifiers (instantiated without weights,
small inputs) are traced, written as specs holding the modules' own initial values, run by initdiag in float64,
and every spec layer's output and loss gradient is compared with the fx node it stands for, run by torch on
the same batch and targets (relative error < 1e-4). Also: the command line, the Python API, `--scheme`
redrawing, and the located errors.

torchvision's wheel here can be a CUDA build whose compiled ops do not load beside CPU torch; the importer's
loader (torch_fx.load) declares the two op schemas torchvision's import needs, so these tests run either way.
"""

from __future__ import annotations

import json
import operator
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import passes, relative_error, torch_loss
from initdiag import spec, yamlsource
from initdiag.cli import app
from initdiag.importers import ImportProblem

torch = pytest.importorskip("torch")
from initdiag.importers import torch_fx  # noqa: E402  (needs torch)

TOLERANCE = 1e-4  # relative error per layer, float64 (the bound; rounding gives ~1e-12)


def _model(reference: str, **arguments):
    return torch_fx.load(reference, arguments)


def _quiet(model):
    """Dropout and stochastic depth off (the spec's, too: `eval: true`), everything else in training mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) or type(module).__name__ in ("StochasticDepth", "DropPath"):
            module.eval()
    return model


def _spec_in_float64(draft, folder: Path):
    path = folder / "model.yaml"
    draft.write(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["dtype"] = "float64"
    data["batch"] = 3
    for layer in data["layers"]:
        for kind in ("dropout", "stochastic_depth"):
            if kind in layer:
                options = layer[kind] if isinstance(layer[kind], dict) else {"p": layer[kind]}
                layer[kind] = {**options, "eval": True}
    path.write_text(json.dumps(data), encoding="utf-8")
    return spec.parse(yamlsource.load(path, str(path)), folder, "model")


def _as_ours(array: np.ndarray, shape: tuple) -> np.ndarray:
    """A torch activation in the spec layer's per-sample shape: a channels-last map back to channels-first, a
    patch embedding's [dim, h, w] map as its [steps, dim] tokens, a pooled [C, 1, 1] as [C]."""
    have, batch = array.shape[1:], array.shape[0]
    if have == tuple(shape):
        return array
    if len(have) == 3 == len(shape) and have == (shape[1], shape[2], shape[0]):
        return array.transpose(0, 3, 1, 2)
    if len(have) == 3 and len(shape) == 2:
        return array.reshape(batch, have[0], -1).transpose(0, 2, 1)
    return array.reshape((batch,) + tuple(shape))


OUT_OF_PLACE = {operator.iadd: operator.add, operator.imul: operator.mul, "add_": "add", "mul_": "mul",
                "relu_": "relu"}


def _out_of_place(module):
    """The traced module with in-place ops (ReLU(inplace=True), out += identity) made out of place, so that each
    node's captured output is still its own when the later ops have run (the results are the same)."""
    for submodule in module.modules():
        if getattr(submodule, "inplace", False):
            submodule.inplace = False
    for node in module.graph.nodes:
        if node.op in ("call_function", "call_method") and node.target in OUT_OF_PLACE:
            node.target = OUT_OF_PLACE[node.target]
        if node.kwargs.get("inplace"):
            node.kwargs = {**node.kwargs, "inplace": False}
    module.recompile()
    return module


def _torch_node_outputs(module, inputs, targets, loss_name: str) -> dict:
    """Every fx node's output (and, after the loss's backward, its gradient), by node name; a module returning
    a tuple (nn.MultiheadAttention) is captured as its first item."""
    captured = {}

    class Capture(torch.fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            tensor = result[0] if isinstance(result, tuple) and result else result
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                tensor.retain_grad()
                captured[node.name] = tensor
            return result

    x = torch.tensor(inputs) if inputs.dtype.kind in "iu" else torch.tensor(inputs, dtype=torch.float64)
    torch_loss(Capture(module).run(x), targets, loss_name).backward()
    return captured


def compare_with_torch(model, shape: tuple, folder: Path) -> int:
    """Import `model` (float64, training mode, dropout off) and compare every spec layer with torch; returns the
    number of layers compared (asserting each is within TOLERANCE)."""
    model = _quiet(model.to(torch.float64))
    draft, traced = torch_fx.traced_draft(model, torch_fx.example_input(model, shape, 2), name="model")
    parsed = _spec_in_float64(draft, folder)
    run = passes(parsed, max_memory=64 * 1024**3)
    theirs = _torch_node_outputs(_out_of_place(traced), run.built.inputs, run.targets, parsed.loss)
    problems, compared = [], 0
    for i, layer in enumerate(parsed.layers):
        if layer.name not in draft.origins:
            continue  # a layer inside one module's output (timm's BatchNormAct2d: the batchnorm before its act)
        tensor = theirs.get(draft.origins[layer.name])
        assert tensor is not None, f"{layer.name}: no torch node output ({draft.origins[layer.name]})"
        output = _as_ours(tensor.detach().numpy(), layer.output_shape)
        forward = relative_error(run.outputs[i], output)
        backward = 0.0
        if tensor.grad is not None:
            backward = relative_error(run.gradients[i], _as_ours(tensor.grad.numpy(), layer.output_shape))
        if not (forward < TOLERANCE and backward < TOLERANCE):
            problems.append(f"{layer.name}: output off by {forward:.1e}, gradient by {backward:.1e}")
        compared += 1
    assert not problems, "; ".join(problems[:8])
    names = {layer.name for layer in parsed.layers}
    unmatched = [name for name in names if name not in draft.origins and f"{name}.act" not in names]
    assert not unmatched, f"layers with no torch node: {unmatched[:5]}"
    return compared


# ------------------------------------------------------------------ real classifiers, layer by layer
CLASSIFIERS = {
    "resnet18": (lambda: _model("torchvision.models:resnet18", num_classes=10), (3, 32, 32)),
    "mobilenet_v3_small": (lambda: _model("torchvision.models:mobilenet_v3_small", num_classes=10), (3, 32, 32)),
    "efficientnet_b0": (lambda: _model("torchvision.models:efficientnet_b0", num_classes=10), (3, 32, 32)),
    "googlenet": (lambda: _model("torchvision.models:googlenet", num_classes=10, init_weights=True), (3, 48, 48)),
    "squeezenet1_0": (lambda: _model("torchvision.models:squeezenet1_0", num_classes=10), (3, 48, 48)),
    "vit (torchvision)": (lambda: _model("torchvision.models:VisionTransformer", image_size=32, patch_size=8,
                                         num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10),
                          (3, 32, 32)),
    "vit_tiny (timm)": (lambda: _model("timm:create_model", model_name="vit_tiny_patch16_224", img_size=32, depth=2,
                                       num_classes=10), (3, 32, 32)),
    "mobilenetv3_small_100 (timm)": (lambda: _model("timm:create_model", model_name="mobilenetv3_small_100",
                                                    num_classes=10), (3, 32, 32)),
    "shufflenet_v2_x0_5": (lambda: _model("torchvision.models:shufflenet_v2_x0_5", num_classes=10), (3, 32, 32)),
    "convnext (torchvision)": (lambda: _convnext(), (3, 32, 32)),
    "convnext_atto (timm)": (lambda: _model("timm:create_model", model_name="convnext_atto", num_classes=10,
                                            depths=(1, 1, 1, 1)), (3, 32, 32)),
    "mixer (timm)": (lambda: _model("timm.models.mlp_mixer:MlpMixer", img_size=32, patch_size=8, num_blocks=2,
                                    embed_dim=32, num_classes=10), (3, 32, 32)),
    "densenet (torchvision)": (lambda: _model("torchvision.models:DenseNet", growth_rate=8, block_config=(2, 2),
                                              num_init_features=16, num_classes=10), (3, 32, 32)),
}


def _convnext():
    """torchvision's ConvNeXt (convnext_tiny's classes: CNBlock, LayerNorm2d, permutes, layer scale), two small
    stages."""
    _model("torchvision.models:alexnet")  # imports torchvision through the loader
    from torchvision.models import convnext

    stages = [convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)]
    return convnext.ConvNeXt(stages, stochastic_depth_prob=0.1, num_classes=10)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_an_imported_classifier_matches_pytorch_layer_by_layer(name, tmp_path):
    build, shape = CLASSIFIERS[name]
    compared = compare_with_torch(build(), shape, tmp_path)
    assert compared >= 10


def test_a_module_with_a_token_embedding_imports_as_a_token_spec(tmp_path):
    class TinyLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 16)
            self.pos = torch.nn.Parameter(torch.randn(1, 6, 16) * 0.02)
            self.attention = torch.nn.MultiheadAttention(16, 4, batch_first=True)
            self.norm = torch.nn.LayerNorm(16)
            self.head = torch.nn.Linear(16, 50)

        def forward(self, tokens):
            x = self.embed(tokens) + self.pos
            x = x + self.attention(x, x, x, need_weights=False)[0]
            return self.head(self.norm(x))

    torch.manual_seed(0)
    model = TinyLM()
    draft, _ = torch_fx.traced_draft(model, torch.randint(0, 50, (2, 6)), name="lm")
    assert draft.keys["input_distribution"] == "tokens" and draft.keys["input"] == [6]
    kinds = [next(iter(layer)) for layer in draft.layers]
    assert kinds == ["embedding", "position_embedding", "attention", "add", "layernorm", "dense"]
    assert compare_with_torch(model, (6,), tmp_path) == 6


# ------------------------------------------------------------------ the command line and the API
runner = CliRunner()


def test_import_writes_a_spec_and_its_initial_values_and_check_reports_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["import", "torch", "torchvision.models:resnet18", "--input", "3,32,32",
                                 "--arg", "num_classes=10", "-o", "r18.yaml"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r18.yaml").read_text(encoding="utf-8")
    assert "supplied: \"r18.init/conv1.npz\"" in text and "num_classes=10" in text
    stored = np.load(tmp_path / "r18.init" / "fc.npz")
    model = _model("torchvision.models:resnet18", num_classes=10)  # the same seed: the same initial values
    assert np.array_equal(stored["weights"], model.fc.weight.detach().numpy().T)
    checked = runner.invoke(app, ["check", "r18.yaml", "--format", "json"])
    report = json.loads(checked.stdout)
    assert report["layers"][0]["init"].startswith("supplied") and checked.exit_code in (0, 1)
    # nothing is overwritten without --force
    again = runner.invoke(app, ["import", "torch", "torchvision.models:resnet18", "--input", "3,32,32", "-o", "r18.yaml"])
    assert again.exit_code == 2 and "exists" in again.output


def test_check_torch_and_check_module_agree_and_scheme_redraws(tmp_path):
    cli = runner.invoke(app, ["check", "--torch", "torchvision.models:resnet18", "--input", "3,64,64",
                              "--format", "json"])
    assert cli.exit_code in (0, 1), cli.output
    import initdiag

    model = _model("torchvision.models:resnet18")
    report = initdiag.check_module(model, torch.randn(8, 3, 64, 64))
    from_cli = json.loads(cli.stdout)
    assert [layer["act_var"] for layer in report.to_dict()["layers"]] == \
        [layer["act_var"] for layer in from_cli["layers"]]
    zeros = initdiag.check_module(model, torch.randn(8, 3, 64, 64), scheme="zeros")
    assert zeros.verdict == "failing" and report.verdict != "failing"


def test_an_op_without_a_spec_equivalent_names_the_module_and_the_op():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GroupNorm(2, 4))

        def forward(self, x):
            return self.body(x)

    with pytest.raises(ImportProblem, match=r"body\.1.*GroupNorm.*no spec equivalent"):
        torch_fx.from_module(Odd(), torch.randn(2, 4), name="odd")

    class Cumulative(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return torch.cumsum(self.fc(x), 1)

    with pytest.raises(ImportProblem, match=r"cumsum: has no spec equivalent"):
        torch_fx.from_module(Cumulative(), torch.randn(2, 4), name="cumulative")


@pytest.mark.parametrize("arguments, message", [
    (["check", "--torch", "torchvision.models:swin_t", "--input", "3,64,64"], "ShiftedWindowAttention"),
    (["check", "--torch", "no_such_package:model", "--input", "3"], "cannot import no_such_package"),
    (["check", "--torch", "torchvision.models:resnet18"], "--input"),
    (["check", "--torch", "torchvision.models", "--input", "3"], "package.module:factory"),
    (["check", "--torch", "torchvision.models:resnet18", "--input", "3,x"], "--input"),
    (["check", "--torch", "torchvision.models:resnet18", "--input", "3,64,64", "--arg", "oops"], "key=value"),
    (["check", "--torch", "torchvision.models:resnet18", "--input", "3,64,64", "--arg", "no_such=1"], "calling it raised"),
    (["check", "--input", "3,64,64", "x.yaml"], "--torch"),
])
def test_bad_torch_inputs_are_one_located_error_and_exit_2(arguments, message):
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_auxiliary_heads_are_left_out_and_the_check_says_which():
    result = runner.invoke(app, ["check", "--torch", "torchvision.models:googlenet", "--input", "3,64,64",
                                 "--arg", "init_weights=true", "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    assert "not analysed: aux1." in result.output and "aux2." in result.output
    import initdiag

    with pytest.warns(UserWarning, match="not analysed: aux1"):
        initdiag.check_module(_model("torchvision.models:googlenet", init_weights=True), torch.randn(4, 3, 64, 64))


def test_check_module_takes_its_batch_from_the_example():
    import initdiag

    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    assert initdiag.check_module(model, torch.randn(12, 6)).to_dict()["batch"] == 12
    assert initdiag.check_module(model, torch.randn(12, 6), batch=5).to_dict()["batch"] == 5
