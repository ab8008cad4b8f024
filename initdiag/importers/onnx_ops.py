"""What each ONNX op becomes in the spec: one handler per op_type, `handler(graph, node)`, which appends a layer
(graph.emit), folds the node into the layer above (an activation, a MatMul's bias Add) or makes its output another
name for its input (graph.alias); anything it cannot write exactly it refuses (graph.refuse), naming the node.
onnx_graph.py walks the graph and calls them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from initdiag.importers.onnx_graph import _Graph

PARAMETRIC = ("dense", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
TORCH_SELU = (1.6732632423543772, 1.0507009873554805)  # ONNX's defaults are torch's, to float32


def _short(value: float) -> float:
    """A float32 attribute as the decimal it was written as (9.999999747e-06 -> 1e-05)."""
    return float(f"{float(value):.7g}")


# ---------------------------------------------------------------------------------- convolutions and dense


def _spatial(node, graph: _Graph, attrs: dict, ndim: int) -> dict:
    """stride / padding / dilation of a Conv, ConvTranspose or pool, written compactly; asymmetric pads refused."""
    strides = list(attrs.get("strides", [1] * ndim))
    dilations = list(attrs.get("dilations", [1] * ndim))
    pads = list(attrs.get("pads", [0] * 2 * ndim))
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        kernel = attrs.get("kernel_shape")
        totals = [(k - 1) * d for k, d in zip(kernel, dilations)] if kernel else None
        if totals is None or any(s != 1 for s in strides) or any(t % 2 for t in totals):
            graph.refuse(node, f"auto_pad {auto} pads unevenly here; export with explicit symmetric pads")
        pads = [t // 2 for t in totals] * 2
    elif auto not in ("NOTSET", "VALID"):
        graph.refuse(node, f"auto_pad {auto} is not supported")
    if pads[:ndim] != pads[ndim:]:
        graph.refuse(node, f"pads {pads} are asymmetric (begin {pads[:ndim]}, end {pads[ndim:]}); a spec pads both "
                     "sides alike")
    return {"stride": _compact(strides), "padding": _compact(pads[:ndim]), "dilation": _compact(dilations)}


UNSET = {"stride": 1, "padding": 0, "dilation": 1}  # what a conv writes only when the node sets something else


def _bias(bias) -> dict:
    return {"bias": bias} if bias is not None else {}


def _compact(values: list):
    values = [int(v) for v in values]
    return values[0] if len(set(values)) == 1 else values


def _conv(graph: _Graph, node):
    attrs = graph.attrs(node)
    source = graph.one_input(node)
    weight = graph.const(node.input[1])
    if weight is None:
        graph.refuse(node, "has a computed kernel; only initializer kernels are supported")
    bias = graph.const(node.input[2]) if len(node.input) > 2 else None
    groups = int(attrs.get("group", 1))
    ndim = weight.ndim - 2
    if graph.squeezed(source) and all(k == 1 for k in weight.shape[2:]) and groups == 1:
        graph.conv_biases.append(bias is not None)  # a 1x1 conv on a pooled [C]: a dense layer (squeeze-excitation)
        arrays = {"weights": weight.reshape(weight.shape[0], -1).T.copy(), **_bias(bias)}
        config = {"dense": int(weight.shape[0])}
        if bias is None:
            config["bias"] = False
        graph.emit(node, config, [source], arrays, weight=node.input[1], squeezed=True)
        return
    if graph.squeezed(source):
        graph.refuse(node, "convolves a globally pooled [C, 1, 1] map with more than a 1x1 ungrouped kernel")
    if ndim not in (1, 2):
        graph.refuse(node, f"is a {ndim}-D convolution; conv1d and conv2d are supported")
    from initdiag.layers.conv import from_torch_layout

    geometry = _spatial(node, graph, {"kernel_shape": list(weight.shape[2:]), **attrs}, ndim)
    config = {"filters": int(weight.shape[0]), "kernel": _compact(weight.shape[2:])}
    config.update({key: value for key, value in geometry.items() if value != UNSET[key]})
    if groups != 1:
        config["groups"] = groups
    if bias is None:
        config["bias"] = False
    graph.conv_biases.append(bias is not None)
    arrays = {"weights": from_torch_layout(weight), **_bias(bias)}
    graph.emit(node, {f"conv{ndim}d": config}, [source], arrays, weight=node.input[1])


def _conv_transpose(graph: _Graph, node):
    attrs = graph.attrs(node)
    source = graph.one_input(node)
    weight = graph.const(node.input[1])
    if weight is None:
        graph.refuse(node, "has a computed kernel; only initializer kernels are supported")
    if "output_shape" in attrs:
        graph.refuse(node, "sets output_shape; export with pads and output_padding instead")
    bias = graph.const(node.input[2]) if len(node.input) > 2 else None
    groups, ndim = int(attrs.get("group", 1)), weight.ndim - 2
    if ndim not in (1, 2):
        graph.refuse(node, f"is a {ndim}-D transposed convolution; 1-D and 2-D are supported")
    from initdiag.layers.upsampling import from_torch_layout

    geometry = _spatial(node, graph, {"kernel_shape": list(weight.shape[2:]), **attrs}, ndim)
    config = {"filters": int(weight.shape[1]) * groups, "kernel": _compact(weight.shape[2:])}
    config.update({key: value for key, value in geometry.items() if value != UNSET[key]})
    output_padding = _compact(attrs.get("output_padding", [0] * ndim))
    if output_padding != 0:
        config["output_padding"] = output_padding
    if groups != 1:
        config["groups"] = groups
    if bias is None:
        config["bias"] = False
    arrays = {"weights": from_torch_layout(weight, groups), **_bias(bias)}
    graph.emit(node, {f"conv_transpose{ndim}d": config}, [source], arrays, weight=node.input[1])


def _dense(graph: _Graph, node, source: str, matrix: np.ndarray, bias, weight_name: str, output=None):
    if matrix.ndim != 2:
        graph.refuse(node, f"multiplies by a {matrix.ndim}-D initializer; a dense layer's is 2-D")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.size != matrix.shape[1] or (bias.ndim > 1 and bias.shape[-1] != matrix.shape[1]):
            graph.refuse(node, f"adds a bias of shape {list(bias.shape)} to {matrix.shape[1]} outputs")
        bias = bias.reshape(-1)
    config = {"dense": int(matrix.shape[1])}
    if bias is None:
        config["bias"] = False
    arrays = {"weights": np.ascontiguousarray(matrix), **_bias(bias)}
    graph.emit(node, config, [source], arrays, weight=weight_name, output=output, squeezed=graph.squeezed(source))


def _gemm(graph: _Graph, node):
    attrs = graph.attrs(node)
    source = graph.one_input(node)
    if node.input[0] != source:
        graph.refuse(node, "multiplies a constant by the data; only x·W is supported")
    matrix = graph.const(node.input[1])
    if matrix is None:
        graph.refuse(node, "multiplies two computed tensors; only a weight initializer is supported")
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        graph.refuse(node, "sets transA, alpha or beta; only y = x·B(ᵀ) + C is supported")
    bias = graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and bias is None:
        graph.refuse(node, "adds a computed C; only an initializer bias is supported")
    _dense(graph, node, source, matrix.T if attrs.get("transB", 0) else matrix, bias, node.input[1])


def _matmul(graph: _Graph, node):
    source = graph.one_input(node)
    matrix = graph.const(node.input[1])
    if node.input[0] != source or matrix is None:
        graph.refuse(node, "multiplies two computed tensors (attention?) or a constant by the data; only x·W with a "
                     "weight initializer is supported")
    bias, output = None, None
    readers = graph.readers.get(node.output[0], [])
    if len(readers) == 1 and readers[0].op_type == "Add" and node.output[0] != graph.output_name:
        add = readers[0]
        other = [name for name in add.input if name != node.output[0]]
        if len(other) == 1 and graph.const(other[0]) is not None:
            bias, output = graph.const(other[0]), add.output[0]
            graph.absorbed.add(id(add))
    _dense(graph, node, source, matrix, bias, node.input[1], output=output)
    if output is not None:
        graph.tensors[node.output[0]] = graph.tensors[output]


# ---------------------------------------------------------------------------------- normalization


def _batchnorm(graph: _Graph, node):
    attrs = graph.attrs(node)
    source = graph.one_input(node)
    gamma, beta = graph.const(node.input[1]), graph.const(node.input[2])
    if gamma is None or beta is None:
        graph.refuse(node, "has computed scale or bias; only initializers are supported")
    training = bool(attrs.get("training_mode", 0)) or any(name for name in node.output[1:])
    graph.batchnorm["training" if training else "inference"] += 1
    config = {}
    eps = _short(attrs.get("epsilon", 1e-5))
    if eps != 1e-5:
        config["eps"] = eps
    graph.emit(node, {"batchnorm": config}, [source], {"gamma": gamma, "beta": beta}, weight=node.input[1],
               squeezed=graph.squeezed(source))


def _layernorm(graph: _Graph, node):
    attrs = graph.attrs(node)
    source = graph.one_input(node)
    axis = attrs.get("axis", -1)
    if axis not in (-1, graph.rank(node, source) - 1):
        graph.refuse(node, f"normalises from axis {axis}; layernorm normalises the last axis only")
    gamma = graph.const(node.input[1])
    beta = graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if gamma is None or (len(node.input) > 2 and node.input[2] and beta is None):
        graph.refuse(node, "has computed scale or bias; only initializers are supported")
    arrays = {"gamma": gamma, "beta": beta if beta is not None else np.zeros_like(gamma)}
    eps = _short(attrs.get("epsilon", 1e-5))
    graph.emit(node, {"layernorm": {"eps": eps} if eps != 1e-5 else {}}, [source], arrays, weight=node.input[1])


# ---------------------------------------------------------------------------------- activations


def _activation_of(graph: _Graph, node):
    """The spec's activation for an activation node (a name, or {name: {parameter: value}})."""
    attrs, op = graph.attrs(node), node.op_type
    simple = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softplus": "softplus", "Softsign": "softsign",
              "HardSwish": "hardswish"}
    if op in simple:
        return simple[op]
    if op == "LeakyRelu":
        alpha = _short(attrs.get("alpha", 0.01))
        return "leaky_relu" if alpha == 0.01 else {"leaky_relu": {"alpha": alpha}}
    if op == "Elu":
        alpha = _short(attrs.get("alpha", 1.0))
        return "elu" if alpha == 1.0 else {"elu": {"alpha": alpha}}
    if op == "Selu":
        given = (attrs.get("alpha", TORCH_SELU[0]), attrs.get("gamma", TORCH_SELU[1]))
        if any(abs(a - b) > 1e-6 for a, b in zip(given, TORCH_SELU)):
            graph.refuse(node, f"has alpha, gamma = {given}; selu is PyTorch's {TORCH_SELU}")
        return "selu"
    if op == "HardSigmoid":
        alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
        if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
            graph.refuse(node, f"is clip({alpha:.7g}x + {beta:.7g}, 0, 1); hard_sigmoid is PyTorch's x/6 + 1/2")
        return "hard_sigmoid"
    if op == "Gelu":
        return {"gelu": {"approximate": "tanh"}} if attrs.get("approximate", "none") == "tanh" else "gelu"
    if op == "Clip":
        low = attrs.get("min", graph.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None)
        high = attrs.get("max", graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None)
        bounds = tuple(None if v is None else float(np.asarray(v)) for v in (low, high))
        if bounds == (0.0, 6.0):
            return "relu6"
        if bounds == (-1.0, 1.0):
            return "hardtanh"
        graph.refuse(node, f"clips to {bounds}; clip(0, 6) (relu6) and clip(-1, 1) (hardtanh) are supported")
    if op == "Softmax":
        source = graph.data_inputs(node)[0]
        if attrs.get("axis", -1) not in (-1, graph.rank(node, source) - 1):
            graph.refuse(node, "is not over the last axis; softmax is over a sample's units")
        return "softmax"
    graph.refuse(node, "is not an activation")


