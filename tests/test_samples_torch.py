"""The architecture samples (ResNet-18, MobileNetV2, a U-Net, an Inception start, ViT-Tiny, GPT-2 small and a
Llama-like decoder) against PyTorch running the same network with the same initial values.

For each sample: the torch module of tests/torch_samples.py (the spec's layer names are its module names) is
built with torch's own init; its parameters are written as the spec's supplied arrays (`supplied: NAME.npz`
on every layer with parameters, in initdiag's layout); the spec runs on float64 and torch on the batch and
targets initdiag drew; every spec layer that names a torch module must give that module's output and the
gradient of the loss at it, to a relative error under 1e-6 (float64 rounding through the whole depth).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import passes, relative_error, torch_loss
from initdiag import spec, yamlsource
from initdiag.layers import conv as conv_layers

torch = pytest.importorskip("torch")
import torch_samples  # noqa: E402  (needs torch)

SAMPLES = Path(__file__).resolve().parent.parent / "sample_specs"
TOLERANCE = 1e-6  # relative (Frobenius) error per layer, float64


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().to(torch.float64).numpy()


def _linear(prefix: str, module) -> dict:
    arrays = {f"{prefix}weights": _numpy(module.weight).T}
    if module.bias is not None:
        arrays[f"{prefix}bias"] = _numpy(module.bias)
    return arrays


def _norm(prefix: str, module) -> dict:
    arrays = {f"{prefix}gamma": _numpy(module.weight)}
    if getattr(module, "bias", None) is not None:
        arrays[f"{prefix}beta"] = _numpy(module.bias)
    return arrays


def _transformer(block) -> dict:
    arrays = {}
    for name in ("query", "key", "value", "output"):
        arrays.update(_linear(f"attention.{name}_", getattr(block.attention, name)))
    for name in ("in", "gate", "out"):
        if hasattr(block.ffn, name):
            arrays.update(_linear(f"ffn.{name}_", getattr(block.ffn, name)))
    arrays.update(_norm("norm1.", block.norm1))
    arrays.update(_norm("norm2.", block.norm2))
    return arrays


def _conv(module) -> dict:
    arrays = {"weights": conv_layers.from_torch_layout(_numpy(module.weight))}
    if module.bias is not None:
        arrays["bias"] = _numpy(module.bias)
    return arrays


def _conv_transpose(module) -> dict:
    from initdiag.layers import upsampling

    arrays = {"weights": upsampling.from_torch_layout(_numpy(module.weight), module.groups)}
    if module.bias is not None:
        arrays["bias"] = _numpy(module.bias)
    return arrays


# initdiag's parameters of a spec layer, from the torch module (or parameter) of the same name
EXPORT = {
    "dense": lambda m: _linear("", m), "conv1d": _conv, "conv2d": _conv, "patchify": _conv,
    "conv_transpose1d": _conv_transpose, "conv_transpose2d": _conv_transpose,
    "batchnorm": lambda m: _norm("", m), "layernorm": lambda m: _norm("", m), "rmsnorm": lambda m: _norm("", m),
    "embedding": lambda m: {"weights": _numpy(m.weight)}, "transformer": _transformer,
    "position_embedding": lambda p: {"weights": _numpy(p).reshape(-1, p.shape[-1])},
    "class_token": lambda p: {"token": _numpy(p).reshape(-1)},
}


def _layer_mappings(layers: list):
    """Every layer mapping of a spec's list, nested ones included (residual inner layers, shortcut lists)."""
    for raw in layers:
        if "residual" in raw:
            yield from _layer_mappings(raw["residual"])
            if isinstance(raw.get("shortcut"), list):
                yield from _layer_mappings(raw["shortcut"])
        yield raw


def _kind(raw: dict) -> str | None:
    from initdiag.layers import lookup

    for key in raw:
        try:
            return lookup(key)
        except ValueError:
            continue
    return "activation" if "activation" in raw else None


