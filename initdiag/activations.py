"""Activation functions: forward, backward (vector-Jacobian product) and saturation.

Values and derivatives at kinks follow PyTorch, because that is what users compare against.
Every function keeps the input dtype (float32 stays float32: only Python-float constants are
mixed in, which numpy treats as weakly typed) and stays free of numpy warnings for huge or
infinite inputs; NaN in gives NaN out.
"""

from __future__ import annotations

import math

import numpy as np

from initdiag import registry

# ------------------------------------------------------------------------------- erf, erfc
# numpy has no erf. These are the Cephes ndtr.c rational approximations (S. L. Moshier), the
# same coefficients scipy.special uses: erf(x) = x T(x^2)/U(x^2) on |x| < 1 (relative error
# below 4e-16), erfc(x) = exp(-x^2) P(x)/Q(x) on [1, 8) and exp(-x^2) R(x)/S(x) beyond.
_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
      7.00332514112805075473e3, 5.55923013010394962768e4)
_U = (3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
      2.26290000613890934246e4, 4.92673942608635921086e4)
_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
      4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
      9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_Q = (1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
      9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
      1.65666309194161350182e3, 5.57535340817727675546e2)
_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
      6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_S = (2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
      1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)
# erfc is exactly 0 in float64 well before 40; clamping there keeps x*x finite for huge or inf x.
_ERFC_CLAMP = 40.0


def _poly(x, coefs, monic=False):
    """Horner's rule; `monic` adds the implicit leading 1 of Cephes' p1evl."""
    acc = x + coefs[0] if monic else x * coefs[0] + coefs[1]
    for c in coefs[1 if monic else 2:]:
        acc *= x
        acc += c
    return acc


