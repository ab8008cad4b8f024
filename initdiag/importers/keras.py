"""Keras' `model.to_json()` (Keras 2 and 3; Sequential and Functional) written as a spec.

The JSON holds the architecture and each layer's initializers but no weights, so the spec draws them as Keras
would: the kernel, bias and recurrent initializers by name (Keras' defaults when a layer leaves them out:
glorot_uniform kernels, zero biases, orthogonal recurrent kernels, an LSTM's forget-gate bias 1 with
unit_forget_bias), the activations by name. Keras' GlorotNormal, HeNormal, LecunNormal and VarianceScaling draw a
normal truncated at ±2σ and rescaled to the variance (keras/src/initializers/random_initializers.py): the spec
writes them with `truncated: true`. Keras is channels-last and initdiag channels-first: an image (H, W, C) is
written [C, H, W] and a Conv1D's (steps, channels) [channels, steps]; the header says so.

Read for this module: keras-team/keras (Keras 3) keras/src/models/functional.py (`get_config`: layers with
`inbound_nodes` of {"args", "kwargs"} holding `__keras_tensor__`s whose `keras_history` names the layer),
keras/src/layers/*, keras/src/initializers/*; tf-keras 2.x's functional config (`inbound_nodes` as
[[name, node, tensor, kwargs], ...]).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

from initdiag.importers.base import ImportProblem
from initdiag.importers.draft import Draft
from initdiag.importers.jsonfile import emit, parse_shape, read_json, refanned, spec_init

# ------------------------------------------------------------------------------ initializers and activations

KERAS_INITS = {  # class name -> (scheme, its parameters from the config: {config key: (scheme parameter, default)})
    "GlorotUniform": ("xavier_uniform", {}),
    "GlorotNormal": ("xavier", {}),
    "HeUniform": ("relu_uniform", {}),
    "HeNormal": ("relu", {}),
    "LecunUniform": ("lecun_uniform", {}),
    "LecunNormal": ("lecun_normal", {}),
    "Orthogonal": ("orthogonal", {"gain": ("gain", 1.0)}),
    "Zeros": ("zeros", {}),
    "Ones": ("ones", {}),
    "Constant": ("constant", {"value": ("value", 0.0)}),
    "RandomNormal": ("normal", {"mean": ("mean", 0.0), "stddev": ("std", 0.05)}),
    "RandomUniform": ("uniform", {"minval": ("low", -0.05), "maxval": ("high", 0.05)}),
    "TruncatedNormal": ("truncated_normal", {"mean": ("mean", 0.0), "stddev": ("std", 0.05)}),
    "VarianceScaling": ("var_scaling", {}),
    "Identity": ("identity", {}),
}
TRUNCATED = ("GlorotNormal", "HeNormal", "LecunNormal")  # Keras draws these from the rescaled truncated normal
INIT_ALIASES = {"glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal", "he_uniform": "HeUniform",
                "he_normal": "HeNormal", "lecun_uniform": "LecunUniform", "lecun_normal": "LecunNormal",
                "orthogonal": "Orthogonal", "zeros": "Zeros", "zero": "Zeros", "ones": "Ones", "one": "Ones",
                "constant": "Constant", "random_normal": "RandomNormal", "normal": "RandomNormal",
                "random_uniform": "RandomUniform", "uniform": "RandomUniform", "truncated_normal": "TruncatedNormal",
                "variance_scaling": "VarianceScaling", "identity": "Identity"}

# Keras activation name -> the spec's (None: the identity); a tuple: (spec activation, what is approximated)
ACTIVATIONS = {"linear": None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
               "elu": "elu", "selu": "selu", "softplus": "softplus", "softsign": "softsign", "swish": "swish",
               "silu": "swish", "gelu": "gelu", "relu6": "relu6", "mish": "mish", "hard_silu": "hardswish",
               "hard_swish": "hardswish", "leaky_relu": {"leaky_relu": {"alpha": 0.2}}, "hard_sigmoid": "hard_sigmoid"}


class Tensor(NamedTuple):
    source: str        # the spec layer that makes it ("input": the spec's input)
    layout: str        # flat, sequence, tokens, map1d, map2d


class Converter:
    """The import of one model: the file, Keras' version, the layers written so far and the header's notes."""

    def __init__(self, path: Path, version: int):
        self.path, self.version = path, version
        self.layers: list[dict] = []
        self.notes: list[str] = []       # what is approximated
        self.facts: list[str] = []       # what Keras computes otherwise than PyTorch, kept exactly
        self.channels_last = True

    def problem(self, layer: dict, message: str) -> ImportProblem:
        return ImportProblem(f"{self.path}: layer '{_name(layer)}' ({layer.get('class_name')}): {message}")

    # -------------------------------------------------------------------- values
    def init(self, layer: dict, key: str, default: str):
        value = layer.get("config", {}).get(key)
        if value is None:
            value = default
        if isinstance(value, str):
            class_name, config = INIT_ALIASES.get(value, value), {}
        elif isinstance(value, dict) and isinstance(value.get("class_name"), str):
            class_name, config = value["class_name"], value.get("config") or {}
            class_name = INIT_ALIASES.get(class_name, class_name)
        else:
            raise self.problem(layer, f"{key}: expected an initializer (a name or {{class_name, config}}), not {json.dumps(value)}")
        if class_name not in KERAS_INITS:
            raise self.problem(layer, f"{key}: the initializer {class_name} has no equivalent here; known: "
                               + ", ".join(KERAS_INITS))
        scheme, params = KERAS_INITS[class_name]
        if scheme == "var_scaling":
            return self._variance_scaling(layer, key, config)
        if scheme == "identity" and config.get("gain", 1.0) != 1.0:
            raise self.problem(layer, f"{key}: Identity(gain={config['gain']}): the identity scheme has no gain")
        written = {name: config.get(keras_key, default) for keras_key, (name, default) in params.items()}
        written = {name: value for name, value in written.items() if not (name == "gain" and value == 1.0)}
        if class_name in TRUNCATED:
            written["truncated"] = True
        return spec_init(scheme, written)

    def _variance_scaling(self, layer, key, config):
        scale, mode = config.get("scale", 1.0), config.get("mode", "fan_in")
        distribution = config.get("distribution", "truncated_normal")
        if mode not in ("fan_in", "fan_out", "fan_avg") or distribution not in (
                "truncated_normal", "untruncated_normal", "normal", "uniform"):
            raise self.problem(layer, f"{key}: VarianceScaling(mode={mode!r}, distribution={distribution!r}) is not one "
                               "Keras defines")
        family = "uniform" if distribution == "uniform" else "normal"
        params = {"gain": math.sqrt(scale)} if scale != 1.0 else {}
        if distribution in ("truncated_normal", "normal"):  # Keras 2's "normal" is its truncated one
            params["truncated"] = True
        return spec_init(f"var_scaling_{family}_{mode}", params)

    def activation(self, layer: dict, value=None, key: str = "activation"):
        value = layer.get("config", {}).get(key, "linear") if value is None else value
        if value is None:
            return None
        if not isinstance(value, str) or value not in ACTIVATIONS:
            raise self.problem(layer, f"{key}: the activation {json.dumps(value)} has no equivalent here; known: "
                               + ", ".join(ACTIVATIONS))
        if value == "hard_sigmoid" and self.version < 3:
            self.notes.append(f"'{_name(layer)}': Keras 2's hard_sigmoid clip(0.2x + 0.5, 0, 1) is written as "
                              "hard_sigmoid, relu6(x + 3)/6 (Keras 3's and PyTorch's)")
        return ACTIVATIONS[value]


def _name(layer: dict) -> str:
    return str(layer.get("name") or layer.get("config", {}).get("name") or "?")


def _pair(value, ndim: int):
    """An int or a list of ints as the spec writes it: one int when every axis agrees."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * ndim
    return values[0] if len(set(values)) == 1 else values


