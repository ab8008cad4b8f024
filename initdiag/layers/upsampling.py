"""Decoder layers: transposed convolutions and upsampling, in the Dense contract.

    forward(x) -> (y, cache)        cache.x input, cache.z pre-activation, cache.y = φ(z)
    backward(dy, cache, dz=None, need_dx=True) -> (dx or None, grads)

Arrays are (batch, channels, *spatial), as PyTorch's NCL / NCHW. Everything is vectorised numpy.

Transposed convolution (nn.ConvTranspose1d/2d) is the gradient of a convolution with respect to its
input, so it runs conv.py's machinery the other way round: every input position's channel vector is
multiplied by the kernel (one GEMM per group: x @ W), and the resulting window of taps is scatter-added
onto the output by col2im (shifted adds, conv.py); the backward pass gathers the output gradient's windows (im2col, a strided
view and one copy) and multiplies them back (two GEMMs, dx and dW). Per axis the output has

    (L - 1)·stride - 2·padding + dilation·(kernel - 1) + output_padding + 1

positions: col2im fills (L - 1)·stride + dilation·(kernel - 1) + 1 + output_padding positions (the last
output_padding ones receive nothing), of which `padding` are cropped on each side.

Weight layout. PyTorch stores (in_channels, filters/groups, *kernel), and its fans
(_calculate_fan_in_and_fan_out) read that tensor: fan_in = filters/groups · taps, fan_out =
in_channels · taps, NOT the convolution's. The drawn matrix here keeps a convolution's layout, one column
per output channel holding its incoming weights: (in_channels/groups · taps, filters), rows ordered
(input channel within the group, *kernel), so statistics read a column as a unit. So

    torch_weight = W.reshape(in/G, taps, G, filters/G).transpose(2, 0, 3, 1).reshape(in, filters/G, *kernel)

(torch_layout) and its inverse from_torch_layout. The weights' role is "conv_transpose": identity (the
Dirac kernel, as torch.nn.init.dirac_ on PyTorch's weight) and delta_orthogonal read it as a conv kernel,
orthogonal makes PyTorch's flattened (in, filters/groups · taps) matrix orthogonal, as
torch.nn.init.orthogonal_ does.

Upsample (nn.Upsample) repeats each position `scale` times (nearest) or interpolates linearly between
the two nearest inputs (linear on [channels, length], bilinear on [channels, height, width]), with
PyTorch's source coordinates: (o + 0.5)/scale - 0.5 clamped at 0, or o·(L-1)/(L_out-1) with
align_corners. Interpolation is one small (L_out, L) matrix per axis, two nonzeros a row: y = A x (Aᵀ on
the other axis), backward Aᵀ dy; nearest is a broadcast copy, backward a reshaped sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from initdiag.layers.conv import (_WORKSPACE, Cache, _col2im, _Conv, _int_tuple, _is_int, _positive_int, _shape_str,
                                  groups_and_bias)
from initdiag.layers.declare import CHANNELS, LayerKind, Option, Weight, checked
from initdiag.layers.pooling import _Weightless


# ------------------------------------------------------------------------------- transposed convolution
def _conv_transpose_config(kind: str, ndim: int, raw) -> dict:
    """The options of a conv_transpose kind with defaults filled and ints broadcast; ValueError names the problem."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"{kind} options must be a mapping, got {raw!r}")
    valid = tuple(option.name for option in CONV_TRANSPOSE_OPTIONS)
    unknown = [str(k) for k in raw if k not in valid]
    if unknown:
        raise ValueError(f"{kind}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")
    missing = [name for name in ("filters", "kernel") if name not in raw]
    if missing:
        raise ValueError(f"{kind} needs {' and '.join(missing)}")
    config = {"filters": _positive_int("filters", raw["filters"]), "kernel": _int_tuple("kernel", raw["kernel"], ndim, 1)}
    for name, default, minimum in (("stride", 1, 1), ("padding", 0, 0), ("output_padding", 0, 0), ("dilation", 1, 1)):
        config[name] = _int_tuple(name, raw.get(name, default), ndim, minimum)
    groups_and_bias(raw, config)
    if any(op >= s and op >= d for op, s, d in zip(config["output_padding"], config["stride"], config["dilation"])):
        raise ValueError(f"output_padding {_shape_str(config['output_padding'])} must be smaller than the stride "
                         f"{_shape_str(config['stride'])} or the dilation {_shape_str(config['dilation'])} on each axis "
                         "(as PyTorch requires)")
    return config


