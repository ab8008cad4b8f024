"""Sequences made from images and read back into vectors (a ViT's front and head), in the Dense contract.

    forward(x) -> (y, cache)        cache.x input, cache.z pre-activation (y itself where there is none), cache.y
    backward(dy, cache, dz=None, need_dx=True) -> (dx or None, grads)

``Patchify`` (torchvision VisionTransformer._process_input: conv_proj, then flatten(2).transpose(1, 2))
    [C, H, W] -> [steps = (H/ph)·(W/pw), dim]: each ph×pw patch, in row-major patch order, through one
    matrix, y = φ(patch @ W + b). It is nn.Conv2d(C, dim, patch, stride=patch) read as a sequence, with a
    conv's weight layout and fans: W is (C·ph·pw, dim), rows in torch's (channel, kernel row, kernel column)
    order (conv.torch_layout turns it into torch's (dim, C, ph, pw)); fan_in = C·ph·pw, fan_out = dim·ph·pw.
    The patches do not overlap, so there is no im2col: one reshape/transpose copies the input into the
    (N·steps, C·ph·pw) patch matrix (the scratch: the input's size), and one GEMM does the rest; the backward
    pass rebuilds that matrix from cache.x rather than keeping it. H and W must be multiples of the patch: a
    plain stride-ph Conv2d would drop the last H % ph rows (and W % pw columns) without a word, and
    torchvision's ViT refuses such an image ("Wrong image height!"), so this is a located spec error.

``ClassToken`` (ViT's class_token, BERT's [CLS])
    [steps, dim] -> [steps + 1, dim]: one learned (dim,) row put in front of every sample's sequence. Its
    initial value is std · N(0, 1), drawn from the layer's own weight stream (as `init: {normal: {std: s}}`
    would draw a (dim, 1) matrix there); std 0, the default, is torchvision's torch.zeros(1, 1, dim); timm's
    ViT draws it with std 1e-6. It is not an `init` scheme: a one-row table, outside the rules of thumb, like
    the position and token tables. Backward: dx is dy without its first row; the token's gradient is that
    row summed over the batch.

``Select`` (x[:, index]: ViT's head on the class token)
    [steps, features] -> [features], the token at `index` (negative counts from the end). Weightless; the
    gradient goes to that token's row, zeros elsewhere.

Arrays are (batch, *per-sample shape); dtypes are kept (float32 in, float32 out).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from initdiag import activations, sampling
from initdiag.activations import Activation
from initdiag.layers.conv import _int_tuple, _positive_int
from initdiag.layers.declare import SEQUENCE, InputError, LayerKind, Option, Weight, checked
from initdiag.layers.norm import own_options


class Cache(NamedTuple):
    x: np.ndarray  # (batch, *input_shape) input
    z: np.ndarray  # (batch, *output_shape) pre-activation (y itself for a layer without one)
    y: np.ndarray  # (batch, *output_shape) output


# ------------------------------------------------------------------------------- patchify
class Patchify:
    """y = φ(patches(x) @ W + b): (batch, C, H, W) -> (batch, (H/ph)·(W/pw), dim); see the module docstring."""

    kind = "patchify"
    unit_axis = -1  # a sequence's features

    @staticmethod
    def grid(input_shape, config) -> tuple[int, int]:
        """(patch rows, patch columns) of an input [C, H, W]; InputError when the patch does not divide it."""
        if len(input_shape) != 3:
            raise InputError(f"patchify cuts an image [channels, height, width] into patches, but its input is "
                             f"{list(input_shape)}")
        (_, height, width), (ph, pw) = input_shape, config["patch"]
        rest = [f"{axis} {size} % {patch} = {size % patch} {what}" for axis, size, patch, what in
                (("height", height, ph, "rows"), ("width", width, pw, "columns")) if size % patch]
        if rest:
            raise InputError(f"patchify: the input {list(input_shape)} does not divide into {ph}×{pw} patches "
                             f"({'; '.join(rest)} would be dropped, as a stride-{ph}×{pw} Conv2d drops them; "
                             "torchvision's ViT refuses such an image): crop or pad the input, or take a patch "
                             "that divides it")
        return height // ph, width // pw

    def __init__(self, name: str, weights: np.ndarray, bias: np.ndarray | None, activation: Activation,
                 input_shape, config: dict):
        self.name = name
        self.weights = weights
        self.bias = bias
        self.activation = activation
        self.input_shape = tuple(input_shape)
        self.patch = tuple(config["patch"])
        self.rows, self.cols = self.grid(self.input_shape, config)
        channels, (ph, pw) = self.input_shape[0], self.patch
        if tuple(weights.shape) != (channels * ph * pw, config["dim"]):
            raise ValueError(f"patchify {name!r}: weights {tuple(weights.shape)}, expected "
                             f"{(channels * ph * pw, config['dim'])} for input {self.input_shape}")

    def _patches(self, x: np.ndarray) -> np.ndarray:
        """(batch·steps, C·ph·pw), a copy: patch (i, j) of sample n is row (n·rows + i)·cols + j, its columns
        in torch's kernel order (channel, kernel row, kernel column)."""
        (ph, pw), channels = self.patch, self.input_shape[0]
        grid = x.reshape(x.shape[0], channels, self.rows, ph, self.cols, pw).transpose(0, 2, 4, 1, 3, 5)
        return grid.reshape(-1, channels * ph * pw)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        z = (self._patches(x) @ self.weights).reshape(x.shape[0], self.rows * self.cols, -1)
        if self.bias is not None and self.bias.any():
            z += self.bias
        y = self.activation.forward(z)
        return y, Cache(x, z, y)

    def backward(self, dy: np.ndarray | None, cache: Cache, dz: np.ndarray | None = None, need_dx: bool = True):
        """dy (batch, steps, dim) -> (dx (batch, C, H, W) or None, {"weights": dW, "bias": db})."""
        if dz is None:
            dz = self.activation.backward(cache.z, cache.y, dy)
        rows = dz.reshape(-1, dz.shape[-1])
        grads = {"weights": self._patches(cache.x).T @ rows}  # rebuilt, not cached: it is the input's size
        if self.bias is not None:
            grads["bias"] = rows.sum(axis=0)
        if not need_dx:
            return None, grads
        (ph, pw), channels = self.patch, self.input_shape[0]
        dpatches = (rows @ self.weights.T).reshape(dz.shape[0], self.rows, self.cols, channels, ph, pw)
        return dpatches.transpose(0, 3, 1, 4, 2, 5).reshape(cache.x.shape), grads

    def __repr__(self) -> str:
        return (f"Patchify({self.name!r}, {self.input_shape}->({self.rows * self.cols}, {self.weights.shape[1]}), "
                f"patch={self.patch}, {self.activation!r})")