# ------------------------------------------------------------------------------ the layers


def _weighted(ctx: Converter, layer: dict, kind: dict, kernel_key: str = "kernel_initializer") -> dict:
    """The common keys of a layer with a kernel: activation, init, bias_init, bias."""
    config = layer.get("config", {})
    written = dict(kind)
    activation = ctx.activation(layer)
    if activation is not None:
        written["activation"] = activation
    written["init"] = ctx.init(layer, kernel_key, "glorot_uniform")
    if config.get("use_bias", True):
        bias = ctx.init(layer, "bias_initializer", "zeros")
        if bias not in ("zeros", "zero"):
            written["bias_init"] = _number(bias)
    else:
        written["bias"] = False
    return written


def _number(init):
    """A constant bias as the plain number the spec takes (bias_init: 0.1); any other scheme as it is."""
    if isinstance(init, dict) and "constant" in init:
        return init["constant"]["value"]
    return init


def _require(ctx, layer, tensor: Tensor, *layouts):
    if tensor.layout not in layouts:
        words = {"flat": "a flat vector", "sequence": "a sequence (steps, features)", "tokens": "token ids",
                 "map1d": "a 1-D feature map", "map2d": "an image feature map"}
        raise ctx.problem(layer, f"reads {words[tensor.layout]}; initdiag takes this layer on "
                          + " or ".join(words[layout] for layout in layouts) + " only")


