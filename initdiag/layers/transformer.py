"""The transformer block (the `transformer` kind): attention and a feed-forward network, each a residual
sublayer with its norms, in the Dense contract (see attention.py for the attention and the contract).

TransformerBlock(name, params, heads, activation="gelu", norm="pre", eps=1e-5, causal=False, kv_heads=None,
                 rotary=False, rotary_base=10000, ffn_kind="mlp", norm_kind="layernorm")
-------------------------------------------------------------------------------------------------------
nn.TransformerEncoderLayer(dim, heads, ffn, dropout=0, activation, batch_first=True,
norm_first=(norm == "pre")) for the defaults:
    pre-norm:   m = x + MHA(N1(x));                y = m + FFN(N2(m))
    post-norm:  m = N1(x + MHA(x));                y = N2(m + FFN(m))
    sandwich:   m = x + PN1(MHA(N1(x)));           y = m + PN2(FFN(N2(m)))
Sandwich is Gemma 2's (input_layernorm, post_attention_layernorm, pre_feedforward_layernorm,
post_feedforward_layernorm; CogView's "sandwich LN" has the same shape): pre-norm with a second norm
on each sublayer's output before it joins the residual stream. Its output is not normalized and it adds
to a stream, as pre-norm's (the kind's declared output_normalized/adds_to_stream facts).

The norms (``norm_kind``): layernorm, nn.LayerNorm(dim, eps) with gamma and beta; rmsnorm,
nn.RMSNorm(dim, eps) (Zhang & Sennrich 2019, Llama's): y = x / sqrt(mean(x²) + eps) · gamma, gamma only.
(Gemma's own RMSNorm scales by 1 + weight: its weight is our gamma - 1.)

The feed-forward network (``ffn_kind``), W1 (dim, ffn), W2 (ffn, dim), Wg (dim, ffn):
    mlp:     FFN(u) = φ(u W1 + b1) W2 + b2                       (φ: `activation`, gelu by default)
    swiglu:  FFN(u) = (silu(u Wg + bg) ⊙ (u W1 + b1)) W2 + b2    (Shazeer 2020; Llama's MLP: gate, up, down)
    geglu:   FFN(u) = (gelu(u Wg + bg) ⊙ (u W1 + b1)) W2 + b2
so ffn.in_weights is the up projection, ffn.out_weights the down one and ffn.gate_weights (the gated kinds'
third matrix) the gate. A gated kind fixes its φ (silu, gelu: exact erf form); `activation` may only repeat it.

Parameters: the union, with prefixes: "attention.<MultiHeadAttention name>" (features = dim),
"ffn.in_weights" (dim, ffn), "ffn.in_bias" (ffn,), "ffn.out_weights" (ffn, dim), "ffn.out_bias" (dim,),
"ffn.gate_weights" (dim, ffn) and "ffn.gate_bias" (ffn,) (gated kinds), "norm1.gamma", "norm1.beta",
"norm2.gamma", "norm2.beta" (dim,), and for sandwich "post_norm1.*", "post_norm2.*" (rmsnorm: no beta).
Absent norm parameters are 1 and 0. PyTorch: ffn.in_weights = linear1.weight.T (Llama: up_proj),
ffn.out_weights = linear2.weight.T (down_proj), ffn.gate_weights = gate_proj.weight.T; norm1/norm2 are its
norm1/norm2 in both orders. FFN fans as torch's nn.Linear on each: in and gate (dim, ffn), out (ffn, dim).
The fans, and the streams network.py draws each matrix from, come in the order attention (4), ffn.in,
ffn.out, ffn.gate: the gate is last, so a block without one draws what it drew before gates existed.
The sublayers hold the very arrays of ``params`` (not copies): to change a parameter, write into its
array or build a new block. φ is any registered activation (a name, {name: {param: value}} or an
Activation); "gelu" is the exact erf form, as PyTorch's "gelu".

Cache (TransformerCache): x, y, z = m (the residual stream between the two sublayers), and
per sublayer: norm1, norm2 (NormCache: z = x̂, y = the norm's output), attention (AttentionCache),
ffn_z (batch, steps, ffn) φ's argument (the gate's, gated), ffn_h = φ(ffn_z), ffn_out (batch, steps, dim)
FFN output, sum1 and sum2, the two residual sums (pre-norm and sandwich: sum1 = m, sum2 = y; post-norm:
the inputs of N1 and N2); gated: ffn_up (the up projection) and ffn_gated = ffn_h ⊙ ffn_up (the down
projection's input); sandwich: post_norm1, post_norm2. ``sublayer_outputs(cache)`` names them all, in
order, for per-sublayer statistics; ``saturation(cache)`` gives {"attention": ..., "ffn": ...}.

Configuration: attention.normalize_config("transformer", raw); its block options are `block_options`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from initdiag import activations
from initdiag.layers.attention import (BIAS, CAUSAL, DIM, FACTS, HEADS, ATTENTION_OPTIONS, AttentionCache,
                                       MultiHeadAttention, _activation_of, _flat, _float_dtype, _positive_number,
                                       _sequence_features, _shape_str, attention_options, builder, cache_elements,
                                       declared_weights, normalize_config, torch_linears)
from initdiag.layers.declare import LayerKind, Option, checked
from initdiag.layers.norm import LayerNorm, NormCache
from initdiag.layers.rmsnorm import RMSNorm
from initdiag.layers import rotary as rope
from initdiag.schemes import Fans

NORM_ORDERS = ("pre", "post", "sandwich")
NORM_KINDS = ("layernorm", "rmsnorm")
FFN_KINDS = ("mlp", "swiglu", "geglu")
GATES = {"swiglu": "silu", "geglu": "gelu"}  # a gated FFN's φ


def _choice(raw, name: str, choices: tuple) -> str:
    value = raw.get(name, choices[0])
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise ValueError(f"transformer: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value.strip().lower()


def block_options(raw) -> dict:
    """A transformer's own options (beyond the attention's) with defaults filled; ffn_kind and norm_kind only
    when not their default (mlp, layernorm). ValueError names the problem."""
    ffn_kind = _choice(raw, "ffn_kind", FFN_KINDS)
    value = raw.get("activation", "gelu" if ffn_kind == "mlp" else GATES[ffn_kind])
    try:
        act = _activation_of(value)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"transformer: bad activation {value!r} ({err}); "
                         f"valid: {', '.join(activations.ACTIVATIONS)}") from None
    config = {"activation": act.written()}
    if ffn_kind != "mlp":
        gate = activations.make(GATES[ffn_kind]).written()
        if config["activation"] != gate:
            raise ValueError(f"transformer: ffn_kind {ffn_kind} gates with {GATES[ffn_kind]}, not {value!r} "
                             f"(leave activation out, or use ffn_kind: mlp)")
        config["ffn_kind"] = ffn_kind
    config["norm"] = _choice(raw, "norm", NORM_ORDERS)
    norm_kind = _choice(raw, "norm_kind", NORM_KINDS)
    if norm_kind != "layernorm":
        config["norm_kind"] = norm_kind
    config["eps"] = _positive_number("transformer", raw, "eps", 1e-5, " (PyTorch's default is 1e-5)")
    return config


# the rmsnorm kind's layer (initdiag/layers/rmsnorm.py) is the block's norm_kind rmsnorm
_NORMS = {"layernorm": (LayerNorm, ("gamma", "beta")), "rmsnorm": (RMSNorm, ("gamma",))}


# ------------------------------------------------------------------------------- transformer block
class TransformerCache(NamedTuple):
    x: np.ndarray                 # (batch, steps, dim) input
    z: np.ndarray                 # m, the residual stream between the sublayers
    y: np.ndarray                 # (batch, steps, dim) output
    norm1: NormCache              # N1 (pre, sandwich: of x; post: of sum1)
    attention: AttentionCache     # MHA (input: pre, sandwich N1(x); post x)
    norm2: NormCache              # N2 (pre, sandwich: of m; post: of sum2)
    ffn_z: np.ndarray             # (batch, steps, ffn) u W1 + b1 (gated: u Wg + bg)
    ffn_h: np.ndarray             # (batch, steps, ffn) φ(ffn_z)
    ffn_out: np.ndarray           # (batch, steps, dim) FFN output
    sum1: np.ndarray              # first residual sum  (pre, sandwich: m; post: x + MHA(x))
    sum2: np.ndarray              # second residual sum (pre, sandwich: y; post: m + FFN(m))
    ffn_up: np.ndarray | None = None       # gated: (batch, steps, ffn) u W1 + b1
    ffn_gated: np.ndarray | None = None    # gated: ffn_h ⊙ ffn_up, the down projection's input
    post_norm1: NormCache | None = None    # sandwich: PN1 of the attention's output
    post_norm2: NormCache | None = None    # sandwich: PN2 of the FFN's output


class TransformerBlock:
    """A transformer block (nn.TransformerEncoderLayer for the defaults, no dropout); see the module docstring."""

    kind = "transformer"
    unit_axis = -1
    FFN = ("ffn.in_weights", "ffn.in_bias", "ffn.out_weights", "ffn.out_bias")
    GATE = ("ffn.gate_weights", "ffn.gate_bias")
    default_init = {**{"attention." + k: v for k, v in MultiHeadAttention.default_init.items()},
                    "ffn.in_weights": "xavier_uniform", "ffn.in_bias": "zero",
                    "ffn.out_weights": "xavier_uniform", "ffn.out_bias": "zero",
                    "ffn.gate_weights": "xavier_uniform", "ffn.gate_bias": "zero",
                    "norm1.gamma": "ones", "norm1.beta": "zero", "norm2.gamma": "ones", "norm2.beta": "zero",
                    "post_norm1.gamma": "ones", "post_norm1.beta": "zero",
                    "post_norm2.gamma": "ones", "post_norm2.beta": "zero"}

    @staticmethod
    def norm_names(norm: str) -> tuple:
        return ("norm1", "norm2", "post_norm1", "post_norm2") if norm == "sandwich" else ("norm1", "norm2")

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
        attention = MultiHeadAttention.parameter_shapes(
            (steps, dim), {key: config[key] for key in ("dim", "heads", "bias", "kv_heads") if key in config})
        shapes = {"attention." + k: v for k, v in attention.items()}
        shapes["ffn.in_weights"] = (dim, ffn)
        if config["bias"]:
            shapes["ffn.in_bias"] = (ffn,)
        shapes["ffn.out_weights"] = (ffn, dim)
        if config["bias"]:
            shapes["ffn.out_bias"] = (dim,)
        if config.get("ffn_kind", "mlp") != "mlp":
            shapes["ffn.gate_weights"] = (dim, ffn)
            if config["bias"]:
                shapes["ffn.gate_bias"] = (ffn,)
        for norm in cls.norm_names(config["norm"]):
            for param in _NORMS[config.get("norm_kind", "layernorm")][1]:
                shapes[f"{norm}.{param}"] = (dim,)
        return shapes

    @classmethod
    def fans(cls, input_shape, config) -> dict:
        """{weight name: Fans}: the attention's four (per matrix), then the FFN's in, out (and gate), as torch on
        each nn.Linear; this order is the draw order (see the module docstring)."""
        shapes = cls.parameter_shapes(input_shape, config)
        names = ["attention." + w for w in MultiHeadAttention.WEIGHTS] + ["ffn.in_weights", "ffn.out_weights"]
        names += [name for name in ("ffn.gate_weights",) if name in shapes]
        return {name: Fans(*shapes[name]) for name in names}

    @classmethod
    def from_config(cls, name: str, params: dict, config, input_shape=None):
        config = normalize_config(cls.kind, config)
        layer = cls(name, params, config["heads"], activation=config["activation"], norm=config["norm"],
                    eps=config["eps"], ffn_kind=config.get("ffn_kind", "mlp"),
                    norm_kind=config.get("norm_kind", "layernorm"), **attention_options(config))
        if (layer.dim, layer.ffn) != (config["dim"], config["ffn"]):
            raise ValueError(f"transformer '{name}': config has dim={config['dim']}, ffn={config['ffn']}; "
                             f"parameters dim={layer.dim}, ffn={layer.ffn}")
        return layer

    def __init__(self, name: str, params: dict, heads: int, activation="gelu", norm: str = "pre", eps: float = 1e-5,
                 causal: bool = False, kv_heads: int | None = None, rotary: bool = False,
                 rotary_base: float = rope.DEFAULT_BASE, ffn_kind: str = "mlp", norm_kind: str = "layernorm"):
        self.name = name
        for option, value, choices in (("norm", norm, NORM_ORDERS), ("ffn_kind", ffn_kind, FFN_KINDS),
                                       ("norm_kind", norm_kind, NORM_KINDS)):
            if not isinstance(value, str) or value.strip().lower() not in choices:
                raise ValueError(f"transformer '{name}': {option} must be one of {', '.join(choices)}, got {value!r}")
        self.norm, self.ffn_kind, self.norm_kind = (v.strip().lower() for v in (norm, ffn_kind, norm_kind))
        self.gated = self.ffn_kind != "mlp"
        norm_class, norm_params = _NORMS[self.norm_kind]
        norm_keys = [f"{n}.{p}" for n in self.norm_names(self.norm) for p in norm_params]
        ffn_keys = self.FFN + (self.GATE if self.gated else ())
        unknown = sorted(k for k in params if not k.startswith("attention.") and k not in ffn_keys + tuple(norm_keys))
        if unknown:
            raise ValueError(f"transformer '{name}': unknown parameter(s) {', '.join(unknown)}; valid: "
                             f"attention.<{'|'.join(MultiHeadAttention.WEIGHTS + MultiHeadAttention.BIASES)}>, "
                             f"{', '.join(ffn_keys + tuple(norm_keys))}")
        self.params = {k: np.asarray(v) for k, v in params.items() if v is not None}

        def part(prefix):
            return {k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)}

        self.attention = MultiHeadAttention(f"{name}.attention", part("attention."), heads, causal=causal,
                                            kv_heads=kv_heads, rotary=rotary, rotary_base=rotary_base)
        self.dim, self.heads = self.attention.dim, self.attention.heads
        if self.attention.features != self.dim:
            raise ValueError(f"transformer '{name}': attention weights must be (dim, dim) for the residual "
                             f"connections, got query_weights {_shape_str(self.params['attention.query_weights'].shape)}")
        dtype = self.params["attention.output_weights"].dtype
        self.norms = {}
        for norm_name in self.norm_names(self.norm):  # absent parameters: fresh 1 and 0 per norm, kept in params
            given = part(norm_name + ".")
            layer = norm_class(f"{name}.{norm_name}", {**norm_class.default_params((self.dim,), dtype=dtype), **given},
                               eps=eps)
            self.norms[norm_name] = layer
            setattr(self, norm_name, layer)
            for param in norm_params:
                key = f"{norm_name}.{param}"
                self.params[key] = layer.params[param]
                if self.params[key].shape != (self.dim,):
                    raise ValueError(f"transformer '{name}': {key} must be ({self.dim},), "
                                     f"got {_shape_str(self.params[key].shape)}")
        for key in ("ffn.in_weights", "ffn.out_weights") + (("ffn.gate_weights",) if self.gated else ()):
            if key not in self.params:
                raise ValueError(f"transformer '{name}': missing parameter '{key}'")
        w1 = self.params["ffn.in_weights"]
        if w1.ndim != 2 or w1.shape[0] != self.dim:
            raise ValueError(f"transformer '{name}': ffn.in_weights must be ({self.dim}, ffn), got {_shape_str(w1.shape)}")
        self.ffn = w1.shape[1]
        expected = {"ffn.out_weights": (self.ffn, self.dim), "ffn.in_bias": (self.ffn,), "ffn.out_bias": (self.dim,),
                    "ffn.gate_weights": (self.dim, self.ffn), "ffn.gate_bias": (self.ffn,)}
        for key, shape in expected.items():
            if key in self.params and self.params[key].shape != shape:
                raise ValueError(f"transformer '{name}': {key} must be {shape}, got {_shape_str(self.params[key].shape)}")
        self.activation = _activation_of(GATES[self.ffn_kind] if self.gated and activation == "gelu" else activation)
        if self.gated and self.activation.written() != activations.make(GATES[self.ffn_kind]).written():
            raise ValueError(f"transformer '{name}': ffn_kind {self.ffn_kind} gates with {GATES[self.ffn_kind]}, "
                             f"not {self.activation.written()}")
        self.eps = float(eps)

    # ----------------------------------------------------------------- FFN
    def _p(self, key, dtype):
        value = self.params.get(key)
        return None if value is None else value.astype(dtype, copy=False)

    def _linear(self, u, prefix: str):
        out = u @ self._p(prefix + "_weights", u.dtype)
        if prefix + "_bias" in self.params:
            out += self._p(prefix + "_bias", u.dtype)
        return out

    def _ffn_forward(self, u):
        """(z, h, out, up, gated): φ's argument and value, the output; gated kinds also the up projection and
        the product the down projection reads (None for mlp)."""
        z = self._linear(u, "ffn.gate" if self.gated else "ffn.in")
        h = self.activation.forward(z)
        up = gated = None
        if self.gated:
            up = self._linear(u, "ffn.in")
            gated = h * up
        out = self._linear(gated if self.gated else h, "ffn.out")
        return z, h, out, up, gated

    def _ffn_backward(self, dout, u, cache: TransformerCache, grads: dict):
        """Gradients of the FFN's parameters into `grads`; returns dLoss/du."""
        dtype = dout.dtype
        grads["ffn.out_weights"] = _flat(cache.ffn_gated if self.gated else cache.ffn_h).T @ _flat(dout)
        if "ffn.out_bias" in self.params:
            grads["ffn.out_bias"] = _flat(dout).sum(axis=0)
        dh = dout @ self._p("ffn.out_weights", dtype).T
        if not self.gated:
            dz = self.activation.backward(cache.ffn_z, cache.ffn_h, dh)
            grads["ffn.in_weights"] = _flat(u).T @ _flat(dz)
            if "ffn.in_bias" in self.params:
                grads["ffn.in_bias"] = _flat(dz).sum(axis=0)
            return dz @ self._p("ffn.in_weights", dtype).T
        dup = dh * cache.ffn_h
        dz = self.activation.backward(cache.ffn_z, cache.ffn_h, dh * cache.ffn_up)
        du = None
        for prefix, d in (("ffn.gate", dz), ("ffn.in", dup)):
            grads[prefix + "_weights"] = _flat(u).T @ _flat(d)
            if prefix + "_bias" in self.params:
                grads[prefix + "_bias"] = _flat(d).sum(axis=0)
            part = d @ self._p(prefix + "_weights", dtype).T
            du = part if du is None else du + part
        return du

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
        if self.norm == "post":
            a, ca = self.attention.forward(x)
            s1 = x + a
            m, c1 = self.norm1.forward(s1)
            fz, fh, f, up, gated = self._ffn_forward(m)
            s2 = m + f
            y, c2 = self.norm2.forward(s2)
            return y, TransformerCache(x, m, y, c1, ca, c2, fz, fh, f, s1, s2, up, gated)
        sandwich = self.norm == "sandwich"
        n1, c1 = self.norm1.forward(x)
        a, ca = self.attention.forward(n1)
        a_out, p1 = self.post_norm1.forward(a) if sandwich else (a, None)
        m = x + a_out
        n2, c2 = self.norm2.forward(m)
        fz, fh, f, up, gated = self._ffn_forward(n2)
        f_out, p2 = self.post_norm2.forward(f) if sandwich else (f, None)
        y = m + f_out
        return y, TransformerCache(x, m, y, c1, ca, c2, fz, fh, f, m, y, up, gated, p1, p2)

    def backward(self, dy: np.ndarray, cache: TransformerCache, need_dx: bool = True, *, dz=None):
        """dy (batch, steps, dim) -> (dx or None, grads with every prefixed parameter name)."""
        if dz is not None:
            raise ValueError(f"transformer '{self.name}' cannot be the output of a fused loss (dz)")
        dy = np.asarray(dy)
        if dy.shape != cache.y.shape:
            raise ValueError(f"transformer '{self.name}': dy has shape {dy.shape}, the output {cache.y.shape}")
        dy = dy.astype(cache.y.dtype, copy=False)
        grads: dict = {}
        if self.norm == "post":
            ds2, g2 = self.norm2.backward(dy, cache.norm2)
            dm = ds2 + self._ffn_backward(ds2, cache.z, cache, grads)
            ds1, g1 = self.norm1.backward(dm, cache.norm1)
            dx_attention, ga = self.attention.backward(ds1, cache.attention, need_dx=need_dx)
            dx = ds1 + dx_attention if need_dx else None
        else:
            df = dy
            if self.norm == "sandwich":
                df, gp2 = self.post_norm2.backward(dy, cache.post_norm2)
                self._merge_grads(grads, "post_norm2.", gp2)
            dn2 = self._ffn_backward(df, cache.norm2.y, cache, grads)
            dm_norm, g2 = self.norm2.backward(dn2, cache.norm2)
            dm = dy + dm_norm
            da = dm
            if self.norm == "sandwich":
                da, gp1 = self.post_norm1.backward(dm, cache.post_norm1)
                self._merge_grads(grads, "post_norm1.", gp1)
            dn1, ga = self.attention.backward(da, cache.attention)
            dx_norm, g1 = self.norm1.backward(dn1, cache.norm1, need_dx=need_dx)
            dx = dm + dx_norm if need_dx else None
        self._merge_grads(grads, "attention.", ga)
        self._merge_grads(grads, "norm1.", g1)
        self._merge_grads(grads, "norm2.", g2)
        grads = {key: grads[key].astype(self.params[key].dtype, copy=False) for key in self.params}
        return dx, grads

    def _ffn_outputs(self, cache: TransformerCache) -> dict:
        if self.gated:
            return {"ffn.pre_activation": cache.ffn_z, "ffn.gate": cache.ffn_h, "ffn.up": cache.ffn_up,
                    "ffn.hidden": cache.ffn_gated, "ffn": cache.ffn_out}
        return {"ffn.pre_activation": cache.ffn_z, "ffn.hidden": cache.ffn_h, "ffn": cache.ffn_out}

    def sublayer_outputs(self, cache: TransformerCache) -> dict:
        """name -> array, in the order the block computes them, for per-sublayer statistics."""
        if self.norm == "post":
            return {"attention": cache.attention.y, "residual1": cache.sum1, "norm1": cache.norm1.y,
                    **self._ffn_outputs(cache), "residual2": cache.sum2, "norm2": cache.norm2.y}
        sandwich = self.norm == "sandwich"
        return {"norm1": cache.norm1.y, "attention": cache.attention.y,
                **({"post_norm1": cache.post_norm1.y} if sandwich else {}), "residual1": cache.sum1,
                "norm2": cache.norm2.y, **self._ffn_outputs(cache),
                **({"post_norm2": cache.post_norm2.y} if sandwich else {}), "residual2": cache.sum2}

    def saturation(self, cache: TransformerCache) -> dict:
        """{"attention": saturated attention rows, "ffn": φ's saturation on the FFN hidden layer (the gate's)}."""
        return {"attention": self.attention.saturation(cache.attention),
                "ffn": self.activation.saturation(cache.ffn_z, cache.ffn_h)}

    def __repr__(self) -> str:
        extra = "" if self.ffn_kind == "mlp" else f", {self.ffn_kind}"
        extra += "" if self.norm_kind == "layernorm" else f", {self.norm_kind}"
        return (f"TransformerBlock({self.name!r}, dim={self.dim}, heads={self.heads}, ffn={self.ffn}, "
                f"{self.activation!r}, {self.norm}-norm{extra})")