def _activation(graph: _Graph, node):
    source = graph.one_input(node)
    activation = _activation_of(graph, node)
    reference, squeezed = graph.tensors[source]
    last = graph.layers[-1][0] if graph.layers else None
    if (last is not None and reference == last["name"] and next(iter(last)) in PARAMETRIC and "activation" not in last
            and len(graph.readers.get(source, [])) == 1 and source != graph.output_name):
        items = list(last.items())  # the activation goes right after the kind: {dense: 10, activation: relu, ...}
        last.clear()
        last.update(items[:1] + [("activation", activation)] + items[1:])
        graph.tensors[node.output[0]] = (reference, squeezed)
        return
    graph.emit(node, {"activation": activation}, [source], squeezed=squeezed)


# ---------------------------------------------------------------------------------- joins


def _merge(kind: str):
    def handle(graph: _Graph, node):
        if any(name in graph.consts for name in node.input):
            graph.refuse(node, f"{'adds' if kind == 'add' else 'multiplies by'} a constant; only the "
                         f"{'sum' if kind == 'add' else 'product'} of computed tensors is supported")
        sources = graph.data_inputs(node)
        if len(sources) < 2:
            graph.refuse(node, "reads fewer than two computed tensors")
        graph.emit(node, {kind: {}}, sources, squeezed=all(graph.squeezed(source) for source in sources))
    return handle