class _Geometry(NamedTuple):
    """A 2-D view of a transposed convolution (1-D layers get a height-1 axis)."""

    channels: int  # input channels
    size: tuple  # input (H, W): the positions the GEMM runs over
    kernel: tuple
    stride: tuple
    dilation: tuple
    padding: tuple  # cropped from each side of `full`
    full: tuple  # what col2im fills: (H-1)·s + d·(k-1) + 1 + output_padding per axis
    out: tuple  # the output (Ho, Wo) = full - 2·padding


def _geometry(kind: str, ndim: int, names: str, input_shape, config) -> _Geometry:
    input_shape = tuple(input_shape)
    if len(input_shape) != ndim + 1 or 0 in input_shape:
        raise ValueError(f"{kind} expects a per-sample input of shape ({names}), got {_shape_str(input_shape)}")
    channels, size = input_shape[0], input_shape[1:]
    groups = config["groups"]
    if channels % groups:
        raise ValueError(f"{kind}: the input {_shape_str(input_shape)} has {channels} channels, "
                         f"not divisible by groups={groups}")
    kernel, stride, dilation, padding = config["kernel"], config["stride"], config["dilation"], config["padding"]
    full = tuple((n - 1) * s + d * (k - 1) + 1 + op
                 for n, s, d, k, op in zip(size, stride, dilation, kernel, config["output_padding"]))
    out = tuple(f - 2 * p for f, p in zip(full, padding))
    if any(o < 1 for o in out):
        raise ValueError(f"{kind}: padding {_shape_str(padding)} leaves no output: the input {_shape_str(input_shape)} "
                         f"gives {_shape_str(full)} positions before padding is cropped from each side")
    if ndim == 1:
        size, kernel, stride, dilation, padding, full, out = ((1,) + size, (1,) + kernel, (1,) + stride, (1,) + dilation,
                                                              (0,) + padding, (1,) + full, (1,) + out)
    return _Geometry(channels, tuple(size), tuple(kernel), tuple(stride), tuple(dilation), tuple(padding), full, out)


