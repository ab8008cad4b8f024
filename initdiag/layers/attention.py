"""Multi-head self-attention (the `attention` kind), in the Dense contract; the transformer block built
on it is transformer.py, the rotary position embedding rotary.py.

    forward(x) -> (y, cache)        cache.x input, cache.z (see each class), cache.y output
    backward(dy, cache, need_dx=True) -> (dx or None, grads)   grads = {param name: gradient, same shape}

Input (batch, steps, features), output (batch, steps, dim). Self-attention only (query, key
and value all come from x), an optional causal mask, no dropout. Vectorised numpy: batched
matmuls over (batch, heads); the only Python loop is over the three Q/K/V projections.

dtypes: the computation runs in the input's floating dtype (float32 in, float32 out);
parameters are cast to it (no copy when they already match) and gradients are returned in
each parameter's own dtype.

MultiHeadAttention(name, params, heads, causal=False, kv_heads=None, rotary=False, rotary_base=10000)
-----------------------------------------------------------------------------------------------------
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
q (batch, heads, steps, d), k and v (batch, kv_heads, steps, d); scores S (batch, heads, steps,
steps), already scaled by 1/sqrt(d): the attention logits, whose variance is the usual initialisation diagnostic (~1
is healthy, large means saturated rows); attention A (batch, heads, steps, steps); context
(batch, steps, dim) = concat_heads(C), the output projection's input.

Grouped-query and multi-query attention (``kv_heads``; Ainslie et al. 2023, Shazeer 2019): K and V
project to kv_heads·d columns only, (features, kv_heads·d), and each group of heads/kv_heads
consecutive query heads shares one K/V head: query head h reads K/V head h // (heads/kv_heads),
as Llama's repeat_kv (torch's repeat_interleave on the head axis). kv_heads = heads (the default)
is ordinary multi-head attention, kv_heads = 1 multi-query attention; heads must be divisible by
kv_heads. No repeated copy of K and V is made: the queries of a group are batched against their
shared head by broadcasting, and the gradient of a shared head is summed over its group.
Fans per matrix as torch's nn.Linear(features, kv_heads·d).

Rotary position embeddings (``rotary: true``, ``rotary_base``, see rotary.py): Q and K of every
head are rotated at positions 0 ... steps-1 after their projection (and bias) and before the
scores, as Hugging Face Llama; d must be even. cache.q and cache.k hold the rotated vectors.

Configuration (``normalize_config(kind, raw)``): the options the kind declares (``LAYERS[kind].options``);
a new option at its default (kv_heads = heads, rotary false, and transformer.py's ffn_kind mlp,
norm_kind layernorm) is left out of the config, so the configs of specs written before it are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from initdiag import activations
from initdiag.activations import Activation
from initdiag.layers import rotary as rope
from initdiag.layers.declare import SEQUENCE, LayerKind, Option, Weight, checked, params_layer
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


def __getattr__(name):
    """TransformerBlock and TransformerCache, which lived here, from transformer.py (late: it builds on this)."""
    if name in ("TransformerBlock", "TransformerCache"):
        from initdiag.layers import transformer

        return getattr(transformer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def check_kv_heads(heads: int, kv_heads: int, where: str = "attention") -> int:
    """heads / kv_heads, the query heads sharing one K/V head; ValueError naming both when it is not whole."""
    if heads % kv_heads:
        raise ValueError(f"{where}: heads={heads} is not divisible by kv_heads={kv_heads} "
                         f"(each K/V head serves heads/kv_heads query heads)")
    return heads // kv_heads


def check_rotary(head_dim: int, where: str = "attention") -> None:
    if head_dim % 2:
        raise ValueError(f"{where}: rotary needs an even head size, dim/heads = {head_dim} "
                         f"(it rotates the two halves of each head against each other)")


def _flag(key: str, raw, name: str, default: bool = False) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{key}: {name} must be true or false, got {value!r}")
    return bool(value)


def _positive_number(key: str, raw, name: str, default: float, note: str = "") -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key}: {name} must be a positive number{note}, got {value!r}")
    return float(value)


# ------------------------------------------------------------------------------- configuration
def normalize_config(kind: str, raw) -> dict:
    """The options of `kind` (attention or transformer, or an alias) with defaults filled; ValueError names the choices.

    The newer options (kv_heads, rotary, rotary_base; a block's ffn_kind, norm_kind) enter the config only
    when they differ from their default (see the module docstring)."""
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
    head_dim = check_heads(config["dim"], config["heads"], key)
    config["bias"] = _flag(key, raw, "bias", True)
    config["causal"] = _flag(key, raw, "causal")
    if key == "transformer":
        from initdiag.layers.transformer import block_options

        config.update(block_options(raw))
    kv_heads = raw.get("kv_heads", config["heads"])
    if isinstance(kv_heads, bool) or not isinstance(kv_heads, Integral) or kv_heads < 1:
        raise ValueError(f"{key}: kv_heads must be a positive integer (heads by default), got {kv_heads!r}")
    check_kv_heads(config["heads"], int(kv_heads), key)
    if kv_heads != config["heads"]:
        config["kv_heads"] = int(kv_heads)
    if _flag(key, raw, "rotary"):
        check_rotary(head_dim, key)
        config["rotary"] = True
        config["rotary_base"] = _positive_number(key, raw, "rotary_base", rope.DEFAULT_BASE, " (10000 by default)")
    elif "rotary_base" in raw:
        raise ValueError(f"{key}: rotary_base is the base of rotary position embeddings: it needs rotary: true")
    return config


def attention_options(config: Mapping) -> dict:
    """The keyword arguments of MultiHeadAttention beyond name, params and heads, from a normalized config."""
    return {"causal": config["causal"], "kv_heads": config.get("kv_heads"), "rotary": config.get("rotary", False),
            "rotary_base": config.get("rotary_base", rope.DEFAULT_BASE)}


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
    q: np.ndarray          # (batch, heads, steps, d), rotated when rotary
    k: np.ndarray          # (batch, kv_heads, steps, d), rotated when rotary
    v: np.ndarray          # (batch, kv_heads, steps, d)
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
        kv_dim = dim // config["heads"] * config.get("kv_heads", config["heads"])
        shapes = {"query_weights": (features, dim), "key_weights": (features, kv_dim),
                  "value_weights": (features, kv_dim), "output_weights": (dim, dim)}
        if config["bias"]:
            shapes.update({"query_bias": (dim,), "key_bias": (kv_dim,), "value_bias": (kv_dim,),
                           "output_bias": (dim,)})
        return shapes

    @classmethod
    def fans(cls, input_shape, config) -> dict:
        """{weight name: Fans}, per (out, in) matrix as torch computes them (not the packed in_proj_weight)."""
        shapes = cls.parameter_shapes(input_shape, config)
        return {name: Fans(*shapes[name]) for name in cls.WEIGHTS}

    @classmethod
    def from_config(cls, name: str, params: dict, config, input_shape=None):
        config = normalize_config(cls.kind, config)
        layer = cls(name, params, config["heads"], **attention_options(config))
        if layer.dim != config["dim"]:
            raise ValueError(f"attention '{name}': config has dim={config['dim']}, parameters {layer.dim}")
        return layer

    def __init__(self, name: str, params: dict, heads: int, causal: bool = False, kv_heads: int | None = None,
                 rotary: bool = False, rotary_base: float = rope.DEFAULT_BASE):
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
        for key, value in (("heads", heads), ("kv_heads", heads if kv_heads is None else kv_heads)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"attention '{name}': {key} must be a positive integer, got {value!r}")
        self.heads = int(heads)
        self.kv_heads = self.heads if kv_heads is None else int(kv_heads)
        self.group = check_kv_heads(self.heads, self.kv_heads, f"attention '{name}'")
        self.head_dim = check_heads(dim, self.heads, f"attention '{name}'")
        kv_dim = self.kv_heads * self.head_dim
        for key in self.WEIGHTS[1:3]:
            if self.params[key].shape != (features, kv_dim):
                raise ValueError(f"attention '{name}': {key} must be ({features}, {kv_dim}), "
                                 f"got {_shape_str(self.params[key].shape)}")
        for key in self.BIASES:
            width = kv_dim if key in ("key_bias", "value_bias") else dim
            if key in self.params and self.params[key].shape != (width,):
                raise ValueError(f"attention '{name}': {key} must be ({width},), "
                                 f"got {_shape_str(self.params[key].shape)}")
        self.rotary = bool(rotary)
        if self.rotary:
            check_rotary(self.head_dim, f"attention '{name}'")
        self.rotary_base = float(rotary_base)
        self._tables = {}  # (steps, dtype) -> rotary (cos, sin)
        self.dim, self.features = dim, features

    def _param(self, key: str, dtype):
        value = self.params.get(key)
        return None if value is None else value.astype(dtype, copy=False)

    def _split(self, a: np.ndarray) -> np.ndarray:
        """(batch, steps, n·d) -> (batch, n, steps, d), a view (n: heads, or kv_heads for K and V)."""
        batch, steps, width = a.shape
        return a.reshape(batch, steps, width // self.head_dim, self.head_dim).transpose(0, 2, 1, 3)

    @staticmethod
    def _merge(a: np.ndarray) -> np.ndarray:
        """(batch, n, steps, d) -> (batch, steps, n·d), a copy."""
        batch, heads, steps, d = a.shape
        return a.transpose(0, 2, 1, 3).reshape(batch, steps, heads * d)

    # grouped-query attention: a query head's (batch, heads, ...) array seen as (batch, kv_heads, group, ...)
    # against its K/V head's (batch, kv_heads, 1, ...), broadcast over the group; no-ops without groups
    def _grouped(self, a: np.ndarray) -> np.ndarray:
        return a if self.group == 1 else a.reshape(a.shape[0], self.kv_heads, self.group, *a.shape[2:])

    def _shared(self, a: np.ndarray) -> np.ndarray:
        return a if self.group == 1 else a[:, :, None]

    def _ungrouped(self, a: np.ndarray) -> np.ndarray:
        return a if self.group == 1 else a.reshape(a.shape[0], self.heads, *a.shape[3:])

    def _group_sum(self, a: np.ndarray) -> np.ndarray:
        """A shared K/V head's gradient: its group's query heads' summed."""
        return a if self.group == 1 else a.sum(axis=2)

    def _rotary_tables(self, steps: int, dtype) -> tuple:
        key = (steps, np.dtype(dtype))
        if key not in self._tables:
            self._tables[key] = rope.tables(steps, self.head_dim, self.rotary_base, dtype)
        return self._tables[key]

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
        if self.rotary:
            cos, sin = self._rotary_tables(x.shape[1], dtype)
            q, k = rope.rotate(q, cos, sin), rope.rotate(k, cos, sin)
        scores = self._ungrouped(self._grouped(q) @ self._shared(k).swapaxes(-1, -2))
        scores *= 1.0 / math.sqrt(self.head_dim)
        if self.causal:  # -inf above the diagonal: those keys get weight 0 and pass no gradient
            scores[..., np.triu(np.ones(scores.shape[-2:], dtype=bool), 1)] = -np.inf
        attention = _SOFTMAX.forward(scores)
        context = self._merge(self._ungrouped(self._grouped(attention) @ self._shared(v)))
        y = context @ self._param("output_weights", dtype)
        bias = self._param("output_bias", dtype)
        if bias is not None:
            y += bias
        return y, AttentionCache(x, y, y, q, k, v, scores, attention, context)

    def backward(self, dy: np.ndarray, cache: AttentionCache, need_dx: bool = True, *, dz=None):
        """dy (batch, steps, dim) -> (dx or None, grads for every parameter held).

        Through the softmax by its Jacobian-vector product A ⊙ (dA - rowsum(dA ⊙ A)): no
        (steps × steps) Jacobian per row is formed; through the rotation by its transpose.
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
        dcontext = self._grouped(self._split(dy @ self._param("output_weights", dtype).T))  # (B, H, T, d)
        dattention = self._ungrouped(dcontext @ self._shared(cache.v).swapaxes(-1, -2))     # (B, H, T, T)
        dv = self._group_sum(self._grouped(cache.attention).swapaxes(-1, -2) @ dcontext)   # (B, KV, T, d)
        dscores = _SOFTMAX.backward(cache.scores, cache.attention, dattention)
        dscores *= 1.0 / math.sqrt(self.head_dim)
        dq = self._ungrouped(self._grouped(dscores) @ self._shared(cache.k))
        dk = self._group_sum(self._grouped(dscores).swapaxes(-1, -2) @ self._grouped(cache.q))
        if self.rotary:
            cos, sin = self._rotary_tables(cache.x.shape[1], dtype)
            dq, dk = rope.rotate_back(dq, cos, sin), rope.rotate_back(dk, cos, sin)
        x_flat = _flat(cache.x)
        dx = None
        for p, d in zip(PROJECTIONS, (dq, dk, dv)):
            d = _flat(self._merge(d))                                            # (B·T, dim or kv_heads·d)
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
        extra = (f", kv_heads={self.kv_heads}" if self.group > 1 else "") + (", rotary" if self.rotary else "")
        return f"MultiHeadAttention({self.name!r}, {self.features}->{self.dim}, heads={self.heads}{extra})"


# ------------------------------------------------------------------------------- the kinds' shared facts
def builder(kind_class):
    """A kind's `build`: the layer from its spec, pointed at its first matrix (what statistics measure)."""
    def build(spec, weights, bias, activation, context):
        layer = kind_class.from_config(spec.name, weights, spec.config, spec.input_shape)
        params_layer(layer, kind_class.fans(spec.input_shape, spec.config), kind_class)
        if spec.kind == "attention":  # a transformer's activation is its FFN's own
            layer.activation = activation
        return layer
    return build


def declared_weights(kind_class):
    def weights(input_shape, config) -> dict:
        return {name: Weight(tuple(fans), "dense" if name.startswith("ffn.") else "attention", tuple(fans))
                for name, fans in kind_class.fans(input_shape, config).items()}
    return weights


def cache_elements(layer, batch: int) -> int:
    """What the cache keeps beyond the output: Q and the context (batch · steps · dim each), K and V (batch · steps ·
    kv_heads·d each) and the scores and weights (batch · heads · steps² each). The parameters are the estimate's."""
    steps, heads, dim = layer.input_shape[0], layer.config["heads"], layer.config["dim"]
    kv = dim // heads * layer.config.get("kv_heads", heads)
    return batch * steps * (2 * dim + 2 * kv + 2 * heads * steps)


def saturation(layer, cache) -> float:
    """The fraction of attention rows whose largest weight exceeds 0.99."""
    saturated = layer.saturation(cache)
    return saturated["attention"] if isinstance(saturated, dict) else saturated


def torch_linears(input_shape, config) -> tuple[dict, dict]:
    """{name: nn.Linear} of the attention's four matrices with the per-matrix fans torch computes on each
    (out, in) matrix (its packed in_proj_weight would give fan_out = 3·dim: see the module docstring), and
    {our weight name: torch's}."""
    import torch

    features, dim = input_shape[1], config["dim"]
    kv_dim = dim // config["heads"] * config.get("kv_heads", config["heads"])
    modules = {"query": torch.nn.Linear(features, dim), "key": torch.nn.Linear(features, kv_dim),
               "value": torch.nn.Linear(features, kv_dim), "output": torch.nn.Linear(dim, dim)}
    return modules, {f"{name}_weights": f"{name}.weight" for name in modules}


def _torch(input_shape, config):
    import torch

    modules, names = torch_linears(input_shape, config)
    return torch.nn.ModuleDict(modules), names


DIM = Option("dim", "int", "the model width (divisible by heads)", required=True, minimum=1)
HEADS = Option("heads", "int", "attention heads", required=True, minimum=1)
BIAS = Option("bias", "bool", "false drops every bias", default=True)
CAUSAL = Option("causal", "bool", "a decoder's mask: each position attends to itself and earlier ones", default=False)
ATTENTION_OPTIONS = (
    Option("kv_heads", "int", "K/V heads (dividing heads): grouped-query attention, 1 multi-query; heads by default",
           minimum=1),
    Option("rotary", "bool", "rotary position embeddings (RoPE, Hugging Face Llama's) on Q and K", default=False),
    Option("rotary_base", "number", "RoPE's base", default=10000, minimum=0, exclusive=True),
)
FACTS = dict(takes=("name", "init", "bias_init", "ignore"), torch=_torch, unit_axis=-1, layout=SEQUENCE,
             params_dict=True, weights_from_init=True, inner_activation="identity", cache_elements=cache_elements,
             saturation=saturation, saturation_doc="attention rows whose largest weight exceeds 0.99",
             memory_doc="Q, K, V, the scores and weights (batch · heads · steps²) and the block's activations")
KINDS = (
    LayerKind("attention", MultiHeadAttention, "multi-head scaled dot-product self-attention (nn.MultiheadAttention)",
              options=(DIM, HEADS, BIAS, CAUSAL, *ATTENTION_OPTIONS),
              parse=checked(lambda raw: normalize_config("attention", raw)),
              example=((4, 6), {"dim": 4, "heads": 2}), weights=declared_weights(MultiHeadAttention),
              build=builder(MultiHeadAttention),
              aliases=("multihead_attention", "multi_head_attention", "mha", "self_attention"), **FACTS),
)
