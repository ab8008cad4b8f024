"""Convolution layers (and the window machinery pooling.py shares), in the Dense contract.

    forward(x) -> (y, cache)        cache.x input, cache.z pre-activation, cache.y = φ(z)
    backward(dy, cache, dz=None, need_dx=True) -> (dx or None, grads)

Arrays are (batch, channels, *spatial), as PyTorch's NCL / NCHW; dtypes are kept (float32
in, float32 out, given float32 parameters). Everything is vectorised numpy: no Python loop over
samples, positions, channels or kernel taps.

Convolution is im2col + one GEMM. The input windows are gathered, through a strided view
(`sliding_window_view`) and one copy, into the matrix `cols` (C·kh·kw, N·Ho·Wo) whose rows are
ordered (channel, kernel row, kernel column) as PyTorch flattens a kernel; then

    forward   zt    = W.T @ cols      (F, N·Ho·Wo), one BLAS GEMM, then transposed to z (N, F, Ho, Wo)
    backward  dW    = cols @ dzt.T    (C·kh·kw, F), dzt being dz transposed to (F, N·Ho·Wo)
              dcols = W @ dzt         (C·kh·kw, N·Ho·Wo), scattered back onto the input by col2im

col2im is shifted adds: each tap's (Ho, Wo) grid is added, in row-major tap order, onto the input
positions it read, in a (C, N, Hp, Wp) accumulator the size of the padded input (no kh·kw-sized
buffer), a block of channels at a time so that the block stays in cache. The backward pass rebuilds `cols` from cache.x rather than keeping it in the cache:
`cols` is kh·kw times the input, and a run keeps every layer's cache until the backward pass.
With groups, the GEMMs are batched over the groups (np.matmul on (groups, ...) stacks).

Temporaries (padded input, cols, GEMM outputs, the col2im accumulator) live in per-thread scratch
buffers reused from layer to layer and pass to pass, since taking fresh pages for them on
every call can cost more than the arithmetic. They are kept after a pass, sized by the largest
layer; `scratch()` tells a layer's need, `workspace_bytes()` what is held, and
`release_workspace()` frees it. Nothing returned to a caller (y, z, dx, grads) lives there.

Weight layout. The initialisation schemes draw a 2-D matrix (rows, cols) = weight_shape():
for a convolution (in_channels/groups · kh · kw, filters), column j holding output channel j's
incoming weights, rows in PyTorch's (in/groups, kh, kw) flattening order. So

    torch_weight = W.T.reshape(filters, in_channels // groups, kh, kw)    (torch_layout)
    W            = torch_weight.reshape(filters, -1).T                    (from_torch_layout)

and `orthogonal` on W makes PyTorch's (out, in·kh·kw) matrix orthogonal, as
torch.nn.init.orthogonal_ does. Fans are PyTorch's (_calculate_fan_in_and_fan_out on that
weight): fan_in = in/groups · kh·kw, fan_out = filters · kh·kw, NOT the matrix's (rows, cols).

Padding "same": the output has ceil(input / stride) positions per axis, as Keras/TensorFlow
padding="same"; the total padding max((out-1)·stride + (k-1)·dilation + 1 - in, 0) is split
with the smaller half before and the larger after (TensorFlow's rule, which is also PyTorch's
padding="same" for stride 1, the only stride PyTorch allows it for). With an even kernel the
split is therefore asymmetric.

Pools have no padding and floor their output size (PyTorch's defaults, ceil_mode=False).
Max-pool backward sends each window's gradient to its first maximum in row-major window order
(PyTorch's CPU kernel keeps the first of tied maxima, `val > maxval`), accumulating where
windows overlap (pooling.py: per-tap masks and shifted adds).

Constructors:
    Conv1d(name, weights, bias, activation, input_shape, config)   input (channels, length)
    Conv2d(name, weights, bias, activation, input_shape, config)   input (channels, height, width)
    MaxPool2d(name, input_shape, config), AvgPool2d(...), GlobalAvgPool(...), Flatten(...)   (pooling.py)
where `config` is normalize_config(kind, raw) and input_shape the per-sample input shape.
Weightless layers have weights = bias = None, an identity `activation` (z is y) and
return {} as grads; their weight_shape / fans are None.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from initdiag.activations import Activation
from initdiag.layers.declare import CHANNELS, LayerKind, Option, Weight, checked


class Cache(NamedTuple):
    x: np.ndarray  # (batch, *input_shape) input
    z: np.ndarray  # (batch, *output_shape) pre-activation (y itself for weightless layers)
    y: np.ndarray  # (batch, *output_shape) output φ(z)


# ------------------------------------------------------------------------------- configuration
def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _positive_int(key: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def _int_tuple(key: str, value, ndim: int, minimum: int) -> tuple[int, ...]:
    """An int broadcast to ndim, or a list of ndim ints, each >= minimum."""
    what = "positive" if minimum == 1 else "non-negative"
    expected = f"a {what} integer" + (f" or a list of {ndim} {what} integers" if ndim > 1 else "")
    if _is_int(value):
        items = (value,) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == ndim:
        items = tuple(value)
    else:
        raise ValueError(f"{key} must be {expected}, got {value!r}")
    if not all(_is_int(v) and v >= minimum for v in items):
        raise ValueError(f"{key} must be {expected}, got {value!r}")
    return tuple(int(v) for v in items)


def _padding(value, ndim: int):
    choices = "'valid', 'same', a non-negative integer" + (f" or a list of {ndim} of them" if ndim > 1 else "")
    if isinstance(value, str):
        if value.strip().lower() in ("valid", "same"):
            return value.strip().lower()
        raise ValueError(f"padding must be {choices}, got {value!r}")
    try:
        return _int_tuple("padding", value, ndim, 0)
    except ValueError:
        raise ValueError(f"padding must be {choices}, got {value!r}") from None


def normalize_config(kind: str, raw: Mapping | None) -> dict:
    """The layer options of `kind` (a conv or pool kind) with defaults filled and ints broadcast to tuples.

    `raw` holds this layer's own options only (the kind's declared options: not activation, init, name...).
    Defaults: stride 1 (pools: the kernel), padding "valid", dilation 1, groups 1, bias True.
    Raises ValueError naming the option and the valid choices.
    """
    from initdiag.layers import LAYERS, lookup  # the kind's declared options (declared below: imported late)

    kind = lookup(kind)
    options = LAYERS[kind].options
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"{kind} options must be a mapping, got {raw!r}")
    valid = tuple(option.name for option in options)
    unknown = [str(k) for k in raw if k not in valid]
    if unknown:
        choices = ", ".join(valid) if valid else "none"
        raise ValueError(f"{kind}: unknown option(s) {', '.join(unknown)}; valid options: {choices}")
    missing = [option.name for option in options if option.required and option.name not in raw]
    if missing:
        raise ValueError(f"{kind} needs {' and '.join(missing)}")
    if not valid:
        return {}
    ndim = LAYERS[kind].extra["ndim"]
    config = {"kernel": _int_tuple("kernel", raw["kernel"], ndim, 1)}
    config["stride"] = _int_tuple("stride", raw["stride"], ndim, 1) if "stride" in raw else (
        config["kernel"] if kind in ("maxpool2d", "avgpool2d") else (1,) * ndim)
    if kind in ("maxpool2d", "avgpool2d"):  # PyTorch's pool padding (at most half the window) and ceil_mode
        config["padding"] = _int_tuple("padding", raw.get("padding", 0), ndim, 0)
        if any(2 * p > k for p, k in zip(config["padding"], config["kernel"])):
            raise ValueError(f"padding {_shape_str(config['padding'])} must be at most half the kernel "
                             f"{_shape_str(config['kernel'])} on each axis (as PyTorch requires)")
        ceil_mode = raw.get("ceil_mode", False)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise ValueError(f"ceil_mode must be true or false, got {ceil_mode!r}")
        config["ceil_mode"] = bool(ceil_mode)
    if kind in ("conv1d", "conv2d"):
        config["filters"] = _positive_int("filters", raw["filters"])
        config["padding"] = _padding(raw.get("padding", "valid"), ndim)
        config["dilation"] = _int_tuple("dilation", raw.get("dilation", 1), ndim, 1)
        groups_and_bias(raw, config)
    return config


def groups_and_bias(raw: dict, config: dict) -> None:
    """A convolution's (or a transposed one's) `groups` (dividing its filters) and `bias` options, into `config`."""
    config["groups"] = _positive_int("groups", raw.get("groups", 1))
    bias = raw.get("bias", True)
    if not isinstance(bias, (bool, np.bool_)):
        raise ValueError(f"bias must be true or false, got {bias!r}")
    config["bias"] = bool(bias)
    if config["filters"] % config["groups"]:
        raise ValueError(f"filters={config['filters']} is not divisible by groups={config['groups']}")


# ------------------------------------------------------------------------------- geometry
class _Geometry(NamedTuple):
    """A 2-D view of a convolution or pool (1-D layers get a height-1 axis)."""

    channels: int
    size: tuple[int, int]  # input (H, W)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))
    out: tuple[int, int]  # output (Ho, Wo)

    @property
    def padded(self) -> tuple[int, int]:
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.size, self.pads))


def _shape_str(shape) -> str:
    return str(tuple(int(s) for s in shape))  # (5,) for one axis, as Python writes it


def _pads(padding, size, kernel, stride, dilation):
    if padding == "valid":
        return tuple((0, 0) for _ in size)
    if padding == "same":
        pads = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return tuple((p, p) for p in padding)


def _geometry(kind: str, input_shape, config, ndim: int, names: str, pads=None) -> _Geometry:
    """Check `input_shape` against the kernel and compute every size; ValueError naming the shapes."""
    input_shape = tuple(input_shape)
    if len(input_shape) != ndim + 1:
        raise ValueError(f"{kind} expects a per-sample input of shape ({names}), "
                         f"got {_shape_str(input_shape)}")
    channels, size = input_shape[0], input_shape[1:]
    kernel, stride = config["kernel"], config["stride"]
    dilation = config.get("dilation", (1,) * ndim)
    if pads is None:
        pads = _pads(config.get("padding", "valid"), size, kernel, stride, dilation)
    extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(size, pads))
    if any(e > p for e, p in zip(extent, padded)):
        detail = f"kernel {_shape_str(kernel)}"
        if any(d > 1 for d in dilation):
            detail += f" with dilation {_shape_str(dilation)} spans {_shape_str(extent)}"
        where = f"the input {_shape_str(input_shape)}"
        if padded != size:
            where += f" padded to {_shape_str(padded)}"
        raise ValueError(f"{kind}: {detail} is larger than {where}")
    out = tuple((p - e) // s + 1 for p, e, s in zip(padded, extent, stride))
    if ndim == 1:  # a height-1 2-D problem
        size, kernel, stride, dilation, pads, out = ((1,) + size, (1,) + kernel, (1,) + stride,
                                                     (1,) + dilation, ((0, 0),) + pads, (1,) + out)
    return _Geometry(channels, tuple(size), tuple(kernel), tuple(stride), tuple(dilation), tuple(pads), tuple(out))


# ------------------------------------------------------------------------------- workspace
class _Workspace(threading.local):
    """Reusable scratch buffers for the temporaries of im2col, the GEMMs and col2im, per thread.

    Those temporaries are several times a layer's activations, and taking fresh pages from the
    operating system for them on every call can cost more than the arithmetic (each first touch
    of a page faults). Layers run one after another, so one buffer per role, grown to the largest
    layer's need, serves them all. No array handed to a caller ever lives in here.
    """

    def __init__(self):
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, role: str, shape, dtype) -> np.ndarray:
        """An uninitialised array of `shape` and `dtype` on `role`'s buffer (valid until that role is asked again)."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buffer = self.buffers.get(role)
        if buffer is None or buffer.nbytes < nbytes:
            self.buffers.pop(role, None)  # free the old one before taking the new
            buffer = self.buffers[role] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)


