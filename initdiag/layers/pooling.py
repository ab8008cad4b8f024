"""Pooling (max, average, global average) and flatten: weightless layers in the Dense contract.

Arrays are (batch, channels, *spatial), as PyTorch's NCHW; see conv.py for the window machinery
(tap slices, padding, the workspace) they share with the convolutions. Pools take PyTorch's
`padding` (default 0) and `ceil_mode` (default false: the output size is floored).

No kh·kw-sized buffer: the forward folds one strided slice of the padded input per kernel tap into the
output (np.maximum or np.add, in row-major tap order as PyTorch's CPU kernel), and the backward adds
back per tap (shifted adds) into an accumulator the size of the padded input. Max-pool backward sends
each window's gradient to its first maximum in row-major window order (PyTorch's CPU kernel keeps the
first of tied maxima): per tap, a mask of the positions equal to the window's maximum that no earlier tap
took. Where a window has more taps than the output has positions (a window as large as the map), the
loop runs over output positions instead, reducing each window (argmax of one contiguous copy per window
for the max), so that such a pool costs O(input) in time, calls and memory. Weightless layers have weights =
bias = None, an identity `activation` (z is y) and return {} as grads.
"""

from __future__ import annotations

import math

import numpy as np

from initdiag import activations
from initdiag.layers.conv import (_WORKSPACE, Cache, _blocks, _geometry, _Geometry, _pad, _shape_str, _taps,
                                  normalize_config)
from initdiag.layers.declare import LayerKind, Option, checked


class _Weightless:
    kind = ""
    unit_axis = 1
    weights = None
    bias = None

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        raise NotImplementedError

    @staticmethod
    def fans(input_shape, config):
        return None

    @staticmethod
    def weight_shape(input_shape, config):
        return None

    @classmethod
    def scratch(cls, input_shape, config, batch: int, itemsize: int) -> dict[str, int]:
        """Bytes per workspace role of a forward and backward pass (see _Conv.scratch)."""
        return {}

    def backward(self, dy: np.ndarray | None, cache: Cache, dz: np.ndarray | None = None, need_dx: bool = True):
        """(dLoss/dx, {}): no parameters, so only the input's gradient (the kind's input_gradient), when asked."""
        if dz is None:
            dz = dy
        return (self.input_gradient(dz, cache) if need_dx else None), {}

    def __init__(self, name: str, input_shape, config: dict | None = None):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.config = {} if config is None else config
        self.activation = activations.make("identity")
        self.out_shape = self.output_shape(self.input_shape, self.config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.input_shape}->{self.out_shape})"


