"""PyTorch CPU doing initdiag's job on a parsed spec: the same network built in torch (its default init), one
forward pass, the loss initdiag would use, the backward pass, and per layer the mean and variance of the output,
the pre-activation, the output gradient, every parameter and parameter gradient, and the dead fraction after a
ReLU. Transformer blocks are tests/torch_samples.py's (the module the torch comparison tests check against).
Imported only where torch is installed."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import torch_samples  # noqa: E402


def _torch_activation(name: str, params: dict):
    if name == "relu":
        return F.relu
    if name == "tanh":
        return lambda z: z.tanh()
    if name == "sigmoid":
        return lambda z: z.sigmoid()
    if name == "gelu":
        return lambda z: F.gelu(z, approximate=params.get("approximate", "none"))
    if name in ("identity", "linear", "softmax"):  # softmax: the loss takes the logits
        return None
    raise NotImplementedError(f"activation {name}")


def _padding(config, kernel):
    padding = config.get("padding", 0)
    if padding == "same":
        return "same"
    if padding == "valid":
        return 0
    return tuple(padding) if isinstance(padding, (list, tuple)) else padding


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Tied(nn.Module):
    """x @ table.T: a dense layer tied to an embedding's table (registered once, by the embedding)."""

    def __init__(self, table):
        super().__init__()
        self.table = [table]

    def forward(self, x):
        return x @ self.table[0].weight.T


class _Position(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(*shape) * 0.02)

    def forward(self, x):
        return x + self.weight


class _LSTM(nn.Module):
    def __init__(self, features, units, sequences):
        super().__init__()
        self.lstm, self.sequences = nn.LSTM(features, units, batch_first=True), sequences

    def forward(self, x):
        y, _ = self.lstm(x)
        return y if self.sequences else y[:, -1]


class _Residual(nn.Module):
    """y = shortcut(skip) + scale · x, the shortcut the identity or a 1x1 conv / dense projection."""

    def __init__(self, config, layer):
        super().__init__()
        self.scale, self.project = config["scale"], None
        if config.get("shortcut") == "conv":
            self.project = nn.Conv2d(layer.input_shape[0], layer.units, 1, config["stride"], bias=False)
        elif config.get("shortcut") == "dense":
            self.project = nn.Linear(layer.fan_in, layer.units, bias=False)

    def forward(self, x, skip):
        return (skip if self.project is None else self.project(skip)) + self.scale * x


class _Layer(NamedTuple):
    spec: object
    module: object  # an nn.Module, or a callable without parameters
    activation: object


def torch_layers(net_spec):
    """One torch module per spec layer (in a ModuleList, so the parameters are registered). The kinds the
    benchmark samples use; others raise NotImplementedError (then the torch column says n/a)."""
    modules, plan = nn.ModuleList(), []
    by_name = {}
    for layer in net_spec.layers:
        kind, config = layer.kind, layer.config
        act = _torch_activation(layer.activation.name, dict(layer.activation.params))
        if kind == "dense":
            if layer.tie is not None:
                table = by_name[layer.tie.layer]
                module = _Tied(table)
            else:
                module = nn.Linear(layer.fan_in, layer.units, bias=layer.bias)
        elif kind == "conv2d":
            kernel = config["kernel"]
            module = nn.Conv2d(layer.input_shape[0], layer.units, kernel, config["stride"], _padding(config, kernel),
                               config["dilation"], config["groups"], bias=layer.bias)
        elif kind in ("avgpool2d", "maxpool2d"):
            cls = nn.AvgPool2d if kind == "avgpool2d" else nn.MaxPool2d
            module = cls(config["kernel"], config["stride"], config["padding"], ceil_mode=config["ceil_mode"])
        elif kind == "global_avgpool":
            module = _Lambda(lambda x: x.mean(dim=tuple(range(2, x.dim()))))
        elif kind == "flatten":
            module = nn.Flatten()
        elif kind == "layernorm":
            module = nn.LayerNorm(layer.units, eps=config["eps"])
        elif kind == "embedding":
            module = nn.Embedding(config["vocab"], config["dim"])
        elif kind == "position_embedding":
            module = _Position(layer.input_shape)
        elif kind == "transformer":
            plain = config.get("ffn_kind", "mlp") == "mlp" and config.get("norm_kind", "layernorm") == "layernorm"
            if config.get("norm", "pre") != "pre" or not plain or config.get("rotary") or config.get("kv_heads"):
                raise NotImplementedError("a transformer block other than pre-norm LayerNorm, MLP, full heads")
            gelu = _torch_activation(layer.activation.name, dict(layer.activation.params))
            module = torch_samples.Block(config["dim"], config["heads"], config["ffn"], bias=config["bias"],
                                         eps=config["eps"], activation=gelu, causal=config["causal"])
            act = None
        elif kind == "lstm":
            module = _LSTM(layer.fan_in, layer.units, config["return_sequences"])
        elif kind == "residual":
            module = _Residual(config, layer)
        else:
            raise NotImplementedError(f"layer kind {kind}")
        if not isinstance(module, nn.Module):
            raise TypeError(kind)
        modules.append(module)
        by_name[layer.name] = module
        plan.append(_Layer(layer, module, act))
    return modules, plan


def job(net_spec) -> int:
    """Build, forward, loss, backward and the statistics; returns how many numbers it computed."""
    modules, plan = torch_layers(net_spec)
    batch = net_spec.batch
    if net_spec.input_distribution == "tokens":
        vocab = net_spec.layers[0].config["vocab"]
        x = torch.randint(0, vocab, (batch,) + tuple(net_spec.input_shape))
    else:
        x = torch.randn((batch,) + tuple(net_spec.input_shape))
    outputs, pre = [], {}
    for i, (layer, module, act) in enumerate(plan):
        reads = [outputs[j] if j >= 0 else x for j in (layer.inputs or ((i - 1),))]
        y = module(*reads)
        if act is not None:
            pre[i] = y
            y = act(y)
        y.retain_grad()
        outputs.append(y)
    logits = outputs[-1]
    if plan[-1].spec.activation.name == "softmax" or net_spec.loss == "cross_entropy":
        labels = torch.randint(0, logits.shape[-1], logits.shape[:-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    else:
        loss = F.mse_loss(logits, torch.randn_like(logits))
    loss.backward()
    numbers = []
    with torch.no_grad():
        for i, (layer, module, act) in enumerate(plan):
            y = outputs[i]
            tensors = [y, y.grad] + ([pre[i]] if i in pre else [])
            for parameter in module.parameters():
                tensors += [parameter, parameter.grad]
            for t in tensors:
                if t is not None and t.is_floating_point():
                    var, mean = torch.var_mean(t)
                    numbers += [float(var), float(mean)]
            if layer.activation.name == "relu":
                alive = (y > 0).reshape(batch, -1).any(dim=0)
                numbers.append(1.0 - float(alive.float().mean()))
    return len(numbers)


def time_job(net_spec) -> float:
    start = time.perf_counter()
    job(net_spec)
    return time.perf_counter() - start
