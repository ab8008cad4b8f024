"""Multi-head self-attention and the transformer encoder block, in the Dense contract.

    forward(x) -> (y, cache)        cache.x input, cache.z (see each class), cache.y output
    backward(dy, cache, need_dx=True) -> (dx or None, grads)   grads = {param name: gradient, same shape}

Input (batch, steps, features), output (batch, steps, dim). Self-attention only (query, key
and value all come from x), no mask, no dropout. Vectorised numpy: batched matmuls over
(batch, heads); the only Python loop is over the three Q/K/V projections.

dtypes: the computation runs in the input's floating dtype (float32 in, float32 out);
parameters are cast to it (no copy when they already match) and gradients are returned in
each parameter's own dtype.

MultiHeadAttention(name, params, heads)
---------------------------------------
    Q = x Wq + bq,  K = x Wk + bk,  V = x Wv + bv              (batch, steps, dim) each
    split into `heads` heads of d = dim / heads columns: (batch, heads, steps, d), head h
    taking columns h·d ... (h+1)·d - 1 (PyTorch's split)
    S = Q Kᵀ / sqrt(d)       A = softmax(S) over the key axis       C = A V
    y = concat_heads(C) Wo + bo                                     (batch, steps, dim)

Parameters, our (fan_in, fan_out) layout (the layer computes x @ W, as Dense):

=================  ===============  =====================================================
name               shape            PyTorch nn.MultiheadAttention(dim, heads, batch_first=True)
=================  ===============  =====================================================
query_weights      (features, dim)  in_proj_weight[0:dim].T         (packed (3·dim, dim))
key_weights        (features, dim)  in_proj_weight[dim:2·dim].T
value_weights      (features, dim)  in_proj_weight[2·dim:3·dim].T
output_weights     (dim, dim)       out_proj.weight.T
query_bias ...     (dim,)           in_proj_bias[0:dim], [dim:2·dim], [2·dim:3·dim]
output_bias        (dim,)           out_proj.bias
=================  ===============  =====================================================

Biases are optional, each independently: absent (or None) means no such term and no such
gradient; ``parameter_shapes(..., {bias: true})``, the default, lists all four, to be
initialised to zero as PyTorch does (``default_init``).

features vs dim (a decision): Q, K and V are (features, dim), so the input width may differ
from dim and the layer then also projects features -> dim. PyTorch's nn.MultiheadAttention
has embed_dim in and out (kdim/vdim only concern separate key/value inputs), so only
features == dim has a one-module PyTorch twin; TransformerBlock requires features == dim (its
residual connections add x to the attention output).

Fans (``fans``), as torch.nn.init._calculate_fan_in_and_fan_out on each (out, in) matrix
separately: Q/K/V (fan_in=features, fan_out=dim), output (dim, dim): the (rows, cols) of our
layout. Beware: PyTorch's own default initialisation computes fans on the *packed*
in_proj_weight (3·dim, dim), i.e. fan_out = 3·dim, so its xavier_uniform_ bound is
sqrt(6/(dim + 3·dim)) = sqrt(1.5/dim), not the per-matrix sqrt(3/dim): PyTorch's Q/K/V start
with half the variance a per-matrix xavier gives (1/(2·dim) instead of 1/dim). Its
out_proj keeps nn.Linear's kaiming_uniform_(a=sqrt(5)), U(±1/sqrt(dim)) (``torch_default``),
and both biases are zeroed. ``TORCH_DEFAULT_INIT`` records this. ``default_init`` is instead
Keras' (MultiHeadAttention and Dense kernels glorot_uniform, i.e. per-matrix ``xavier_uniform``,
biases zero), for the attention and for the block's FFN alike.

Saturation: the fraction of attention rows (over batch, heads and query positions) whose
largest weight exceeds 0.99, i.e. softmax's rule applied to A (``saturation(cache)``).

Cache (AttentionCache): x, z = y (the output projection has no activation), y, and
q, k, v (batch, heads, steps, d); scores S (batch, heads, steps, steps), already scaled by
1/sqrt(d): the attention logits, whose variance is the usual initialisation diagnostic (~1
is healthy, large means saturated rows); attention A (batch, heads, steps, steps); context
(batch, steps, dim) = concat_heads(C), the output projection's input.

TransformerBlock(name, params, heads, activation="gelu", norm="pre", eps=1e-5)
-------------------------------------------------------------------------------
nn.TransformerEncoderLayer(dim, heads, ffn, dropout=0, activation, batch_first=True,
norm_first=(norm == "pre")):
    pre-norm:   m = x + MHA(LN1(x));   y = m + FFN(LN2(m))
    post-norm:  m = LN1(x + MHA(x));   y = LN2(m + FFN(m))
    FFN(u) = φ(u W1 + b1) W2 + b2,  W1 (dim, ffn), W2 (ffn, dim)
Parameters: the union, with prefixes: "attention.<MultiHeadAttention name>" (features = dim),
"ffn.in_weights" (dim, ffn), "ffn.in_bias" (ffn,), "ffn.out_weights" (ffn, dim),
"ffn.out_bias" (dim,), "norm1.gamma", "norm1.beta", "norm2.gamma", "norm2.beta" (dim,).
PyTorch: ffn.in_weights = linear1.weight.T, ffn.out_weights = linear2.weight.T; norm1/norm2
are its norm1/norm2 in both orders. FFN fans: in (dim, ffn), out (ffn, dim), as torch on
linear1/linear2. The sublayers hold the very arrays of ``params`` (not copies): to change a
parameter, write into its array or build a new block.
φ is any registered activation (a name, {name: {param: value}} or an Activation); "gelu" is
the exact erf form, as PyTorch's "gelu".

Cache (TransformerCache): x, y, z = m (the residual stream between the two sublayers), and
per sublayer: norm1, norm2 (NormCache: z = x̂, y = LN output), attention (AttentionCache),
ffn_z (batch, steps, ffn) φ's argument, ffn_h = φ(ffn_z), ffn_out (batch, steps, dim) FFN
output, sum1 and sum2, the two residual sums (pre-norm: sum1 = m, sum2 = y; post-norm: the
inputs of LN1 and LN2). ``sublayer_outputs(cache)`` names them all, in order, for
per-sublayer statistics; ``saturation(cache)`` gives {"attention": ..., "ffn": ...}.

Configuration (``normalize_config(kind, raw)``; kinds are the keys of ``ATTENTION_LAYERS``)
    attention    {dim, heads: required; bias: true}
    transformer  {dim, heads, ffn: required; activation: gelu; norm: pre; eps: 1e-5; bias: true}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from initdiag import activations
from initdiag.activations import Activation
from initdiag.layers.declare import SEQUENCE, LayerKind, Option, Weight, checked, params_layer
from initdiag.layers.norm import LayerNorm, NormCache
from initdiag.schemes import Fans

_SOFTMAX = activations.make("softmax")
PROJECTIONS = ("query", "key", "value")

# PyTorch's own initialisation of nn.MultiheadAttention (see the module docstring)
TORCH_DEFAULT_INIT = {
    "query_weights": "xavier_uniform on the packed (3·dim, dim) in_proj_weight: U(±sqrt(6/(4·dim)))",
    "key_weights": "as query_weights (same packed matrix)",
    "value_weights": "as query_weights (same packed matrix)",
    "output_weights": "torch_default: U(±1/sqrt(dim))",
    "biases": "zero",
}


def _shape_str(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _float_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1])


def _activation_of(value) -> Activation:
    if isinstance(value, Activation):
        return value
    if isinstance(value, str):
        return activations.make(value)
    if isinstance(value, Mapping) and len(value) == 1:
        (name, params), = value.items()
        if params is not None and not isinstance(params, Mapping):
            raise ValueError(f"activation {name!r} takes a mapping of parameters, not {params!r}")
        return activations.make(name, dict(params or {}))
    raise ValueError(f"activation must be a name such as 'gelu' or a mapping such as {{leaky_relu: {{alpha: 0.2}}}}, "
                     f"not {value!r}")


def check_heads(dim: int, heads: int, where: str = "attention") -> int:
    """dim / heads; ValueError naming both when heads does not divide dim."""
    if dim % heads:
        raise ValueError(f"{where}: dim={dim} is not divisible by heads={heads} "
                         f"(each head takes dim/heads columns)")
    return dim // heads


# ------------------------------------------------------------------------------- configuration
NORM_ORDERS = ("pre", "post")


def normalize_config(kind: str, raw) -> dict:
    """The options of `kind` (attention or transformer, or an alias) with defaults filled; ValueError names the choices."""
    from initdiag.layers import LAYERS, lookup  # the kinds' declared options (declared below: imported late)

    key = lookup(kind)
    valid = tuple(option.name for option in LAYERS[key].options)
    required = tuple(option.name for option in LAYERS[key].options if option.required)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{key} options must be a mapping with {', '.join(required)}, got {raw!r}")
    unknown = [str(k) for k in raw if k not in valid]
    if unknown:
        raise ValueError(f"{key}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{key} needs {' and '.join(missing)} (positive integers)")
    config = {}
    for k in required:
        v = raw[k]
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise ValueError(f"{key}: {k} must be a positive integer, got {v!r}")
        config[k] = int(v)
    check_heads(config["dim"], config["heads"], key)
    bias = raw.get("bias", True)
    if not isinstance(bias, (bool, np.bool_)):
        raise ValueError(f"{key}: bias must be true or false, got {bias!r}")
    config["bias"] = bool(bias)
    causal = raw.get("causal", False)
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"{key}: causal must be true or false, got {causal!r}")
    config["causal"] = bool(causal)
    if key == "transformer":
        value = raw.get("activation", "gelu")
        try:
            act = _activation_of(value)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"transformer: bad activation {value!r} ({err}); "
                             f"valid: {', '.join(activations.ACTIVATIONS)}") from None
        config["activation"] = act.written()
        norm = raw.get("norm", "pre")
        if not isinstance(norm, str) or norm.strip().lower() not in NORM_ORDERS:
            raise ValueError(f"transformer: norm must be one of {', '.join(NORM_ORDERS)}, got {norm!r}")
        config["norm"] = norm.strip().lower()
        eps = raw.get("eps", 1e-5)
        if isinstance(eps, bool) or not isinstance(eps, Real) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"transformer: eps must be a positive number (PyTorch's default is 1e-5), got {eps!r}")
        config["eps"] = float(eps)
    return config


def _sequence_features(kind: str, input_shape) -> tuple[int, int]:
    shape = tuple(input_shape)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"{kind} expects a per-sample input of shape (steps, features), got {_shape_str(shape)}")
    return int(shape[0]), int(shape[1])


# ------------------------------------------------------------------------------- attention
class AttentionCache(NamedTuple):
    x: np.ndarray          # (batch, steps, features)
    z: np.ndarray          # y itself (no activation)
    y: np.ndarray          # (batch, steps, dim)
    q: np.ndarray          # (batch, heads, steps, d)
    k: np.ndarray          # (batch, heads, steps, d)
    v: np.ndarray          # (batch, heads, steps, d)
    scores: np.ndarray     # (batch, heads, steps, steps) Q Kᵀ / sqrt(d)
    attention: np.ndarray  # (batch, heads, steps, steps) softmax(scores), rows sum to 1
    context: np.ndarray    # (batch, steps, dim) heads concatenated, before the output projection


class MultiHeadAttention:
    """Multi-head scaled dot-product self-attention; see the module docstring."""

    kind = "attention"
    unit_axis = -1
    default_init = {"query_weights": "xavier_uniform", "key_weights": "xavier_uniform",
                    "value_weights": "xavier_uniform", "output_weights": "xavier_uniform",
                    "query_bias": "zero", "key_bias": "zero", "value_bias": "zero", "output_bias": "zero"}
    WEIGHTS = ("query_weights", "key_weights", "value_weights", "output_weights")
    BIASES = ("query_bias", "key_bias", "value_bias", "output_bias")

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        steps, _ = _sequence_features(cls.kind, input_shape)
        return (steps, normalize_config(cls.kind, config)["dim"])

    @classmethod
    def parameter_shapes(cls, input_shape, config) -> dict:
        _, features = _sequence_features(cls.kind, input_shape)
        config = normalize_config(cls.kind, config)
        dim = config["dim"]
        shapes = {"query_weights": (features, dim), "key_weights": (features, dim),
                  "value_weights": (features, dim), "output_weights": (dim, dim)}
        if config["bias"]:
            shapes.update({name: (dim,) for name in cls.BIASES})
        return shapes

    @classmethod
    def fans(cls, input_shape, config) -> dict:
        """{weight name: Fans}, per (out, in) matrix as torch computes them (not the packed in_proj_weight)."""
        shapes = cls.parameter_shapes(input_shape, config)
        return {name: Fans(*shapes[name]) for name in cls.WEIGHTS}

    @classmethod
    def from_config(cls, name: str, params: dict, config, input_shape=None):
        config = normalize_config(cls.kind, config)
        layer = cls(name, params, config["heads"], causal=config["causal"])
        if layer.dim != config["dim"]:
            raise ValueError(f"attention '{name}': config has dim={config['dim']}, parameters {layer.dim}")
        return layer

    def __init__(self, name: str, params: dict, heads: int, causal: bool = False):
        self.name = name
        self.causal = bool(causal)  # a query attends to its own and earlier positions only (a decoder's mask)
        allowed = set(self.WEIGHTS) | set(self.BIASES)
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"attention '{name}': unknown parameter(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(self.WEIGHTS + self.BIASES)}")
        missing = [w for w in self.WEIGHTS if params.get(w) is None]
        if missing:
            raise ValueError(f"attention '{name}': missing parameter(s) {', '.join(missing)}")
        self.params = {key: np.asarray(value) for key, value in params.items() if value is not None}
        wo = self.params["output_weights"]
        if wo.ndim != 2 or wo.shape[0] != wo.shape[1]:
            raise ValueError(f"attention '{name}': output_weights must be (dim, dim), got {_shape_str(wo.shape)}")
        dim = wo.shape[0]
        wq = self.params["query_weights"]
        if wq.ndim != 2 or wq.shape[1] != dim:
            raise ValueError(f"attention '{name}': query_weights must be (features, {dim}), got {_shape_str(wq.shape)}")
        features = wq.shape[0]
        for key in self.WEIGHTS[1:3]:
            if self.params[key].shape != (features, dim):
                raise ValueError(f"attention '{name}': {key} must be ({features}, {dim}), "
                                 f"got {_shape_str(self.params[key].shape)}")
        for key in self.BIASES:
            if key in self.params and self.params[key].shape != (dim,):
                raise ValueError(f"attention '{name}': {key} must be ({dim},), got {_shape_str(self.params[key].shape)}")
        if isinstance(heads, bool) or not isinstance(heads, Integral) or heads < 1:
            raise ValueError(f"attention '{name}': heads must be a positive integer, got {heads!r}")
        self.heads = int(heads)
        self.head_dim = check_heads(dim, self.heads, f"attention '{name}'")
        self.dim, self.features = dim, features

    def _param(self, key: str, dtype):
        value = self.params.get(key)
        return None if value is None else value.astype(dtype, copy=False)

    def _split(self, a: np.ndarray) -> np.ndarray:
        """(batch, steps, dim) -> (batch, heads, steps, d), a view."""
        batch, steps, _ = a.shape
        return a.reshape(batch, steps, self.heads, self.head_dim).transpose(0, 2, 1, 3)

    @staticmethod
    def _merge(a: np.ndarray) -> np.ndarray:
        """(batch, heads, steps, d) -> (batch, steps, heads·d), a copy."""
        batch, heads, steps, d = a.shape
        return a.transpose(0, 2, 1, 3).reshape(batch, steps, heads * d)

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.features:
            raise ValueError(f"attention '{self.name}' expects input (batch, steps, {self.features}), "
                             f"got {_shape_str(x.shape)}")
        dtype = _float_dtype(x)
        x = x.astype(dtype, copy=False)
        projected = []
        for p in PROJECTIONS:
            a = x @ self._param(p + "_weights", dtype)
            bias = self._param(p + "_bias", dtype)
            if bias is not None:
                a += bias
            projected.append(self._split(a))
        q, k, v = projected
        scores = q @ k.swapaxes(-1, -2)
        scores *= 1.0 / math.sqrt(self.head_dim)
        if self.causal:  # -inf above the diagonal: those keys get weight 0 and pass no gradient
            scores[..., np.triu(np.ones(scores.shape[-2:], dtype=bool), 1)] = -np.inf
        attention = _SOFTMAX.forward(scores)
        context = self._merge(attention @ v)
        y = context @ self._param("output_weights", dtype)
        bias = self._param("output_bias", dtype)
        if bias is not None:
            y += bias
        return y, AttentionCache(x, y, y, q, k, v, scores, attention, context)

    def backward(self, dy: np.ndarray, cache: AttentionCache, need_dx: bool = True, *, dz=None):
        """dy (batch, steps, dim) -> (dx or None, grads for every parameter held).

        Through the softmax by its Jacobian-vector product A ⊙ (dA - rowsum(dA ⊙ A)): no
        (steps × steps) Jacobian per row is formed.
        """
        if dz is not None:
            raise ValueError(f"attention '{self.name}' cannot be the output of a fused loss (dz)")
        dy = np.asarray(dy)
        if dy.shape != cache.y.shape:
            raise ValueError(f"attention '{self.name}': dy has shape {dy.shape}, the output {cache.y.shape}")
        dtype = cache.y.dtype
        dy = dy.astype(dtype, copy=False)
        grads = {"output_weights": _flat(cache.context).T @ _flat(dy)}
        if "output_bias" in self.params:
            grads["output_bias"] = _flat(dy).sum(axis=0)
        dcontext = self._split(dy @ self._param("output_weights", dtype).T)   # (B, H, T, d)
        dattention = dcontext @ cache.v.swapaxes(-1, -2)                         # (B, H, T, T)
        dv = cache.attention.swapaxes(-1, -2) @ dcontext
        dscores = _SOFTMAX.backward(cache.scores, cache.attention, dattention)
        dscores *= 1.0 / math.sqrt(self.head_dim)
        dq = dscores @ cache.k
        dk = dscores.swapaxes(-1, -2) @ cache.q
        x_flat = _flat(cache.x)
        dx = None
        for p, d in zip(PROJECTIONS, (dq, dk, dv)):
            d = _flat(self._merge(d))                                            # (B·T, dim)
            grads[p + "_weights"] = x_flat.T @ d
            if p + "_bias" in self.params:
                grads[p + "_bias"] = d.sum(axis=0)
            if need_dx:
                part = d @ self._param(p + "_weights", dtype).T
                dx = part if dx is None else dx + part
        grads = {key: grads[key].astype(self.params[key].dtype, copy=False) for key in self.params}
        return (dx.reshape(cache.x.shape) if need_dx else None), grads

    def saturation(self, cache: AttentionCache) -> float:
        """Fraction of attention rows (batch × heads × query positions) whose largest weight > 0.99; a causal
        layer's first query, which sees only itself, is certain by construction and not counted."""
        if self.causal:
            return _SOFTMAX.saturation(cache.scores[..., 1:, :], cache.attention[..., 1:, :])
        return _SOFTMAX.saturation(cache.scores, cache.attention)

    def __repr__(self) -> str:
        return f"MultiHeadAttention({self.name!r}, {self.features}->{self.dim}, heads={self.heads})"


