"""PyTorch models as specs: `initdiag import torch package.module:factory --input 3,224,224 -o net.yaml`,
`initdiag check --torch ...` and `initdiag.check_module(model, example_input)`.

The module is traced with torch.fx (the leaves are the modules torch_modules.py knows, every other module is
traced through), its shapes propagated on a small batch (ShapeProp), and the graph written as a flat spec
graph: one layer per module call or tensor op, named after the module path (torchvision's `layer1.0.conv1`)
or the fx node (`add_3`), with `inputs:` wherever a layer reads something other than the layer above it. The
module's own initial values become supplied arrays, so `check` reports the init the user has, and `check
--scheme X` redraws the matrices under X. What the spec cannot express is an ImportProblem naming the module
path and the op; outputs other than the first (auxiliary heads) are left out and the header says which.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

from initdiag.importers.base import ImportProblem
from initdiag.importers.draft import Draft

SEED = 0  # torch.manual_seed before the factory runs: the same spec every time


class Value(NamedTuple):
    """What an fx node gives, as the spec sees it."""

    layer: str | None  # the spec layer whose output it is ('input': the spec's input); None: not a layer
    shape: tuple | None  # the per-sample torch shape (None: not a tensor)
    param: object = None  # a parameter tensor (get_attr): class tokens, position embeddings, layer scales
    name: str = ""  # the parameter's qualified name
    items: tuple | None = None  # a tuple result (nn.MultiheadAttention, torch.chunk): its Values
    pending: str | None = None  # 'to_sequence': a patch map [dim, steps] waiting for its transpose


# ------------------------------------------------------------------ loading and tracing


def load(reference: str, arguments: dict | None = None):
    """The nn.Module that `package.module:factory` (a class or function; called with `arguments`) builds, after
    torch.manual_seed(SEED). ImportProblem if it cannot be imported, called, or is not an nn.Module."""
    torch = _torch()
    module_name, colon, attribute = reference.partition(":")
    if not colon or not module_name or not attribute:
        raise ImportProblem(f"{reference}: expected package.module:factory (e.g. torchvision.models:resnet18)")
    try:
        owner = _import(module_name)
    except ImportProblem:
        raise
    except Exception as err:  # noqa: BLE001 (user code: any failure is reported, never a traceback)
        raise ImportProblem(f"{reference}: cannot import {module_name}: {type(err).__name__}: {err}") from None
    factory = owner
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise ImportProblem(f"{reference}: {module_name} has no attribute '{attribute}'")
        factory = getattr(factory, part)
    torch.manual_seed(SEED)
    if isinstance(factory, torch.nn.Module):
        model = factory
    elif callable(factory):
        try:
            model = factory(**(arguments or {}))
        except Exception as err:  # noqa: BLE001
            raise ImportProblem(f"{reference}: calling it raised {type(err).__name__}: {err}") from None
    else:
        raise ImportProblem(f"{reference}: is a {type(factory).__name__}, not a class or function building an nn.Module")
    if not isinstance(model, torch.nn.Module):
        raise ImportProblem(f"{reference}: returned a {type(model).__name__}, not an nn.Module")
    return model


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportProblem("the PyTorch importer needs torch: pip install 'initdiag[torch]'") from None
    return torch


def _import(name: str):
    """import_module, tolerating a torchvision whose compiled ops do not load beside this torch (a CUDA wheel
    beside CPU torch): its classification models need none of them, so the two op schemas its import
    registers fakes for (nms, qnms) are declared first and the import retried."""
    try:
        return importlib.import_module(name)
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    declare_torchvision_ops()
    for loaded in [key for key in sys.modules if key == "torchvision" or key.startswith("torchvision.")]:
        del sys.modules[loaded]
    return importlib.import_module(name)


_TORCHVISION_LIBRARY = []  # the Library object must live as long as the process


def declare_torchvision_ops() -> None:
    """Declare torchvision::nms and ::qnms if torchvision's compiled ops did not (see _import)."""
    torch = _torch()
    if _TORCHVISION_LIBRARY:
        return
    library = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        try:
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # already declared: the ops did load
            pass
    _TORCHVISION_LIBRARY.append(library)