def _as_float(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def _erf_small(x):
    """erf on |x| < 1."""
    z = x * x
    return x * _poly(z, _T) / _poly(z, _U, monic=True)


def _erfc_large(a):
    """erfc on a >= 1 (and NaN), a one-dimensional."""
    a = np.minimum(a, _ERFC_CLAMP)
    out = np.exp(-a * a)
    in_tail = a >= 8.0
    if not in_tail.any():  # the usual case: skip the gathers
        out *= _poly(a, _P) / _poly(a, _Q, monic=True)
        return out
    # Integer-index gathers: much faster than boolean-mask indexing on large arrays.
    mid, tail = np.flatnonzero(~in_tail), np.flatnonzero(in_tail)
    am, at = a[mid], a[tail]
    out[mid] *= _poly(am, _P) / _poly(am, _Q, monic=True)
    out[tail] *= _poly(at, _R) / _poly(at, _S, monic=True)
    return out


def _split(x):
    """x flattened, |x|, and the flat indices of |x| < 1 and of the rest (including NaN)."""
    flat = x.ravel()
    ax = np.abs(flat)
    small = ax < 1.0
    return flat, ax, np.flatnonzero(small), np.flatnonzero(~small)


def erf(x) -> np.ndarray:
    """Error function, vectorised; within about 1 ulp of math.erf in float64."""
    x = _as_float(x)
    flat, ax, small, big = _split(x)
    out = np.empty_like(flat)
    out[small] = _erf_small(flat[small])
    out[big] = np.copysign(1.0 - _erfc_large(ax[big]), flat[big])
    return out.reshape(x.shape)


def erfc(x) -> np.ndarray:
    """1 - erf(x) without the cancellation, so tiny tails (x >> 1) keep their relative accuracy."""
    x = _as_float(x)
    flat, ax, small, big = _split(x)
    out = np.empty_like(flat)
    out[small] = 1.0 - _erf_small(flat[small])
    tail = _erfc_large(ax[big])
    out[big] = np.where(flat[big] < 0, 2.0 - tail, tail)
    return out.reshape(x.shape)


# ----------------------------------------------------------------------------- helpers
def _sigmoid(z):
    # exp of a non-positive number cannot overflow; choose the numerator by sign instead.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def _softplus(z):
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _fraction(mask) -> float:
    return float(np.count_nonzero(mask) / mask.size) if mask.size else 0.0


# Below this, x*sigmoid(x), x*tanh(softplus(x)) and x*Phi(x) are exactly 0 in float64 and float32;
# clamping there keeps -inf * 0 from turning into NaN. Likewise 1 - sigmoid(x) and
# 1 - tanh(softplus(x))^2 are exactly 0 above -_FLOOR, so derivatives may clamp both ends.
_FLOOR = -800.0

# ----------------------------------------------------------------------------- registry
ACTIVATIONS: dict[str, type[Activation]] = {}


def _register(cls):
    ACTIVATIONS[cls.name] = cls
    return cls


class Activation:
    name: str = ""
    params: dict[str, float] = {}      # on the class: defaults; on an instance: bound values
    choices: dict[str, tuple] = {}     # parameters that name a variant (gelu's approximate): their values
    formula: str = ""
    recommended: tuple[str, ...] = ()
    saturation_rule: str = ""
    # Beyond the contract, for tests and docs: softmax mixes a whole row, and finite
    # differences must stay away from points where the derivative jumps.
    elementwise: bool = True
    kinks: tuple[float, ...] = ()

    def __init__(self, **params):
        defaults = type(self).params
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            valid = ", ".join(defaults) or "none"
            raise TypeError(f"activation '{self.name}' got unknown parameter(s) "
                            f"{', '.join(unknown)}; valid parameters: {valid}")
        for key, allowed in self.choices.items():
            if key in params and params[key] not in allowed:
                raise ValueError(f"activation '{self.name}': {key} must be one of {', '.join(allowed)}, not {params[key]!r}")
        # float() matters: a numpy float64 parameter would upcast float32 arrays.
        self.params = {k: params.get(k, d) if k in self.choices else float(params.get(k, d)) for k, d in defaults.items()}
        for k, v in self.params.items():
            setattr(self, k, v)

    def forward(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, z: np.ndarray, y: np.ndarray, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def saturation(self, z: np.ndarray, y: np.ndarray) -> float:
        return 0.0

    def _shown(self) -> dict:
        # a variant is named only when it is not the default (gelu stays "gelu"; its tanh form shows)
        return {k: v for k, v in self.params.items() if k not in self.choices or v != type(self).params[k]}

    def written(self):
        """How a spec writes this activation: its name, or {name: params}."""
        shown = self._shown()
        return {self.name: shown} if shown else self.name

    def __repr__(self) -> str:
        shown = self._shown()
        if not shown:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


# Rules of thumb from the Deeplearning4j table. It omits hard_sigmoid, hardtanh and softsign
# (given xavier by analogy with tanh/sigmoid: bounded, saturating, roughly symmetric) and
# softplus (given relu as a smooth ReLU).
@_register
class Identity(Activation):
    name, formula, recommended = "identity", "x", ("xavier",)

    def forward(self, z):
        return z  # no copy: callers must not write into y in place

    def backward(self, z, y, dy):
        return dy


@_register
class ReLU(Activation):
    name, formula, recommended, kinks = "relu", "max(x, 0)", ("relu",), (0.0,)

    def forward(self, z):
        return np.maximum(z, 0.0)

    def backward(self, z, y, dy):
        # relu'(0) = 0. A bool mask multiply is ~8x faster than np.where here (numpy 2.4).
        return dy * (z > 0)


@_register
class LeakyReLU(Activation):
    name, params, recommended, kinks = "leaky_relu", {"alpha": 0.01}, ("relu",), (0.0,)
    formula = "x if x > 0 else alpha*x"  # not max(x, alpha*x), which is wrong for alpha > 1

    def forward(self, z):
        return np.where(z > 0, z, z * self.alpha)

    def backward(self, z, y, dy):
        return np.where(z > 0, dy, dy * self.alpha)  # leaky_relu'(0) = alpha


@_register
class ELU(Activation):
    name, params, recommended, kinks = "elu", {"alpha": 1.0}, ("relu",), (0.0,)
    formula = "x if x > 0 else alpha*(exp(x) - 1)"

    # np.where evaluates both branches, so exponentials only ever see min(x, 0).
    def forward(self, z):
        return np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0.0)))

    def backward(self, z, y, dy):
        # elu'(0) = alpha, from the x <= 0 side as in PyTorch
        return np.where(z > 0, dy, dy * (self.alpha * np.exp(np.minimum(z, 0.0))))


