"""The weight-initialization catalogue: every Deeplearning4j `WeightInit` value, with PyTorch/Keras aliases.

A variance-based scheme is data, not code: a *family* (the standard sample it scales:
N(0,1), U(-1,1) or a 2σ-truncated N(0,1)) and an affine map from the layer's fans to
(loc, mult), so `weights = loc + mult * standard_sample`. Schemes of one family differ
only by that map, which lets `compare` share one draw per family. Structured schemes
(constant, identity, orthogonal, delta_orthogonal, supplied, custom) are functions of
(rng, geometry, params, dtype): the Geometry names the drawn array's shape, the parameter's
role (a dense matrix, a conv kernel with its spatial size and groups, a recurrent matrix, ...)
and its fans, so a scheme that depends on the layout (identity is a Dirac kernel on a conv,
delta_orthogonal exists only there) decides it itself.

Every scheme declares the roles it can initialise (`roles`) and, where it needs more, a `fit`
check (identity: a square matrix or as many filters as input channels); a parameter it cannot
initialise is refused with a message (`problem`), never drawn some other way.

Layout: weights are (fan_in, fan_out) and a layer computes x @ W (PyTorch stores the
transpose, (out, in), and computes x @ W.T; the fans are the same). A convolution's matrix is
(in_channels/groups · kernel taps, filters), rows in PyTorch's (in/groups, *kernel) flattening
order (layers.conv.torch_layout): a tap's rows for input channel c are c·taps + tap.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from initdiag import sampling
from initdiag.registry import canonical

FAMILY_SAMPLERS = {
    "normal": sampling.standard_normal,
    "uniform": sampling.standard_uniform,
    "truncated_normal": sampling.truncated_standard_normal,
}


class Fans(NamedTuple):
    fan_in: int
    fan_out: int

    def of(self, mode: str) -> float:
        if mode == "fan_in":
            return self.fan_in
        if mode == "fan_out":
            return self.fan_out
        return (self.fan_in + self.fan_out) / 2  # fan_avg


# What a drawn parameter is for. Recurrent layers' input weights are "dense" (a plain x @ W of the
# step's input), their hidden-to-hidden weights "recurrent"; a residual block's shortcut matrix is a
# "projection"; every matrix of an attention or transformer layer is "attention". A transposed
# convolution's kernel ("conv_transpose") is stored as a conv's, one column per output channel, but
# PyTorch flattens it the other way, (in_channels, filters/groups · taps): orthogonal follows PyTorch.
# A "vector" is a bias or a norm's gamma/beta (bias_init, a layer's `inits`): only the schemes that need no
# matrix take it.
MATRIX_ROLES = ("dense", "conv", "recurrent", "embedding", "projection", "attention", "conv_transpose")
ROLES = MATRIX_ROLES + ("vector",)
KERNELS = ("conv", "conv_transpose")  # the roles laid out as (in_channels/groups · taps, filters)


class Geometry(NamedTuple):
    """What a scheme draws: the array's shape as the layer stores it and what it is for.

    shape: (rows, cols) = (fan_in, fan_out)-style, one column per output unit; a conv's rows are
           in_channels/groups · prod(kernel), ordered (channel, *kernel) as PyTorch flattens a kernel.
    role:  one of ROLES.
    fans:  PyTorch's fans of the parameter (a conv's fan_out counts the kernel taps).
    kernel: a conv's spatial kernel size, (k,) or (kh, kw); () for a matrix.
    groups: a conv's groups (the rows hold one group's input channels).
    """

    shape: tuple
    role: str
    fans: Fans
    kernel: tuple = ()
    groups: int = 1

    @property
    def taps(self) -> int:
        return math.prod(self.kernel)


def dense(shape) -> Geometry:
    """A plain (fan_in, fan_out) matrix with the shape's own fans."""
    return Geometry(tuple(shape), "dense", Fans(*shape))


def vector(shape, fans) -> Geometry:
    """A bias (or a norm's gamma/beta) of `shape`, with the fans of the matrix it belongs to: torch_default
    then draws nn.Linear's and nn.Conv's default bias, U(±1/sqrt(fan_in))."""
    return Geometry(tuple(shape), "vector", Fans(*fans))