class _Pool2d(_Weightless):
    pad_value = 0.0  # what the padding holds: zeros for the average (counted, as count_include_pad), -inf for the max

    @classmethod
    def _geometry(cls, input_shape, config) -> _Geometry:
        size = tuple(input_shape[1:]) if len(input_shape) == 3 else (0, 0)  # (a wrong rank: _geometry names it)
        pads = tuple(_pool_pads(n, k, s, p, config.get("ceil_mode", False))
                     for n, k, s, p in zip(size, config["kernel"], config["stride"], config.get("padding", (0, 0))))
        return _geometry(cls.kind, input_shape, config, 2, "channels, height, width", pads=pads if len(pads) == 2 else None)

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        g = cls._geometry(input_shape, config)
        return (g.channels,) + g.out

    def __init__(self, name: str, input_shape, config: dict):
        super().__init__(name, input_shape, config)
        self.geometry = self._geometry(self.input_shape, config)

    def _per_tap(self) -> bool:
        """Loop over kernel taps (the usual small window), or, where a window has more taps than the output has
        positions (a window as large as the map), over output positions: either way O(input) work and at most
        as many numpy calls as the smaller of the two."""
        g = self.geometry
        return math.prod(g.kernel) <= math.prod(g.out)

    @classmethod
    def scratch(cls, input_shape, config, batch: int, itemsize: int) -> dict[str, int]:
        g = cls._geometry(input_shape, config)
        maps, padded, out = batch * g.channels, math.prod(g.padded), math.prod(g.out)
        roles = {}
        if g.padded != g.size:
            roles["pad"] = roles["col2im"] = maps * padded * itemsize  # the padded input; backward's accumulator
        if cls.kind == "avgpool2d":
            roles["dzt"] = maps * out * itemsize  # the output gradient divided by the window count
        elif math.prod(g.kernel) <= out:
            roles["mask"] = roles["taken"] = maps * out  # booleans: a tap holds the maximum; a window is served
            if any(s < k for s, k in zip(g.stride, g.kernel)):
                roles["gemm"] = maps * out * itemsize  # a tap's masked gradient, added where windows overlap
        else:
            roles["cols"] = maps * math.prod(g.kernel) * itemsize  # one window per map, contiguous for argmax
        return roles

    def _padded(self, x: np.ndarray) -> np.ndarray:
        """x as (N·C, Hp, Wp), padded with pad_value on the workspace (or x itself, reshaped)."""
        g = self.geometry
        xp = _pad(x.reshape((x.shape[0], g.channels) + g.size), g.pads, value=self.pad_value)
        return xp.reshape((-1,) + xp.shape[2:])

    def _windows(self):
        """(rows, columns) per output position (oy, ox) in row-major order: the window it reads."""
        (kh, kw), (sh, sw), (ho, wo) = self.geometry.kernel, self.geometry.stride, self.geometry.out
        return [(oy, ox, slice(oy * sh, oy * sh + kh), slice(ox * sw, ox * sw + kw)) for oy in range(ho) for ox in range(wo)]

    def _reduce(self, x: np.ndarray, ufunc) -> np.ndarray:
        """ufunc (np.maximum or np.add) over each window of x (N, C, H, W) padded: (N, C, Ho, Wo), a new array.

        Per tap, a strided slice of the padded input is folded into the output in row-major tap order (the
        order PyTorch's CPU kernel visits a window), a block of maps at a time so that it stays in cache."""
        g = self.geometry
        xp = self._padded(x)
        y = np.empty((xp.shape[0],) + g.out, dtype=x.dtype)
        if self._per_tap():
            taps = _taps(g)
            for block in _blocks(len(y), y[0].nbytes + xp[0].nbytes):
                out, source = y[block], xp[block]
                _, _, rows, columns = taps[0]
                np.copyto(out, source[:, rows, columns])
                for _, _, rows, columns in taps[1:]:
                    ufunc(out, source[:, rows, columns], out=out)
        else:
            for oy, ox, rows, columns in self._windows():
                ufunc.reduce(xp[:, rows, columns], axis=(1, 2), out=y[:, oy, ox])
        return y.reshape((x.shape[0], g.channels) + g.out)

    def _accumulator(self, x_shape, dtype) -> np.ndarray:
        """The input gradient as (N·C, Hp, Wp), zeroed: the returned dx itself when there is no padding."""
        g = self.geometry
        maps = x_shape[0] * g.channels
        if g.padded == g.size:
            return np.zeros((maps,) + g.size, dtype=dtype)
        acc = _WORKSPACE.get("col2im", (maps,) + g.padded, dtype)
        acc.fill(0)
        return acc

    def _cropped(self, acc: np.ndarray, x_shape) -> np.ndarray:
        """The accumulator (N·C, Hp, Wp) less the padding's share, as x_shape (a copy when cropped)."""
        g = self.geometry
        if g.padded == g.size:
            return acc.reshape(x_shape)
        (top, _), (left, _) = g.pads
        return np.ascontiguousarray(acc[:, top:top + g.size[0], left:left + g.size[1]]).reshape(x_shape)