def _trace(model, example):
    """The fx GraphModule of `model` with every node's shape in node.meta['tensor_meta']."""
    torch = _torch()
    from torch.fx.passes.shape_prop import ShapeProp

    from initdiag.importers import torch_modules

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module, qualified_name):
            if torch_modules.converter(module) is not None:
                return True
            return super().is_leaf_module(module, qualified_name)

    wrapped = [function for function in (_shufflenet_channel_shuffle(),) if function is not None]
    try:
        graph = Tracer(autowrap_functions=tuple(wrapped)).trace(model, concrete_args=_optional_arguments(model))
    except Exception as err:  # noqa: BLE001
        raise ImportProblem(f"torch.fx cannot trace {type(model).__name__}: {type(err).__name__}: {err} (a module "
                            "whose forward branches on tensor values cannot be written as a spec)") from None
    module = torch.fx.GraphModule(model, graph)
    module.left_out = _keep_first_output(module.graph)
    module.recompile()
    try:
        with torch.no_grad():
            ShapeProp(module).propagate(example)
    except Exception as err:  # noqa: BLE001
        cause = err.__cause__ or err  # ShapeProp wraps the op's error with a traceback in its message
        lines = [line for line in str(cause).splitlines() if line.strip()]
        raise ImportProblem(f"running {type(model).__name__} on an input {list(example.shape[1:])} failed: "
                            f"{type(cause).__name__}: {lines[0] if lines else ''}") from None
    return module


def _optional_arguments(model) -> dict:
    """forward's arguments after the first that have defaults (timm's attn_mask=None), fixed at them."""
    import inspect

    parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    return {parameter.name: parameter.default for parameter in parameters
            if parameter.default is not inspect.Parameter.empty}


def _keep_first_output(graph) -> list:
    """Make the graph return only its first tensor output (GoogLeNet's and Inception's logits, not their
    auxiliary heads) and drop what no longer feeds it; returns the module paths dropped."""
    output = next(node for node in graph.nodes if node.op == "output")
    result = _first_tensor(output.args[0])
    if result is not output.args[0]:
        output.args = (result,)
    before = {node.target for node in graph.nodes if node.op == "call_module"}
    graph.eliminate_dead_code()
    return sorted(before - {node.target for node in graph.nodes if node.op == "call_module"})


def _shufflenet_channel_shuffle():
    module = sys.modules.get("torchvision.models.shufflenetv2")
    return getattr(module, "channel_shuffle", None)


# ------------------------------------------------------------------ the graph as a spec


class Writer:
    """Walks the traced graph in order, writing a Draft: each node's Value, the layers, their inputs."""

    def __init__(self, draft: Draft):
        self.draft = draft
        self.values: dict = {}
        self.names: set = {"input"}
        self.last = "input"
        self.origins: dict = {}  # spec layer -> the fx node whose output it is

    def name_for(self, wanted: str) -> str:
        name, count = wanted if wanted != "input" else "input_", 1
        while name in self.names:
            name, count = f"{wanted}_{count}", count + 1
        self.names.add(name)
        return name

    def emit(self, node, layer: dict | None, arrays: dict | None, inputs: list, shape: tuple,
             wanted: str | None = None) -> Value:
        """Write `layer` reading `inputs` (Values) and return its Value (the identity: the input's Value)."""
        if layer is None:
            return inputs[0]._replace(shape=shape)
        name = self.name_for(wanted or _node_name(node))
        sources = [value.layer for value in inputs]
        entry = dict(layer)
        if sources != [self.last]:
            entry["inputs"] = sources
        entry["name"] = name
        self.draft.add(entry, arrays)
        self.origins[name] = node.name
        self.last = name
        return Value(name, shape)

    def value(self, argument):
        torch = _torch()
        if isinstance(argument, torch.fx.Node):
            return self.values[argument]
        return argument