@_register
class SELU(Activation):
    name, recommended, kinks = "selu", ("lecun_normal",), (0.0,)
    # Fixed, not parameters: self-normalisation holds only for these (PyTorch's) values.
    ALPHA = 1.6732632423543772848170429916717
    SCALE = 1.0507009873554804934193349852946
    formula = "scale*(x if x > 0 else alpha*(exp(x) - 1)), alpha=1.6732632, scale=1.0507010"

    def forward(self, z):
        return np.where(z > 0, z * self.SCALE,
                        (self.SCALE * self.ALPHA) * np.expm1(np.minimum(z, 0.0)))

    def backward(self, z, y, dy):
        return np.where(z > 0, dy * self.SCALE,
                        dy * ((self.SCALE * self.ALPHA) * np.exp(np.minimum(z, 0.0))))


@_register
class Tanh(Activation):
    name, formula, recommended, saturation_rule = "tanh", "tanh(x)", ("xavier",), "|y| > 0.99"

    def forward(self, z):
        return np.tanh(z)

    def backward(self, z, y, dy):
        return dy * (1.0 - y * y)

    def saturation(self, z, y):
        return _fraction(np.abs(y) > 0.99)


@_register
class Sigmoid(Activation):
    name, formula, recommended = "sigmoid", "1/(1 + exp(-x))", ("xavier",)
    saturation_rule = "y < 0.01 or y > 0.99"

    def forward(self, z):
        return _sigmoid(z)

    def backward(self, z, y, dy):
        return dy * y * (1.0 - y)

    def saturation(self, z, y):
        return _fraction((y < 0.01) | (y > 0.99))


@_register
class HardSigmoid(Activation):
    name, recommended, kinks = "hard_sigmoid", ("xavier",), (-3.0, 3.0)
    formula = "relu6(x + 3)/6 (PyTorch; DL4J and old Keras use clip(0.2*x + 0.5, 0, 1))"
    saturation_rule = "y < 0.01 or y > 0.99"

    def forward(self, z):
        return np.clip(z + 3.0, 0.0, 6.0) / 6.0  # PyTorch's order of operations

    def backward(self, z, y, dy):
        return (dy / 6.0) * (np.abs(z) < 3.0)  # 0 at x = -3 and 3

    def saturation(self, z, y):
        return _fraction((y < 0.01) | (y > 0.99))


@_register
class ReLU6(Activation):
    name, formula, recommended, kinks = "relu6", "min(max(x, 0), 6)", ("relu",), (0.0, 6.0)
    saturation_rule = "x >= 6"  # the flat top passes no gradient (the flat bottom is dead-units' story)

    def forward(self, z):
        return np.clip(z, 0.0, 6.0)

    def backward(self, z, y, dy):
        return dy * ((z > 0.0) & (z < 6.0))  # 0 at x = 0 and 6, as PyTorch

    def saturation(self, z, y):
        return _fraction(z >= 6.0)


@_register
class HardSwish(Activation):
    name, recommended, kinks = "hardswish", ("relu",), (-3.0, 3.0)
    formula = "x*relu6(x + 3)/6 (MobileNetV3; PyTorch's hardswish)"

    def forward(self, z):
        x = np.maximum(z, -3.0)  # the same -0.0 below -3, and no -inf * 0 at -inf
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0  # PyTorch's order of operations

    def backward(self, z, y, dy):
        # PyTorch: 0 up to and at -3, x/3 + 1/2 below 3, 1 from 3 on
        return dy * np.where(z <= -3.0, 0.0, np.where(z < 3.0, z / 3.0 + 0.5, 1.0))


@_register
class Hardtanh(Activation):
    name, formula, recommended, kinks = "hardtanh", "clip(x, -1, 1)", ("xavier",), (-1.0, 1.0)
    saturation_rule = "|x| >= 1"

    def forward(self, z):
        return np.clip(z, -1.0, 1.0)

    def backward(self, z, y, dy):
        return dy * (np.abs(z) < 1.0)  # 0 at x = -1 and 1

    def saturation(self, z, y):
        return _fraction(np.abs(z) >= 1.0)


@_register
class Softplus(Activation):
    # PyTorch returns x itself above x = 20 (its `threshold`); this differs there by < 2.1e-9.
    name, formula, recommended = "softplus", "log(1 + exp(x))", ("relu",)

    def forward(self, z):
        return _softplus(z)

    def backward(self, z, y, dy):
        return dy * _sigmoid(z)


