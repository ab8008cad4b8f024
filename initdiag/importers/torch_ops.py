"""The tensor ops (fx call_function / call_method nodes) the PyTorch importer writes as spec layers: additions and
products (residual joins, gates, position embeddings, layer scales), concatenation (and ViT's class token),
flattening, pooling by a mean, activations called as functions, and the reshapes of a patch embedding. Each
handler takes (writer, node, args, kwargs) — tensor arguments as torch_fx.Value — and returns the node's Value;
anything it cannot write raises Unsupported. Ops on sizes (x.size(0), n_h * n_w) give a Value that is not a
tensor and write nothing.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch.nn import functional as F

from initdiag.importers.torch_fx import Value, _shape, pooled
from initdiag.importers.torch_modules import Unsupported, adaptive_avg_pool, array

NOT_A_TENSOR = Value(None, None)


def _tensor(value) -> bool:
    return isinstance(value, Value) and (value.layer is not None or value.param is not None)


def _layer(value) -> bool:
    """A layer's output as the spec has it (a globally pooled [C, 1, 1] is the spec's [C]: 'pooled')."""
    return isinstance(value, Value) and value.layer is not None and value.pending in (None, "pooled")


def _argument(args, kwargs, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


# ------------------------------------------------------------------ joins
def add(writer, node, args, kwargs):
    a, b = args[0], args[1]
    if not _tensor(a) and not _tensor(b):
        return NOT_A_TENSOR
    if _layer(a) and _layer(b):
        if a.shape != b.shape:
            raise Unsupported(f"adding {list(a.shape)} and {list(b.shape)} (a spec add joins equal shapes)")
        return writer.emit(node, {"add": {}}, None, [a, b], a.shape)
    layer, other = (a, b) if _layer(a) else (b, a)
    if _layer(layer) and isinstance(other, Value) and other.param is not None:
        return _position_embedding(writer, node, layer, other)
    raise Unsupported(f"adding {_described(other)} to a layer's output (the spec adds layers' outputs, or a learned "
                      "position embedding)")


def _position_embedding(writer, node, layer: Value, parameter: Value) -> Value:
    if len(layer.shape) != 2 or int(np.prod(parameter.shape)) != int(np.prod(layer.shape)):
        raise Unsupported(f"adding a parameter {list(parameter.shape)} to {list(layer.shape)} (a position embedding "
                          "is one vector per step of a sequence)")
    weights = array(parameter.param).reshape(layer.shape)
    return writer.emit(node, {"position_embedding": {}}, {"weights": weights}, [layer], layer.shape, parameter.name)


def multiply(writer, node, args, kwargs):
    a, b = args[0], args[1]
    if not _tensor(a) and not _tensor(b):
        return NOT_A_TENSOR
    if _layer(a) and _layer(b):
        return writer.emit(node, {"multiply": {}}, None, [a, b], _shape(node))  # a gate broadcasts to the full shape
    layer, other = (a, b) if _layer(a) else (b, a)
    if _layer(layer) and isinstance(other, Value) and other.param is not None:
        units = layer.shape[-1] if len(layer.shape) == 2 else layer.shape[0]
        if int(np.prod(other.shape)) != units:
            raise Unsupported(f"scaling {list(layer.shape)} by a parameter {list(other.shape)} (a layer scale has one "
                              "value per unit)")
        return writer.emit(node, {"layer_scale": {}}, {"gamma": array(other.param).reshape(-1)}, [layer],
                           layer.shape, other.name)
    raise Unsupported(f"multiplying a layer's output by {_described(other)} (the spec multiplies layers' outputs, "
                      "or scales them by a learned per-unit vector)")


def _described(value) -> str:
    if isinstance(value, Value):
        return f"a parameter {list(value.shape)}" if value.param is not None else "a computed size"
    return f"the constant {value!r}"


def cat(writer, node, args, kwargs):
    tensors = list(args[0])
    dim = _argument(args, kwargs, 1, "dim", 0)
    if len(tensors) == 1:  # DenseNet's first layer concatenates a list of one
        return tensors[0]
    parameters = [value for value in tensors if isinstance(value, Value) and value.param is not None]
    layers = [value for value in tensors if _layer(value)]
    if len(layers) + len(parameters) != len(tensors):
        raise Unsupported("concatenating something that is not a layer's output")
    rank = len(layers[0].shape) + 1
    dim = dim % rank
    if parameters:
        if len(tensors) != 2 or tensors[0] is not parameters[0] or rank != 3 or dim != 1:
            raise Unsupported("concatenating a parameter other than a class token put before a sequence")
        token = array(parameters[0].param).reshape(-1)
        if token.shape[0] != layers[0].shape[-1]:
            raise Unsupported(f"a class token of {token.shape[0]} values before {list(layers[0].shape)}")
        shape = (layers[0].shape[0] + 1, layers[0].shape[1])
        return writer.emit(node, {"class_token": {}}, {"token": token}, layers, shape, parameters[0].name)
    wanted = 2 if rank == 3 else 1  # features of a sequence; channels of a map or a flat vector
    if dim != wanted:
        raise Unsupported(f"concatenating along dim {dim} of a {rank}-axis tensor (the spec joins channels or features)")
    return writer.emit(node, {"concat": {}}, None, layers, _shape(node))


def expand(writer, node, args, kwargs):
    source = args[0]
    if isinstance(source, Value) and source.param is not None:
        return source
    raise Unsupported("expanding a layer's output (broadcast copies have no spec equivalent)")


# ------------------------------------------------------------------ shapes
def reshape(writer, node, args, kwargs):
    """flatten / view / reshape, read from the shapes before and after."""
    source, out = args[0], _shape(node)
    if isinstance(source, Value) and source.param is not None:
        return source._replace(shape=out, param=source.param.reshape((-1, *out)))
    if not _layer(source):
        raise Unsupported("reshaping something that is not a layer's output")
    have = source.shape
    if out == have:
        return source
    if source.pending == "pooled" and len(out) == 1:  # flattening a [C, 1, 1] mean: the spec's [C] already
        return Value(source.layer, out)
    if len(out) == 1 and int(np.prod(have)) == out[0]:
        return writer.emit(node, {"flatten": {}}, None, [source], out)
    if len(have) == 3 and out == (have[0], have[1] * have[2]):
        return _patches(writer, node, source)
    raise Unsupported(f"reshaping {list(have)} into {list(out)} (the spec flattens maps, and a patch embedding's map "
                      "into its tokens)")


def _patches(writer, node, source: Value) -> Value:
    """A conv with kernel = stride whose map is flattened into tokens: ViT's patch embedding."""
    layer = writer.draft.layers[-1] if writer.draft.layers else {}
    options = layer.get("conv2d")
    producer = node.args[0]
    if (layer.get("name") != source.layer or options is None or len(producer.users) != 1
            or options.get("stride", 1) != options["kernel"] or options.get("padding", 0) not in (0, "valid")
            or options.get("groups", 1) != 1 or options.get("dilation", 1) != 1):
        raise Unsupported("flattening a feature map into tokens, other than a patch embedding's (a conv with kernel = "
                          "stride, no padding, read only here)")
    patchify = {"patch": options["kernel"], "dim": options["filters"]}
    if options.get("bias") is False:
        patchify["bias"] = False
    rewritten = {"patchify": patchify, **{key: value for key, value in layer.items() if key != "conv2d"}}
    writer.draft.layers[-1] = rewritten
    dim, steps = source.shape[0], source.shape[1] * source.shape[2]
    return Value(source.layer, (dim, steps), pending="to_sequence")