def _node_name(node) -> str:
    """A module call: its path (layer1.0.conv1); an op: the path of the module it is in and the op (layer1.0.add)."""
    if node.op == "call_module":
        return node.target
    op = node.name.rstrip("0123456789").rstrip("_") or node.name
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    path = stack[-1][0] if stack and isinstance(stack[-1], tuple) and stack[-1][0] else ""
    return f"{path}.{op}" if path else op


def _where(node, module) -> str:
    """Where the problem is, for errors: a module call's path and class (`avgpool (AdaptiveAvgPool2d)`), or an op
    with the path and class of the module it was traced in (`features.1.0.attn (ShiftedWindowAttention):
    call_function _get_relative_position_bias`)."""
    if node.op == "call_module":
        return f"{node.target} ({type(module.get_submodule(node.target)).__name__})"
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    path = ""
    if stack and isinstance(stack[-1], tuple) and stack[-1][0]:
        qualified, kind = stack[-1][:2]
        path = f"{qualified} ({getattr(kind, '__name__', kind)}): "
    op = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{path}{node.op} {op}"


def _shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(int(size) for size in shape[1:]) if shape is not None else None


def convert(module, *, name: str, header: list, batch: int, tokens: bool) -> Draft:
    """The Draft of the traced `module` (a GraphModule whose nodes carry their shapes)."""
    from initdiag.importers import torch_modules, torch_ops

    draft = Draft(name)
    writer = Writer(draft)
    graph = module.graph
    result = next(node for node in graph.nodes if node.op == "output").args[0]
    needed = _ancestors(result)
    left_out = getattr(module, "left_out", [])
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    for node in graph.nodes:
        if node.op == "output" or (node not in needed and node is not placeholders[0]):
            continue  # a branch that does not feed the output, or an optional argument fixed at its default
        try:
            if node.op == "placeholder":
                if node is not placeholders[0]:
                    raise torch_modules.Unsupported("a second input (the spec has one)")
                writer.values[node] = Value("input", _shape(node))
            elif node.op == "get_attr":
                parameter = _attribute(module, node.target)
                writer.values[node] = Value(None, tuple(parameter.shape), param=parameter, name=node.target)
            elif node.op == "call_module":
                writer.values[node] = _module_call(writer, node, module.get_submodule(node.target))
            else:
                writer.values[node] = torch_ops.convert(writer, node)
        except torch_modules.Unsupported as problem:
            raise ImportProblem(f"{name}: {_where(node, module)}: {problem}") from None
    final = writer.values[result]
    if final.layer is None or final.layer != writer.last or final.pending:
        raise ImportProblem(f"{name}: the output ({_where(result, module)}) is not the last layer written")
    shape = list(_shape(placeholders[0]))
    draft.keys["input"] = shape
    if tokens:
        draft.keys["input_distribution"] = "tokens"
    draft.keys["batch"] = batch
    classifier = final.shape is not None and len(final.shape) in (1, 2)
    draft.keys["loss"] = "cross_entropy" if classifier else "mse"
    draft.header = header + [
        f"Loss: {draft.keys['loss']}, assumed ({'logits' if classifier else 'a map'} out; the module does not say how "
        "it is trained): change it if yours trains otherwise.",
        "Not analysed: " + (", ".join(left_out) + " (they do not feed the first output: auxiliary heads)"
                            if left_out else "nothing") + "."]
    draft.left_out = list(left_out)
    draft.origins = writer.origins
    draft.source = module
    return draft


def _first_tensor(argument):
    torch = _torch()
    if isinstance(argument, torch.fx.Node):
        target = argument.target
        if argument.op == "call_function" and isinstance(target, type) and issubclass(target, tuple):
            return _first_tensor(argument.args[0] if argument.args else next(iter(argument.kwargs.values())))
        return argument
    if isinstance(argument, (tuple, list)) and argument:
        return _first_tensor(argument[0])
    if isinstance(argument, dict) and argument:
        return _first_tensor(next(iter(argument.values())))
    raise ImportProblem("the module returns no tensor")


def _ancestors(node) -> set:
    seen, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(current.all_input_nodes)
    return seen