def _data_format(ctx: Converter, layer: dict):
    value = layer.get("config", {}).get("data_format") or "channels_last"
    last = value == "channels_last"
    if getattr(ctx, "_format_seen", None) is not None and ctx._format_seen != last:
        raise ctx.problem(layer, "the model mixes channels_last and channels_first layers")
    ctx._format_seen = last
    ctx.channels_last = last


def _dense(ctx, layer, tensors):
    _require(ctx, layer, tensors[0], "flat", "sequence")
    return [_weighted(ctx, layer, {"dense": layer["config"]["units"]})], tensors[0].layout


def _conv(ctx, layer, tensors, ndim: int):
    _data_format(ctx, layer)
    _require(ctx, layer, tensors[0], "map1d" if ndim == 1 else "map2d")
    config = layer["config"]
    padding = config.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise ctx.problem(layer, f"padding {padding!r} has no equivalent here (valid, same)")
    options = {"filters": config["filters"], "kernel": _pair(config["kernel_size"], ndim)}
    for key, spec_key in (("strides", "stride"), ("dilation_rate", "dilation")):
        value = _pair(config.get(key, 1), ndim)
        if value != 1:
            options[spec_key] = value
    if padding == "same":
        options["padding"] = "same"
    if config.get("groups", 1) != 1:
        options["groups"] = config["groups"]
    return [_weighted(ctx, layer, {f"conv{ndim}d": options})], tensors[0].layout


