"""Merge layers: the joins of a graph spec (`inputs: [a, b]`), each reading two or more layers' outputs.

add (y = Σ sᵢ·xᵢ, Keras' Add, a ResNet's sum), concat (along the units axis: a feature map's channels, a flat
or sequence input's features; torch.cat(dim=1) / Keras' Concatenate) and multiply (y = a ⊙ b, Keras'
Multiply: gating, and squeeze-and-excitation, where a [channels] gate scales every position of a feature
map, as torchvision's SqueezeExcitation does with its (N, C, 1, 1) scale).

The parser gives a merge's config the per-sample shapes of its inputs (`shapes`) and their layer names
(`sources`, for messages). Forward takes the inputs in that order; backward returns one gradient per
input, then the grads: (dx₀, dx₁, ..., {}).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from initdiag.layers.declare import InputError, LayerKind, Option


class MergeCache(NamedTuple):
    xs: tuple  # the inputs, broadcastable (multiply's backward reads them; add and concat keep none)
    z: np.ndarray  # the output: a merge has no activation
    y: np.ndarray
    shapes: tuple = ()  # the inputs' own shapes (multiply)


def _described(config) -> str:
    return ", ".join(f"'{name}' {list(shape)}" for name, shape in zip(_sources(config), config["shapes"]))


def _sources(config) -> list:
    return list(config.get("sources") or [f"input {i}" for i in range(len(config["shapes"]))])


def _same_shapes(kind: str, config) -> tuple:
    shapes = [tuple(shape) for shape in config["shapes"]]
    if any(shape != shapes[0] for shape in shapes):
        raise InputError(f"{kind} joins inputs of one shape, but got {_described(config)}")
    return shapes[0]


def _unit_axis(config) -> int:
    """The batch array's units axis: a sequence's features are last; a feature map's channels, a flat input's features, first."""
    return -1 if config.get("sequence") else 1


class Add:
    """y = Σ scales[i] · x_i (scales default to 1)."""

    kind = "add"

    def __init__(self, name: str, scales: tuple, unit_axis: int, activation=None):
        self.name, self.scales, self.unit_axis, self.activation = name, scales, unit_axis, activation  # identity
        self.weights = self.bias = None

    def forward(self, *xs):
        y = xs[0] * xs[0].dtype.type(self.scales[0]) if self.scales[0] != 1 else xs[0].copy()
        for scale, x in zip(self.scales[1:], xs[1:]):
            y += x * x.dtype.type(scale) if scale != 1 else x
        return y, MergeCache((), y, y)

    def backward(self, dy: np.ndarray, cache: MergeCache, need_dx: bool = True):
        return (*(dy * dy.dtype.type(scale) if scale != 1 else dy for scale in self.scales), {})


class Concat:
    """The inputs side by side along the units axis."""

    kind = "concat"

    def __init__(self, name: str, widths: tuple, unit_axis: int, activation=None):
        self.name, self.widths, self.unit_axis, self.activation = name, widths, unit_axis, activation  # identity
        self.weights = self.bias = None

    def forward(self, *xs):
        y = np.concatenate(xs, axis=self.unit_axis)
        return y, MergeCache((), y, y)

    def backward(self, dy: np.ndarray, cache: MergeCache, need_dx: bool = True):
        return (*np.split(dy, np.cumsum(self.widths)[:-1], axis=self.unit_axis), {})


class Multiply:
    """y = a ⊙ b ⊙ ..., where an input of one value per unit ([channels] or [channels, 1, 1] against
    [channels, *positions], or [features] against a sequence [steps, features]) scales every position."""

    kind = "multiply"

    def __init__(self, name: str, ranks: tuple, unit_axis: int, activation=None):
        self.name, self.ranks, self.unit_axis, self.activation = name, ranks, unit_axis, activation  # identity
        self.weights = self.bias = None

    def _broadcast(self, x: np.ndarray) -> np.ndarray:
        """x, shaped to broadcast against the full-rank inputs (a gate of one value per unit)."""
        full = max(self.ranks)
        if x.ndim - 1 == full:
            return x
        return x[:, None, :] if self.unit_axis == -1 else x.reshape(x.shape + (1,) * (full - 1))

    def forward(self, *xs):
        shaped = [self._broadcast(x) for x in xs]
        y = shaped[0] * shaped[1]
        for x in shaped[2:]:
            y = y * x
        return y, MergeCache(tuple(shaped), y, y, tuple(x.shape for x in xs))

    def backward(self, dy: np.ndarray, cache: MergeCache, need_dx: bool = True):
        grads = []
        for i, x in enumerate(cache.xs):
            gradient = dy
            for j, other in enumerate(cache.xs):
                if j != i:
                    gradient = gradient * other
            spread = tuple(axis for axis in range(1, gradient.ndim) if x.shape[axis] == 1 and gradient.shape[axis] != 1)
            if spread:  # a gate: the positions (or steps) it scaled, summed
                gradient = gradient.sum(axis=spread, keepdims=True)
            grads.append(gradient.reshape(cache.shapes[i]))
        return (*grads, {})


# ------------------------------------------------------------------ shapes and declarations
def _add_shape(input_shape, config) -> tuple:
    shape = _same_shapes("add", config)
    scales = config.get("scales")
    if scales is not None and len(scales) != len(config["shapes"]):
        raise InputError(f"add has {len(scales)} scales for {len(config['shapes'])} inputs: give one per input")
    return shape


def _concat_shape(input_shape, config) -> tuple:
    shapes = [tuple(shape) for shape in config["shapes"]]
    axis = len(shapes[0]) - 1 if config.get("sequence") else 0
    rest = [shape[:axis] + shape[axis + 1:] for shape in shapes]
    if any(len(shape) != len(shapes[0]) for shape in shapes) or any(r != rest[0] for r in rest):
        what = "features" if config.get("sequence") or len(shapes[0]) == 1 else "channels"
        raise InputError(f"concat joins inputs that differ only in their {what}, but got {_described(config)}")
    return shapes[0][:axis] + (sum(shape[axis] for shape in shapes),) + shapes[0][axis + 1:]


def _multiply_shape(input_shape, config) -> tuple:
    shapes = [tuple(shape) for shape in config["shapes"]]
    full = max(shapes, key=lambda shape: (len(shape), int(np.prod(shape))))
    units = full[-1] if config.get("sequence") else full[0]
    pooled = (units,) + (1,) * (len(full) - 1)  # a [channels, 1, 1] gate, as AdaptiveAvgPool2d(1) leaves it
    for shape in shapes:
        if shape != full and shape != (units,) and (config.get("sequence") or shape != pooled):
            raise InputError(f"multiply joins inputs of one shape, or a [{units}] gate (one value per unit) with "
                             f"{list(full)}, but got {_described(config)}")
    return full


def _parse_add(check, path, value):
    if value in (None, True, {}):
        return {"scales": None}
    if not isinstance(value, dict) or set(value) - {"scales"}:
        if isinstance(value, dict):
            for key in set(value) - {"scales"}:
                check.unknown_key(path + (key,), key, ("scales",), "add option")
        else:
            check.problem(path, f"expected {{scales: [1, 0.5]}} or nothing, not {check.show(value)}")
        return None
    scales = value["scales"]
    if not isinstance(scales, list) or not scales:
        check.problem(path + ("scales",), f"expected one number per input, e.g. [1, 0.5], not {check.show(scales)}")
        return None
    numbers = [check.number(path + ("scales", i), scale) for i, scale in enumerate(scales)]
    return None if None in numbers else {"scales": tuple(float(n) for n in numbers)}


def _parse_plain(kind: str):
    def parse(check, path, value):
        if value in (None, True, {}):
            return {}
        if isinstance(value, dict):
            for key in value:
                check.unknown_key(path + (key,), key, (), f"{kind} option ({kind} takes none)")
        else:
            check.problem(path, f"{kind} takes no options: write `{kind}: {{}}` with inputs: [a, b], not {check.show(value)}")
        return None
    return parse


def _build_add(spec, weights, bias, activation, context):
    scales = spec.config.get("scales") or (1.0,) * len(spec.config["shapes"])
    return Add(spec.name, tuple(scales), _unit_axis(spec.config), activation)


def _build_concat(spec, weights, bias, activation, context):
    axis = len(spec.config["shapes"][0]) - 1 if spec.config.get("sequence") else 0
    return Concat(spec.name, tuple(shape[axis] for shape in spec.config["shapes"]), _unit_axis(spec.config), activation)


def _build_multiply(spec, weights, bias, activation, context):
    return Multiply(spec.name, tuple(len(shape) for shape in spec.config["shapes"]), _unit_axis(spec.config), activation)


def _torch(kind: str):
    def twin(input_shape, config):
        import torch

        class Merge(torch.nn.Module):  # torch has no module for a sum, a cat or a product: the forward is the op
            def forward(self, *xs):
                if kind == "concat":
                    return torch.cat(xs, dim=-1 if config.get("sequence") else 1)
                out = xs[0]
                for x in xs[1:]:
                    out = out + x if kind == "add" else out * x
                return out

        return Merge(), {}
    return twin


def _kind(cls, summary: str, options: tuple, parse, build, output_shape, example, **facts) -> LayerKind:
    return LayerKind(cls.kind, cls, summary, options=options, parse=parse, takes=("name", "ignore"), build=build,
                     example=example, torch=_torch(cls.kind), output_shape=output_shape, joins=True, reads_layout=True,
                     memory_doc="its output (multiply: its inputs too)", saturation_doc="none: a merge has no activation",
                     **facts)


KINDS = (
    _kind(Add, "the sum of its inputs, y = Σ sᵢ·xᵢ (a residual join; Keras' Add)",
          (Option("scales", "numbers", "one factor per input (default: all 1)"),), _parse_add, _build_add, _add_shape,
          ((3, 4), {"scales": [1.0, 0.5]}), adds_to_stream=lambda config: True),
    _kind(Concat, "its inputs side by side along the channels (feature maps) or features (torch.cat(dim=1))", (),
          _parse_plain("concat"), _build_concat, _concat_shape, ((3, 4), {}), aliases=("concatenate",)),
    _kind(Multiply, "the product of its inputs; a [channels] gate scales every position (squeeze-excitation)", (),
          _parse_plain("multiply"), _build_multiply, _multiply_shape, ((3, 4), {}), aliases=("mul",), gates=True),
)