def _swapped_axes(node, args, kwargs) -> tuple | None:
    if node.target in ("permute", torch.permute):
        order = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        return tuple(order)
    first = _argument(args, kwargs, 1, "dim0")
    second = _argument(args, kwargs, 2, "dim1")
    return ("swap", first, second)


def transpose(writer, node, args, kwargs):
    source, out = args[0], _shape(node)
    if not isinstance(source, Value) or source.layer is None:
        raise Unsupported("transposing something that is not a layer's output")
    order = _swapped_axes(node, args, kwargs)
    rank = len(source.shape) + 1
    swaps_last_two = order in ((0, 2, 1),) or (order[0] == "swap" and {order[1] % rank, order[2] % rank} == {1, 2})
    if source.pending == "to_sequence" and swaps_last_two:
        return Value(source.layer, out)
    if source.pending is None and rank == 4 and order == (0, 2, 3, 1):
        return source._replace(shape=out, pending="channels_last")
    if source.pending == "channels_last" and order == (0, 3, 1, 2):
        return source._replace(shape=out, pending=None)
    if source.pending is None and rank == 3 and swaps_last_two:
        return writer.emit(node, {"transpose": {}}, None, [source], out)
    raise Unsupported(f"permuting the axes of {list(source.shape)} (the spec transposes a sequence's steps and "
                      "features, and reads a map permuted to channels-last and back)")