# Every scheme parameter's JSON Schema and meaning (the spec's editor schema and `initdiag schemes` read them):
# a scheme with a new parameter declares it here, beside the scheme.
PARAMETERS = {
    "gain": ({"type": "number", "exclusiveMinimum": 0}, "multiplies the standard deviation and the uniform bound"),
    "mean": ({"type": "number"}, "the mean"), "std": ({"type": "number", "exclusiveMinimum": 0}, "the standard deviation"),
    "low": ({"type": "number"}, "the lower bound"), "high": ({"type": "number"}, "the upper bound (above low)"),
    "value": ({"type": "number"}, "the value of every weight"),
    "truncated": ({"type": "boolean"}, "draw from a normal truncated at ±2σ and rescaled to the variance, as Keras' and "
                  "JAX's variance scaling (distribution 'truncated_normal', their default) and keras.initializers.HeNormal do"),
    "path": ({"type": "string", "pattern": r"\S"}, "a .npy array of shape [fan_in, fan_out], relative to the spec's folder"),
    "target": ({"type": "string", "pattern": r"^\s*[^:\s][^:]*:.*\S"}, "'package.module:function' (needs --allow-custom)"),
}


class Scheme(NamedTuple):
    name: str
    formula: str  # the exact distribution, as printed by `initdiag schemes`
    params: dict = {}  # parameter -> default (never mutated: callers copy it)
    positional: str | None = None  # parameter bound by a scalar value, e.g. {constant: 0.1}
    family: str | None = None  # random-affine schemes: which standard sample they scale
    affine: Callable | None = None  # (fans, params) -> (loc, mult)
    build: Callable | None = None  # structured: (rng, geometry, params, dtype) -> weights
    rule: tuple | None = None  # (mode, scale) of variance scaling, to match rules of thumb
    note: str = ""  # where frameworks differ
    roles: tuple = ()  # the ROLES it initialises (ROLES: any); a scheme must declare them
    fit: Callable | None = None  # (geometry, params) -> why it cannot fill that geometry, or None

    def family_of(self, params: dict) -> str | None:
        """The standard sample it scales with these params: a normal scheme with `truncated: true` scales the
        2σ-truncated one (Keras' variance scaling)."""
        return "truncated_normal" if self.family == "normal" and params.get("truncated") else self.family

    def std(self, fans: Fans, params: dict) -> float | None:
        """The theoretical standard deviation of the weights, where the scheme has one."""
        if self.affine is None:
            return None
        _, mult = self.affine(fans, params)
        return abs(mult) * FAMILY_STD[self.family_of(params)]

    def mean(self, fans: Fans, params: dict) -> float | None:
        if self.affine is None:
            return None
        return self.affine(fans, params)[0]


def _truncated_std(bound: float = 2.0) -> float:
    pdf = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1 - 2 * bound * pdf / mass)


FAMILY_STD = {"normal": 1.0, "uniform": 1 / math.sqrt(3), "truncated_normal": _truncated_std()}


def variance_scaling(name: str, family: str, mode: str, scale: float, formula: str, note: str = "") -> Scheme:
    """Var(W) = gain² · scale / fan(mode), as jax.nn.initializers.variance_scaling."""

    def affine(fans: Fans, params: dict):
        variance = params["gain"] ** 2 * scale / fans.of(mode)
        drawn = "truncated_normal" if family == "normal" and params.get("truncated") else family
        return 0.0, math.sqrt(variance) / FAMILY_STD[drawn]

    # a fan-scaled scheme has no fans on a vector (torch refuses them on a 1-D tensor): matrices only, except
    # torch_default, which on a bias is nn.Linear's and nn.Conv's own default U(±1/sqrt(fan_in)) (see `vector`)
    roles = ROLES if name == "torch_default" else MATRIX_ROLES
    params = {"gain": 1.0, "truncated": False} if family == "normal" else {"gain": 1.0}  # Keras' truncated variant
    return Scheme(name, formula, params, family=family, affine=affine, rule=(mode, scale), note=note, roles=roles)


def _constant(value_of: Callable[[dict], float]):
    def build(rng, geometry, params, dtype):
        return np.full(geometry.shape, value_of(params), dtype=dtype)

    return build


def _identity_fit(geometry: Geometry, params: dict) -> str | None:
    rows, cols = geometry.shape
    if geometry.role in KERNELS:
        channels = rows // geometry.taps * geometry.groups
        if cols != channels:
            return (f"identity (the Dirac kernel) needs filters equal to the input channels, but this conv has "
                    f"{channels} input channels and {cols} filters")
        return None
    if rows != cols:
        return f"identity needs a square layer (fan_in == fan_out), but this one is {rows}×{cols}"
    return None