@_register
class Softsign(Activation):
    name, formula, recommended = "softsign", "x/(1 + |x|)", ("xavier",)
    saturation_rule = "|y| > 0.99"

    def forward(self, z):
        big = np.finfo(z.dtype).max  # clamping inf keeps inf/inf from giving NaN; the answer is +-1
        z = np.clip(z, -big, big)
        return z / (1.0 + np.abs(z))

    def backward(self, z, y, dy):
        r = 1.0 / (1.0 + np.abs(z))  # squared separately: (1 + |x|)^2 could overflow
        return dy * r * r

    def saturation(self, z, y):
        return _fraction(np.abs(y) > 0.99)


_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# Phi(-|x|) = erfc(|x|/sqrt 2)/2 in one pass for float32: Numerical Recipes' erfcc (Press et al., 2nd ed.,
# section 6.2, a Chebyshev fit), erfc(a) = t exp(-a^2 + P(t)) with t = 1/(1 + a/2), fractional error below
# 1.2e-7 for every a >= 0 (so the negative tail keeps its relative accuracy). The 1/2 and 1/sqrt 2 are folded
# into the constants. float64 keeps the Cephes erfc above (about 1 ulp), which the float64 tests ask for.
_NR = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
       0.37409196, 1.00002368)
_NR_C0 = -1.26551223 - math.log(2.0)
_NR_K = 0.5 * _SQRT_HALF


def _phi_tail32(a):
    """Phi(-a) for a float32 array a of |x| clamped to [0, 40] (the tail is 0 long before), a new array."""
    t = a * _NR_K
    t += 1.0
    np.reciprocal(t, out=t)
    acc = t * _NR[0]
    for c in _NR[1:]:
        acc += c
        acc *= t
    acc += _NR_C0
    square = a * a
    square *= 0.5
    acc -= square  # -x^2/2 + P(t)
    np.exp(acc, out=acc)
    acc *= t
    return acc


def _gelu32(x):
    """x*Phi(x) for a float32 array: max(x, 0) - |x|*Phi(-|x|), which is x*Phi(-|x|) for x < 0 (the tail keeps
    its relative accuracy) and x - x*Phi(-x) for x >= 0, without a select between the two."""
    a = np.abs(x)
    np.minimum(a, 40.0, out=a)  # beyond, Phi(-a) is 0: keeps a*a and a*Phi(-a) finite for huge or inf x
    h = _phi_tail32(a)
    h *= a
    y = np.maximum(x, 0.0)
    y -= h
    return np.copysign(y, x, out=y)  # y has x's sign: this only gives x*Phi(x)'s -0.0 where the tail underflows


def _phi(x):
    """The standard normal CDF Phi(x), x a float array (finite, or clamped by the caller)."""
    if x.dtype != np.float32:
        # Phi(x) = erfc(-x/sqrt(2))/2 keeps relative accuracy in the far negative tail,
        # where 1 + erf(x/sqrt(2)) would cancel to 0.
        return 0.5 * erfc(x * -_SQRT_HALF)
    h = _phi_tail32(np.minimum(np.abs(x), 40.0))
    return np.where(x < 0, h, 1.0 - h)