class MaxPool2d(_Pool2d):
    """Max over kh×kw windows moved by stride, over an input padded with -inf (`padding`; floor output size,
    or ceil with `ceil_mode`, as PyTorch); NaN propagates."""

    kind = "maxpool2d"
    pad_value = -np.inf  # padding never wins a window

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        y = self._reduce(x, np.maximum)
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        """Each window's gradient goes to its first maximum in row-major window order (a NaN counts as the
        maximum): per tap, the positions equal to the window's maximum (cache.y) that no earlier tap took."""
        g = self.geometry
        xp = self._padded(cache.x)
        maps = xp.shape[0]
        y, dz = cache.y.reshape((maps,) + g.out), dz.reshape((maps,) + g.out)
        acc = self._accumulator(cache.x.shape, dz.dtype)
        if not self._per_tap():
            kw = g.kernel[1]
            flat = _WORKSPACE.get("cols", (maps, math.prod(g.kernel)), xp.dtype)
            every = np.arange(maps)
            for oy, ox, rows, columns in self._windows():
                np.copyto(flat.reshape((maps,) + g.kernel), xp[:, rows, columns])
                row, column = np.divmod(np.argmax(flat, axis=1), kw)  # the first maximum; NaN counts as one
                acc[every, rows.start + row, columns.start + column] += dz[:, oy, ox]
            return self._cropped(acc, cache.x.shape)
        nan = np.isnan(y) if np.isnan(y).any() else None  # windows whose maximum is NaN: their first NaN wins
        mask = _WORKSPACE.get("mask", y.shape, np.bool_)
        taken = _WORKSPACE.get("taken", y.shape, np.bool_)
        overlap = any(s < k for s, k in zip(g.stride, g.kernel))  # else no two taps write the same position
        product = _WORKSPACE.get("gemm", y.shape, dz.dtype) if overlap else None
        finite = np.isfinite(dz).all()  # then dz·hit is dz where hit and 0 elsewhere (inf·0 would be NaN)
        taps = _taps(g)
        for block in _blocks(maps, acc[0].nbytes + xp[0].nbytes):
            source, target, best, grad, hit, done = xp[block], acc[block], y[block], dz[block], mask[block], taken[block]
            for n, (_, _, rows, columns) in enumerate(taps):
                np.equal(source[:, rows, columns], best, out=hit)
                if nan is not None:
                    hit |= np.isnan(source[:, rows, columns]) & nan[block]
                if n == 0:
                    np.copyto(done, hit)
                else:
                    np.greater(hit, done, out=hit)  # and not taken by an earlier tap
                    if n < len(taps) - 1:
                        np.logical_or(done, hit, out=done)
                tap = target[:, rows, columns]
                if not overlap:  # this tap's positions are its own: write, where masked writes are slow
                    np.multiply(grad, hit, out=tap) if finite else np.copyto(tap, grad, where=hit)
                elif finite:
                    tap += np.multiply(grad, hit, out=product[block])
                else:
                    np.add(tap, grad, out=tap, where=hit)
        return self._cropped(acc, cache.x.shape)
class AvgPool2d(_Pool2d):
    """Mean over kh×kw windows moved by stride, zero `padding` counted in the mean (PyTorch's
    count_include_pad); with `ceil_mode` a last window that runs past the padded input is divided by the
    positions it covers there, as PyTorch does."""

    kind = "avgpool2d"

    def __init__(self, name: str, input_shape, config: dict):
        super().__init__(name, input_shape, config)
        self.divisor = self._divisor()  # fixed by the geometry: computed once, not on every pass

    def _divisor(self):
        """kh·kw, or (Ho, Wo) counts where ceil_mode's last windows run past the input and its padding."""
        g = self.geometry
        counts = [np.minimum(np.arange(out) * s + k, n + 2 * lo) - np.arange(out) * s
                  for out, s, k, n, (lo, _) in zip(g.out, g.stride, g.kernel, g.size, g.pads)]
        if all((count == k).all() for count, k in zip(counts, g.kernel)):
            return math.prod(g.kernel)
        return np.multiply.outer(counts[0], counts[1])

    def _divisor_in(self, dtype):
        """The divisor as a Python int (the usual kh·kw) or as counts in `dtype`, so float32 stays float32."""
        return self.divisor if isinstance(self.divisor, int) else self.divisor.astype(dtype, copy=False)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        y = self._reduce(x, np.add)
        y /= self._divisor_in(y.dtype)  # the sum, then one division, as PyTorch
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        """Each window's gradient divided by its count, added onto every position of the window (shifted adds)."""
        g = self.geometry
        share = _WORKSPACE.get("dzt", dz.shape, dz.dtype)
        np.divide(dz, self._divisor_in(dz.dtype), out=share)
        share = share.reshape((-1,) + g.out)
        acc = self._accumulator(cache.x.shape, dz.dtype)
        if self._per_tap():
            taps = _taps(g)
            for block in _blocks(len(acc), acc[0].nbytes):
                target, grad = acc[block], share[block]
                for _, _, rows, columns in taps:
                    target[:, rows, columns] += grad
        else:
            for oy, ox, rows, columns in self._windows():
                acc[:, rows, columns] += share[:, oy, ox, None, None]
        return self._cropped(acc, cache.x.shape)