def _find(model, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return getattr(model, name, None)  # a bare Parameter: cls_token, pos_embed, wpe


def _supplied_spec(sample: str, model, folder: Path) -> spec.NetworkSpec:
    """The sample in float64 with every parameter supplied from `model` (dropout switched off in both)."""
    data = yaml.safe_load((SAMPLES / sample).read_text(encoding="utf-8"))
    data["dtype"] = "float64"
    supplied = 0
    for raw in _layer_mappings(data["layers"]):
        kind = _kind(raw)
        if kind == "dropout":
            raw["dropout"] = {"p": raw["dropout"] if not isinstance(raw["dropout"], dict) else raw["dropout"]["p"], "eval": True}
        if kind not in EXPORT or "tie" in raw:
            continue
        target = _find(model, raw["name"])
        assert target is not None, f"{sample}: the torch model has no '{raw['name']}'"
        arrays = EXPORT[kind](target)
        path = folder / f"{raw['name']}.npz"
        np.savez(path, **arrays)
        raw["supplied"] = path.name
        raw.pop("inits", None)  # the file gives those parameters too
        supplied += 1
    assert supplied, f"{sample}: no layer was supplied"
    text = json.dumps(data)
    (folder / sample).write_text(text, encoding="utf-8")
    return spec.parse(yamlsource.loads(text, sample), base_dir=folder, default_name=Path(sample).stem)


def _initdiag(parsed):
    """Per layer name: (output, dLoss/d output); and the batch and targets drawn."""
    run = passes(parsed, max_memory=64 * 1024**3)
    named = {layer.name: (run.outputs[i], run.gradients[i]) for i, layer in enumerate(parsed.layers)}
    return named, run.built.inputs, run.targets


def _torch_run(model, inputs, targets, loss_name: str, names: list) -> dict:
    captured = {}

    def hook(name):
        def keep(module, args, output):
            if name not in captured and isinstance(output, torch.Tensor):
                output.retain_grad()
                captured[name] = output
        return keep

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name in names]
    x = torch.tensor(inputs) if inputs.dtype.kind in "iu" else torch.tensor(inputs, dtype=torch.float64)
    logits = model(x)
    logits.retain_grad()
    captured["__output__"] = logits
    torch_loss(logits, targets, loss_name).backward()
    for handle in handles:
        handle.remove()
    return captured


def _as_ours(tensor, shape) -> np.ndarray:
    """A torch activation in initdiag's per-sample shape (a patch embedding's (dim, h, w) map is (steps, dim))."""
    array = _numpy(tensor)
    if array.shape[1:] != tuple(shape) and array.ndim == 4 and len(shape) == 2:
        array = array.reshape(array.shape[0], array.shape[1], -1).transpose(0, 2, 1)
    elif array.shape[1:] != tuple(shape) and array[0].size == np.prod(shape):  # AdaptiveAvgPool2d's (C, 1, 1)
        array = array.reshape((array.shape[0],) + tuple(shape))
    return array


@pytest.mark.parametrize("sample", sorted(torch_samples.MODELS))
def test_each_architecture_sample_matches_pytorch_layer_by_layer(sample, tmp_path):
    torch.manual_seed(0)
    model = torch_samples.MODELS[sample]().to(torch.float64)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    parsed = _supplied_spec(sample, model, tmp_path)
    ours, inputs, targets = _initdiag(parsed)
    names = [layer.name for layer in parsed.layers]
    theirs = _torch_run(model, inputs, targets, parsed.loss, names)
    compared, problems = 0, []
    for layer in parsed.layers:
        name = layer.name if layer.name in theirs else ("__output__" if layer is parsed.layers[-1] else None)
        if name is None:
            continue
        output, gradient = ours[layer.name]
        tensor = theirs[name]
        forward = relative_error(output, _as_ours(tensor, layer.output_shape))
        backward = relative_error(gradient, _as_ours(tensor.grad, layer.output_shape)) if tensor.grad is not None else 0.0
        if not (forward < TOLERANCE and backward < TOLERANCE):
            problems.append(f"{layer.name}: output off by {forward:.2e}, gradient by {backward:.2e}")
        compared += 1
    assert not problems, f"{sample}: " + "; ".join(problems)
    assert compared >= len(parsed.layers) // 2, f"{sample}: only {compared} of {len(parsed.layers)} layers compared"