_WORKSPACE = _Workspace()


def release_workspace() -> None:
    """Free this thread's scratch buffers (they are otherwise kept for the next pass)."""
    _WORKSPACE.buffers.clear()


def workspace_bytes() -> int:
    """Bytes this thread's scratch buffers hold now."""
    return sum(buffer.nbytes for buffer in _WORKSPACE.buffers.values())


# ------------------------------------------------------------------------------- im2col / col2im
_BLOCK_BYTES = 1 << 20  # a block of rows whose accumulator stays in cache across the taps (about L2)


def _blocks(rows: int, row_bytes: int):
    """Slices cutting `rows` leading rows into blocks of about _BLOCK_BYTES (at least one row each)."""
    step = max(1, _BLOCK_BYTES // max(row_bytes, 1))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _pad(x4: np.ndarray, pads, role: str = "pad", value: float = 0.0) -> np.ndarray:
    """x4 (N, C, H, W) padded by pads ((top, bottom), (left, right)) with `value`, on the workspace (or x4 itself).

    The whole buffer is filled, then the interior copied: filling only the border is slower (its column
    strips are runs of one or two elements)."""
    (top, bottom), (left, right) = pads
    if not (top or bottom or left or right):
        return x4
    n, c, h, w = x4.shape
    xp = _WORKSPACE.get(role, (n, c, h + top + bottom, w + left + right), x4.dtype)
    xp.fill(value)
    xp[:, :, top:top + h, left:left + w] = x4
    return xp


def _windows(xp: np.ndarray, g: _Geometry) -> np.ndarray:
    """Read-only view (N, C, Ho, Wo, kh, kw) of the windows of xp (N, C, Hp, Wp): no copy."""
    (kh, kw), (sh, sw), (dh, dw) = g.kernel, g.stride, g.dilation
    extent = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    view = sliding_window_view(xp, extent, axis=(2, 3))  # (N, C, Hp-eh+1, Wp-ew+1, eh, ew)
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def _taps(g, grid=None):
    """(i, j, rows, columns) per kernel tap in row-major order: the slices of the padded input that tap
    (i, j) reads across the (Ho, Wo) output grid (rows i·dh + oy·sh, columns j·dw + ox·sw); `grid` is
    that grid where it is not g.out (a transposed convolution's: its input)."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = g.kernel, g.stride, g.dilation, grid or g.out
    return [(i, j, slice(i * dh, i * dh + (ho - 1) * sh + 1, sh), slice(j * dw, j * dw + (wo - 1) * sw + 1, sw))
            for i in range(kh) for j in range(kw)]


def _im2col(xp: np.ndarray, g: _Geometry) -> np.ndarray:
    """cols (C·kh·kw, N·Ho·Wo) on the workspace: rows in (channel, kernel row, kernel column) order.

    One strided copy, in which each (channel, tap, sample) reads a (Ho, Wo) grid of the input.
    """
    win = _windows(xp, g).transpose(1, 4, 5, 0, 2, 3)  # (C, kh, kw, N, Ho, Wo), a view
    cols = _WORKSPACE.get("cols", win.shape, xp.dtype)
    np.copyto(cols, win)
    c, kh, kw, n, ho, wo = win.shape
    return cols.reshape(c * kh * kw, n * ho * wo)


def _col2im(d6: np.ndarray, padded, g: _Geometry) -> np.ndarray:
    """Sum the window gradients d6 (C, kh, kw, N, Ho, Wo) into (C, N, Hp, Wp) on the workspace ("col2im").

    Shifted adds: tap (i, j)'s (Ho, Wo) grid is added onto the rows and columns it read (see _taps), in
    row-major tap order, into an accumulator the size of the padded input (zeroed once), a block of
    channels at a time so that the block stays in cache across the taps. No kh·kw-sized buffer.
    """
    c, kh, kw, n, ho, wo = d6.shape
    acc = _WORKSPACE.get("col2im", (c, n) + tuple(padded), d6.dtype)
    taps = _taps(g, (ho, wo))
    for block in _blocks(c, acc[0].nbytes):
        out = acc[block]
        out.fill(0)
        for i, j, rows, columns in taps:
            out[:, :, rows, columns] += d6[block, i, j]
    return acc


# ------------------------------------------------------------------------------- PyTorch layout
def torch_layout(weights: np.ndarray, kernel) -> np.ndarray:
    """Our (in/groups·k, filters) matrix as PyTorch's weight (filters, in/groups, *kernel), a copy."""
    rows, filters = weights.shape
    taps = math.prod(kernel)
    if rows % taps:
        raise ValueError(f"weight matrix {_shape_str(weights.shape)} has rows not divisible by "
                         f"the kernel {_shape_str(kernel)}'s {taps} taps")
    return np.ascontiguousarray(weights.T).reshape((filters, rows // taps) + tuple(kernel))


def from_torch_layout(weight: np.ndarray) -> np.ndarray:
    """PyTorch's conv weight (filters, in/groups, *kernel) as our (in/groups·k, filters) matrix, a copy."""
    weight = np.asarray(weight)
    return np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T)


# ------------------------------------------------------------------------------- convolutions
class _Conv:
    kind = ""
    ndim = 0
    axes = ""
    unit_axis = 1  # output channels

    @classmethod
    def _geometry(cls, input_shape, config) -> _Geometry:
        g = _geometry(cls.kind, input_shape, config, cls.ndim, cls.axes)
        groups, filters = config["groups"], config["filters"]
        if g.channels % groups:
            raise ValueError(f"{cls.kind}: the input {_shape_str(input_shape)} has {g.channels} channels, "
                             f"not divisible by groups={groups}")
        if filters % groups:
            raise ValueError(f"{cls.kind}: filters={filters} is not divisible by groups={groups}")
        return g

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        g = cls._geometry(input_shape, config)
        return (config["filters"],) + g.out[2 - cls.ndim:]

    @classmethod
    def fans(cls, input_shape, config) -> tuple:
        """As torch.nn.init._calculate_fan_in_and_fan_out on the PyTorch weight (out, in/groups, *kernel); with
        the spec's `fans: dl4j` (config["fans"]), Deeplearning4j's ConvolutionParamInitializer: fan_out divided by
        the stride area, filters · kernel area / (stride area), a float as DL4J computes it."""
        g = cls._geometry(input_shape, config)
        taps = math.prod(config["kernel"])
        fan_in, fan_out = g.channels // config["groups"] * taps, config["filters"] * taps
        if config.get("fans") == "dl4j":
            stride = math.prod(config["stride"])
            return fan_in, fan_out / stride if fan_out % stride else fan_out // stride
        return fan_in, fan_out

    @classmethod
    def weight_shape(cls, input_shape, config) -> tuple[int, int]:
        g = cls._geometry(input_shape, config)
        return g.channels // config["groups"] * math.prod(config["kernel"]), config["filters"]

    @classmethod
    def scratch(cls, input_shape, config, batch: int, itemsize: int) -> dict[str, int]:
        """Bytes per workspace role that one forward and backward pass (need_dx=True) of `batch` takes.

        The roles are shared by every layer of a thread, so a network holds, per role, the
        largest of its layers' needs (then kept until release_workspace()).
        """
        g = cls._geometry(input_shape, config)
        rows, filters = g.channels * math.prod(g.kernel), config["filters"]
        columns = batch * math.prod(g.out)
        roles = {"cols": rows * columns, "gemm": max(rows, filters) * columns, "dzt": filters * columns,
                 "col2im": batch * g.channels * math.prod(g.padded)}  # the shifted adds' accumulator
        if g.padded != g.size:
            roles["pad"] = batch * g.channels * math.prod(g.padded)
        return {role: count * itemsize for role, count in roles.items()}

    def __init__(self, name: str, weights: np.ndarray, bias: np.ndarray | None, activation: Activation,
                 input_shape, config: dict):
        self.name = name
        self.weights = weights
        self.bias = bias
        self.activation = activation
        self.input_shape = tuple(input_shape)
        self.config = config
        self.geometry = self._geometry(self.input_shape, config)
        self.groups = config["groups"]
        self.filters = config["filters"]
        expected = self.weight_shape(self.input_shape, config)
        if tuple(weights.shape) != expected:
            raise ValueError(f"{self.kind} {name!r}: weights {_shape_str(weights.shape)}, expected "
                             f"{_shape_str(expected)} for input {_shape_str(self.input_shape)}")
        if bias is not None and tuple(bias.shape) != (self.filters,):
            raise ValueError(f"{self.kind} {name!r}: bias {_shape_str(bias.shape)}, expected ({self.filters},)")
        if not activation.elementwise:
            raise ValueError(f"{self.kind} {name!r}: activation '{activation.name}' works across the last "
                             "axis, which for a convolution is a spatial axis; use it after flatten")
        self.out_shape = self.output_shape(self.input_shape, config)

    def _group_stack(self, w: np.ndarray) -> np.ndarray:
        """(rows, filters) -> (groups, rows, filters/groups), a view."""
        rows = w.shape[0]
        return w.reshape(rows, self.groups, self.filters // self.groups).transpose(1, 0, 2)

    def _cols(self, x: np.ndarray) -> np.ndarray:
        g = self.geometry
        x4 = x.reshape((x.shape[0], g.channels) + g.size)
        return _im2col(_pad(x4, g.pads), g)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        batch, groups, filters = x.shape[0], self.groups, self.filters
        cols = self._cols(x)  # (C/G·k·G, N·P) on the workspace
        zt = _WORKSPACE.get("gemm", (filters, cols.shape[1]), np.result_type(cols, self.weights))
        if groups == 1:
            np.matmul(self.weights.T, cols, out=zt)  # (F, N·P): one GEMM
        else:  # (G, F/G, C/G·k) @ (G, C/G·k, N·P), the stack over groups in one call
            np.matmul(self._group_stack(self.weights).transpose(0, 2, 1), cols.reshape(groups, -1, cols.shape[1]),
                      out=zt.reshape(groups, filters // groups, -1))
        positions = math.prod(self.geometry.out)
        z = np.empty((batch,) + self.out_shape, dtype=zt.dtype)
        zt = zt.reshape(filters, batch, positions).transpose(1, 0, 2)  # (N, F, P), a view
        if self.bias is not None and self.bias.any():  # the bias rides on the transposing copy
            np.add(zt, self.bias[:, None], out=z.reshape(batch, filters, positions))
        else:
            np.copyto(z.reshape(batch, filters, positions), zt)
        y = self.activation.forward(z)
        return y, Cache(x, z, y)

    def backward(self, dy: np.ndarray | None, cache: Cache, dz: np.ndarray | None = None, need_dx: bool = True):
        """dy = dLoss/dy (batch, *output_shape) -> (dx or None, {"weights": dW, "bias": db})."""
        if dz is None:
            dz = self.activation.backward(cache.z, cache.y, dy)
        batch, g, groups, filters = dz.shape[0], self.geometry, self.groups, self.filters
        positions = math.prod(g.out)
        dzt = _WORKSPACE.get("dzt", (filters, batch, positions), dz.dtype)
        np.copyto(dzt, dz.reshape(batch, filters, positions).transpose(1, 0, 2))
        dzt = dzt.reshape(filters, batch * positions)  # (F, N·P)
        grads = {}
        cols = self._cols(cache.x)  # rebuilt, not cached: see the module docstring
        if groups == 1:
            grads["weights"] = cols @ dzt.T
        else:  # (G, C/G·k, N·P) @ (G, N·P, F/G) -> (G, C/G·k, F/G) -> (C/G·k, F)
            per_group = np.matmul(cols.reshape(groups, -1, cols.shape[1]),
                                  dzt.reshape(groups, -1, dzt.shape[1]).transpose(0, 2, 1))
            grads["weights"] = np.ascontiguousarray(per_group.transpose(1, 0, 2)).reshape(self.weights.shape)
        del cols
        if self.bias is not None:
            grads["bias"] = dzt.sum(axis=1)
        if not need_dx:
            return None, grads
        rows = g.channels * math.prod(g.kernel)
        dcols = _WORKSPACE.get("gemm", (rows, dzt.shape[1]), np.result_type(dzt, self.weights))
        if groups == 1:
            np.matmul(self.weights, dzt, out=dcols)  # (C·k, N·P)
        else:  # (G, C/G·k, F/G) @ (G, F/G, N·P)
            np.matmul(self._group_stack(self.weights), dzt.reshape(groups, -1, dzt.shape[1]),
                      out=dcols.reshape(groups, rows // groups, -1))
        (kh, kw), (h, w), ((top, _), (left, _)) = g.kernel, g.size, g.pads
        acc = _col2im(dcols.reshape((g.channels, kh, kw, batch) + g.out), g.padded, g)  # (C, N, Hp, Wp)
        dx = np.empty((batch, g.channels, h, w), dtype=dcols.dtype)
        np.copyto(dx, acc[:, :, top:top + h, left:left + w].transpose(1, 0, 2, 3))  # crop and transpose, one copy
        return dx.reshape(cache.x.shape), grads

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}({self.name!r}, {self.input_shape}->{self.out_shape}, kernel={c['kernel']}, "
                f"stride={c['stride']}, padding={c['padding']!r}, groups={c['groups']}, {self.activation!r})")


class Conv1d(_Conv):
    """y = φ(conv1d(x, W) + b); input (channels, length), output (filters, length_out)."""

    kind, ndim, axes = "conv1d", 1, "channels, length"


class Conv2d(_Conv):
    """y = φ(conv2d(x, W) + b); input (channels, height, width), output (filters, height_out, width_out)."""

    kind, ndim, axes = "conv2d", 2, "channels, height, width"


def _weights(kind_class):
    def weights(input_shape, config) -> dict:
        return {"weights": Weight(kind_class.weight_shape(input_shape, config), "conv", kind_class.fans(input_shape, config),
                                  tuple(config["kernel"]), config["groups"])}
    return weights


def _torch(input_shape, config):
    import torch

    module = (torch.nn.Conv1d, torch.nn.Conv2d)[len(config["kernel"]) - 1]
    return module(input_shape[0], config["filters"], config["kernel"], stride=config["stride"], dilation=config["dilation"],
                  groups=config["groups"], bias=config["bias"]), {"weights": "weight"}


def _build(spec, weights, bias, activation, context):
    return LAYERS_BY_KIND[spec.kind](spec.name, weights, bias, activation, spec.input_shape, spec.config)


def _scratch_elements(layer) -> int:
    """Per sample: every workspace role one pass takes (the im2col matrix, the GEMM outputs, the transposed
    output gradient, the col2im accumulator and the padded input; see _Conv.scratch)."""
    return sum(LAYERS_BY_KIND[layer.kind].scratch(layer.input_shape, layer.config, 1, 1).values())


OPTIONS = (
    Option("filters", "int", "output channels", required=True, minimum=1),
    Option("kernel", "ints", "the window: an int, or one per spatial axis", required=True, minimum=1),
    Option("stride", "ints", "the step: an int, or one per axis", default=1, minimum=1),
    Option("padding", "padding", "valid, same, or an int / one per axis", default="valid", minimum=0,
           choices=("valid", "same")),
    Option("dilation", "ints", "spacing of the kernel taps", default=1, minimum=1),
    Option("groups", "int", "grouped convolution (filters and channels divisible by it)", default=1, minimum=1),
    Option("bias", "bool", "false drops the bias", default=True),
)
LAYERS_BY_KIND = {"conv1d": Conv1d, "conv2d": Conv2d}


def _kind(kind_class, summary: str, example: tuple, layout=None) -> LayerKind:
    return LayerKind(
        kind_class.kind, kind_class, summary, options=OPTIONS, parse=checked(lambda raw: normalize_config(kind_class.kind, raw)),
        takes=("name", "activation", "init", "bias_init", "ignore"), build=_build, example=example, torch=_torch,
        weights=_weights(kind_class), layout=layout, elementwise_activation=True,
        scratch_elements=_scratch_elements, extra={"ndim": kind_class.ndim},
        memory_doc="its input, pre-activation and output; scratch: the im2col matrix (rebuilt in backward), the GEMM "
                   "outputs and the col2im accumulator (the padded input's size)",
    )


KINDS = (
    _kind(Conv1d, "a 1-D convolution over [channels, length], φ(conv(x, W) + b)",
          ((3, 9), {"filters": 4, "kernel": 3, "stride": 2, "padding": "same"}), layout=CHANNELS),
    _kind(Conv2d, "a 2-D convolution over [channels, height, width], φ(conv(x, W) + b)",
          ((2, 6, 5), {"filters": 4, "kernel": [3, 2], "padding": 1, "groups": 2})),
)