def _concat(graph: _Graph, node):
    sources = graph.data_inputs(node)
    if len(sources) != len(node.input):
        graph.refuse(node, "joins a constant; only computed tensors are supported")
    if len(sources) == 1:  # torch.cat([x]) (DenseNet's first layer of a block): x itself
        graph.alias(node, sources[0])
        return
    axis = graph.attrs(node).get("axis")
    rank = graph.rank(node, sources[0])
    if axis not in (1, 1 - rank):
        graph.refuse(node, f"joins along axis {axis}; concat joins channels or features (axis 1)")
    graph.emit(node, {"concat": {}}, sources, squeezed=all(graph.squeezed(source) for source in sources))


# ---------------------------------------------------------------------------------- pools and reshapes


def _pool(kind: str):
    def handle(graph: _Graph, node):
        attrs = graph.attrs(node)
        source = graph.one_input(node)
        kernel = list(attrs.get("kernel_shape", []))
        if len(kernel) != 2:
            graph.refuse(node, f"pools over {len(kernel)} axes; {kind} pools 2-D maps")
        geometry = _spatial(node, graph, attrs, 2)
        if geometry["dilation"] != 1:
            graph.refuse(node, "has dilations; pools are not dilated here")
        if kind == "avgpool2d" and geometry["padding"] != 0 and not attrs.get("count_include_pad", 0):
            graph.refuse(node, "pads without counting the padding (count_include_pad = 0); avgpool2d counts the "
                         "zeros in the mean, as torch's default")
        config = {"kernel": _compact(kernel)}
        if geometry["stride"] != config["kernel"]:
            config["stride"] = geometry["stride"]
        if geometry["padding"] != 0:
            config["padding"] = geometry["padding"]
        if attrs.get("ceil_mode", 0):
            config["ceil_mode"] = True
        graph.emit(node, {kind: config}, [source])
    return handle


