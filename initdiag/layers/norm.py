"""Batch and layer normalisation (this module), with the notes on dropout (dropout.py) and embedding
(embedding.py), in the Dense contract.

    forward(x) -> (y, cache)                    cache.x input, cache.z normalised value, cache.y output
    backward(dy, cache, need_dx=True) -> (dx or None, grads)   grads = {param name: gradient, same shape}

Arrays are (batch, *per-sample shape). Everything is vectorised numpy (no Python loop over
samples, positions or units).

dtypes: the output has the input's floating dtype (float32 in, float32 out) whatever the
parameters' dtype: gamma and beta are (features,) vectors and are cast to the input's dtype
for the arithmetic (no copy when they already match). Gradients are returned in each
parameter's own dtype. Embedding takes integer input; its output has the table's dtype.

Layers and PyTorch equivalents
------------------------------
``BatchNorm(name, params, eps=1e-5, eval=False, running_mean=None, running_var=None)``
    Per-sample input (features,), (channels, length) or (channels, height, width): statistics
    per feature / per channel (axis 1 of the batch array) over the batch and every spatial
    position, as nn.BatchNorm1d / nn.BatchNorm2d. Training mode (the default) normalises with
    the batch statistics, biased variance (divisor N·L or N·H·W), exactly as PyTorch's
    normalisation does; the backward pass is the full batch-statistics gradient (the mean and
    the variance depend on every sample). ``eval=True`` uses the running statistics instead,
    initially mean 0 and variance 1 (PyTorch's initial running_mean / running_var), so then
    y = x / sqrt(1 + eps) · gamma + beta; its backward treats the statistics as constants.
    ``forward`` never updates the running statistics (a diagnostic pass must not change the
    layer); ``running_update(cache, momentum=0.1)`` returns what one PyTorch training step
    would store (momentum average with the *unbiased* batch variance).
    A (steps, features) sequence input would be read as (channels=steps, length=features), as
    nn.BatchNorm1d reads (N, C, L): normalise sequences with LayerNorm instead.
    Training needs more than one value per channel (batch · positions > 1), as PyTorch.
    params: "gamma" (C,), "beta" (C,); default gamma = 1, beta = 0 (``default_params``).

``LayerNorm(name, params, eps=1e-5, over="last")``
    Over the last axis of each sample/position: nn.LayerNorm(normalized_shape=last dim), with
    elementwise_affine. Input (features,) or (steps, features) (any (*, features) works; a
    (C, H, W) input would be normalised over W only). Biased variance, as PyTorch.
    params: "gamma" (features,), "beta" (features,); default 1 and 0.
    ``over="channels"``: each position of a feature map (batch, C, H, W) normalised over its C channels,
    gamma and beta per channel: ConvNeXt's LayerNorm2d (torchvision's and timm's: permute to NHWC,
    nn.LayerNorm(C), permute back), computed on axis 1 without the permutes. The spec takes it on a
    [channels, height, width] input only (a 2-D input could be a sequence, whose features are its last axis).

``Dropout(name, p=0.5, rng=None, eval=False)``
    Inverted dropout: each element kept with probability 1 - p and then scaled by 1/(1 - p),
    so E[y] = x; the mask is drawn from the numpy.random.Generator ``rng`` (``rng.random(shape)
    >= p``, one draw per element), so a run with a seeded generator is reproducible (the mask
    is not PyTorch's: its generator is different). ``eval=True`` is the identity and draws
    nothing; p = 0 is the identity and draws nothing; p = 1 outputs zeros (as PyTorch) and draws
    nothing. The backward pass uses the forward pass' mask (kept on ``cache.mask``, a bool array
    or None). No parameters.

``Embedding(name, params)``
    Integer input (batch, steps) with values in [0, vocab) -> (batch, steps, dim), row x[b, t]
    of the table at each position; nn.Embedding(vocab, dim). params: "weights" (vocab, dim),
    the table (row i is token i's vector), the layout of nn.Embedding.weight itself (not a
    transpose: the lookup is one_hot(x) @ weights, so in our (fan_in, fan_out) convention its
    rows would be the inputs). Backward: the gradient of the table is the scatter-add of dy
    into the looked-up rows (repeated tokens accumulate); dx is None (integer input).
    ``token_batch(rng, batch, steps, vocab)`` draws a uniform integer input.

Fans (``fans(input_shape, config)``: {weight name: schemes.Fans})
------------------------------------------------------------------
BatchNorm, LayerNorm and Dropout have no weight matrices: {} (torch.nn.init refuses to
compute fans of a 1-D tensor). Embedding: as torch.nn.init._calculate_fan_in_and_fan_out on
nn.Embedding.weight (vocab, dim), which reads any 2-D tensor as a Linear's (out, in) weight:
fan_in = size(1) = dim and fan_out = size(0) = vocab. The surprise: that is the *transpose* of
what the lookup does (each output coordinate reads one row of the vocab-sized one-hot input,
so by our (fan_in, fan_out) layout reasoning fan_in would be vocab), and also the opposite of
``schemes.Fans(*weights.shape)``, which ``schemes.initial_weights`` assumes. To reproduce
PyTorch's fan-based schemes on an embedding (e.g. xavier_uniform_(emb.weight), kaiming with
fan_in = dim), draw the transposed shape and transpose:
``initial_weights(scheme, params, rng, (dim, vocab), dtype).T``. (PyTorch's own default for
nn.Embedding is N(0, 1), fan-free; Keras' is U(-0.05, 0.05).)

Configuration (``initdiag.layers.normalize_config(kind, raw)``; each kind's options are declared in its KINDS)
-------------------------------------------------------------------------------------------------------------
    batchnorm  {eps: 1e-5, eval: false}                      (aliases batch_norm, batchnorm1d, batchnorm2d)
    layernorm  {eps: 1e-5, over: last}                       (alias layer_norm; over: last | channels)
    dropout    {p: 0.5, eval: false}  or just the number p
    embedding  {vocab: required, dim: required}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import NamedTuple

import numpy as np

from initdiag.layers.declare import CHANNELS, SEQUENCE, InputError, LayerKind, Option, checked


class Cache(NamedTuple):
    x: np.ndarray  # (batch, *input_shape) input
    z: np.ndarray  # (batch, *output_shape): the normalised value (norms), else y itself
    y: np.ndarray  # (batch, *output_shape) output


class NormCache(NamedTuple):
    """BatchNorm / LayerNorm cache: z = x̂ = (x - mean)·inv_std, y = gamma·x̂ + beta."""

    x: np.ndarray
    z: np.ndarray
    y: np.ndarray
    mean: np.ndarray     # broadcastable to x: the statistics used (batch or running)
    inv_std: np.ndarray  # 1/sqrt(var + eps), broadcastable to x
    var: np.ndarray      # the biased variance used, broadcastable to x


def _shape_str(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _float_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)


def _cast_grads(grads: dict, params: dict) -> dict:
    return {key: value.astype(params[key].dtype, copy=False) for key, value in grads.items()}


def _vector_params(kind: str, name: str, params, features: int | None) -> dict:
    """Check {"gamma": (n,), "beta": (n,)}; None or missing entries get the defaults 1 and 0 (needs features)."""
    params = dict(params or {})
    unknown = sorted(set(params) - {"gamma", "beta"})
    if unknown:
        raise ValueError(f"{kind} '{name}': unknown parameter(s) {', '.join(unknown)}; valid: beta, gamma")
    given = [np.asarray(v) for v in params.values() if v is not None]
    if features is None:
        if not given:
            raise ValueError(f"{kind} '{name}': give gamma and beta, or the number of features")
        features = given[0].shape[0] if given[0].ndim == 1 else -1
    dtype = given[0].dtype if given else np.dtype(np.float64)
    out = {}
    for key, default in (("gamma", 1.0), ("beta", 0.0)):
        value = params.get(key)
        value = np.full(features, default, dtype=dtype) if value is None else np.asarray(value)
        if value.shape != (features,) or value.dtype.kind != "f":
            raise ValueError(f"{kind} '{name}': {key} must be a float vector of shape ({features},), "
                             f"got {value.dtype} {_shape_str(value.shape)}")
        out[key] = value
    return out


def _affine_backward(dy, cache: NormCache, gamma, axes):
    """dgamma, dbeta (reduced over `axes`) and dx̂ = dy·gamma."""
    dgamma = np.sum(dy * cache.z, axis=axes)
    dbeta = np.sum(dy, axis=axes)
    return dgamma, dbeta, dy * gamma


def _normalised_backward(dxhat, cache: NormCache, axes) -> np.ndarray:
    """dx through x̂ = (x - mean(x))/sqrt(var(x) + eps), the statistics over `axes` of x itself.

    dx = inv_std · (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)), the means over `axes`: the
    classic batch-norm gradient (the mean's and the variance's dependence on every element).
    """
    xhat = cache.z
    mean_d = np.mean(dxhat, axis=axes, keepdims=True)
    mean_dx = np.mean(dxhat * xhat, axis=axes, keepdims=True)
    dx = dxhat - mean_d
    dx -= xhat * mean_dx
    dx *= cache.inv_std
    return dx


# ------------------------------------------------------------------------------- configuration
def own_options(key: str, raw, options) -> dict:
    """`raw` (None or a mapping of the kind's declared `options`) with the optional ones' defaults filled;
    ValueError naming the valid options."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{key} options must be a mapping, got {raw!r}")
    valid = tuple(option.name for option in options)
    unknown = [str(k) for k in raw if k not in valid]
    if unknown:
        raise ValueError(f"{key}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")
    return {**{option.name: option.default for option in options if not option.required}, **raw}