def _pool_pads(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> tuple[int, int]:
    """(before, after) padding of one axis: `padding` on both sides, and with ceil_mode what the last window
    needs beyond it. PyTorch's output size: floor or ceil of (size + 2p - k)/s, plus 1, less 1 when the last
    window would start past the input and its left padding."""
    span = size + 2 * padding - kernel
    if span < 0:
        return padding, padding  # the kernel does not fit: _geometry says so
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return padding, padding + max(0, (out - 1) * stride + kernel - (size + 2 * padding))


class GlobalAvgPool(_Weightless):
    """Mean over every spatial position of a feature map: (C, H, W) -> (C,), or (C, L) -> (C,), as
    adaptive_avg_pool to 1 and flatten; with config["sequence"] (set by the spec when the input is a
    sequence), mean over the steps: (steps, features) -> (features,), as x.mean(dim=1) in PyTorch."""

    kind = "global_avgpool"

    @classmethod
    def output_shape(cls, input_shape, config=None) -> tuple:
        input_shape = tuple(input_shape)
        if (config or {}).get("sequence"):
            if len(input_shape) != 2 or 0 in input_shape:
                raise ValueError(f"{cls.kind} on a sequence expects a per-sample input of shape (steps, features), "
                                 f"got {_shape_str(input_shape)}")
            return input_shape[1:]
        if len(input_shape) not in (2, 3) or 0 in input_shape:
            raise ValueError(f"{cls.kind} expects a per-sample input of shape (channels, length) or "
                             f"(channels, height, width), got {_shape_str(input_shape)}")
        return input_shape[:1]

    def _axes(self, ndim: int) -> tuple:
        """The batch array's axes averaged over: the steps (1) of a sequence, else every spatial axis."""
        return (1,) if self.config.get("sequence") else tuple(range(2, ndim))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        y = x.mean(axis=self._axes(x.ndim))
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        x, axes = cache.x, self._axes(cache.x.ndim)
        count = math.prod(x.shape[axis] for axis in axes)
        dx = np.empty(x.shape, dtype=dz.dtype)
        dx[...] = np.expand_dims(dz / count, axes)  # each averaged value's gradient shared equally
        return dx


class AdaptiveAvgPool2d(_Weightless):
    """nn.AdaptiveAvgPool2d(size): output cell (i, j) is the mean of rows floor(i·H/h) .. ceil((i+1)·H/h) - 1 and
    the same columns, windows that may overlap and differ in size (VGG's 7x7 from a 2x2 map). A mean over a
    rectangle is the product of a mean per axis, so y = A_h · x · A_wᵀ with one averaging matrix per axis, and
    the backward is the same product transposed."""

    kind = "adaptive_avgpool2d"

    @classmethod
    def output_shape(cls, input_shape, config=None) -> tuple:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or 0 in input_shape:
            raise ValueError(f"{cls.kind} expects a per-sample input of shape (channels, height, width), "
                             f"got {_shape_str(input_shape)}")
        return (input_shape[0], *config["size"])

    @staticmethod
    def averaging(have: int, want: int, dtype) -> np.ndarray:
        """The (want, have) matrix whose row i averages PyTorch's adaptive window i."""
        matrix = np.zeros((want, have), dtype=dtype)
        for i in range(want):
            start, end = (i * have) // want, -((-(i + 1) * have) // want)
            matrix[i, start:end] = 1.0 / (end - start)
        return matrix

    def _matrices(self, dtype):
        (height, width), (rows, columns) = self.input_shape[1:], self.config["size"]
        return self.averaging(height, rows, dtype), self.averaging(width, columns, dtype)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        along_rows, along_columns = self._matrices(x.dtype)
        y = np.einsum("oh,bchw,pw->bcop", along_rows, x, along_columns, optimize=True)
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        along_rows, along_columns = self._matrices(dz.dtype)
        return np.einsum("oh,bcop,pw->bchw", along_rows, dz, along_columns, optimize=True)


def _parse_adaptive(raw) -> dict:
    from initdiag.layers.norm import own_options

    if raw is not None and not isinstance(raw, dict):
        raw = {"size": raw}  # written bare: adaptive_avgpool2d: 7
    config = own_options("adaptive_avgpool2d", raw, (Option("size", "ints", "", required=True),))
    if "size" not in config:
        raise ValueError("adaptive_avgpool2d needs size")
    size = config["size"]
    size = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in size)):
        raise ValueError(f"adaptive_avgpool2d: size must be a positive int or [height, width], got {config['size']!r}")
    return {"size": tuple(size)}