def _global_pool(graph: _Graph, node):
    graph.emit(node, {"global_avgpool": {}}, [graph.one_input(node)], squeezed=True)


def _reduce_mean(graph: _Graph, node):
    attrs = graph.attrs(node)
    source = graph.one_input(node)
    rank = graph.rank(node, source)
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = graph.const(node.input[1])
        if axes is None:
            graph.refuse(node, "reduces over computed axes")
    axes = sorted(int(axis) % rank for axis in np.asarray(axes).reshape(-1)) if axes is not None else None
    if rank < 3 or axes != list(range(2, rank)):
        graph.refuse(node, f"averages over axes {axes} of a rank-{rank} tensor; only the spatial axes (a global "
                     "average pool) are supported")
    graph.emit(node, {"global_avgpool": {}}, [source], squeezed=bool(attrs.get("keepdims", 1)))


def _flatten_to(graph: _Graph, node, source: str):
    """[N, C, ...] -> [N, C·...]: nothing after a global pool (the spec holds [C] already), else a flatten layer."""
    shape = graph.shapes.get(source)
    if graph.squeezed(source) or (shape is not None and len(shape) == 2):
        graph.alias(node, source, squeezed=False)
    else:
        graph.emit(node, {"flatten": {}}, [source])


def _flatten(graph: _Graph, node):
    source = graph.one_input(node)
    if graph.attrs(node).get("axis", 1) != 1:
        graph.refuse(node, "flattens from an axis other than 1; only [batch, everything else] is supported")
    _flatten_to(graph, node, source)