# ------------------------------------------------------------------------------- the kind
def _cache_elements(layer, batch: int) -> int:
    """Beyond the output: the attention's cache, seven (steps, dim) arrays per sample (the two norms' x̂ and output,
    the attention's output, the stream between the halves, the FFN's output; post-norm: the two sums instead of a
    norm's output and the stream), the FFN's φ argument and value (steps, ffn; GELU's backward reads Φ back from
    them, activations.py), the norms' three statistics per token, and, gated, the up projection and the product
    (two more); sandwich, the two post norms' x̂ and output."""
    steps, config = layer.input_shape[0], layer.config
    dim, ffn = config["dim"], config.get("ffn", 0)
    per_token = 7 * dim + 2 * ffn + 6
    per_token += (2 * ffn if config.get("ffn_kind", "mlp") != "mlp" else 0) + (4 * dim + 6 if config.get("norm") == "sandwich" else 0)
    return cache_elements(layer, batch) + batch * steps * per_token


def _torch(input_shape, config):
    import torch

    modules, names = torch_linears(input_shape, config)
    dim, ffn = config["dim"], config["ffn"]
    modules["ffn_in"], modules["ffn_out"] = torch.nn.Linear(dim, ffn), torch.nn.Linear(ffn, dim)
    names = {"attention." + ours: theirs for ours, theirs in names.items()}
    names.update({"ffn.in_weights": "ffn_in.weight", "ffn.out_weights": "ffn_out.weight"})
    if config.get("ffn_kind", "mlp") != "mlp":
        modules["ffn_gate"] = torch.nn.Linear(dim, ffn)
        names["ffn.gate_weights"] = "ffn_gate.weight"
    return torch.nn.ModuleDict(modules), names