def torch_layout(weights: np.ndarray, in_channels: int, groups: int, kernel) -> np.ndarray:
    """Our (in/groups·taps, filters) matrix as PyTorch's ConvTranspose weight (in, filters/groups, *kernel), a copy."""
    taps, filters = math.prod(kernel), weights.shape[1]
    per_group = weights.reshape(in_channels // groups, taps, groups, filters // groups).transpose(2, 0, 3, 1)
    return np.ascontiguousarray(per_group).reshape((in_channels, filters // groups) + tuple(kernel))


def from_torch_layout(weight: np.ndarray, groups: int) -> np.ndarray:
    """PyTorch's ConvTranspose weight (in, filters/groups, *kernel) as our (in/groups·taps, filters) matrix, a copy."""
    weight = np.asarray(weight)
    in_channels, per_out = weight.shape[:2]
    taps = math.prod(weight.shape[2:])
    stacked = weight.reshape(groups, in_channels // groups, per_out, taps).transpose(1, 3, 0, 2)
    return np.ascontiguousarray(stacked).reshape(in_channels // groups * taps, groups * per_out)


class _ConvTranspose:
    kind = ""
    ndim = 0
    axes = ""
    unit_axis = 1  # output channels

    @classmethod
    def _geometry(cls, input_shape, config) -> _Geometry:
        return _geometry(cls.kind, cls.ndim, cls.axes, input_shape, config)

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        return (config["filters"],) + cls._geometry(input_shape, config).out[2 - cls.ndim:]

    @classmethod
    def fans(cls, input_shape, config) -> tuple[int, int]:
        """As torch.nn.init._calculate_fan_in_and_fan_out on PyTorch's weight (in, filters/groups, *kernel)."""
        g = cls._geometry(input_shape, config)
        taps = math.prod(config["kernel"])
        return config["filters"] // config["groups"] * taps, g.channels * taps

    @classmethod
    def weight_shape(cls, input_shape, config) -> tuple[int, int]:
        g = cls._geometry(input_shape, config)
        return g.channels // config["groups"] * math.prod(config["kernel"]), config["filters"]

    @classmethod
    def scratch(cls, input_shape, config, batch: int, itemsize: int) -> dict[str, int]:
        """Bytes per workspace role that one forward and backward pass (need_dx=True) of `batch` takes
        (the roles are conv.py's, shared by every layer of a thread: see _Conv.scratch)."""
        g = cls._geometry(input_shape, config)
        columns = batch * math.prod(g.size)
        rows = config["filters"] * math.prod(g.kernel)  # filters · taps
        roles = {"dzt": g.channels * columns, "gemm": max(rows, g.channels) * columns, "cols": rows * columns,
                 "col2im": batch * config["filters"] * math.prod(g.full)}  # the shifted adds' accumulator
        if g.full != g.out:
            roles["pad"] = roles["col2im"]
        return {role: count * itemsize for role, count in roles.items()}

    # the convolution's constructor: it checks the weights' and bias's shapes against this class's own
    # geometry, weight_shape and output_shape
    __init__ = _Conv.__init__

    def _per_group(self) -> np.ndarray:
        """The weights as (groups, in/groups, filters/groups · taps): PyTorch's layout, stacked by group (a copy)."""
        g, groups = self.geometry, self.groups
        taps = math.prod(g.kernel)
        per_in = g.channels // groups
        stacked = self.weights.reshape(per_in, taps, groups, self.filters // groups).transpose(2, 0, 3, 1)
        return np.ascontiguousarray(stacked).reshape(groups, per_in, -1)

    def _xt(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, *spatial) as (groups, C/groups, N·P) on the workspace: channels first for the GEMMs."""
        batch, channels = x.shape[0], self.geometry.channels
        xt = _WORKSPACE.get("dzt", (channels, batch, math.prod(self.geometry.size)), x.dtype)
        np.copyto(xt, x.reshape(batch, channels, -1).transpose(1, 0, 2))
        return xt.reshape(self.groups, channels // self.groups, -1)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        g, batch, filters = self.geometry, x.shape[0], self.filters
        (kh, kw), (h, w) = g.kernel, g.size
        xt = self._xt(x)
        w_stack = self._per_group()  # (G, C/G, F/G·k)
        rows = filters * kh * kw
        cols = _WORKSPACE.get("gemm", (rows, xt.shape[2]), np.result_type(xt, w_stack))
        np.matmul(w_stack.transpose(0, 2, 1), xt, out=cols.reshape(self.groups, rows // self.groups, -1))  # x @ W
        full = _col2im(cols.reshape(filters, kh, kw, batch, h, w), g.full, g)  # (F, N, *full), shifted adds
        (top, left), (ho, wo) = g.padding, g.out
        z = np.empty((batch,) + self.out_shape, dtype=cols.dtype)
        cropped = full[:, :, top:top + ho, left:left + wo].transpose(1, 0, 2, 3).reshape(z.shape)
        if self.bias is not None and self.bias.any():
            np.add(cropped, self.bias.reshape((filters,) + (1,) * self.ndim), out=z)
        else:
            np.copyto(z, cropped)
        y = self.activation.forward(z)
        return y, Cache(x, z, y)

    def _dcols(self, dz: np.ndarray) -> np.ndarray:
        """The output gradient's windows (F·kh·kw, N·H·W) on the workspace: im2col of dz padded back to `full`."""
        g, batch, filters = self.geometry, dz.shape[0], self.filters
        (top, left), (ho, wo) = g.padding, g.out
        dz4 = dz.reshape((batch, filters) + g.out)
        if g.full != g.out:  # the crop's adjoint: zeros around
            padded = _WORKSPACE.get("pad", (batch, filters) + g.full, dz.dtype)
            padded.fill(0)
            padded[:, :, top:top + ho, left:left + wo] = dz4
            dz4 = padded
        (kh, kw), (sh, sw), (dh, dw), (h, w) = g.kernel, g.stride, g.dilation, g.size
        view = sliding_window_view(dz4, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
        windows = view[:, :, :(h - 1) * sh + 1:sh, :(w - 1) * sw + 1:sw, ::dh, ::dw]  # (N, F, H, W, kh, kw)
        cols = _WORKSPACE.get("cols", (filters, kh, kw, batch, h, w), dz.dtype)
        np.copyto(cols, windows.transpose(1, 4, 5, 0, 2, 3))
        return cols.reshape(filters * kh * kw, batch * h * w)

    def backward(self, dy: np.ndarray | None, cache: Cache, dz: np.ndarray | None = None, need_dx: bool = True):
        """dy = dLoss/dy (batch, *output_shape) -> (dx or None, {"weights": dW, "bias": db})."""
        if dz is None:
            dz = self.activation.backward(cache.z, cache.y, dy)
        g, groups, filters = self.geometry, self.groups, self.filters
        taps = math.prod(g.kernel)
        dcols = self._dcols(dz).reshape(groups, filters // groups * taps, -1)  # (G, F/G·k, N·P)
        xt = self._xt(cache.x)  # (G, C/G, N·P)
        dw_stack = np.matmul(xt, dcols.transpose(0, 2, 1))  # (G, C/G, F/G·k), PyTorch's layout
        per_in = g.channels // groups
        grads = {"weights": np.ascontiguousarray(dw_stack.reshape(groups, per_in, filters // groups, taps)
                                                 .transpose(1, 3, 0, 2)).reshape(self.weights.shape)}
        if self.bias is not None:
            grads["bias"] = dz.sum(axis=tuple(i for i in range(dz.ndim) if i != 1))
        if not need_dx:
            return None, grads
        batch = dz.shape[0]
        dxt = _WORKSPACE.get("gemm", (g.channels, dcols.shape[2]), np.result_type(dcols, self.weights))
        np.matmul(self._per_group(), dcols, out=dxt.reshape(groups, per_in, -1))  # (G, C/G, N·P)
        dx = np.ascontiguousarray(dxt.reshape(g.channels, batch, -1).transpose(1, 0, 2))
        return dx.reshape(cache.x.shape), grads

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}({self.name!r}, {self.input_shape}->{self.out_shape}, kernel={c['kernel']}, "
                f"stride={c['stride']}, padding={c['padding']}, output_padding={c['output_padding']}, "
                f"groups={c['groups']}, {self.activation!r})")


class ConvTranspose1d(_ConvTranspose):
    """y = φ(conv_transpose1d(x, W) + b); input (channels, length), output (filters, length_out)."""

    kind, ndim, axes = "conv_transpose1d", 1, "channels, length"


class ConvTranspose2d(_ConvTranspose):
    """y = φ(conv_transpose2d(x, W) + b); input (channels, height, width), output (filters, height_out, width_out)."""

    kind, ndim, axes = "conv_transpose2d", 2, "channels, height, width"


# ------------------------------------------------------------------------------- upsample
MODES = ("nearest", "linear", "bilinear")
_MODE_RANK = {"linear": 2, "bilinear": 3}  # the per-sample rank each interpolating mode takes


def _upsample_config(raw) -> dict:
    """{scale, mode, align_corners} with defaults filled; a bare value is the scale (upsample: 2)."""
    if raw is None:
        raw = {}
    elif _is_int(raw) or (isinstance(raw, Sequence) and not isinstance(raw, (str, Mapping))):
        raw = {"scale": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"upsample options must be a mapping or a scale, got {raw!r}")
    valid = tuple(option.name for option in UPSAMPLE_OPTIONS)
    unknown = [str(k) for k in raw if k not in valid]
    if unknown:
        raise ValueError(f"upsample: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")
    scale = raw.get("scale", 2)
    ok = _is_int(scale) or (isinstance(scale, Sequence) and not isinstance(scale, str) and len(scale) == 2
                            and all(_is_int(s) for s in scale))
    if not ok or min((scale,) if _is_int(scale) else scale) < 1:
        raise ValueError(f"upsample: scale must be a positive integer, or a list of two for [height, width], got {scale!r}")
    mode = raw.get("mode", "nearest")
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise ValueError(f"upsample: mode must be one of {', '.join(MODES)}, got {mode!r}")
    mode = mode.strip().lower()
    if "align_corners" in raw and mode == "nearest":
        raise ValueError("upsample: align_corners applies to mode linear or bilinear only (as PyTorch), not nearest")
    align = raw.get("align_corners", False)
    if not isinstance(align, (bool, np.bool_)):
        raise ValueError(f"upsample: align_corners must be true or false, got {align!r}")
    return {"scale": int(scale) if _is_int(scale) else tuple(int(s) for s in scale), "mode": mode,
            "align_corners": bool(align)}


def _interpolation(size: int, scale: int, align_corners: bool, dtype) -> np.ndarray:
    """(size·scale, size) matrix of PyTorch's linear interpolation weights along one axis."""
    out = size * scale
    o = np.arange(out, dtype=np.float64)
    if align_corners:
        src = o * ((size - 1) / (out - 1)) if out > 1 else np.zeros(out)
    else:
        src = np.maximum((o + 0.5) * (1.0 / scale) - 0.5, 0.0)  # PyTorch's area_pixel_compute_source_index
    lo = np.minimum(np.floor(src).astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    frac = src - lo
    matrix = np.zeros((out, size))
    np.add.at(matrix, (np.arange(out), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out), hi), frac)
    return matrix.astype(dtype)


class Upsample(_Weightless):
    """Nearest (repeat) or (bi)linear upsampling by an integer `scale` per spatial axis, as nn.Upsample (the
    weightless layers' protocol from pooling: no fans, no weights, no scratch)."""

    kind = "upsample"

    @classmethod
    def _scales(cls, input_shape, config) -> tuple:
        input_shape, mode = tuple(input_shape), config["mode"]
        if len(input_shape) not in (2, 3) or 0 in input_shape:
            raise ValueError(f"upsample expects a per-sample input of shape (channels, length) or "
                             f"(channels, height, width), got {_shape_str(input_shape)}")
        if mode in _MODE_RANK and len(input_shape) != _MODE_RANK[mode]:
            right, axes = ("linear", "length") if len(input_shape) == 2 else ("bilinear", "height, width")
            raise ValueError(f"upsample: mode {mode} does not take the input {_shape_str(input_shape)}, "
                             f"a [channels, {axes}] map: use mode {right}")
        scale, spatial = config["scale"], len(input_shape) - 1
        scales = (scale,) * spatial if _is_int(scale) else tuple(scale)
        if len(scales) != spatial:
            raise ValueError(f"upsample: scale {list(scales)} is one per axis of a [channels, height, width] map; "
                             f"the input {_shape_str(input_shape)} has one spatial axis: give an int")
        return scales

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        scales = cls._scales(input_shape, config)
        return (input_shape[0],) + tuple(n * s for n, s in zip(input_shape[1:], scales))

    def __init__(self, name: str, input_shape, config: dict):
        super().__init__(name, input_shape, config)
        self.scales = self._scales(self.input_shape, config)
        self._matrices = {}

    def _matrix(self, axis: int, dtype) -> np.ndarray:
        key = (axis, np.dtype(dtype).str)
        if key not in self._matrices:
            self._matrices[key] = _interpolation(self.input_shape[1 + axis], self.scales[axis],
                                                 self.config["align_corners"], dtype)
        return self._matrices[key]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        if self.config["mode"] == "nearest":
            spread = x.reshape(x.shape[:2] + tuple(v for n in x.shape[2:] for v in (n, 1)))
            shape = x.shape[:2] + tuple(v for n, s in zip(x.shape[2:], self.scales) for v in (n, s))
            y = np.ascontiguousarray(np.broadcast_to(spread, shape)).reshape((x.shape[0],) + self.out_shape)
        else:
            y = x @ self._matrix(len(self.scales) - 1, x.dtype).T  # the last axis
            if len(self.scales) == 2:
                y = np.matmul(self._matrix(0, x.dtype), y)  # the height axis
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        x = cache.x
        if self.config["mode"] == "nearest":
            split = x.shape[:2] + tuple(v for n, s in zip(x.shape[2:], self.scales) for v in (n, s))
            return dz.reshape(split).sum(axis=tuple(range(3, 2 + 2 * len(self.scales), 2)))
        dx = dz @ self._matrix(len(self.scales) - 1, dz.dtype)
        if len(self.scales) == 2:
            dx = np.matmul(self._matrix(0, dz.dtype).T, dx)
        return dx

    def __repr__(self) -> str:
        return f"Upsample({self.name!r}, {self.input_shape}->{self.out_shape}, {self.config['mode']}, scale={self.scales})"


# ------------------------------------------------------------------------------- declarations
def _weights(kind_class):
    def weights(input_shape, config) -> dict:
        return {"weights": Weight(kind_class.weight_shape(input_shape, config), "conv_transpose",
                                  kind_class.fans(input_shape, config), tuple(config["kernel"]), config["groups"])}
    return weights


def _torch_conv_transpose(input_shape, config):
    import torch

    module = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d)[len(config["kernel"]) - 1]
    return module(input_shape[0], config["filters"], config["kernel"], stride=config["stride"], padding=config["padding"],
                  output_padding=config["output_padding"], groups=config["groups"], bias=config["bias"],
                  dilation=config["dilation"]), {"weights": "weight"}


def _torch_upsample(input_shape, config):
    import torch

    scale = config["scale"]
    return torch.nn.Upsample(scale_factor=float(scale) if _is_int(scale) else tuple(float(s) for s in scale),
                             mode=config["mode"], align_corners=None if config["mode"] == "nearest" else config["align_corners"]), {}


def _build(spec, weights, bias, activation, context):
    if spec.kind == "upsample":
        return Upsample(spec.name, spec.input_shape, spec.config)
    cls = ConvTranspose1d if spec.kind == "conv_transpose1d" else ConvTranspose2d
    return cls(spec.name, weights, bias, activation, spec.input_shape, spec.config)


def _scratch_elements(layer) -> int:
    """Per sample: every workspace role one pass takes (the GEMM output and im2col matrix, filters·taps times the
    input, lead)."""
    cls = LAYER_CLASSES[layer.kind]
    return sum(cls.scratch(layer.input_shape, layer.config, 1, 1).values())


CONV_TRANSPOSE_OPTIONS = (
    Option("filters", "int", "output channels", required=True, minimum=1),
    Option("kernel", "ints", "the window: an int, or one per spatial axis", required=True, minimum=1),
    Option("stride", "ints", "the step between input positions on the output: an int, or one per axis", default=1,
           minimum=1),
    Option("padding", "ints", "positions cropped from each side of the output: an int, or one per axis", default=0,
           minimum=0),
    Option("output_padding", "ints", "positions added after the last (smaller than stride or dilation)", default=0,
           minimum=0),
    Option("dilation", "ints", "spacing of the kernel taps", default=1, minimum=1),
    Option("groups", "int", "grouped (filters and channels divisible by it)", default=1, minimum=1),
    Option("bias", "bool", "false drops the bias", default=True),
)
UPSAMPLE_OPTIONS = (
    Option("scale", "ints", "the factor: an int, or [height, width] (also as the bare value: upsample: 2)",
           default=2, minimum=1),
    Option("mode", "choice", "nearest (repeat), linear ([channels, length]) or bilinear ([channels, height, width])",
           default="nearest", choices=MODES),
    Option("align_corners", "bool", "linear and bilinear only: corner pixels' centres aligned (PyTorch's flag)",
           default=False),
)
LAYER_CLASSES = {"conv_transpose1d": ConvTranspose1d, "conv_transpose2d": ConvTranspose2d, "upsample": Upsample}


def _conv_transpose_kind(kind_class, summary: str, example: tuple, layout=None) -> LayerKind:
    return LayerKind(
        kind_class.kind, kind_class, summary, options=CONV_TRANSPOSE_OPTIONS,
        parse=checked(lambda raw: _conv_transpose_config(kind_class.kind, kind_class.ndim, raw)),
        takes=("name", "activation", "init", "bias_init", "ignore"), build=_build, example=example,
        torch=_torch_conv_transpose, weights=_weights(kind_class), layout=layout, elementwise_activation=True,
        scratch_elements=_scratch_elements, extra={"ndim": kind_class.ndim},
        memory_doc="its input, pre-activation and output; scratch: the GEMM output (filters·taps × the input), the "
                   "col2im accumulator (the output's size) and the windows of the output gradient",
    )


KINDS = (
    _conv_transpose_kind(ConvTranspose1d, "a 1-D transposed convolution over [channels, length] (nn.ConvTranspose1d)",
                         ((4, 5), {"filters": 3, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}),
                         layout=CHANNELS),
    _conv_transpose_kind(ConvTranspose2d, "a 2-D transposed convolution over [channels, height, width] "
                                          "(nn.ConvTranspose2d), the decoder's learned upsampling",
                         ((4, 3, 4), {"filters": 2, "kernel": [3, 2], "stride": 2, "padding": [1, 0],
                                      "output_padding": [1, 0], "groups": 2})),
    LayerKind("upsample", Upsample, "repeat (nearest) or interpolate (linear, bilinear) each position by an integer "
              "scale (nn.Upsample)", options=UPSAMPLE_OPTIONS, parse=checked(_upsample_config), takes=("name", "ignore"),
              build=_build, example=((2, 3, 4), {"scale": 2, "mode": "bilinear"}), torch=_torch_upsample, bare="scale",
              extra={"ndim": 2}, memory_doc="its input and output", saturation_doc="none (no activation)"),
)