def _reshape(graph: _Graph, node):
    source = graph.one_input(node)
    target = graph.const(node.input[1])
    if target is None:
        graph.refuse(node, "reshapes to a computed shape; export with torch.flatten(x, 1) (a Flatten node) or a "
                     "constant shape")
    target, shape = [int(v) for v in np.asarray(target).reshape(-1)], graph.shapes.get(source)
    size = math.prod(shape[1:]) if shape and None not in shape[1:] else None
    if len(target) == 2 and target[0] in (0, -1, shape[0] if shape else -2) and target[1] in (-1, size):
        _flatten_to(graph, node, source)
        return
    graph.refuse(node, f"reshapes to {target}; only flattening to [batch, features] is supported")


# ---------------------------------------------------------------------------------- pass-through


def _identity(graph: _Graph, node):
    if node.input[0] in graph.consts:  # an alias of a constant (an inference export's folded bias)
        graph.consts[node.output[0]] = graph.consts[node.input[0]]
        return
    graph.alias(node, graph.one_input(node))


def _constant(graph: _Graph, node):
    from onnx import numpy_helper

    attrs = {attribute.name: attribute for attribute in node.attribute}
    if "value" not in attrs:
        graph.refuse(node, "is not a plain tensor constant")
    graph.consts[node.output[0]] = numpy_helper.to_array(attrs["value"].t)


def _dropout(graph: _Graph, node):
    source = graph.one_input(node)
    attrs = graph.attrs(node)
    ratio = graph.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("ratio", 0.5)
    training = graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if ratio is None or (len(node.input) > 2 and node.input[2] and training is None):
        graph.refuse(node, "has a computed ratio or training_mode")
    if training is None or not bool(np.asarray(training)):  # an inference graph's dropout is the identity
        graph.alias(node, source)
        return
    graph.emit(node, {"dropout": _short(float(np.asarray(ratio)))}, [source], squeezed=graph.squeezed(source))


ACTIVATION_OPS = ("Relu", "LeakyRelu", "Elu", "Selu", "Tanh", "Sigmoid", "HardSigmoid", "HardSwish", "Softplus",
                  "Softsign", "Gelu", "Clip", "Softmax")
HANDLERS = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul,
    "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm,
    **{op: _activation for op in ACTIVATION_OPS},
    "Add": _merge("add"), "Mul": _merge("multiply"), "Concat": _concat,
    "MaxPool": _pool("maxpool2d"), "AveragePool": _pool("avgpool2d"), "GlobalAveragePool": _global_pool,
    "ReduceMean": _reduce_mean, "Flatten": _flatten, "Reshape": _reshape,
    "Dropout": _dropout, "Identity": _identity, "Constant": _constant,
}