# ------------------------------------------------------------------------------- transformer block
class TransformerCache(NamedTuple):
    x: np.ndarray                 # (batch, steps, dim) input
    z: np.ndarray                 # m, the residual stream between the sublayers
    y: np.ndarray                 # (batch, steps, dim) output
    norm1: NormCache              # LN1 (pre: of x; post: of sum1)
    attention: AttentionCache     # MHA (input: pre LN1(x); post x)
    norm2: NormCache              # LN2 (pre: of m; post: of sum2)
    ffn_z: np.ndarray             # (batch, steps, ffn) u W1 + b1
    ffn_h: np.ndarray             # (batch, steps, ffn) φ(ffn_z)
    ffn_out: np.ndarray           # (batch, steps, dim) FFN output
    sum1: np.ndarray              # first residual sum  (pre: m; post: x + MHA(x))
    sum2: np.ndarray              # second residual sum (pre: y; post: m + FFN(m))


class TransformerBlock:
    """A transformer encoder block (nn.TransformerEncoderLayer, no dropout); see the module docstring."""

    kind = "transformer"
    unit_axis = -1
    FFN = ("ffn.in_weights", "ffn.in_bias", "ffn.out_weights", "ffn.out_bias")
    default_init = {**{"attention." + k: v for k, v in MultiHeadAttention.default_init.items()},
                    "ffn.in_weights": "xavier_uniform", "ffn.in_bias": "zero",
                    "ffn.out_weights": "xavier_uniform", "ffn.out_bias": "zero",
                    "norm1.gamma": "ones", "norm1.beta": "zero", "norm2.gamma": "ones", "norm2.beta": "zero"}

    @classmethod
    def _check_input(cls, input_shape, config) -> tuple[int, dict]:
        steps, features = _sequence_features(cls.kind, input_shape)
        config = normalize_config(cls.kind, config)
        if features != config["dim"]:
            raise ValueError(f"transformer: input features ({features}) must equal dim ({config['dim']}) "
                             f"for the residual connections")
        return steps, config

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        steps, config = cls._check_input(input_shape, config)
        return (steps, config["dim"])

    @classmethod
    def parameter_shapes(cls, input_shape, config) -> dict:
        steps, config = cls._check_input(input_shape, config)
        dim, ffn = config["dim"], config["ffn"]
        attention = MultiHeadAttention.parameter_shapes((steps, dim), {"dim": dim, "heads": config["heads"],
                                                                       "bias": config["bias"]})
        shapes = {"attention." + k: v for k, v in attention.items()}
        shapes["ffn.in_weights"] = (dim, ffn)
        if config["bias"]:
            shapes["ffn.in_bias"] = (ffn,)
        shapes["ffn.out_weights"] = (ffn, dim)
        if config["bias"]:
            shapes["ffn.out_bias"] = (dim,)
        for norm in ("norm1", "norm2"):
            shapes[norm + ".gamma"] = shapes[norm + ".beta"] = (dim,)
        return shapes

    @classmethod
    def fans(cls, input_shape, config) -> dict:
        """{weight name: Fans}: the attention's four (per matrix) and the FFN's two, as torch on linear1/linear2."""
        shapes = cls.parameter_shapes(input_shape, config)
        names = ["attention." + w for w in MultiHeadAttention.WEIGHTS] + ["ffn.in_weights", "ffn.out_weights"]
        return {name: Fans(*shapes[name]) for name in names}

    @classmethod
    def from_config(cls, name: str, params: dict, config, input_shape=None):
        config = normalize_config(cls.kind, config)
        layer = cls(name, params, config["heads"], activation=config["activation"], norm=config["norm"],
                    eps=config["eps"], causal=config["causal"])
        if (layer.dim, layer.ffn) != (config["dim"], config["ffn"]):
            raise ValueError(f"transformer '{name}': config has dim={config['dim']}, ffn={config['ffn']}; "
                             f"parameters dim={layer.dim}, ffn={layer.ffn}")
        return layer

    def __init__(self, name: str, params: dict, heads: int, activation="gelu", norm: str = "pre", eps: float = 1e-5,
                 causal: bool = False):
        self.name = name
        prefixes = ("attention.", "ffn.", "norm1.", "norm2.")
        unknown = sorted(k for k in params if not k.startswith(prefixes)
                         or (k.startswith("ffn.") and k not in self.FFN))
        if unknown:
            raise ValueError(f"transformer '{name}': unknown parameter(s) {', '.join(unknown)}; valid: "
                             f"attention.<{'|'.join(MultiHeadAttention.WEIGHTS + MultiHeadAttention.BIASES)}>, "
                             f"{', '.join(self.FFN)}, norm1.gamma, norm1.beta, norm2.gamma, norm2.beta")
        self.params = {k: np.asarray(v) for k, v in params.items() if v is not None}

        def part(prefix):
            return {k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)}

        if not isinstance(norm, str) or norm.strip().lower() not in NORM_ORDERS:
            raise ValueError(f"transformer '{name}': norm must be one of {', '.join(NORM_ORDERS)}, got {norm!r}")
        self.norm = norm.strip().lower()
        self.attention = MultiHeadAttention(f"{name}.attention", part("attention."), heads, causal=causal)
        self.dim, self.heads = self.attention.dim, self.attention.heads
        if self.attention.features != self.dim:
            raise ValueError(f"transformer '{name}': attention weights must be (dim, dim) for the residual "
                             f"connections, got query_weights {_shape_str(self.params['attention.query_weights'].shape)}")
        def defaults():  # fresh arrays per norm: the two must not share memory
            return LayerNorm.default_params((self.dim,), dtype=self.params["attention.output_weights"].dtype)

        self.norm1 = LayerNorm(f"{name}.norm1", {**defaults(), **part("norm1.")}, eps=eps)
        self.norm2 = LayerNorm(f"{name}.norm2", {**defaults(), **part("norm2.")}, eps=eps)
        for key in ("norm1.gamma", "norm1.beta", "norm2.gamma", "norm2.beta"):  # absent: 1 and 0, kept in params
            layer, attr = getattr(self, key.split(".")[0]), key.split(".")[1]
            self.params[key] = layer.params[attr]
            if self.params[key].shape != (self.dim,):
                raise ValueError(f"transformer '{name}': {key} must be ({self.dim},), "
                                 f"got {_shape_str(self.params[key].shape)}")
        for key in ("ffn.in_weights", "ffn.out_weights"):
            if key not in self.params:
                raise ValueError(f"transformer '{name}': missing parameter '{key}'")
        w1 = self.params["ffn.in_weights"]
        if w1.ndim != 2 or w1.shape[0] != self.dim:
            raise ValueError(f"transformer '{name}': ffn.in_weights must be ({self.dim}, ffn), got {_shape_str(w1.shape)}")
        self.ffn = w1.shape[1]
        expected = {"ffn.out_weights": (self.ffn, self.dim), "ffn.in_bias": (self.ffn,), "ffn.out_bias": (self.dim,)}
        for key, shape in expected.items():
            if key in self.params and self.params[key].shape != shape:
                raise ValueError(f"transformer '{name}': {key} must be {shape}, got {_shape_str(self.params[key].shape)}")
        self.activation = _activation_of(activation)
        self.eps = float(eps)

    # ----------------------------------------------------------------- FFN
    def _p(self, key, dtype):
        value = self.params.get(key)
        return None if value is None else value.astype(dtype, copy=False)

    def _ffn_forward(self, u):
        dtype = u.dtype
        z = u @ self._p("ffn.in_weights", dtype)
        if "ffn.in_bias" in self.params:
            z += self._p("ffn.in_bias", dtype)
        h = self.activation.forward(z)
        out = h @ self._p("ffn.out_weights", dtype)
        if "ffn.out_bias" in self.params:
            out += self._p("ffn.out_bias", dtype)
        return z, h, out

    def _ffn_backward(self, dout, u, cache: TransformerCache, grads: dict):
        """Gradients of the FFN's parameters into `grads`; returns dLoss/du."""
        dtype = dout.dtype
        grads["ffn.out_weights"] = _flat(cache.ffn_h).T @ _flat(dout)
        if "ffn.out_bias" in self.params:
            grads["ffn.out_bias"] = _flat(dout).sum(axis=0)
        dh = dout @ self._p("ffn.out_weights", dtype).T
        dz = self.activation.backward(cache.ffn_z, cache.ffn_h, dh)
        grads["ffn.in_weights"] = _flat(u).T @ _flat(dz)
        if "ffn.in_bias" in self.params:
            grads["ffn.in_bias"] = _flat(dz).sum(axis=0)
        return dz @ self._p("ffn.in_weights", dtype).T

    @staticmethod
    def _merge_grads(grads: dict, prefix: str, sub: dict):
        grads.update({prefix + k: v for k, v in sub.items()})

    # ----------------------------------------------------------------- forward / backward
    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.dim:
            raise ValueError(f"transformer '{self.name}' expects input (batch, steps, {self.dim}), "
                             f"got {_shape_str(x.shape)}")
        x = x.astype(_float_dtype(x), copy=False)
        if self.norm == "pre":
            n1, c1 = self.norm1.forward(x)
            a, ca = self.attention.forward(n1)
            m = x + a
            n2, c2 = self.norm2.forward(m)
            fz, fh, f = self._ffn_forward(n2)
            y = m + f
            return y, TransformerCache(x, m, y, c1, ca, c2, fz, fh, f, m, y)
        a, ca = self.attention.forward(x)
        s1 = x + a
        m, c1 = self.norm1.forward(s1)
        fz, fh, f = self._ffn_forward(m)
        s2 = m + f
        y, c2 = self.norm2.forward(s2)
        return y, TransformerCache(x, m, y, c1, ca, c2, fz, fh, f, s1, s2)

    def backward(self, dy: np.ndarray, cache: TransformerCache, need_dx: bool = True, *, dz=None):
        """dy (batch, steps, dim) -> (dx or None, grads with every prefixed parameter name)."""
        if dz is not None:
            raise ValueError(f"transformer '{self.name}' cannot be the output of a fused loss (dz)")
        dy = np.asarray(dy)
        if dy.shape != cache.y.shape:
            raise ValueError(f"transformer '{self.name}': dy has shape {dy.shape}, the output {cache.y.shape}")
        dy = dy.astype(cache.y.dtype, copy=False)
        grads: dict = {}
        if self.norm == "pre":
            dn2 = self._ffn_backward(dy, cache.norm2.y, cache, grads)
            dm_norm, g2 = self.norm2.backward(dn2, cache.norm2)
            dm = dy + dm_norm
            dn1, ga = self.attention.backward(dm, cache.attention)
            dx_norm, g1 = self.norm1.backward(dn1, cache.norm1, need_dx=need_dx)
            dx = dm + dx_norm if need_dx else None
        else:
            ds2, g2 = self.norm2.backward(dy, cache.norm2)
            dm = ds2 + self._ffn_backward(ds2, cache.z, cache, grads)
            ds1, g1 = self.norm1.backward(dm, cache.norm1)
            dx_attention, ga = self.attention.backward(ds1, cache.attention, need_dx=need_dx)
            dx = ds1 + dx_attention if need_dx else None
        self._merge_grads(grads, "attention.", ga)
        self._merge_grads(grads, "norm1.", g1)
        self._merge_grads(grads, "norm2.", g2)
        grads = {key: grads[key].astype(self.params[key].dtype, copy=False) for key in self.params}
        return dx, grads

    def sublayer_outputs(self, cache: TransformerCache) -> dict:
        """name -> array, in the order the block computes them, for per-sublayer statistics."""
        if self.norm == "pre":
            return {"norm1": cache.norm1.y, "attention": cache.attention.y, "residual1": cache.sum1,
                    "norm2": cache.norm2.y, "ffn.pre_activation": cache.ffn_z, "ffn.hidden": cache.ffn_h,
                    "ffn": cache.ffn_out, "residual2": cache.sum2}
        return {"attention": cache.attention.y, "residual1": cache.sum1, "norm1": cache.norm1.y,
                "ffn.pre_activation": cache.ffn_z, "ffn.hidden": cache.ffn_h, "ffn": cache.ffn_out,
                "residual2": cache.sum2, "norm2": cache.norm2.y}

    def saturation(self, cache: TransformerCache) -> dict:
        """{"attention": saturated attention rows, "ffn": φ's saturation on the FFN hidden layer}."""
        return {"attention": self.attention.saturation(cache.attention),
                "ffn": self.activation.saturation(cache.ffn_z, cache.ffn_h)}

    def __repr__(self) -> str:
        return (f"TransformerBlock({self.name!r}, dim={self.dim}, heads={self.heads}, ffn={self.ffn}, "
                f"{self.activation!r}, {self.norm}-norm)")