def _patchify_config(raw) -> dict:
    config = own_options("patchify", raw, PATCHIFY_OPTIONS)
    if "patch" not in config or "dim" not in config:
        raise ValueError("patchify needs " + " and ".join(k for k in ("patch", "dim") if k not in config))
    config["patch"] = _int_tuple("patch", config["patch"], 2, 1)
    config["dim"] = _positive_int("dim", config["dim"])
    if not isinstance(config["bias"], (bool, np.bool_)):
        raise ValueError(f"bias must be true or false, got {config['bias']!r}")
    config["bias"] = bool(config["bias"])
    return config


def _patchify_shape(input_shape, config) -> tuple:
    rows, cols = Patchify.grid(input_shape, config)
    return (rows * cols, config["dim"])


def _patchify_weights(input_shape, config) -> dict:
    Patchify.grid(input_shape, config)
    taps = math.prod(config["patch"])
    fan_in = input_shape[0] * taps
    return {"weights": Weight((fan_in, config["dim"]), "conv", (fan_in, config["dim"] * taps), tuple(config["patch"]))}


def _patchify_torch(input_shape, config):
    import torch

    patch = tuple(config["patch"])
    return torch.nn.Conv2d(input_shape[0], config["dim"], patch, stride=patch, bias=config["bias"]), {"weights": "weight"}


PATCHIFY_OPTIONS = (
    Option("patch", "ints", "the patch (kernel = stride): an int, or [height, width]; it must divide the image",
           required=True, minimum=1),
    Option("dim", "int", "the embedding width (the sequence's features)", required=True, minimum=1),
    Option("bias", "bool", "false drops the bias", default=True),
)


