"""An ONNX model (`initdiag import onnx model.onnx`) written as a flat spec graph, its initializers kept as the
layers' supplied arrays.

The file is read with the `onnx` package alone (imported here, when used; `pip install 'initdiag[onnx]'`); no
runtime executes it. Nodes are in topological order (ONNX requires it), so each compute node becomes one spec
layer in the file's order, reading its producer by name (`inputs:`) where that is not the layer above. Constant
tensors (initializers, Constant nodes) are the layers' parameters or attributes, never layers. Weights are put in
initdiag's layout: a dense matrix [fan_in, fan_out] (Gemm's B transposed when transB = 1, as torch's
Linear.weight), a conv kernel through conv.from_torch_layout (ONNX's (M, C/group, k...) is torch's), a transposed
conv's through upsampling.from_torch_layout. An activation read only from a dense or conv layer above it becomes
that layer's `activation:`. Anything else is refused with the node's name and op_type: a spec never stands for a
graph it does not compute.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from initdiag.importers.base import ImportProblem
from initdiag.importers.draft import Draft

INPUT = "input"  # what a spec layer's `inputs:` calls the spec's input
PARAMETRIC = ("dense", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
TORCH_SELU = (1.6732632423543772, 1.0507009873554805)  # ONNX's defaults are torch's, to float32
RETRAIN = ("torch.onnx.export(model, args, path, dynamo=False, training=torch.onnx.TrainingMode.TRAINING, "
           "do_constant_folding=False)")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportProblem("reading ONNX needs the onnx package: pip install 'initdiag[onnx]'") from None
    return onnx


def import_model(model: str, input: str | None = None, batch: int | None = None) -> Draft:
    """The spec of the ONNX file `model`: `input` "C,H,W" replaces the graph input's shape (required when a
    dimension other than the batch is symbolic), `batch` the spec's batch (default 8 for maps)."""
    return _Graph(Path(model), _input_shape(input)).draft(batch)