def _attribute(module, target: str):
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value.detach()


def _module_call(writer: Writer, node, submodule) -> Value:
    from initdiag.importers import torch_modules

    converter = torch_modules.converter(submodule)
    if converter is None:
        raise torch_modules.Unsupported(f"{type(submodule).__module__}.{type(submodule).__qualname__} has no spec "
                                        "equivalent")
    inputs = [writer.value(argument) for argument in node.args]
    source = inputs[0]
    if isinstance(source, Value) and source.pending == "channels_last" and len(inputs) == 1:
        return _channels_last_call(writer, node, submodule, converter, source)
    if isinstance(source, Value) and source.pending == "pooled" and len(inputs) == 1:
        return _pooled_call(writer, node, submodule, converter, source)
    if not isinstance(source, Value) or source.layer is None or source.pending:
        raise torch_modules.Unsupported("its input is not a layer's output")
    if any(isinstance(other, Value) and other is not source for other in inputs[1:]):
        if not (converter is torch_modules.multihead_attention and all(other == source for other in inputs[1:3])):
            raise torch_modules.Unsupported("a module called on several tensors (self-attention only: q = k = v)")
    converted = converter(submodule, source)
    shape = _shape(node)
    if shape is None:  # a tuple result: nn.MultiheadAttention's (output, weights)
        meta = node.meta.get("tensor_meta")
        shape = tuple(int(size) for size in meta[0].shape[1:])
        value = writer.emit(node, *converted, [source], shape)
        return Value(None, None, items=(value,))
    if isinstance(converted, list):
        value, written = source, []
        for layer, arrays, suffix in converted:
            wanted = node.target + (f".{suffix}" if suffix else "")
            value = writer.emit(node, layer, arrays, [value], shape, wanted)
            written.append(value.layer)
        for name in written[:-1]:  # the node's output is the last layer's; the ones before have no node
            writer.origins.pop(name, None)
        return value
    return pooled(writer, writer.emit(node, *converted, [source], shape))


def pooled(writer: Writer, value: Value, inputs=()) -> Value:
    """The Value of a global average (torch keeps [C, 1, 1], the spec's global_avgpool gives [C]: 'pooled'), or
    of an elementwise op on one; any other Value as it is."""
    if not (isinstance(value, Value) and value.layer is not None and value.pending is None and value.shape is not None
            and len(value.shape) == 3 and value.shape[1:] == (1, 1)):
        return value
    written = writer.draft.layers[-1] if writer.draft.layers else {}
    from_mean = written.get("name") == value.layer and "global_avgpool" in written
    from_pooled = any(isinstance(item, Value) and item.pending == "pooled" for item in inputs)
    return value._replace(pending="pooled") if from_mean or from_pooled else value


def _pooled_call(writer: Writer, node, submodule, converter, source: Value) -> Value:
    """A module on a globally pooled map (spec [C], torch [C, 1, 1]): a 1x1 conv is a dense layer, ConvNeXt's
    LayerNorm2d a layernorm of the [C] vector, an elementwise module itself, a flatten nothing."""
    from initdiag.importers import torch_modules

    shape = _shape(node)
    if converter is torch_modules.flatten:
        return Value(source.layer, shape)
    if converter is torch_modules.convolution:
        layer, arrays = torch_modules.pooled_conv(submodule)
    elif converter is torch_modules.channels_layernorm:
        layer, arrays = {"layernorm": {"eps": float(submodule.eps)}}, torch_modules._norm_arrays(submodule)
    else:
        layer, arrays = converter(submodule, source)
        if layer is not None and not (set(layer) & {"activation", "dropout", "stochastic_depth"}):
            raise torch_modules.Unsupported(f"{type(submodule).__name__} on a globally pooled [C, 1, 1] map")
    return writer.emit(node, layer, arrays, [source], shape)._replace(pending="pooled" if len(shape) == 3 else None)