# ------------------------------------------------------------------------------- class token
class ClassToken:
    """(batch, steps, dim) -> (batch, steps + 1, dim), the learned token first; see the module docstring."""

    kind = "class_token"
    unit_axis = -1
    weights = bias = None  # no `init` matrix: the token is params["token"], outside the schemes

    @classmethod
    def parameter_shapes(cls, input_shape, config=None) -> dict:
        """token: one row of the sequence's width (what a `supplied:` file names)."""
        return {"token": (input_shape[-1],)}

    def __init__(self, name: str, token: np.ndarray):
        self.name = name
        self.params = {"token": np.asarray(token)}
        self.activation = activations.make("identity")

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        token = self.params["token"]
        if x.ndim != 3 or x.shape[2] != token.shape[0]:
            raise ValueError(f"class_token '{self.name}' expects (batch, steps, {token.shape[0]}), got {x.shape}")
        y = np.empty((x.shape[0], x.shape[1] + 1, x.shape[2]), dtype=x.dtype)
        y[:, 0] = token
        y[:, 1:] = x
        return y, Cache(x, y, y)

    def backward(self, dy: np.ndarray | None, cache: Cache, dz: np.ndarray | None = None, need_dx: bool = True):
        """dy (batch, steps + 1, dim) -> (dy[:, 1:], {"token": dy[:, 0] summed over the batch})."""
        if dz is None:
            dz = dy
        token = self.params["token"]
        grads = {"token": dz[:, 0].sum(axis=0).astype(token.dtype, copy=False)}
        return (np.ascontiguousarray(dz[:, 1:]) if need_dx else None), grads

    def __repr__(self) -> str:
        return f"ClassToken({self.name!r}, dim={self.params['token'].shape[0]})"


def _sequence_input(key: str, input_shape, config, what: str) -> None:
    """InputError unless the input is a sequence [steps, features] (config["sequence"]: the spec's layout)."""
    if len(input_shape) != 2 or not config.get("sequence", True):
        laid = " (a conv feature map [channels, length])" if len(input_shape) == 2 else ""
        raise InputError(f"{key} {what} a sequence [steps, features], but its input is {list(input_shape)}{laid}")


def _class_token_config(raw) -> dict:
    config = own_options("class_token", raw, CLASS_TOKEN_OPTIONS)
    std = config["std"]
    if isinstance(std, bool) or not isinstance(std, Real) or not math.isfinite(std) or std < 0:
        raise ValueError(f"class_token: std must be a number >= 0 (0: torchvision's zeros; timm: 1e-6), got {std!r}")
    config["std"] = float(std)
    return config


def _class_token_shape(input_shape, config) -> tuple:
    _sequence_input("class_token", input_shape, config, "puts a token in front of")
    return (input_shape[0] + 1, input_shape[1])


def _class_token_build(spec, weights, bias, activation, context):
    dim, std = spec.input_shape[1], spec.config["std"]
    token = np.zeros(dim, dtype=context.dtype)
    if std > 0:  # as `init: {normal: {std}}` on a (dim, 1) matrix from the layer's own weight stream
        if context.weights_rng is None:
            raise ValueError(f"class_token '{spec.name}': std {std} needs the layer's weight stream (layers.make(weights_rng=...))")
        token = sampling.standard_normal(context.weights_rng, (dim, 1), context.dtype)[:, 0] * context.dtype.type(std)
    return ClassToken(spec.name, token)


def _class_token_torch(input_shape, config):
    import torch

    class ClassTokenModule(torch.nn.Module):
        """torchvision's `torch.cat([class_token.expand(n, -1, -1), x], dim=1)`, its (1, 1, dim) token kept (dim,)."""

        def __init__(self, dim: int):
            super().__init__()
            self.token = torch.nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return torch.cat([self.token.expand(x.shape[0], 1, -1), x], dim=1)

    return ClassTokenModule(input_shape[1]), {}


def _class_token_elements(layer_spec, batch: int = 0) -> int:
    """The token and its gradient, which no weight count holds (the layer has no `init` matrix)."""
    return 2 * layer_spec.input_shape[-1]


CLASS_TOKEN_OPTIONS = (
    Option("std", "number", "its initial value is std·N(0, 1); 0 is torchvision's zeros, timm draws std 1e-6",
           default=0.0, minimum=0),
)


