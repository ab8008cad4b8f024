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
graph it does not compute. This module reads the file and walks the graph; onnx_ops.py says what each op becomes.
"""

from __future__ import annotations

from pathlib import Path

from initdiag.importers.base import ImportProblem
from initdiag.importers.draft import Draft

INPUT = "input"  # what a spec layer's `inputs:` calls the spec's input
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
        from initdiag.importers import onnx_ops

        for node in self.proto.graph.node:
            if id(node) in self.absorbed:
                continue
            handler = onnx_ops.HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if handler is None:
                self.refuse(node, "has no spec equivalent (supported: " + ", ".join(sorted(onnx_ops.HANDLERS)) + ")")
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
                f"Inference export: {self.batchnorm['inference']} BatchNormalization node(s) in inference form "
                "(running statistics). The spec's batchnorm normalises with the batch's statistics, as in "
                "training, with the file's gamma and beta; the running mean and variance are not used. To import "
                f"the network as it trains, re-export it with {RETRAIN}.")
        elif not fused and not self.batchnorm["training"] and self.conv_biases and all(self.conv_biases):
            notes.append(
                "Inference export (probably): no BatchNormalization and a bias on every convolution, which is what "
                "an export in eval mode leaves when the model had batchnorm: it is folded into the convolutions "
                "(W·γ/√(var + ε), b = β − mean·γ/√(var + ε)). The diagnosis then sees the folded weights, "
                "not the trainable network's initialization, and no normalization between the layers. If the model has "
                f"batchnorm, re-export it in training mode: {RETRAIN}.")
        return notes

    # ------------------------------------------------------------------ helpers for the handlers

    def refuse(self, node, why: str):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        raise ImportProblem(f"{self.path}: node '{node.name or '(unnamed)'}' ({op}) {why}")

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