def _conv_transpose(ctx, layer, tensors):
    _data_format(ctx, layer)
    _require(ctx, layer, tensors[0], "map2d")
    config = layer["config"]
    kernel, stride = _list(config["kernel_size"], 2), _list(config.get("strides", 1), 2)
    dilation = _list(config.get("dilation_rate", 1), 2)
    padding, output_padding = config.get("padding", "valid"), config.get("output_padding")
    crops, extras = [], []
    for axis in range(2):
        k, s = dilation[axis] * (kernel[axis] - 1) + 1, stride[axis]
        if output_padding is not None:  # keras deconv_output_length: (L-1)·s + k - 2·pad + output_padding
            crop, extra = (k // 2 if padding == "same" else 0), _list(output_padding, 2)[axis]
        elif padding == "valid":        # L·s + max(k - s, 0)
            crop, extra = 0, max(s - k, 0)
        else:                           # L·s
            crop = max(math.ceil((k - s) / 2), 0)
            extra = 2 * crop - (k - s)
            if (k - s) % 2:
                ctx.notes.append(f"'{_name(layer)}': padding 'same' with an odd kernel − stride: the cropped border "
                                 "is split as PyTorch does (output size as Keras')")
        crops.append(crop)
        extras.append(extra)
    options = {"filters": config["filters"], "kernel": _pair(kernel, 2)}
    for value, key in ((stride, "stride"), (crops, "padding"), (extras, "output_padding"), (dilation, "dilation")):
        if _pair(value, 2) != (1 if key in ("stride", "dilation") else 0):
            options[key] = _pair(value, 2)
    return [_weighted(ctx, layer, {"conv_transpose2d": options})], "map2d"


def _list(value, ndim: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * ndim


def _pool(ctx, layer, tensors, kind: str):
    _data_format(ctx, layer)
    _require(ctx, layer, tensors[0], "map2d")
    config = layer["config"]
    pool = _list(config.get("pool_size", 2), 2)
    stride = _list(config.get("strides") or pool, 2)
    options = {"kernel": _pair(pool, 2)}
    if stride != pool:
        options["stride"] = _pair(stride, 2)
    if config.get("padding", "valid") == "same":
        if stride != pool or kind != "maxpool2d":
            raise ctx.problem(layer, "padding 'same' is written only for a max pool whose stride is its window "
                              "(a ceil-mode pool); this one has no equivalent here")
        options["ceil_mode"] = True
        ctx.notes.append(f"'{_name(layer)}': padding 'same' is a ceil-mode max pool (a last, partial window; "
                         "TensorFlow may centre the padding differently by one position)")
    return [{kind: options}], "map2d"


def _batchnorm(ctx, layer, tensors):
    config, tensor = layer["config"], tensors[0]
    _require(ctx, layer, tensor, "flat", "map1d", "map2d")
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    rank = {"flat": 1, "map1d": 2, "map2d": 3}[tensor.layout]
    channel_axis = (-1, rank) if ctx.channels_last or tensor.layout == "flat" else (1,)
    if axis not in channel_axis:
        raise ctx.problem(layer, f"axis {axis}: initdiag normalizes per channel (the features of a flat input) only")
    for key in ("gamma_initializer", "beta_initializer"):
        if ctx.init(layer, key, "ones" if key.startswith("gamma") else "zeros") != (
                "ones" if key.startswith("gamma") else "zeros"):
            raise ctx.problem(layer, f"{key}: initdiag's batchnorm starts at gamma 1, beta 0")
    return [{"batchnorm": _eps(config.get("epsilon", 1e-3), 1e-5)}], tensor.layout


def _layernorm(ctx, layer, tensors):
    config, tensor = layer["config"], tensors[0]
    _require(ctx, layer, tensor, "flat", "sequence")
    axis = config.get("axis", -1)
    if axis not in (-1, [-1], 1 if tensor.layout == "flat" else 2, [1 if tensor.layout == "flat" else 2]):
        raise ctx.problem(layer, f"axis {axis}: initdiag normalizes over the last axis only")
    return [{"layernorm": _eps(config.get("epsilon", 1e-3), 1e-5)}], tensor.layout


def _eps(value: float, default: float) -> dict:
    return {} if value == default else {"eps": value}


def _dropout(ctx, layer, tensors):
    return [{"dropout": layer["config"].get("rate", 0.5)}], tensors[0].layout


def _activation_layer(ctx, layer, tensors):
    config, name = layer["config"], layer.get("class_name")
    if name == "Activation":
        activation = ctx.activation(layer)
    elif name == "ReLU":
        maximum, slope, threshold = config.get("max_value"), config.get("negative_slope", 0.0), config.get("threshold", 0.0)
        if threshold:
            raise ctx.problem(layer, f"threshold {threshold}: no equivalent here")
        if maximum is not None and (maximum != 6 or slope):
            raise ctx.problem(layer, f"max_value {maximum} (with negative_slope {slope}): only relu6 has an equivalent")
        activation = "relu6" if maximum is not None else ({"leaky_relu": {"alpha": slope}} if slope else "relu")
    elif name == "LeakyReLU":
        activation = {"leaky_relu": {"alpha": config.get("negative_slope", config.get("alpha", 0.3))}}
    elif name == "ELU":
        activation = {"elu": {"alpha": config.get("alpha", 1.0)}}
    else:  # Softmax
        if config.get("axis", -1) != -1:
            raise ctx.problem(layer, f"axis {config['axis']}: only the last axis has an equivalent")
        activation = "softmax"
    return [{"activation": activation or "identity"}], tensors[0].layout


def _flatten(ctx, layer, tensors):
    tensor = tensors[0]
    if tensor.layout == "flat":
        return [], "flat"
    if tensor.layout == "tokens":
        raise ctx.problem(layer, "flattens token ids; initdiag's embedding must read them")
    if tensor.layout in ("map1d", "map2d") and ctx.channels_last:
        ctx.notes.append(f"'{_name(layer)}': Keras flattens channels-last (positions, then channels), initdiag "
                         "channels-first: the same features in another order (a permutation, invisible at init)")
    return [{"flatten": {}}], "flat"


def _global_pool(ctx, layer, tensors):
    _data_format(ctx, layer)
    if layer["config"].get("keepdims"):
        raise ctx.problem(layer, "keepdims true has no equivalent here")
    _require(ctx, layer, tensors[0], "map2d" if layer["class_name"].endswith("2D") else "sequence", "map1d")
    return [{"global_avgpool": {}}], "flat"


def _embedding(ctx, layer, tensors):
    config = layer["config"]
    if tensors[0].source != "input" or ctx.layers:
        raise ctx.problem(layer, "an embedding must read the model's input (token ids), first")
    vocab, dim = config["input_dim"], config["output_dim"]
    init = ctx.init(layer, "embeddings_initializer", "uniform")
    keras_fans, our_fans = (vocab, dim), (dim, vocab)
    adjusted = refanned(init, our_fans, keras_fans)
    if adjusted != init:
        ctx.facts.append(f"'{_name(layer)}': Keras computes the table's fans as fan_in = input_dim, fan_out = "
                         "output_dim (PyTorch's are the other way round): the gain makes the spec draw Keras' variance")
    if config.get("mask_zero"):
        ctx.notes.append(f"'{_name(layer)}': mask_zero is left out (every token counts)")
    return [{"embedding": {"vocab": vocab, "dim": dim}, "init": adjusted}], "sequence"


def _recurrent(ctx, layer, tensors):
    config, class_name = layer["config"], layer["class_name"]
    _require(ctx, layer, tensors[0], "sequence")
    kind = {"SimpleRNN": "rnn", "LSTM": "lstm", "GRU": "gru"}[class_name]
    for key in ("return_state", "stateful", "go_backwards"):
        if config.get(key):
            raise ctx.problem(layer, f"{key} true has no equivalent here")
    options = {"units": config["units"], "return_sequences": bool(config.get("return_sequences", False))}
    activation = config.get("activation", "tanh")
    if kind == "rnn":
        if activation not in ("tanh", "relu", "sigmoid", "linear"):
            raise ctx.problem(layer, f"activation {activation!r}: the cell takes tanh, relu, sigmoid or linear")
        if activation != "tanh":
            options["activation"] = ctx.activation(layer) or "identity"
    elif activation != "tanh" or config.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise ctx.problem(layer, f"activation {activation!r} and recurrent_activation "
                          f"{config.get('recurrent_activation')!r}: initdiag's {kind} is tanh with sigmoid gates")
    if kind == "lstm":
        options["forget_bias"] = 1.0 if config.get("unit_forget_bias", True) else 0.0
    if kind == "gru" and not config.get("reset_after", True):
        ctx.notes.append(f"'{_name(layer)}': reset_after false (the reset gate before the recurrent product) is "
                         "written as PyTorch's GRU (after it)")
    if config.get("dropout") or config.get("recurrent_dropout"):
        ctx.notes.append(f"'{_name(layer)}': dropout and recurrent_dropout are left out")
    written = {kind: options, "init": ctx.init(layer, "kernel_initializer", "glorot_uniform"),
               "recurrent_init": ctx.init(layer, "recurrent_initializer", "orthogonal")}
    if config.get("use_bias", True):
        bias = ctx.init(layer, "bias_initializer", "zeros")
        if bias not in ("zeros", "zero"):
            written["bias_init"] = _number(bias)
            if kind == "lstm" and options["forget_bias"] and isinstance(written["bias_init"], (int, float)):
                options["forget_bias"] -= written["bias_init"]  # Keras sets the forget gate's bias to 1
            elif kind == "lstm" and options["forget_bias"]:
                ctx.notes.append(f"'{_name(layer)}': unit_forget_bias sets the forget gate's bias to 1 in Keras; "
                                 "the spec adds 1 to the drawn bias there")
    else:
        raise ctx.problem(layer, "use_bias false: initdiag's recurrent layers have a bias")
    return [written], "sequence" if options["return_sequences"] else "flat"


def _merge(ctx, layer, tensors):
    class_name, config = layer["class_name"], layer["config"]
    if len(tensors) < 2:
        raise ctx.problem(layer, "a merge needs two or more inputs")
    layouts = {tensor.layout for tensor in tensors}
    if class_name == "Concatenate":
        layout = tensors[0].layout
        rank = {"flat": 1, "sequence": 2, "map1d": 2, "map2d": 3}.get(layout, 0)
        channel = (-1, rank) if ctx.channels_last or layout in ("flat", "sequence") else (1,)
        if config.get("axis", -1) not in channel:
            raise ctx.problem(layer, f"axis {config.get('axis')}: initdiag joins along the channels (features) only")
        return [{"concat": {}}], layout
    if len(layouts) != 1 and class_name != "Multiply":
        raise ctx.problem(layer, "its inputs are laid out differently")
    written = {"Add": {"add": {}}, "Multiply": {"multiply": {}},
               "Subtract": {"add": {"scales": [1, -1]}},
               "Average": {"add": {"scales": [1 / len(tensors)] * len(tensors)}}}[class_name]
    return [written], tensors[0].layout


CONVERTERS = {
    "Dense": _dense,
    "Conv1D": lambda ctx, layer, tensors: _conv(ctx, layer, tensors, 1),
    "Conv2D": lambda ctx, layer, tensors: _conv(ctx, layer, tensors, 2),
    "Conv2DTranspose": _conv_transpose,
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "Dropout": _dropout,
    "Activation": _activation_layer, "ReLU": _activation_layer, "LeakyReLU": _activation_layer,
    "ELU": _activation_layer, "Softmax": _activation_layer,
    "Flatten": _flatten,
    "MaxPooling2D": lambda ctx, layer, tensors: _pool(ctx, layer, tensors, "maxpool2d"),
    "AveragePooling2D": lambda ctx, layer, tensors: _pool(ctx, layer, tensors, "avgpool2d"),
    "GlobalAveragePooling2D": _global_pool, "GlobalAveragePooling1D": _global_pool,
    "Embedding": _embedding,
    "SimpleRNN": _recurrent, "LSTM": _recurrent, "GRU": _recurrent,
    "Add": _merge, "Concatenate": _merge, "Multiply": _merge, "Subtract": _merge, "Average": _merge,
}
ALIASES = {"Convolution1D": "Conv1D", "Convolution2D": "Conv2D", "Conv2DTranspose": "Conv2DTranspose",
           "Convolution2DTranspose": "Conv2DTranspose", "MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D",
           "GlobalAvgPool2D": "GlobalAveragePooling2D", "GlobalAvgPool1D": "GlobalAveragePooling1D"}


# ------------------------------------------------------------------------------ the model's graph


def _model(path: Path, data: dict):
    """(version, class name, model name, layer entries, {layer name: [source names]} or None for Sequential,
    output layer name or None)."""
    class_name = data.get("class_name")
    if class_name not in ("Sequential", "Functional", "Model"):
        raise ImportProblem(f"{path}: class_name {json.dumps(class_name)}: expected a Keras model's to_json() "
                            "(Sequential or Functional)")
    config = data.get("config")
    layers = config if isinstance(config, list) else (config or {}).get("layers")
    if not isinstance(layers, list) or not layers:
        raise ImportProblem(f"{path}: config.layers: expected the model's list of layers")
    for position, entry in enumerate(layers):
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or not isinstance(entry.get("config"), dict):
            raise ImportProblem(f"{path}: config.layers[{position}]: expected {{class_name, config}}")
    version = 3 if ("module" in data or "registered_name" in data or "batch_shape" in json.dumps(layers[0])) else 2
    name = (config or {}).get("name") if isinstance(config, dict) else None
    if class_name == "Sequential":
        return version, class_name, name, layers, None, None
    sources = {_name(entry): _inbound(path, entry) for entry in layers}
    outputs = _endpoints(config.get("output_layers"))
    if len(outputs) != 1:
        raise ImportProblem(f"{path}: output_layers: {len(outputs)} outputs; a spec has exactly one")
    inputs = _endpoints(config.get("input_layers"))
    if len(inputs) != 1:
        raise ImportProblem(f"{path}: input_layers: {len(inputs)} inputs; a spec has exactly one")
    return version, class_name, name, _topological(path, layers, sources), sources, outputs[0]


def _endpoints(value) -> list:
    """Keras' input_layers/output_layers: [[name, node, tensor], ...] (or Keras 3's one [name, node, tensor])."""
    if not isinstance(value, list):
        return []
    if value and isinstance(value[0], str):
        return [value[0]]
    return [item[0] for item in value if isinstance(item, list) and item and isinstance(item[0], str)]


def _inbound(path: Path, entry: dict) -> list:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ImportProblem(f"{path}: layer '{_name(entry)}' ({entry['class_name']}): called {len(nodes)} times "
                            "(a shared layer); a spec layer has one set of inputs")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}} holding __keras_tensor__s
        return _histories(node.get("args", [])) + _histories(node.get("kwargs", {}))
    return [item[0] for item in node if isinstance(item, list) and item and isinstance(item[0], str)]  # Keras 2