def check_eval(key: str, config: dict) -> None:
    if not isinstance(config["eval"], (bool, np.bool_)):
        raise ValueError(f"{key}: eval must be true or false, got {config['eval']!r}")
    config["eval"] = bool(config["eval"])


def _normalize(key: str, raw) -> dict:
    config = own_options(key, raw, _OPTIONS[key])
    eps = config["eps"]
    if isinstance(eps, bool) or not isinstance(eps, Real) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{key}: eps must be a positive number (PyTorch's default is 1e-5), got {eps!r}")
    config["eps"] = float(eps)
    if "eval" in config:
        check_eval(key, config)
    if "over" in config:
        over = config["over"]
        if not isinstance(over, str) or over.strip().lower() not in OVER:
            raise ValueError(f"{key}: over must be one of {', '.join(OVER)} (channels: each position of a feature map "
                             f"over its channels, ConvNeXt's LayerNorm2d), got {over!r}")
        config["over"] = over.strip().lower()
    return config


# ------------------------------------------------------------------------------- batch norm
class _AffineNorm:
    """What batch and layer normalisation share: a gamma and a beta per normalised size, starting at
    1 and 0, no weight matrices (so no fans), and the input's shape kept. `_size` reads that size."""

    kind = ""
    default_init = {"gamma": "ones", "beta": "zero"}

    @classmethod
    def _size(cls, input_shape, config=None) -> int:
        raise NotImplementedError

    @classmethod
    def output_shape(cls, input_shape, config=None) -> tuple:
        cls._size(input_shape, config)
        return tuple(int(s) for s in input_shape)

    @classmethod
    def parameter_shapes(cls, input_shape, config=None) -> dict:
        size = cls._size(input_shape, config)
        return {"gamma": (size,), "beta": (size,)}

    @classmethod
    def fans(cls, input_shape, config=None) -> dict:
        """No weight matrices: {} (gamma and beta are vectors, which have no fans)."""
        cls._size(input_shape, config)
        return {}

    @classmethod
    def default_params(cls, input_shape, config=None, dtype=np.float64) -> dict:
        """gamma = 1, beta = 0, as PyTorch and Keras initialise them."""
        size = cls._size(input_shape, config)
        return {"gamma": np.ones(size, dtype=dtype), "beta": np.zeros(size, dtype=dtype)}

    def _incoming(self, dy, cache: NormCache, dz) -> np.ndarray:
        """dLoss/dy as an array of the output's shape; a normalization is never a fused loss's output."""
        if dz is not None:
            raise ValueError(f"{self.kind} '{self.name}' cannot be the output of a fused loss (dz)")
        dy = np.asarray(dy)
        if dy.shape != cache.y.shape:
            raise ValueError(f"{self.kind} '{self.name}': dy has shape {dy.shape}, the output {cache.y.shape}")
        return dy


class BatchNorm(_AffineNorm):
    """Batch normalisation per feature / channel (nn.BatchNorm1d / 2d); see the module docstring."""

    kind = "batchnorm"
    unit_axis = 1  # features / channels

    @classmethod
    def _size(cls, input_shape, config=None) -> int:
        return cls._channels(input_shape)

    @classmethod
    def _channels(cls, input_shape) -> int:
        shape = tuple(input_shape)
        if len(shape) not in (1, 2, 3) or 0 in shape:
            raise ValueError(f"{cls.kind} expects a per-sample input of shape (features,), (channels, length) "
                             f"or (channels, height, width), got {_shape_str(shape)}")
        return int(shape[0])

    @classmethod
    def from_config(cls, name: str, params, config, input_shape=None):
        config = _normalize(cls.kind, config)
        features = None if input_shape is None else cls._channels(input_shape)
        return cls(name, _vector_params(cls.kind, name, params, features), eps=config["eps"], eval=config["eval"])

    def __init__(self, name: str, params: dict, eps: float = 1e-5, eval: bool = False,
                 running_mean: np.ndarray | None = None, running_var: np.ndarray | None = None):
        self.name = name
        self.params = _vector_params(self.kind, name, params, None)
        self.channels = self.params["gamma"].shape[0]
        self.eps = float(eps)
        self.eval = bool(eval)
        c, dtype = self.channels, self.params["gamma"].dtype
        self.running_mean = np.zeros(c, dtype=dtype) if running_mean is None else np.asarray(running_mean)
        self.running_var = np.ones(c, dtype=dtype) if running_var is None else np.asarray(running_var)
        for key in ("running_mean", "running_var"):
            if getattr(self, key).shape != (c,):
                raise ValueError(f"{self.kind} '{name}': {key} must be ({c},), got {getattr(self, key).shape}")

    def _axes_and_shape(self, x: np.ndarray):
        if x.ndim not in (2, 3, 4) or x.shape[1] != self.channels:
            raise ValueError(f"{self.kind} '{self.name}' expects input (batch, {self.channels}[, *spatial]) "
                             f"with 0-2 spatial axes, got {_shape_str(x.shape)}")
        axes = (0,) + tuple(range(2, x.ndim))
        return axes, (1, self.channels) + (1,) * (x.ndim - 2)

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        axes, bshape = self._axes_and_shape(x)
        dtype = _float_dtype(x)
        x = x.astype(dtype, copy=False)
        if self.eval:
            mean = self.running_mean.astype(dtype, copy=False).reshape(bshape)
            var = self.running_var.astype(dtype, copy=False).reshape(bshape)
            xc = x - mean
        else:
            count = x.size // self.channels
            if count < 2:
                raise ValueError(f"{self.kind} '{self.name}': training mode needs more than one value per channel, "
                                 f"got input {_shape_str(x.shape)} (use eval: true, or a larger batch)")
            mean = np.mean(x, axis=axes, keepdims=True)
            xc = x - mean
            var = np.mean(xc * xc, axis=axes, keepdims=True)  # biased, as PyTorch normalises
        inv_std = 1.0 / np.sqrt(var + dtype.type(self.eps))
        xhat = xc
        xhat *= inv_std
        y = xhat * self.params["gamma"].astype(dtype, copy=False).reshape(bshape)
        y += self.params["beta"].astype(dtype, copy=False).reshape(bshape)
        return y, NormCache(x, xhat, y, mean, inv_std, var)

    def backward(self, dy: np.ndarray, cache: NormCache, need_dx: bool = True, *, dz=None):
        """dy (batch, C, *spatial) -> (dx or None, {"gamma": dgamma, "beta": dbeta})."""
        dy = self._incoming(dy, cache, dz)
        axes, bshape = self._axes_and_shape(dy)
        gamma = self.params["gamma"].astype(cache.y.dtype, copy=False).reshape(bshape)
        dgamma, dbeta, dxhat = _affine_backward(dy, cache, gamma, axes)
        grads = _cast_grads({"gamma": dgamma, "beta": dbeta}, self.params)
        if not need_dx:
            return None, grads
        if self.eval:
            return dxhat * cache.inv_std, grads
        return _normalised_backward(dxhat, cache, axes), grads

    def running_update(self, cache: NormCache, momentum: float = 0.1):
        """(running_mean, running_var) as one PyTorch training step would leave them (not stored):
        (1 - momentum)·old + momentum·batch statistic, the variance unbiased (divisor count - 1)."""
        if self.eval:
            return self.running_mean.copy(), self.running_var.copy()
        count = cache.x.size // self.channels
        mean = cache.mean.reshape(-1)
        var = cache.var.reshape(-1) * (count / (count - 1))
        return ((1 - momentum) * self.running_mean + momentum * mean,
                (1 - momentum) * self.running_var + momentum * var)

    def saturation(self, cache: NormCache) -> float:
        return 0.0

    def __repr__(self) -> str:
        mode = "eval" if self.eval else "train"
        return f"BatchNorm({self.name!r}, {self.channels}, eps={self.eps:g}, {mode})"


# ------------------------------------------------------------------------------- layer norm
class LayerNorm(_AffineNorm):
    """Layer normalisation over the last axis (nn.LayerNorm(last dim)), or over a feature map's channels
    (over="channels": ConvNeXt's LayerNorm2d); see the module docstring."""

    kind = "layernorm"
    unit_axis = -1  # over="channels": 1 (set per layer)

    @classmethod
    def _size(cls, input_shape, config=None) -> int:
        if (config or {}).get("over") == "channels":
            return cls._channels(input_shape)
        return cls._features(input_shape)

    @classmethod
    def _features(cls, input_shape) -> int:
        shape = tuple(input_shape)
        if not shape or 0 in shape:
            raise ValueError(f"{cls.kind} expects a per-sample input of shape (features,) or (steps, features), "
                             f"got {_shape_str(shape)}")
        return int(shape[-1])

    @classmethod
    def _channels(cls, input_shape) -> int:
        shape = tuple(input_shape)
        if len(shape) != 3 or 0 in shape:
            raise InputError(f"{cls.kind} over: channels normalises each position of a feature map [channels, height, "
                             f"width] over its channels, but its input is {list(shape)}: a flat or sequence input is "
                             f"normalised over its last axis (over: last)")
        return int(shape[0])

    @classmethod
    def from_config(cls, name: str, params, config, input_shape=None):
        config = _normalize(cls.kind, config)
        features = None if input_shape is None else cls._size(input_shape, config)
        return cls(name, _vector_params(cls.kind, name, params, features), eps=config["eps"], over=config["over"])

    def __init__(self, name: str, params: dict, eps: float = 1e-5, over: str = "last"):
        if over not in OVER:
            raise ValueError(f"{self.kind} '{name}': over must be one of {', '.join(OVER)}, got {over!r}")
        self.name = name
        self.params = _vector_params(self.kind, name, params, None)
        self.features = self.params["gamma"].shape[0]
        self.eps = float(eps)
        self.over = over
        self.unit_axis = 1 if over == "channels" else -1

    def _axis(self, x: np.ndarray) -> int:
        """The normalised axis of the batch array x (1: the channels of (batch, C, H, W); else the last)."""
        axis = 1 if self.over == "channels" else x.ndim - 1
        if x.ndim < (4 if self.over == "channels" else 2) or x.shape[axis] != self.features:
            expected = (f"(batch, {self.features}, height, width)" if self.over == "channels"
                        else f"(batch, ..., {self.features})")
            raise ValueError(f"{self.kind} '{self.name}' expects input {expected}, got {_shape_str(x.shape)}")
        return axis

    def _affine(self, dtype, ndim: int):
        """gamma and beta shaped to broadcast along the normalised axis of an ndim-array."""
        shape = (-1,) + (1,) * (ndim - 2) if self.over == "channels" else (-1,)
        return tuple(self.params[key].astype(dtype, copy=False).reshape(shape) for key in ("gamma", "beta"))

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        axis = self._axis(x)
        dtype = _float_dtype(x)
        x = x.astype(dtype, copy=False)
        mean = np.mean(x, axis=axis, keepdims=True)
        xhat = x - mean
        var = np.mean(xhat * xhat, axis=axis, keepdims=True)
        inv_std = 1.0 / np.sqrt(var + dtype.type(self.eps))
        xhat *= inv_std
        gamma, beta = self._affine(dtype, x.ndim)
        y = xhat * gamma
        y += beta
        return y, NormCache(x, xhat, y, mean, inv_std, var)

    def backward(self, dy: np.ndarray, cache: NormCache, need_dx: bool = True, *, dz=None):
        """dy (batch, ..., features) or (batch, C, H, W) -> (dx or None, {"gamma": dgamma, "beta": dbeta})."""
        dy = self._incoming(dy, cache, dz)
        axis = self._axis(dy)
        gamma, _ = self._affine(cache.y.dtype, dy.ndim)
        dgamma, dbeta, dxhat = _affine_backward(dy, cache, gamma, tuple(a for a in range(dy.ndim) if a != axis))
        grads = _cast_grads({"gamma": dgamma, "beta": dbeta}, self.params)
        return (_normalised_backward(dxhat, cache, axis) if need_dx else None), grads

    def saturation(self, cache: NormCache) -> float:
        return 0.0

    def __repr__(self) -> str:
        over = ", over channels" if self.over == "channels" else ""
        return f"LayerNorm({self.name!r}, {self.features}, eps={self.eps:g}{over})"


def _build(spec, weights, bias, activation, context):
    kind_class = BatchNorm if spec.kind == "batchnorm" else LayerNorm
    config = dict(spec.config)
    if "eval" in config:
        config["eval"] = config["eval"] or context.eval
    params = kind_class.default_params(spec.input_shape, config, context.dtype)
    layer = kind_class.from_config(spec.name, params, config, spec.input_shape)
    layer.activation = activation  # identity: the statistics read every layer's activation
    return layer


def _torch(module_name: str):
    def make(input_shape, config):
        import torch

        if module_name == "LayerNorm" and config.get("over") == "channels":
            class LayerNorm2d(torch.nn.LayerNorm):
                """torchvision's convnext.LayerNorm2d (timm's is the same): nn.LayerNorm(C) on NHWC, permuted back."""

                def forward(self, x):
                    x = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight,
                                                       self.bias, self.eps)
                    return x.permute(0, 3, 1, 2)

            return LayerNorm2d(input_shape[0], eps=config["eps"]), {}
        if module_name == "LayerNorm":
            return torch.nn.LayerNorm(input_shape[-1], eps=config["eps"]), {}
        return getattr(torch.nn, f"BatchNorm{max(len(input_shape) - 1, 1)}d")(input_shape[0], eps=config["eps"]), {}
    return make