def _input_shape(text: str | None):
    if text is None:
        return None
    try:
        shape = [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        shape = []
    if not shape or min(shape) < 1:
        raise ImportProblem(f"--input: expected the shape without the batch, e.g. 3,224,224, not '{text}'")
    return shape


def _short(value: float) -> float:
    """A float32 attribute as the decimal it was written as (9.999999747e-06 -> 1e-05)."""
    return float(f"{float(value):.7g}")


class _Graph:
    """One pass over the graph's nodes: `tensors` maps each data tensor to (spec name read, squeezed), where
    squeezed means ONNX holds [N, C, 1, 1] and the spec [C] (after a global pool)."""

    def __init__(self, path: Path, input_shape):
        onnx = _onnx()
        self.path = path
        try:
            self.proto = onnx.load(str(path))
        except FileNotFoundError:
            raise ImportProblem(f"{path}: no such file") from None
        except Exception as error:  # protobuf's DecodeError, a truncated or foreign file
            raise ImportProblem(f"{path}: not an ONNX model ({type(error).__name__}: "
                                f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None
        if not self.proto.graph.node:
            raise ImportProblem(f"{path}: not an ONNX model (no graph nodes)")
        graph = self.proto.graph
        from onnx import numpy_helper

        self.consts = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
        inputs = [value for value in graph.input if value.name not in self.consts]
        if len(inputs) != 1:
            raise ImportProblem(f"{path}: the graph has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); "
                                "a spec has one")
        if len(graph.output) != 1:
            raise ImportProblem(f"{path}: the graph has {len(graph.output)} outputs; a spec has one")
        self.input_name, self.output_name = inputs[0].name, graph.output[0].name
        self.sample_shape = self._sample_shape(inputs[0], input_shape)
        self.shapes = self._infer_shapes(onnx, input_shape)
        self.readers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.tensors = {self.input_name: (INPUT, False)}
        self.names: set = set()
        self.absorbed: set = set()  # ids of nodes folded into a layer above (MatMul's bias Add)
        self.layers: list = []      # (layer dict, arrays)
        self.batchnorm = {"training": 0, "inference": 0}
        self.conv_biases: list = []  # per Conv, whether it has a bias

    # ------------------------------------------------------------------ input and shapes

    def _sample_shape(self, value, given):
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type not in (1, 10, 11, 16):  # float, float16, double, bfloat16
            raise ImportProblem(f"{self.path}: the input '{value.name}' is not a float tensor (token inputs are not "
                                "supported)")
        if len(dims) < 2:
            raise ImportProblem(f"{self.path}: the input '{value.name}' has shape {dims}; expected [batch, ...]")
        sample = dims[1:]
        if given is not None:
            if len(given) != len(sample) or any(d is not None and d != g for d, g in zip(sample, given)):
                raise ImportProblem(f"--input {','.join(map(str, given))}: the graph's input '{value.name}' is "
                                    f"[batch, {', '.join(str(d) if d else '?' for d in sample)}]")
            return list(given)
        if None in sample:
            raise ImportProblem(f"{self.path}: the input '{value.name}' has symbolic dimensions "
                                f"[batch, {', '.join(str(d) if d else '?' for d in sample)}]: give --input, e.g. "
                                f"--input {','.join(str(d or 32) for d in sample)}")
        return sample

    def _infer_shapes(self, onnx, given) -> dict:
        """Every tensor's shape (batch first, None where unknown) by onnx's shape inference on a copy whose input
        has the sample shape."""
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        for value in model.graph.input:
            if value.name == self.input_name:
                for dim, size in zip(list(value.type.tensor_type.shape.dim)[1:], self.sample_shape):
                    dim.Clear()
                    dim.dim_value = size
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # inference is a help; a graph it cannot follow fails later at the node that needs it
            pass
        shapes = {}
        for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
            if value.type.tensor_type.HasField("shape"):
                shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                      for d in value.type.tensor_type.shape.dim]
        return shapes

    # ------------------------------------------------------------------ the walk

    def draft(self, batch: int | None) -> Draft:
        for node in self.proto.graph.node:
            if id(node) in self.absorbed:
                continue
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                self.refuse(node, "has no spec equivalent (supported: " + ", ".join(sorted(HANDLERS)) + ")")
            handler(self, node)
        return self._finish(batch)

    def _finish(self, batch) -> Draft:
        if self.output_name not in self.tensors or not self.layers:
            raise ImportProblem(f"{self.path}: the graph's output '{self.output_name}' is not computed from its input")
        last = self.tensors[self.output_name][0]
        if last != self.layers[-1][0]["name"]:
            raise ImportProblem(f"{self.path}: the graph's output '{self.output_name}' is not the last layer "
                                f"computed ('{last}' is; a branch ends elsewhere)")
        draft = Draft(self.path.stem)
        draft.header.append(self._source())
        draft.header.extend(self._export_notes())
        draft.keys["input"] = self.sample_shape
        if batch or len(self.sample_shape) > 1:
            draft.keys["batch"] = batch or 8
        for layer, arrays in self.layers:
            draft.add(layer, arrays)
        return draft

    def _source(self) -> str:
        model = self.proto
        opsets = ", ".join(f"{entry.domain or 'ai.onnx'} {entry.version}" for entry in model.opset_import)
        producer = f"{model.producer_name} {model.producer_version}".strip() or "an unnamed producer"
        return (f"{model.graph.name or self.path.stem}, imported by `initdiag import onnx` from {self.path.name} "
                f"({producer}; opset {opsets}). Each layer is one node (an activation after a dense or conv layer "
                "is its activation); the initial values are the file's initializers, kept as supplied arrays.")

    def _export_notes(self) -> list:
        notes = []
        fused = sum(any(entry.key == "pkg.onnxscript.rewriter.rule_name" and "FuseBatchNorm" in entry.value
                        for entry in node.metadata_props) for node in self.proto.graph.node)
        if fused:
            notes.append(
                f"Inference export: the exporter folded batchnorm into {fused} node(s) (onnxscript's FuseBatchNorm "
                "rewrite, which torch.onnx.export(dynamo=True) runs even with training=TRAINING): the diagnosis sees "
                "the folded weights W·γ/√(var + ε), not the trainable network's initialization, and no "
                f"normalization between the layers. Re-export with {RETRAIN}.")
        if self.batchnorm["inference"]:
            notes.append(
                f"Inference export: {self.batchnorm['inference']} BatchNormalization node(s) in inference form (running "
                "statistics). The spec's batchnorm normalises with the batch's statistics, as in training, with the "
                "file's gamma and beta; the running mean and variance are not used. If the file was exported after "
                "training, the weights are trained ones, not an initialization.")
        elif not fused and not self.batchnorm["training"] and self.conv_biases and all(self.conv_biases):
            notes.append(
                "Inference export (probably): no BatchNormalization and a bias on every convolution, which is what "
                "an export in eval mode leaves when the model had batchnorm: it is folded into the convolutions "
                "(W·γ/√(var + ε), b = β − mean·γ/√(var + ε)). The diagnosis then sees the folded weights, not the "
                "trainable network's initialization, and no normalization between the layers. If the model has "
                f"batchnorm, re-export it in training mode: {RETRAIN}.")
        return notes

    # ------------------------------------------------------------------ helpers for the handlers

    def refuse(self, node, why: str):
        raise ImportProblem(f"{self.path}: node '{node.name or '(unnamed)'}' ({node.op_type}) {why}")

    def attrs(self, node) -> dict:
        from onnx import helper

        values = {}
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            values[attribute.name] = value.decode() if isinstance(value, bytes) else value
        return values

    def const(self, name: str):
        return self.consts.get(name) if name else None

    def data_inputs(self, node) -> list:
        """The names of the node's non-constant inputs, each known (computed above)."""
        names = [name for name in node.input if name and name not in self.consts]
        for name in names:
            if name not in self.tensors:
                self.refuse(node, f"reads '{name}', which no supported node computes")
        return names

    def one_input(self, node) -> str:
        names = self.data_inputs(node)
        if len(names) != 1:
            self.refuse(node, f"reads {len(names)} computed tensors; expected one")
        return names[0]

    def rank(self, node, tensor: str) -> int:
        shape = self.shapes.get(tensor)
        if shape is None:
            self.refuse(node, f"reads '{tensor}', whose shape the file does not let onnx infer")
        return len(shape)

    def alias(self, node, source: str, squeezed: bool | None = None):
        """The node's first output is `source` as the spec sees it (Identity, Flatten after a global pool)."""
        reference, was = self.tensors[source]
        self.tensors[node.output[0]] = (reference, was if squeezed is None else squeezed)

    def name_for(self, node, weight: str | None = None) -> str:
        """A torch module path where the file has one: the weight's prefix (`layer1.0.conv1.weight`), else the
        node's scope (`/layer1/layer1.0/relu/Relu` -> layer1.0.relu), else the node's name."""
        base = ""
        if weight and weight.endswith(".weight"):
            base = weight[: -len(".weight")]
        elif node.name.startswith("/"):
            parts = node.name.strip("/").split("/")
            scope = ""
            for part in parts[:-1]:
                scope = part if scope and part.startswith(scope + ".") else (f"{scope}.{part}" if scope else part)
            base = scope or parts[-1]
        base = base or node.name or node.op_type.lower()
        name, count = base, 1
        while name in self.names or name == INPUT:
            count += 1
            name = f"{base}_{count}"
        self.names.add(name)
        return name

    def emit(self, node, kind_config: dict, sources: list, arrays=None, *, weight=None, squeezed=False,
             output=None) -> dict:
        """Append a layer reading `sources` (tensor names); the node's output (or `output`) is that layer."""
        layer = dict(kind_config)
        layer["name"] = self.name_for(node, weight)
        references = [self.tensors[source][0] for source in sources]
        above = self.layers[-1][0]["name"] if self.layers else INPUT
        if len(references) > 1 or references[0] != above:
            layer["inputs"] = references if len(references) > 1 else references[0]
        self.layers.append((layer, arrays))
        self.tensors[output or node.output[0]] = (layer["name"], squeezed)
        return layer

    def squeezed(self, tensor: str) -> bool:
        return self.tensors[tensor][1]


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
        arrays = {"weights": weight.reshape(weight.shape[0], -1).T.copy(), **({"bias": bias} if bias is not None else {})}
        config = {"dense": int(weight.shape[0])}
        if bias is None:
            config["bias"] = False
        graph.emit(node, config, [source], arrays, weight=node.input[1], squeezed=True)
        return
    if ndim not in (1, 2):
        graph.refuse(node, f"is a {ndim}-D convolution; conv1d and conv2d are supported")
    from initdiag.layers.conv import from_torch_layout

    geometry = _spatial(node, graph, {"kernel_shape": list(weight.shape[2:]), **attrs}, ndim)
    config = {"filters": int(weight.shape[0]), "kernel": _compact(weight.shape[2:])}
    config.update({key: value for key, value in geometry.items() if value != {"stride": 1, "padding": 0, "dilation": 1}[key]})
    if groups != 1:
        config["groups"] = groups
    if bias is None:
        config["bias"] = False
    graph.conv_biases.append(bias is not None)
    arrays = {"weights": from_torch_layout(weight), **({"bias": bias} if bias is not None else {})}
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
    config.update({key: value for key, value in geometry.items() if value != {"stride": 1, "padding": 0, "dilation": 1}[key]})
    output_padding = _compact(attrs.get("output_padding", [0] * ndim))
    if output_padding != 0:
        config["output_padding"] = output_padding
    if groups != 1:
        config["groups"] = groups
    if bias is None:
        config["bias"] = False
    arrays = {"weights": from_torch_layout(weight, groups), **({"bias": bias} if bias is not None else {})}
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
    arrays = {"weights": np.ascontiguousarray(matrix), **({"bias": bias} if bias is not None else {})}
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