def _phi_from_output(z, y):
    """Phi(z) = y/z, read back from the exact GELU's output y = z*Phi(z) instead of recomputed: a few ulps
    (y's rounding and the division's). Where the quotient is inexact or undefined (|z| tiny: y subnormal, or
    0/0; |z| > 8: y may underflow, or be inf; NaN) Phi is computed: rare entries."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = y / z
    a = np.abs(z)
    bad = np.flatnonzero(~((a >= 4.0 * np.finfo(z.dtype).tiny) & (a <= 8.0)))
    if bad.size:
        flat = s.reshape(-1)  # s is a fresh contiguous array: a view
        flat[bad] = _phi(np.maximum(z.reshape(-1)[bad], _FLOOR))
    return s


@_register
class GELU(Activation):
    name, recommended = "gelu", ("xavier", "relu")
    params, choices = {"approximate": "none"}, {"approximate": ("none", "tanh")}
    formula = ("x*Phi(x) = 0.5*x*(1 + erf(x/sqrt(2))); approximate=tanh: "
               "0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3))), as PyTorch's gelu(approximate=)")

    # The exact form's backward reads Phi(x) = y/x back from y = forward(z): no second erfc, and nothing cached
    # beyond the z and y every activation keeps. The tanh form recomputes tanh: its derivative needs
    # 1 - tanh^2 = 4 s (1 - s) with s near 1 for x > 2, where y/x (a few float32 ulps) would give 1 - s
    # with 8x the error of PyTorch's float32 1 - t*t.
    def forward(self, z):
        if z.dtype == np.float32 and self.approximate == "none":
            return _gelu32(z)
        x = np.maximum(z, _FLOOR)
        y = self._s(x)
        y *= x
        return y

    def backward(self, z, y, dy):
        if self.approximate == "tanh":  # PyTorch's GeluBackward with approximate="tanh"
            x = np.clip(z, -40.0, 40.0)  # beyond, the tanh form is exactly 0 or 1
            t = np.tanh(self._inner(x))
            return dy * (0.5 * (1.0 + t) + (0.5 * x) * ((1.0 - t * t) * (_SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x))))
        s = _phi_from_output(z, y)
        x = np.clip(z, -40.0, 40.0)  # beyond, Phi is exactly 0 or 1 and x*phi(x) exactly 0
        g = x * x
        g *= -0.5
        np.exp(g, out=g)
        g *= x
        g *= _INV_SQRT_2PI
        g += s
        g *= dy
        return g

    def _s(self, x):
        """s(x) with gelu(x) = x*s(x): Phi(x), or (1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3)))/2; a new array."""
        if self.approximate == "tanh":
            t = np.tanh(self._inner(x))
            t += 1.0
            t *= 0.5
            return t
        return _phi(x)

    @staticmethod
    def _inner(x):
        x = np.clip(x, -40.0, 40.0)  # tanh is exactly +-1 long before: no overflow in x^3
        return _SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))


@_register
class Swish(Activation):
    name, formula, recommended = "swish", "x*sigmoid(x) (= silu)", ("xavier", "relu")

    def forward(self, z):
        x = np.maximum(z, _FLOOR)
        return x * _sigmoid(x)

    def backward(self, z, y, dy):
        x = np.clip(z, _FLOOR, -_FLOOR)
        s = _sigmoid(x)
        return dy * (s * (1.0 + x * (1.0 - s)))


@_register
class Mish(Activation):
    name, formula, recommended = "mish", "x*tanh(softplus(x))", ("xavier", "relu")

    def forward(self, z):
        x = np.maximum(z, _FLOOR)
        return x * np.tanh(_softplus(x))

    def backward(self, z, y, dy):
        x = np.clip(z, _FLOOR, -_FLOOR)
        t = np.tanh(_softplus(x))
        return dy * (t + x * (1.0 - t * t) * _sigmoid(x))


@_register
class Softmax(Activation):
    name, recommended, elementwise = "softmax", ("xavier",), False
    formula = "exp(x_i - max(x))/sum_j exp(x_j - max(x)) over the last axis"
    saturation_rule = "rows whose largest probability > 0.99"

    def forward(self, z):
        m = np.max(z, axis=-1, keepdims=True)
        if not np.isfinite(m).all():
            # An infinite row maximum would give inf - inf; clamping makes the infinities
            # share the row (all -inf: uniform) and keeps every difference finite.
            big = np.finfo(z.dtype).max / 4
            z = np.clip(z, -big, big)
            m = np.max(z, axis=-1, keepdims=True)
        with np.errstate(over="ignore"):  # z - m may overflow to -inf, whose exp is the right 0
            e = np.exp(z - m)
        e /= np.sum(e, axis=-1, keepdims=True)
        return e

    def backward(self, z, y, dy):
        # Jacobian-vector product: (diag(y) - y y^T) dy, without forming the Jacobian.
        g = dy - np.sum(dy * y, axis=-1, keepdims=True)
        g *= y
        return g

    def saturation(self, z, y):
        return _fraction(np.max(y, axis=-1) > 0.99)


# Only spellings people really type: Keras/PyTorch names and common synonyms. Lower case,
# since registry.canonical() lower-cases what it looks up.
ALIASES: dict[str, str] = {
    "linear": "identity",
    "none": "identity",
    "leakyrelu": "leaky_relu",
    "logistic": "sigmoid",
    "hardsigmoid": "hard_sigmoid",
    "hard_tanh": "hardtanh",
    "silu": "swish",
    "hard_swish": "hardswish",
    "hard_silu": "hardswish",
}


def make(name: str, params: dict | None = None) -> Activation:
    """The activation registered as `name` (any case, or an alias), bound to `params`."""
    cls = ACTIVATIONS[registry.canonical(name, ACTIVATIONS, ALIASES, "activation")]
    return cls(**(params or {}))