def _build(spec, weights, bias, activation, context):
    kind_class = MultiHeadAttention if spec.kind == "attention" else TransformerBlock
    layer = kind_class.from_config(spec.name, weights, spec.config, spec.input_shape)
    params_layer(layer, kind_class.fans(spec.input_shape, spec.config), kind_class)
    if spec.kind == "attention":  # a transformer's activation is its FFN's own
        layer.activation = activation
    return layer


def _weights(kind_class):
    def weights(input_shape, config) -> dict:
        return {name: Weight(tuple(fans), "dense" if name.startswith("ffn.") else "attention", tuple(fans))
                for name, fans in kind_class.fans(input_shape, config).items()}
    return weights


def _cache_elements(layer, batch: int) -> int:
    """Attention scores and weights (batch · heads · steps²), the block's activations and its other parameters."""
    steps, heads = layer.input_shape[0], layer.config["heads"]
    width = max(layer.config["dim"], layer.config.get("ffn", 0))
    return batch * (3 * heads * steps * steps + 8 * steps * width) + 8 * width * width


def _saturation(layer, cache) -> float:
    """The fraction of attention rows whose largest weight exceeds 0.99."""
    saturated = layer.saturation(cache)
    return saturated["attention"] if isinstance(saturated, dict) else saturated


def _torch(input_shape, config):
    """Linear layers with the per-matrix fans torch computes on each (out, in) matrix (its packed in_proj_weight
    would give fan_out = 3·dim: see the module docstring)."""
    import torch

    features, dim = input_shape[1], config["dim"]
    modules = {name: torch.nn.Linear(features, dim) for name in PROJECTIONS}
    modules["output"] = torch.nn.Linear(dim, dim)
    names = {f"{name}_weights": f"{name}.weight" for name in modules}
    if "ffn" in config:
        modules["ffn_in"], modules["ffn_out"] = torch.nn.Linear(dim, config["ffn"]), torch.nn.Linear(config["ffn"], dim)
        names = {"attention." + ours: theirs for ours, theirs in names.items()}
        names.update({"ffn.in_weights": "ffn_in.weight", "ffn.out_weights": "ffn_out.weight"})
    return torch.nn.ModuleDict(modules), names