def identity(writer, node, args, kwargs):
    return args[0]


def getitem(writer, node, args, kwargs):
    source, index = args[0], args[1]
    if isinstance(source, Value) and source.items is not None:
        return source.items[index]
    if isinstance(source, Value) and source.pending and source.pending.startswith("chunk:"):
        chunks = int(source.pending.split(":")[1])
        return writer.emit(node, {"chunk": {"chunks": chunks, "index": int(index)}}, None, [source.param], _shape(node))
    if not _layer(source):
        return NOT_A_TENSOR
    if (isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None) and isinstance(index[1], int)
            and len(source.shape) == 2):
        return writer.emit(node, {"select": index[1]}, None, [source], _shape(node))
    raise Unsupported(f"indexing {list(source.shape)} with {index!r} (the spec selects one token of a sequence)")


def chunk(writer, node, args, kwargs):
    source = args[0]
    chunks = _argument(args, kwargs, 1, "chunks")
    dim = _argument(args, kwargs, 2, "dim", 0) % (len(source.shape) + 1)
    wanted = 2 if len(source.shape) == 2 else 1
    if not _layer(source) or dim != wanted:
        raise Unsupported(f"chunking along dim {dim} (the spec splits channels or features)")
    return Value(None, None, param=source, pending=f"chunk:{int(chunks)}")


def channel_shuffle(writer, node, args, kwargs):
    groups = _argument(args, kwargs, 1, "groups")
    return writer.emit(node, {"channel_shuffle": {"groups": int(groups)}}, None, [args[0]], _shape(node))


# ------------------------------------------------------------------ pooling
def mean(writer, node, args, kwargs):
    source = args[0]
    dims = _argument(args, kwargs, 1, "dim")
    keep = bool(_argument(args, kwargs, 2, "keepdim", False))
    if not _layer(source) or dims is None:
        raise Unsupported("a mean over everything (the spec averages positions or steps)")
    rank = len(source.shape) + 1
    dims = sorted(d % rank for d in (dims if isinstance(dims, (tuple, list)) else (dims,)))
    if rank == 4 and dims == [2, 3]:
        return writer.emit(node, {"global_avgpool": {}}, None, [source], _shape(node))  # keepdim: pooled
    if rank == 3 and dims == [1] and not keep:
        return writer.emit(node, {"global_avgpool": {}}, None, [source], _shape(node))
    raise Unsupported(f"a mean over dims {dims} of a {rank}-axis tensor (the spec averages a map's positions or a "
                      "sequence's steps)")


def adaptive_pool(writer, node, args, kwargs):
    size = _argument(args, kwargs, 1, "output_size")
    layer, _ = adaptive_avg_pool(size, args[0])
    return writer.emit(node, layer, None, [args[0]], _shape(node))


def _pool(kind):
    def convert(writer, node, args, kwargs):
        kernel = _argument(args, kwargs, 1, "kernel_size")
        stride = _argument(args, kwargs, 2, "stride") or kernel
        padding = _argument(args, kwargs, 3, "padding", 0)
        ceil = _argument(args, kwargs, 5 if kind == "maxpool2d" else 4, "ceil_mode", False)
        if kind == "maxpool2d" and _argument(args, kwargs, 4, "dilation", 1) not in (1, (1, 1)):
            raise Unsupported("a dilated max pool")
        if kind == "avgpool2d" and not _argument(args, kwargs, 5, "count_include_pad", True) and padding:
            raise Unsupported("count_include_pad=False with padding")
        options = {"kernel": kernel}
        if stride != kernel:
            options["stride"] = stride
        if padding:
            options["padding"] = padding
        if ceil:
            options["ceil_mode"] = True
        return writer.emit(node, {kind: options}, None, [args[0]], _shape(node))
    return convert


# ------------------------------------------------------------------ activations and dropout
def _activation(name, **parameters):
    def convert(writer, node, args, kwargs):
        layer = {"activation": name}
        if parameters:
            values = {key: float(_argument(args, kwargs, position, key if key != "alpha" else "negative_slope", default))
                      for key, (position, default) in parameters.items()}
            layer = {"activation": {name: values}}
        return writer.emit(node, layer, None, [args[0]], _shape(node))
    return convert


def gelu(writer, node, args, kwargs):
    approximate = kwargs.get("approximate", "none")
    layer = {"activation": "gelu" if approximate == "none" else {"gelu": {"approximate": "tanh"}}}
    return writer.emit(node, layer, None, [args[0]], _shape(node))