def _channels_last_call(writer: Writer, node, submodule, converter, source: Value) -> Value:
    """A module on a map permuted to channels-last (ConvNeXt's block): a Linear is a 1x1 conv, a LayerNorm
    normalises the channels, an elementwise module is itself; the result stays channels-last."""
    from initdiag.importers import torch_modules

    channels_first = (source.shape[-1], *source.shape[:-1])
    if converter is torch_modules.linear:
        layer, arrays = torch_modules.pointwise_convolution(submodule)
    elif converter is torch_modules.layernorm:
        layer, arrays = torch_modules.channels_layernorm(submodule, source._replace(shape=channels_first))
    else:
        layer, arrays = converter(submodule, source)
        if layer is not None and not (set(layer) & {"activation", "dropout", "stochastic_depth"}):
            raise torch_modules.Unsupported(f"{type(submodule).__name__} on a channels-last map (after a permute)")
    return writer.emit(node, layer, arrays, [source], _shape(node))._replace(pending="channels_last")


# ------------------------------------------------------------------ entry points


def example_input(model, shape: tuple, batch: int):
    """A random batch for tracing: token ids below the first embedding's vocabulary, else normal floats."""
    torch = _torch()
    vocab = _first_embedding(model)
    generator = torch.Generator().manual_seed(SEED)
    if vocab is not None:
        return torch.randint(0, vocab, (batch, *shape), generator=generator)
    dtype = next((parameter.dtype for parameter in model.parameters()), torch.float32)
    return torch.randn((batch, *shape), generator=generator, dtype=dtype)


def _first_embedding(model):
    torch = _torch()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            return module.num_embeddings
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            return None
    return None


def from_module(model, example, *, name: str, header: list | None = None, batch: int | None = None) -> Draft:
    """The Draft of an nn.Module run on `example` (a batch tensor); the model is traced in training mode and
    left as it was."""
    torch = _torch()
    tokens = not torch.is_floating_point(example)
    modes = {module: module.training for module in model.modules()}  # restored exactly, dropout's included
    model.train()
    try:
        traced = _trace(model, example[:2] if example.shape[0] > 2 else example)
    finally:
        for module, training in modes.items():
            module.training = training
    default_batch = 4 if tokens else 8
    return convert(traced, name=name, header=list(header or []), batch=batch or default_batch, tokens=tokens)


def traced_draft(model, example, **options) -> tuple:
    """(the Draft, the fx GraphModule it was written from): tests run the module node by node against the spec."""
    draft = from_module(model, example, **options)
    return draft, draft.source


def import_module(reference: str, *, input: str | None = None, arg: list | None = None,  # noqa: A002 (the option)
                  batch: int | None = None) -> Draft:
    """`initdiag import torch package.module:factory --input 3,224,224 [--arg key=value]`."""
    if input is None:
        raise ImportProblem(f"{reference}: give the input shape without the batch, e.g. --input 3,224,224")
    shape = parse_shape(input)
    arguments = parse_arguments(arg or [])
    model = load(reference, arguments)
    example = example_input(model, shape, 2)
    called = reference + (f"({', '.join(f'{key}={value!r}' for key, value in arguments.items())})" if arguments else "")
    header = [f"{called}, imported by `initdiag import torch` (torch.fx) on an input {list(shape)}.",
              f"Initial values: the module's own, as its constructor drew them after torch.manual_seed({SEED}), kept "
              "as supplied arrays (NAME.init/); `initdiag check --scheme X` redraws the matrices under X."]
    return from_module(model, example, name=reference, header=header, batch=batch)


def parse_shape(text: str) -> tuple:
    try:
        shape = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        shape = ()
    if not shape or any(size < 1 for size in shape):
        raise ImportProblem(f"--input: expected positive sizes without the batch, e.g. 3,224,224, not '{text}'")
    return shape


def parse_arguments(pairs: list) -> dict:
    import yaml

    arguments = {}
    for pair in pairs:
        key, equals, text = str(pair).partition("=")
        if not equals or not key.strip().isidentifier():
            raise ImportProblem(f"--arg: expected key=value (e.g. num_classes=10), not '{pair}'")
        try:
            arguments[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            arguments[key.strip()] = text
    return arguments