def _identity(rng, geometry, params, dtype):
    """A square matrix: I. A conv kernel: the Dirac kernel, as torch.nn.init.dirac_(w, groups): the
    centre tap (index k // 2 on each axis) maps channel c to channel c, every other tap is 0; with
    filters == in_channels every group maps its in_channels/groups channels to themselves.
    With padding "same" (the smaller half before) an even kernel's Dirac shifts the input by one
    position, as in PyTorch; an odd kernel passes it through unchanged."""
    if geometry.role not in KERNELS:
        return np.eye(*geometry.shape, dtype=dtype)
    rows, filters = geometry.shape
    taps, per_group = geometry.taps, rows // geometry.taps
    weights = np.zeros(geometry.shape, dtype=dtype)
    out = np.arange(filters)
    weights[(out % per_group) * taps + _centre(geometry.kernel), out] = 1
    return weights


def _centre(kernel: tuple) -> int:
    """The flat index of a kernel's centre tap, (k // 2, ...), in PyTorch's row-major tap order."""
    return int(np.ravel_multi_index(tuple(k // 2 for k in kernel), kernel))


def _orthogonal_matrix(rng, rows: int, cols: int, gain: float, dtype) -> np.ndarray:
    """Saxe et al. 2014: QR of a Gaussian, with Q's columns' signs fixed by diag(R) so Q is Haar-uniform."""
    tall = sampling.standard_normal(rng, (max(rows, cols), min(rows, cols)), dtype)
    q, r = np.linalg.qr(tall)
    q *= np.where(np.diagonal(r) < 0, -1, 1).astype(dtype)
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(q * dtype.type(gain), dtype=dtype)


def _orthogonal(rng, geometry, params, dtype):
    """W^T W = gain² I (tall or square) or W W^T = gain² I (wide), on the stored matrix. On a conv
    that is PyTorch's (out, in/groups · taps) matrix over all taps: torch.nn.init.orthogonal_. On a
    transposed conv PyTorch's weight is (in, filters/groups, *kernel), flattened (in, filters/groups · taps):
    that matrix is made orthogonal, then laid out as the stored (in/groups · taps, filters)."""
    if geometry.role != "conv_transpose":
        return _orthogonal_matrix(rng, *geometry.shape, params["gain"], dtype)
    rows, filters = geometry.shape
    taps, groups = geometry.taps, geometry.groups
    per_in, per_out = rows // taps, filters // groups
    torch_matrix = _orthogonal_matrix(rng, per_in * groups, per_out * taps, params["gain"], dtype)
    stacked = torch_matrix.reshape(groups, per_in, per_out, taps).transpose(1, 3, 0, 2)
    return np.ascontiguousarray(stacked).reshape(rows, filters)


def _delta_orthogonal(rng, geometry, params, dtype):
    """Xiao et al. 2018, "Dynamical Isometry and a Mean Field Theory of CNNs" (ICML), algorithm 2, as
    TensorFlow's convolutional_delta_orthogonal and jax.nn.initializers.delta_orthogonal: every tap 0
    but the spatial centre (k // 2 on each axis), which holds, per group, a Haar-random orthogonal
    (in_channels/groups, filters/groups) matrix H × gain. With in ≤ filters H H^T = gain² I, so a
    stride-1 conv with "same" padding maps x to gain · (an isometry of x) at every position: the
    input's 2-norm times gain. With in > filters (which TensorFlow refuses) H^T H = gain² I."""
    rows, filters = geometry.shape
    taps, groups = geometry.taps, geometry.groups
    per_in, per_out = rows // taps, filters // groups
    weights = np.zeros(geometry.shape, dtype=dtype)
    centre_rows = np.arange(per_in) * taps + _centre(geometry.kernel)
    for g in range(groups):
        weights[centre_rows, g * per_out:(g + 1) * per_out] = _orthogonal_matrix(rng, per_in, per_out, params["gain"], dtype)
    return weights


def _supplied_fit(geometry: Geometry, params: dict) -> str | None:
    got = tuple(params["shape"]) if "shape" in params else np.load(params["path"], mmap_mode="r").shape
    if got != tuple(geometry.shape):
        return f"the supplied array has shape {list(got)}, but this layer needs [fan_in, fan_out] = {list(geometry.shape)}"
    return None


def _supplied(rng, geometry, params, dtype):
    return np.load(params["path"], allow_pickle=False).astype(dtype, copy=False)


def import_custom(target: str) -> Callable:
    """Import 'package.module:function'. Runs user code: only called with --allow-custom."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, attr)
    if not callable(function):
        raise TypeError(f"'{target}' is not callable")
    return function


def _custom(rng, geometry, params, dtype):
    """The user's f(shape, fan_in, fan_out, rng); a function that also takes a `geometry` keyword
    argument receives this Geometry (role, kernel, groups) as well."""
    function, shape = params["function"], tuple(geometry.shape)
    fans = geometry.fans
    if _takes_geometry(function):
        weights = function(shape, fans.fan_in, fans.fan_out, rng, geometry=geometry)
    else:
        weights = function(shape, fans.fan_in, fans.fan_out, rng)
    weights = np.asarray(weights, dtype=dtype)
    if weights.shape != shape:
        raise ValueError(
            f"custom init returned shape {list(weights.shape)}, expected [fan_in, fan_out] = {list(shape)}"
        )
    return weights


def _takes_geometry(function: Callable) -> bool:
    import inspect

    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or C function without a signature: the documented four
        return False
    return "geometry" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _normal(fans, params):
    return params["mean"], params["std"]


def _uniform(fans, params):
    return (params["low"] + params["high"]) / 2, (params["high"] - params["low"]) / 2


_KERAS_TRUNC = "Keras/JAX draw it from a normal truncated at 2σ, rescaled to this variance"

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        variance_scaling("xavier", "normal", "fan_avg", 1.0, "N(0, 2/(fan_in+fan_out))", _KERAS_TRUNC),
        variance_scaling("xavier_uniform", "uniform", "fan_avg", 1.0, "U(±sqrt(6/(fan_in+fan_out)))"),
        variance_scaling("relu", "normal", "fan_in", 2.0, "N(0, 2/fan_in)", _KERAS_TRUNC),
        variance_scaling("relu_uniform", "uniform", "fan_in", 2.0, "U(±sqrt(6/fan_in))"),
        variance_scaling("lecun_normal", "normal", "fan_in", 1.0, "N(0, 1/fan_in)", _KERAS_TRUNC),
        variance_scaling(
            "lecun_uniform", "uniform", "fan_in", 1.0, "U(±sqrt(3/fan_in))",
            "DL4J's code uses the bound 3/sqrt(fan_in); initdiag follows the page",
        ),
        variance_scaling("var_scaling_normal_fan_in", "normal", "fan_in", 1.0, "N(0, 1/fan_in)"),
        variance_scaling("var_scaling_normal_fan_out", "normal", "fan_out", 1.0, "N(0, 1/fan_out)"),
        variance_scaling("var_scaling_normal_fan_avg", "normal", "fan_avg", 1.0, "N(0, 2/(fan_in+fan_out))"),
        variance_scaling(
            "var_scaling_uniform_fan_in", "uniform", "fan_in", 1.0, "U(±sqrt(3/fan_in))",
            "DL4J's code uses the bound 3/sqrt(fan); initdiag follows the page",
        ),
        variance_scaling("var_scaling_uniform_fan_out", "uniform", "fan_out", 1.0, "U(±sqrt(3/fan_out))"),
        variance_scaling("var_scaling_uniform_fan_avg", "uniform", "fan_avg", 1.0, "U(±sqrt(6/(fan_in+fan_out)))"),
        variance_scaling("sigmoid_uniform", "uniform", "fan_avg", 16.0, "U(±4·sqrt(6/(fan_in+fan_out)))"),
        variance_scaling("xavier_fan_in", "normal", "fan_in", 1.0, "N(0, 1/fan_in)"),
        variance_scaling("xavier_legacy", "normal", "fan_avg", 0.5, "N(0, 1/(fan_in+fan_out))"),
        variance_scaling(
            "torch_default", "uniform", "fan_in", 1 / 3, "U(±1/sqrt(fan_in)); bias U(±1/sqrt(fan_in))",
            "nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5))",
        ),
        Scheme(
            "normal", "N(mean, std²); default N(0, 1)", {"mean": 0.0, "std": 1.0}, family="normal",
            affine=_normal, note="DL4J's code draws NORMAL as N(0, 1/fan_in); initdiag follows the page", roles=ROLES,
        ),
        Scheme("uniform", "U(low, high); default U(-1, 1)", {"low": -1.0, "high": 1.0}, family="uniform", affine=_uniform,
               roles=ROLES),
        Scheme(
            "truncated_normal", "N(mean, std²) redrawn outside mean ± 2·std (so its std is 0.8796·std)",
            {"mean": 0.0, "std": 1.0}, family="truncated_normal", affine=_normal, roles=ROLES,
        ),
        Scheme("zero", "0", build=_constant(lambda p: 0.0), roles=ROLES),
        Scheme("ones", "1", build=_constant(lambda p: 1.0), roles=ROLES),
        Scheme("constant", "c, everywhere", {"value": None}, positional="value", build=_constant(lambda p: p["value"]),
               roles=ROLES),
        # An embedding table is a lookup, not a map of its input: "identity" would mean nothing there.
        Scheme("identity", "the identity matrix, square layers only; on a conv, the Dirac kernel (as many filters as "
               "input channels)",
               build=_identity, roles=("dense", "conv", "recurrent", "projection", "attention", "conv_transpose"),
               fit=_identity_fit),
        Scheme("orthogonal", "a Haar-random orthogonal matrix × gain", {"gain": 1.0}, build=_orthogonal, roles=MATRIX_ROLES),
        Scheme(
            "delta_orthogonal", "conv kernels: 0 except the centre tap, a Haar-random orthogonal [in, filters] matrix × gain "
            "(per group)", {"gain": 1.0}, build=_delta_orthogonal, roles=KERNELS,
            note="as JAX's delta_orthogonal and TensorFlow 1's convolutional_delta_orthogonal, which refuses more "
                 "input channels than filters; initdiag then makes the centre semi-orthogonal (orthonormal columns)",
        ),
        Scheme("supplied", "the given .npy array, shape [fan_in, fan_out]", {"path": None}, positional="path", build=_supplied,
               roles=MATRIX_ROLES, fit=_supplied_fit),
        Scheme(
            "custom", "f(shape, fan_in, fan_out, rng) from 'package.module:function' (needs --allow-custom)",
            {"target": None}, positional="target", build=_custom, roles=MATRIX_ROLES,
        ),
    ]
}

ALIASES = {
    "glorot_normal": "xavier",
    "xavier_normal": "xavier",
    "glorot_uniform": "xavier_uniform",
    "he_normal": "relu",
    "kaiming_normal": "relu",
    "he_uniform": "relu_uniform",
    "kaiming_uniform": "relu_uniform",
    "pytorch_default": "torch_default",
    "zeros": "zero",
    "eye": "identity",
}


def lookup(name: str) -> Scheme:
    return SCHEMES[canonical(name, SCHEMES, ALIASES, "scheme")]


def aliases_of(name: str) -> list[str]:
    return [alias for alias, target in ALIASES.items() if target == name]


def same_variance_rule(a: str, b: str) -> bool:
    """Whether schemes a and b target the same variance (e.g. relu and relu_uniform), for rules of thumb."""
    if a == b:
        return True
    rule_a, rule_b = SCHEMES[a].rule, SCHEMES[b].rule
    return rule_a is not None and rule_a == rule_b


class UnfitScheme(ValueError):
    """A scheme asked to fill a parameter it cannot: the message says why (see `problem`)."""


def problem(scheme: Scheme, params: dict, geometry: Geometry) -> str | None:
    """Why `scheme` cannot initialise `geometry`, or None: a role it does not declare, or its own fit check."""
    if geometry.role not in scheme.roles:
        takes = " and ".join(_ROLE_WORDS[role] for role in scheme.roles) or "nothing (it declares no roles)"
        return f"{scheme.name} cannot initialise {_ROLE_WORDS[geometry.role]}: it takes {takes} only"
    return scheme.fit(geometry, params) if scheme.fit is not None else None


_ROLE_WORDS = {"dense": "dense matrices", "conv": "conv kernels", "recurrent": "recurrent (hidden-to-hidden) matrices",
               "embedding": "embedding tables", "projection": "residual shortcut projections",
               "attention": "attention and transformer matrices", "conv_transpose": "transposed-conv kernels",
               "vector": "vectors (biases, norm gamma and beta)"}


def initial_weights(scheme: Scheme, params: dict, rng, geometry, dtype, standard: np.ndarray | None = None) -> np.ndarray:
    """Draw the array `geometry` describes for `scheme` from `rng` (a bare (rows, cols) shape: a dense
    matrix with the shape's own fans, `dense(shape)`).

    Raises UnfitScheme where the scheme cannot fill that geometry (`problem`). `standard`, if given,
    is the family's standard sample already drawn from this `rng` (shared by the schemes of a family
    in `compare`); it is scaled into a new array.
    """
    dtype = np.dtype(dtype)
    if not isinstance(geometry, Geometry):
        geometry = dense(geometry)
    why = problem(scheme, params, geometry)
    if why:
        raise UnfitScheme(why)
    if scheme.build is not None:
        return scheme.build(rng, geometry, params, dtype)
    loc, mult = scheme.affine(geometry.fans, params)
    if standard is not None:
        weights = standard * dtype.type(mult)
    else:
        weights = FAMILY_SAMPLERS[scheme.family_of(params)](rng, geometry.shape, dtype)
        weights *= dtype.type(mult)
    if loc:
        weights += dtype.type(loc)
    return weights