KINDS = (
    LayerKind("transformer", TransformerBlock, "a transformer encoder block (nn.TransformerEncoderLayer, no dropout)",
              options=(DIM, HEADS, Option("ffn", "int", "the feed-forward hidden width", required=True, minimum=1),
                       Option("activation", "activation", "the FFN's nonlinearity (a gated FFN's is its gate's)",
                              default="gelu"),
                       Option("norm", "choice", "norms before (pre) or after (post) each sublayer, or both "
                              "(sandwich: Gemma 2's)", default="pre", choices=NORM_ORDERS),
                       Option("eps", "number", "the norms' eps", default=1e-5, minimum=0, exclusive=True), BIAS,
                       CAUSAL, *ATTENTION_OPTIONS,
                       Option("ffn_kind", "choice", "the FFN: φ(x W1) W2 (mlp), or gated (silu(x Wg) ⊙ x W1) W2 "
                              "(swiglu), gelu-gated (geglu)", default="mlp", choices=FFN_KINDS),
                       Option("norm_kind", "choice", "layer norm or RMSNorm (gamma only)", default="layernorm",
                              choices=NORM_KINDS)),
              parse=checked(lambda raw: normalize_config("transformer", raw)),
              example=((3, 4), {"dim": 4, "heads": 2, "ffn": 6, "norm": "post"}),
              weights=declared_weights(TransformerBlock),
              build=builder(TransformerBlock), aliases=("transformer_block", "transformer_encoder"),
              output_normalized=lambda config: config.get("norm") == "post",  # its output is a norm's
              # pre-norm and sandwich: x + f(norm(x)) (sandwich: x + norm(f(norm(x)))), a residual stream
              adds_to_stream=lambda config: config.get("norm") in ("pre", "sandwich"),
              **{**FACTS, "cache_elements": _cache_elements, "torch": _torch}),
)