def elu(writer, node, args, kwargs):
    alpha = float(_argument(args, kwargs, 1, "alpha", 1.0))
    return writer.emit(node, {"activation": {"elu": {"alpha": alpha}}}, None, [args[0]], _shape(node))


def softmax(writer, node, args, kwargs):
    dim = _argument(args, kwargs, 1, "dim")
    if dim is None or dim % (len(args[0].shape) + 1) != len(args[0].shape):
        raise Unsupported(f"softmax over dim {dim} (the spec's softmax is over the last axis)")
    return writer.emit(node, {"activation": "softmax"}, None, [args[0]], _shape(node))


def hardtanh(writer, node, args, kwargs):
    low, high = _argument(args, kwargs, 1, "min_val", -1.0), _argument(args, kwargs, 2, "max_val", 1.0)
    name = {(0.0, 6.0): "relu6", (-1.0, 1.0): "hardtanh"}.get((float(low), float(high)))
    if name is None:
        raise Unsupported(f"hardtanh({low}, {high})")
    return writer.emit(node, {"activation": name}, None, [args[0]], _shape(node))


def dropout(writer, node, args, kwargs):
    p = float(_argument(args, kwargs, 1, "p", 0.5))
    return writer.emit(node, {"dropout": p}, None, [args[0]], _shape(node))


_RELU, _SIGMOID, _TANH = _activation("relu"), _activation("sigmoid"), _activation("tanh")
FUNCTIONS = {
    operator.add: add, torch.add: add, operator.iadd: add, operator.mul: multiply, torch.mul: multiply,
    operator.imul: multiply, torch.cat: cat, torch.concat: cat, torch.flatten: reshape, torch.reshape: reshape,
    torch.transpose: transpose, torch.permute: transpose, operator.getitem: getitem, torch.chunk: chunk,
    torch.mean: mean, F.adaptive_avg_pool2d: adaptive_pool, F.avg_pool2d: _pool("avgpool2d"),
    F.max_pool2d: _pool("maxpool2d"), F.relu: _RELU, torch.relu: _RELU, F.relu6: _activation("relu6"),
    F.silu: _activation("swish"), F.gelu: gelu, torch.sigmoid: _SIGMOID, F.sigmoid: _SIGMOID, torch.tanh: _TANH,
    F.tanh: _TANH, F.hardswish: _activation("hardswish"), F.hardsigmoid: _activation("hard_sigmoid"),
    F.leaky_relu: _activation("leaky_relu", alpha=(1, 0.01)), F.elu: elu, F.softmax: softmax,
    F.mish: _activation("mish"), F.hardtanh: hardtanh, F.dropout: dropout,
}
METHODS = {
    "add": add, "add_": add, "mul": multiply, "mul_": multiply, "flatten": reshape, "view": reshape,
    "reshape": reshape, "transpose": transpose, "permute": transpose, "contiguous": identity, "clone": identity,
    "chunk": chunk, "mean": mean, "relu": _RELU, "relu_": _RELU, "sigmoid": _SIGMOID, "tanh": _TANH,
    "expand": expand, "softmax": softmax,
}
SIZES = {"size", "dim", "numel"}  # methods giving numbers, not tensors


def convert(writer, node) -> Value:
    """The Value of a call_function / call_method node, writing its layer if it is one."""
    args = [_resolved(writer, argument) for argument in node.args]
    kwargs = {key: _resolved(writer, argument) for key, argument in node.kwargs.items()}
    if node.op == "call_method":
        if node.target in SIZES:
            return NOT_A_TENSOR
        handler = METHODS.get(node.target)
    else:
        handler = FUNCTIONS.get(node.target)
        if handler is None and getattr(node.target, "__name__", "") == "channel_shuffle":
            handler = channel_shuffle
        if handler is None and node.target is getattr:
            return NOT_A_TENSOR  # x.shape
    if handler is None:
        if node.meta.get("tensor_meta") is None and not any(_tensor(a) for a in args):
            return NOT_A_TENSOR  # arithmetic on sizes
        raise Unsupported("has no spec equivalent")
    flat_args = [item for arg in args for item in (arg if isinstance(arg, (list, tuple)) else (arg,))]
    return pooled(writer, handler(writer, node, args, kwargs), flat_args)  # a mean, or an op on one, kept [C, 1, 1]


def _resolved(writer, argument):
    if isinstance(argument, tuple):
        return tuple(_resolved(writer, item) for item in argument)
    if isinstance(argument, list):
        return [_resolved(writer, item) for item in argument]
    return writer.value(argument)