_DIM = Option("dim", "int", "the model width (divisible by heads)", required=True, minimum=1)
_HEADS = Option("heads", "int", "attention heads", required=True, minimum=1)
_BIAS = Option("bias", "bool", "false drops every bias", default=True)
_CAUSAL = Option("causal", "bool", "a decoder's mask: each position attends to itself and earlier ones", default=False)
_FACTS = dict(takes=("name", "init", "bias_init", "ignore"), build=_build, torch=_torch, unit_axis=-1, layout=SEQUENCE,
              params_dict=True, weights_from_init=True, inner_activation="identity", cache_elements=_cache_elements,
              saturation=_saturation, saturation_doc="attention rows whose largest weight exceeds 0.99",
              memory_doc="Q, K, V, the scores and weights (batch · heads · steps²) and the block's activations")
KINDS = (
    LayerKind("attention", MultiHeadAttention, "multi-head scaled dot-product self-attention (nn.MultiheadAttention)",
              options=(_DIM, _HEADS, _BIAS, _CAUSAL), parse=checked(lambda raw: normalize_config("attention", raw)),
              example=((4, 6), {"dim": 4, "heads": 2}), weights=_weights(MultiHeadAttention),
              aliases=("multihead_attention", "multi_head_attention", "mha", "self_attention"), **_FACTS),
    LayerKind("transformer", TransformerBlock, "a transformer encoder block (nn.TransformerEncoderLayer, no dropout)",
              options=(_DIM, _HEADS, Option("ffn", "int", "the feed-forward hidden width", required=True, minimum=1),
                       Option("activation", "activation", "the FFN's nonlinearity", default="gelu"),
                       Option("norm", "choice", "layer norm before (pre) or after (post) each sublayer", default="pre",
                              choices=NORM_ORDERS),
                       Option("eps", "number", "the layer norms' eps", default=1e-5, minimum=0, exclusive=True), _BIAS,
                       _CAUSAL),
              parse=checked(lambda raw: normalize_config("transformer", raw)),
              example=((3, 4), {"dim": 4, "heads": 2, "ffn": 6, "norm": "post"}), weights=_weights(TransformerBlock),
              aliases=("transformer_block", "transformer_encoder"),
              output_normalized=lambda config: config.get("norm") == "post",  # its output is a layer norm's
              adds_to_stream=lambda config: config.get("norm") != "post",  # pre-norm: x + f(norm(x)), a stream
              **_FACTS),
)