def _histories(value) -> list:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value.get("config", {}).get("keras_history", ["?"])[0]]
        return [name for item in value.values() for name in _histories(item)]
    if isinstance(value, list):
        return [name for item in value for name in _histories(item)]
    return []


def _topological(path: Path, layers: list, sources: dict) -> list:
    """The layers in an order where each comes after its sources (Keras writes them so; kept when it does)."""
    placed, order, pending = set(), [], list(layers)
    while pending:
        for entry in pending:
            if all(source in placed for source in sources[_name(entry)]):
                order.append(entry)
                placed.add(_name(entry))
                pending.remove(entry)
                break
        else:
            missing = {s for e in pending for s in sources[_name(e)] if s not in placed and s not in sources}
            what = f"unknown layers {sorted(missing)}" if missing else "a cycle"
            raise ImportProblem(f"{path}: the layers' inbound_nodes name {what}")
    return order


# ------------------------------------------------------------------------------ the input


def _declared_shape(data: dict, layers: list):
    """The model's input shape without the batch (None entries where it is open), or None if it says none."""
    for entry in layers[:1]:
        config = entry["config"]
        for key in ("batch_shape", "batch_input_shape"):
            if isinstance(config.get(key), list):
                return tuple(config[key][1:])
        build = entry.get("build_config", {}).get("input_shape")
        if isinstance(build, list):
            return tuple(build[1:])
    config = data.get("config")
    if isinstance(config, dict) and isinstance(config.get("build_input_shape"), list):
        return tuple(config["build_input_shape"][1:])
    return None