class Flatten(_Weightless):
    """(C, *spatial) -> (C·prod(spatial),) in C order, as torch.flatten(x, 1)."""

    kind = "flatten"

    @classmethod
    def output_shape(cls, input_shape, config=None) -> tuple:
        input_shape = tuple(input_shape)
        if not input_shape:
            raise ValueError(f"{cls.kind} expects a per-sample input with at least one axis, got ()")
        return (math.prod(input_shape),)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        y = x.reshape(x.shape[0], -1)  # a view when x is contiguous: callers must not write into y
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        return dz.reshape(cache.x.shape)




def _build(spec, weights, bias, activation, context):
    return {kind.key: kind.cls for kind in KINDS}[spec.kind](spec.name, spec.input_shape, spec.config)


def _torch_pool(module_name: str):
    def make(input_shape, config):
        import torch

        return getattr(torch.nn, module_name)(config["kernel"], config["stride"], config["padding"],
                                              ceil_mode=config["ceil_mode"]), {}
    return make


def _torch(module_name: str, *args):
    def make(input_shape, config):
        import torch

        return getattr(torch.nn, module_name)(*[config.get(arg, arg) for arg in args]), {}
    return make


_POOL_OPTIONS = (Option("kernel", "ints", "the window: an int, or one per spatial axis", required=True, minimum=1),
                 Option("stride", "ints", "the step: an int, or one per axis (default: the kernel)", minimum=1),
                 Option("padding", "ints", "on both sides of each axis, at most half the kernel (max: -inf, average: "
                        "zeros counted in the mean)", default=0, minimum=0),
                 Option("ceil_mode", "bool", "ceil the output size instead of flooring it (a last, partial window)",
                        default=False))


def _kind(kind_class, summary: str, options: tuple, example: tuple, torch, memory_doc="its input and output",
          **facts) -> LayerKind:
    return LayerKind(kind_class.kind, kind_class, summary, options=options,
                     parse=checked(lambda raw: normalize_config(kind_class.kind, raw)), takes=("name", "ignore"), build=_build,
                     example=example, torch=torch, memory_doc=memory_doc, saturation_doc="none (no activation)",
                     **facts)


_POOL_MEMORY = ("its input and output; scratch: the padded input and the backward's accumulator (when padded), and "
                "masks or a divided gradient the output's size (a window larger than the output: one window per map)")


def _scratch_elements(layer) -> int:
    """Per sample: every workspace role a pool's pass takes (see _Pool2d.scratch; its boolean masks counted
    as whole elements)."""
    cls = {kind.key: kind.cls for kind in KINDS}[layer.kind]
    return sum(cls.scratch(layer.input_shape, layer.config, 1, 1).values())


KINDS = (
    _kind(MaxPool2d, "the max over each window (nn.MaxPool2d)", _POOL_OPTIONS,
          ((2, 6, 5), {"kernel": 3, "stride": 2, "padding": 1}),
          _torch_pool("MaxPool2d"), memory_doc=_POOL_MEMORY,
          scratch_elements=_scratch_elements, extra={"ndim": 2}),
    _kind(AvgPool2d, "the mean over each window (nn.AvgPool2d)", _POOL_OPTIONS,
          ((2, 7, 5), {"kernel": 3, "stride": [2, 1], "padding": 1, "ceil_mode": True}),
          _torch_pool("AvgPool2d"), memory_doc=_POOL_MEMORY,
          scratch_elements=_scratch_elements, extra={"ndim": 2}),
    _kind(GlobalAvgPool, "the mean over every position of a feature map, or over a sequence's steps", (),
          ((3, 4, 5), {}), _torch("AdaptiveAvgPool2d", 1), reads_layout=True),
    _kind(Flatten, "[channels, *spatial] → [channels·positions], as torch.flatten(x, 1)", (), ((2, 3, 4), {}),
          _torch("Flatten")),
    LayerKind(AdaptiveAvgPool2d.kind, AdaptiveAvgPool2d, "the mean over each of size[0]×size[1] windows that tile a "
              "feature map, overlapping where they do not divide it (nn.AdaptiveAvgPool2d)",
              options=(Option("size", "ints", "the output's [height, width] (an int: square); written bare: "
                              "adaptive_avgpool2d: 7", required=True, minimum=1),),
              parse=checked(_parse_adaptive), takes=("name", "ignore"), build=_build, example=((2, 3, 5), [2, 3]),
              torch=lambda input_shape, config: (__import__("torch").nn.AdaptiveAvgPool2d(config["size"]), {}),
              memory_doc="its input and output", saturation_doc="none (no activation)", aliases=("adaptive_avg_pool2d",),
              bare="size", extra={"ndim": 2}),
)