# ------------------------------------------------------------------------------- select
class Select:
    """(batch, steps, features) -> (batch, features): the token at `index` (x[:, index])."""

    kind = "select"
    unit_axis = 1
    weights = bias = None

    def __init__(self, name: str, index: int):
        self.name = name
        self.index = index
        self.activation = activations.make("identity")

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        y = np.ascontiguousarray(x[:, self.index])  # a copy: a view would keep the whole input alive as the output
        return y, Cache(x, y, y)

    def backward(self, dy: np.ndarray | None, cache: Cache, dz: np.ndarray | None = None, need_dx: bool = True):
        if dz is None:
            dz = dy
        if not need_dx:
            return None, {}
        dx = np.zeros(cache.x.shape, dtype=dz.dtype)
        dx[:, self.index] = dz
        return dx, {}

    def __repr__(self) -> str:
        return f"Select({self.name!r}, index={self.index})"


def _select_config(raw) -> dict:
    if isinstance(raw, Real) and not isinstance(raw, bool):  # select: 0
        raw = {"index": raw}
    config = own_options("select", raw, SELECT_OPTIONS)
    index = config["index"]
    if isinstance(index, float) and index.is_integer():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, Integral):
        raise ValueError(f"select: index must be a whole number (negative counts from the end), got {index!r}")
    config["index"] = int(index)
    return config


def _select_shape(input_shape, config) -> tuple:
    _sequence_input("select", input_shape, config, "takes one token of")
    steps, index = input_shape[0], config["index"]
    if not -steps <= index < steps:
        raise InputError(f"select: index {index} is out of range for a sequence of {steps} steps "
                         f"(0 to {steps - 1}, or -{steps} to -1 from the end)")
    return (input_shape[1],)


def _select_torch(input_shape, config):
    import torch

    class SelectModule(torch.nn.Module):
        def __init__(self, index: int):
            super().__init__()
            self.index = index

        def forward(self, x):
            return x[:, self.index]

    return SelectModule(config["index"]), {}


SELECT_OPTIONS = (Option("index", "int", "the token's position (written bare: select: 0); negative counts from the end",
                         default=0),)


KINDS = (
    LayerKind(
        "patchify", Patchify, "an image [C, H, W] cut into patches, each a token: [steps, dim] (ViT's conv_proj, flattened)",
        options=PATCHIFY_OPTIONS, parse=checked(_patchify_config), takes=("name", "activation", "init", "bias_init", "ignore"),
        build=lambda spec, weights, bias, activation, context: Patchify(spec.name, weights, bias, activation,
                                                                         spec.input_shape, spec.config),
        example=((3, 8, 6), {"patch": [4, 3], "dim": 5}), torch=_patchify_torch, output_shape=_patchify_shape,
        weights=_patchify_weights, unit_axis=-1, layout=SEQUENCE, scratch_elements=lambda layer: math.prod(layer.input_shape),
        aliases=("patch_embedding",), extra={"ndim": 2},  # patch: an int or [height, width]
        memory_doc="its input, pre-activation and output; scratch: the patch matrix (the input's size, rebuilt in backward)",
    ),
    LayerKind(
        "class_token", ClassToken, "a learned token put before a sequence: [steps, dim] → [steps + 1, dim] (ViT's cls token)",
        options=CLASS_TOKEN_OPTIONS, parse=checked(_class_token_config), takes=("name", "ignore"), build=_class_token_build,
        example=((4, 3), {"std": 0.5}), torch=_class_token_torch, output_shape=_class_token_shape, unit_axis=-1,
        layout=SEQUENCE, assumes_layout=SEQUENCE, reads_layout=True, table=True, holds_parameters=True, cache_elements=_class_token_elements,
        aliases=("cls_token",), memory_doc="its input and output, and the token and its gradient",
        saturation_doc="none (no activation)",
    ),
    LayerKind(
        "select", Select, "one token of a sequence: [steps, features] → [features] (x[:, index]; ViT's head reads the class token)",
        options=SELECT_OPTIONS, parse=checked(_select_config), takes=("name", "ignore"),
        build=lambda spec, weights, bias, activation, context: Select(spec.name, spec.config["index"]),
        example=((4, 3), {"index": -1}), torch=_select_torch, output_shape=_select_shape, bare="index",
        assumes_layout=SEQUENCE, reads_layout=True, memory_doc="its input and output", saturation_doc="none (no activation)",
    ),
)