def _input_layout(layers: list, sources: dict | None, shape: tuple) -> str:
    """How the spec lays out the Keras input: flat, tokens (an embedding reads it), map2d, or, for a 2-D input,
    map1d (a Conv1D reads it) or sequence."""
    first = next((entry for entry in layers if entry["class_name"] != "InputLayer"), None)
    if sources is not None:
        inputs = {_name(entry) for entry in layers if entry["class_name"] == "InputLayer"}
        first = next((entry for entry in layers if set(sources[_name(entry)]) & inputs), first)
    reader = ALIASES.get(first["class_name"], first["class_name"]) if first else None
    if reader == "Embedding":
        return "tokens"
    if len(shape) == 1:
        return "flat"
    if len(shape) == 3:
        return "map2d"
    return "map1d" if reader in ("Conv1D", "BatchNormalization") else "sequence"


def _spec_shape(shape: tuple, layout: str, channels_last: bool) -> list:
    if layout in ("map1d", "map2d") and channels_last:
        return [shape[-1], *shape[:-1]]
    return list(shape)


# ------------------------------------------------------------------------------ the import


def import_keras(path, *, input: str | None = None, batch: int | None = None) -> Draft:
    """The spec for the Keras model whose `to_json()` is in the file at `path`. `input` ("28,28,1", Keras' own
    channels-last order, without the batch) fills an input shape the model leaves open; `batch` sets the batch.
    Raises ImportProblem (located) on anything without an equivalent."""
    path = Path(path)
    data = read_json(path, "a Keras model's to_json()")
    version, class_name, model_name, layers, sources, output = _model(path, data)
    declared, given = _declared_shape(data, layers), parse_shape(input)
    if declared is not None and None not in declared and given is not None and tuple(given) != declared:
        raise ImportProblem(f"--input {input}: the model's input is {list(declared)} (channels-last, as Keras writes it)")
    shape = declared if declared is not None and None not in declared else given
    if shape is None:
        open_shape = f" ({list(declared)})" if declared else ""
        raise ImportProblem(f"{path}: the model leaves its input shape open{open_shape}; give it with --input, in "
                            "Keras' order without the batch (e.g. --input 28,28,1)")
    if declared is not None and given is not None and len(given) != len(declared):
        raise ImportProblem(f"--input {input}: the model's input has {len(declared)} axes ({list(declared)})")
    formats = {entry["config"].get("data_format") for entry in layers} - {None}
    ctx = Converter(path, version)
    ctx.channels_last = formats != {"channels_first"}
    layout = _input_layout(layers, sources, shape)
    tensors: dict[str, Tensor] = {}
    previous = Tensor("input", layout)
    for entry in layers:
        name, keras_class = _name(entry), ALIASES.get(entry["class_name"], entry["class_name"])
        if keras_class == "InputLayer":
            tensors[name] = previous = Tensor("input", layout)
            continue
        if keras_class not in CONVERTERS:
            raise ImportProblem(f"{path}: layer '{name}' ({entry['class_name']}) has no spec equivalent; supported: "
                                + ", ".join(sorted(CONVERTERS)))
        inbound = [previous] if sources is None else [tensors[source] for source in sources[name] if source in tensors]
        if not inbound:
            raise ImportProblem(f"{path}: layer '{name}' ({entry['class_name']}) reads no layer of the model")
        entry = {**entry, "class_name": keras_class, "name": name}
        written, out_layout = CONVERTERS[keras_class](ctx, entry, inbound)
        if not written:  # a no-op here (Flatten of a flat vector): the layer stands for its input
            tensors[name] = previous = inbound[0]
            continue
        emit(ctx.layers, written, name, [tensor.source for tensor in inbound])
        tensors[name] = previous = Tensor(name, out_layout)
    if output is not None and (not ctx.layers or tensors[output].source != ctx.layers[-1]["name"]):
        raise ImportProblem(f"{path}: the output layer '{output}' must come last; a layer after it is not read by it")
    return _draft(path, data, ctx, version, class_name, model_name, shape, layout, batch)