def _layernorm_statistics(layer_spec, batch: int = 0) -> int:
    """The mean, variance and 1/std its cache keeps: three values per normalised position (a token, a sample, or
    a feature map's position with over: channels)."""
    size = LayerNorm._size(layer_spec.input_shape, layer_spec.config)
    return 3 * batch * (math.prod(layer_spec.input_shape) // size)


_EPS = Option("eps", "number", "added to the variance", default=1e-5, minimum=0, exclusive=True)
OVER = ("last", "channels")
_OPTIONS = {"batchnorm": (_EPS, Option("eval", "bool", "run as at inference (running mean 0, variance 1)", default=False)),
            "layernorm": (_EPS, Option("over", "choice", "last: the last axis (nn.LayerNorm); channels: each position of a "
                                       "feature map [C, H, W] over its C channels (ConvNeXt's LayerNorm2d)",
                                       default="last", choices=OVER))}
_FACTS = dict(takes=("name", "ignore"), build=_build, normalizes=True, memory_doc="its input, normalised value and output",
              saturation_doc="none (a normalisation does not saturate)")
KINDS = (
    LayerKind("batchnorm", BatchNorm, "batch normalisation per feature / channel (nn.BatchNorm1d/2d), gamma 1, beta 0",
              options=_OPTIONS["batchnorm"], parse=checked(lambda raw: _normalize("batchnorm", raw)),
              example=((3, 4, 2), {"eps": 1e-3}), torch=_torch("BatchNorm"), assumes_layout=CHANNELS, unit_axis=1,
              aliases=("batch_norm", "batchnorm1d", "batchnorm2d"), **_FACTS),
    LayerKind("layernorm", LayerNorm, "layer normalisation over the last axis (nn.LayerNorm), or over a feature map's "
              "channels at each position (ConvNeXt's LayerNorm2d), gamma 1, beta 0",
              options=_OPTIONS["layernorm"], parse=checked(lambda raw: _normalize("layernorm", raw)),
              example=((3, 5), {}), torch=_torch("LayerNorm"), assumes_layout=SEQUENCE, unit_axis=-1,
              unit_axis_of=lambda config: 1 if config.get("over") == "channels" else -1,
              cache_elements=_layernorm_statistics,
              aliases=("layer_norm",), **{**_FACTS, "memory_doc": "its input, normalised value and output, and the "
                                                          "mean, variance and 1/std of each normalised position"}),
)