def _draft(path, data, ctx: Converter, version, class_name, model_name, shape, layout, batch) -> Draft:
    draft = Draft(model_name or path.stem)
    spec_shape = _spec_shape(shape, layout, ctx.channels_last)
    keras = f"Keras {data.get('keras_version', version)}"
    draft.header = [f"Keras {class_name} '{model_name or path.stem}' ({keras} to_json), imported by `initdiag import "
                    f"keras` from {path}; a JSON config holds no weights: every parameter is drawn by its initializer."]
    if layout in ("map1d", "map2d") and ctx.channels_last:
        draft.header.append(f"Shapes: Keras is channels-last, initdiag channels-first: the input {list(shape)} is "
                            f"written {spec_shape}.")
    draft.header.append("Init as Keras draws it: kernel_initializer → init, recurrent_initializer → recurrent_init, "
                        "bias_initializer → bias_init (Keras' defaults where the file leaves them out: glorot_uniform "
                        "= xavier_uniform, zeros, orthogonal; an LSTM's unit_forget_bias is forget_bias 1); "
                        "GlorotNormal, HeNormal, LecunNormal and VarianceScaling draw a normal truncated at 2σ and "
                        "rescaled to the variance: truncated: true.")
    if ctx.facts:
        draft.header.append("Fans: " + "; ".join(dict.fromkeys(ctx.facts)) + ".")
    draft.header.append("Approximated: " + ("; ".join(dict.fromkeys(ctx.notes)) if ctx.notes else "nothing") + ".")
    draft.keys["input"] = spec_shape
    if layout == "tokens":
        draft.keys["input_distribution"] = "tokens"
    if batch or layout != "flat":
        draft.keys["batch"] = batch or 32
    draft.keys["defaults"] = {"init": "xavier_uniform"}
    for layer in ctx.layers:
        draft.add(layer)
    return draft
