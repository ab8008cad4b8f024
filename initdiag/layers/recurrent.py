"""Recurrent layers (RNN, LSTM, GRU) with backpropagation through time, in PyTorch's semantics.

Contract (as initdiag.layers.Dense, extended to sequences)
---------------------------------------------------------
``forward(x) -> (y, cache)`` and ``backward(dy, cache, need_dx=True) -> (dx or None, grads)``.

* x: (batch, steps, features). y: (batch, steps, units) with ``return_sequences=True`` (every
  hidden state), else (batch, units): the last step's hidden state h_{T-1}.
* ``grads`` maps every parameter name the layer holds to dLoss/d(parameter), same shape.
* ``backward`` also stores dLoss/dh_t for every step on ``cache.hidden_grad``
  (batch, steps, units): the *total* derivative of the loss with respect to the hidden state
  h_t, i.e. the gradient arriving from the layer's output at step t (if it is output) plus
  everything carried back from steps t+1, ..., T-1. ``cache.grad_var_first_step`` and
  ``cache.grad_var_last_step`` are its variances at t = 0 and t = T-1. It is not in ``grads``
  because ``grads`` holds parameters only.
* dtype is preserved: float32 in (input and parameters) gives float32 out, caches and
  gradients; mixed dtypes promote as numpy does.
* Everything is vectorised over batch and units; the only Python loop is over time steps,
  which backpropagation through time needs (each step depends on the previous one). The
  input projection x @ W_x of all steps is one matrix product, as are the weight gradients.

Parameters (our (fan_in, fan_out) layout: the layer computes x @ W)
--------------------------------------------------------------------
k gate blocks of ``units`` columns each: RNN k = 1; LSTM k = 4 in PyTorch's order
(i, f, g, o); GRU k = 3 in PyTorch's order (r, z, n).

=====================  ====================  ===============================================
name                   shape                 PyTorch (nn.RNN/LSTM/GRU, layer 0)
=====================  ====================  ===============================================
``input_weights``      (features, k·units)   ``weight_ih_l0.T``  (torch: (k·units, features))
``recurrent_weights``  (units, k·units)      ``weight_hh_l0.T``  (torch: (k·units, units))
``bias``               (k·units,)            ``bias_ih_l0 + bias_hh_l0`` (GRU: see below)
``recurrent_bias``     (units,), GRU only    ``bias_hh_l0[2·units:]`` (b_hn)
=====================  ====================  ===============================================

PyTorch keeps two biases per gate, b_ih and b_hh, but wherever they are simply added only their
sum matters, so one ``bias`` holds it. The GRU's candidate gate is the exception:
n = tanh(x W_in + b_in + r * (h W_hn + b_hn)) puts b_hn *inside* the reset gate's product, so
it is not interchangeable with b_in; the GRU keeps it as ``recurrent_bias`` (this is also
Keras' ``reset_after=True`` GRU, whose bias is (2, 3·units): input and recurrent rows). A GRU's
``bias`` therefore holds b_ir + b_hr, b_iz + b_hz and b_in. ``bias`` (and ``recurrent_bias``)
may be omitted or None: the layer then has no such term and ``grads`` has no such key
(like Dense with ``bias: false``; PyTorch's ``bias=False``). ``recurrent_bias`` defaults to
absent = zero, which is what Keras initialises it to.

Equations (h_{-1} = 0, c_{-1} = 0; σ the logistic sigmoid; φ the layer's ``activation``)
-----------------------------------------------------------------------------------------
RNN:  h_t = φ(x_t W_x + h_{t-1} W_h + b), φ = tanh by default (any registered activation).
LSTM: [a_i a_f a_g a_o] = x_t W_x + h_{t-1} W_h + b;  i, f, o = σ(a_i), σ(a_f), σ(a_o);
      g = φ(a_g);  c_t = f c_{t-1} + i g;  h_t = o φ(c_t).  φ = tanh (PyTorch's fixed choice;
      Keras' ``activation``, which likewise applies to g and to the cell output).
GRU:  [a_r a_z] = x_t W_x[:, r z] + h_{t-1} W_h[:, r z] + b[r z];  r, z = σ(a_r), σ(a_z);
      m_t = h_{t-1} W_h[:, n] + b_hn;  a_n = x_t W_x[:, n] + b[n] + r m_t;  n = φ(a_n);
      h_t = (1 - z) n + z h_{t-1}.  (PyTorch's GRU; φ = tanh there.)

Initialisation: what the frameworks do
--------------------------------------
Fans, as ``torch.nn.init._calculate_fan_in_and_fan_out`` gives them on the stacked matrices
``weight_ih_l0`` (k·units, features) and ``weight_hh_l0`` (k·units, units), i.e. fan_out counts
all k gate blocks: input_weights (features, k·units), recurrent_weights (units, k·units). These
are exactly ``schemes.Fans(*shape)`` of our layout, so ``schemes.initial_weights`` on the
parameter shapes gives the PyTorch-fan variance. Keras computes the same fans on its
``kernel`` (features, k·units), so its default glorot_uniform on an LSTM kernel uses
fan_avg = (features + 4·units)/2, not per gate.

``default_init`` (Keras' defaults): input_weights ``xavier_uniform`` (glorot_uniform),
recurrent_weights ``orthogonal``, biases zero, LSTM ``forget_bias`` 1. The orthogonal default
is the existing ``orthogonal`` scheme on the whole (units, k·units) matrix: it is Keras'
Orthogonal on ``recurrent_kernel`` exactly (QR of a (k·units, units) Gaussian, transposed, so
the *rows* are orthonormal: W_h W_hᵀ = I_units), and ``torch.nn.init.orthogonal_`` on
``weight_hh_l0`` gives the same distribution (orthonormal columns of the transpose). It is
*not* per gate: for k > 1 no single gate block is orthogonal; the k blocks' Gram matrices sum
to I, so each block's singular values are about 1/sqrt(k) in root mean square.

PyTorch's own default (``RNNBase.reset_parameters``) differs: every weight *and* both biases
~ U(±1/sqrt(units)), input weights included, whatever ``features`` is (the ``torch_default``
scheme, U(±1/sqrt(fan_in)), matches it on recurrent_weights, where fan_in = units, but not on
input_weights, where fan_in = features). Its effective bias b_ih + b_hh is then a sum of two
such uniforms (triangular, variance 2/(3·units)), and it has no forget-gate bias.

``forget_bias`` (LSTM, default 1.0, as Keras' ``unit_forget_bias=True`` and Jozefowicz et al.
2015): the constructor adds it to the forget block ``bias[units:2·units]`` of a *copy* of the
given bias, so ``layer.params["bias"]`` is the bias actually used. Keras *sets* that block to
exactly 1 (its other blocks keep ``bias_initializer``); the two agree when the bias was
initialised to zero, the default. Pass ``forget_bias=0`` to load trained or PyTorch weights
unchanged.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from initdiag import activations
from initdiag.activations import Activation
from initdiag.layers.declare import SEQUENCE, LayerKind, Option, Weight, checked, params_layer

_SIGMOID = activations.make("sigmoid")
_TANH = type(activations.make("tanh"))


def _sigmoid_backward(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    return d * s * (1.0 - s)


def _sigmoid_into(z: np.ndarray, out: np.ndarray) -> None:
    """out = σ(z) = 1/(1 + e^-z) in four in-place passes (no temporaries). For z < -88 (float32)
    e^-z overflows to inf and σ to 0, its limit: call under np.errstate(over="ignore")."""
    np.negative(z, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)


def _apply_into(phi: Activation, z: np.ndarray, out: np.ndarray) -> None:
    """out = φ(z); tanh (every framework's default) in place, any other activation through its forward."""
    if type(phi) is _TANH:
        np.tanh(z, out=out)
    else:
        out[...] = phi.forward(z)


def _derivative_into(phi: Activation, z: np.ndarray, y: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """out = scale · φ'(z), y = φ(z) (φ elementwise: its backward is linear in dy); tanh in place."""
    if type(phi) is _TANH:
        np.multiply(y, y, out=out)
        np.subtract(1.0, out, out=out)
        out *= scale
    else:
        out[...] = phi.backward(z, y, scale)


def _sigmoid_derivative_into(s: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """out = scale · σ'(a) = scale · s (1 - s), s = σ(a)."""
    np.subtract(1.0, s, out=out)
    out *= s
    out *= scale


def _scale_up(small: float, *arrays: np.ndarray) -> int:
    """k >= 0: multiply the arrays by 2^k (exact) when their largest |value| is below ``small``, so that it is
    about 1; 0 (nothing done) otherwise, or when they are all 0."""
    largest = max(float(np.max(np.abs(a))) for a in arrays)
    if not 0.0 < largest < small:
        return 0
    k = -math.frexp(largest)[1]
    for a in arrays:
        np.ldexp(a, k, out=a)
    return k


def _bring_down(e: int, direct: np.ndarray, *arrays: np.ndarray) -> int:
    """The exponent to add a direct gradient at: e, or less where direct · 2^e could overflow (the
    arrays, at scale 2^e, are brought to the lower scale: their values below it were negligible)."""
    largest = float(np.max(np.abs(direct)))
    room = max(0, -math.frexp(largest)[1]) if largest > 0 else e
    if room >= e:
        return e
    for a in arrays:
        np.ldexp(a, room - e, out=a)
    return room


def _to_scale_one(cache, dz: np.ndarray, exponents: np.ndarray, chunk: int = 8) -> None:
    """Back to true values after a rescaled backward pass: exact variances per step first (from the
    scaled values), then hidden_grad and dz, where values below the normal range become 0 and the
    rest are multiplied by 2^-e (exactly: in two normal powers of two, the results normal). In
    chunks of 8 steps: few calls, temporaries of 8 steps at most."""
    steps = exponents.shape[0]
    grads = cache.hidden_grad_steps
    variances = np.empty(steps)
    tiny = np.finfo(dz.dtype).tiny
    for start in range(0, steps, chunk):
        block = slice(start, start + chunk)
        e = exponents[block]
        g = grads[block]
        variances[block] = np.ldexp(np.var(g.reshape(g.shape[0], -1), axis=1, dtype=np.float64), -2 * e)
        if not e.any():
            continue
        # in scaled units, tiny is tiny·2^e (inf where that is beyond the dtype: everything is below it)
        with np.errstate(over="ignore"):
            below = np.ldexp(tiny, e).astype(dz.dtype)[:, None, None]
        half = e // 2
        first = np.ldexp(1.0, -half).astype(dz.dtype)[:, None, None]
        second = np.ldexp(1.0, half - e).astype(dz.dtype)[:, None, None]
        for a in (g, dz[block]):
            np.copyto(a, 0.0, where=np.abs(a) < below)
            a *= first
            a *= second
    cache.hidden_grad_var_steps = variances


def _variance(a: np.ndarray) -> float:
    """Population variance in float64 (float32 sums over big arrays lose digits)."""
    return float(np.var(a, dtype=np.float64)) if a.size else float("nan")


def _activation_of(value) -> Activation:
    """An Activation from an instance, a registered name (or alias), {name: {param: value}}, or None (tanh)."""
    if value is None:
        return activations.make("tanh")
    if isinstance(value, Activation):
        return value
    if isinstance(value, str):
        return activations.make(value)
    if isinstance(value, dict) and len(value) == 1:
        (name, params), = value.items()
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"activation {name!r} takes a mapping of parameters, not {params!r}")
        return activations.make(name, params)
    raise ValueError(f"activation must be a name such as 'tanh' or a mapping such as {{leaky_relu: {{alpha: 0.2}}}}, "
                     f"not {value!r}")


class RecurrentCache:
    """What a forward pass keeps for backward and for statistics.

    Arrays are stored time-major (steps, batch, ·), the order the recurrence walks, so each
    step's slice is contiguous; the public attributes below are batch-first views of them.

    Attributes and properties:
      x        (batch, steps, features) the input
      y        the layer's output, exactly as forward returned it
      z        (batch, steps, k·units) pre-activations of every gate at every step, gate blocks
               in the layer's order (RNN: φ's argument; LSTM: a_i a_f a_g a_o; GRU: a_r a_z a_n,
               with a_n including r·(h W_hn + b_hn))
      gates    (batch, steps, k·units) the gates' values (σ or φ of z); RNN: None
      hidden   (batch, steps, units) all hidden states h_0 ... h_{T-1}
      cell     (batch, steps, units) LSTM cell states c_t; None for RNN and GRU
      hidden_grad   (batch, steps, units) dLoss/dh_t for every t, set by backward (None before)
      grad_var_first_step, grad_var_last_step   variances of hidden_grad at t = 0 and t = T-1
    """

    def __init__(self, gate_names, x_steps, z_steps, gate_steps, hidden_steps, y,
                 cell_steps=None, cell_act_steps=None, reset_hidden_steps=None):
        self.gate_names = gate_names
        self.x_steps = x_steps                  # (T, B, F)
        self.z_steps = z_steps                  # (T, B, k·U)
        self.gate_steps = gate_steps            # (T, B, k·U) or None (RNN)
        self.hidden_steps = hidden_steps        # (T, B, U)
        self.y = y
        self.cell_steps = cell_steps            # LSTM: c_t
        self.cell_act_steps = cell_act_steps    # LSTM: φ(c_t)
        self.reset_hidden_steps = reset_hidden_steps  # GRU: m_t = h_{t-1} W_hn + b_hn
        self.hidden_grad_steps = None           # set by backward
        self.hidden_grad_var_steps = None       # (T,) float64 Var(dLoss/dh_t), where backward rescaled (LSTM): exact
        self.cell_grad_var_first_step = None    # LSTM: Var(dLoss/dc) at t = 0 (its memory path), set by backward
        self.cell_grad_var_last_step = None     # ... and at t = T-1

    @staticmethod
    def _batch_first(a):
        return None if a is None else a.swapaxes(0, 1)

    @property
    def x(self):
        return self._batch_first(self.x_steps)

    @property
    def z(self):
        return self._batch_first(self.z_steps)

    @property
    def gates(self):
        return self._batch_first(self.gate_steps)

    @property
    def hidden(self):
        return self._batch_first(self.hidden_steps)

    @property
    def cell(self):
        return self._batch_first(self.cell_steps)

    @property
    def hidden_grad(self):
        return self._batch_first(self.hidden_grad_steps)

    @property
    def steps(self) -> int:
        return self.hidden_steps.shape[0]

    def gate(self, name: str) -> np.ndarray:
        """(batch, steps, units) values of one gate ('i', 'f', 'g', 'o' or 'r', 'z', 'n')."""
        if self.gate_steps is None or name not in self.gate_names:
            raise KeyError(f"no gate {name!r}; this layer has {', '.join(self.gate_names) or 'none'}")
        units = self.hidden_steps.shape[-1]
        k = self.gate_names.index(name)
        return self.gates[..., k * units:(k + 1) * units]

    def _hidden_grad_at(self, t: int) -> np.ndarray:
        if self.hidden_grad_steps is None:
            raise ValueError("no hidden-state gradients yet: run backward on this cache first")
        return self.hidden_grad_steps[t]

    @property
    def grad_var_first_step(self) -> float:
        """Var(dLoss/dh_0) over batch and units."""
        return self._variance_at(0)

    @property
    def grad_var_last_step(self) -> float:
        """Var(dLoss/dh_{T-1}) over batch and units."""
        return self._variance_at(-1)

    def _variance_at(self, t: int) -> float:
        g = self._hidden_grad_at(t)
        return _variance(g) if self.hidden_grad_var_steps is None else float(self.hidden_grad_var_steps[t])

    def hidden_grad_var_by_step(self) -> np.ndarray:
        """(steps,) float64: Var(dLoss/dh_t) for every t, for a plot of gradient through time."""
        g = self._hidden_grad_at(slice(None))
        if self.hidden_grad_var_steps is not None:
            return self.hidden_grad_var_steps.copy()
        return np.var(g.reshape(g.shape[0], -1), axis=1, dtype=np.float64)


class _Recurrent:
    """Shared machinery; subclasses define the cell (k gates) and its backward step."""

    kind = ""
    gates_per_unit = 1           # k
    gate_names: tuple = ()
    has_recurrent_bias = False   # GRU's b_hn
    default_init = {"input_weights": "xavier_uniform", "recurrent_weights": "orthogonal", "bias": "zero"}

    def __init__(self, name: str, params: dict, activation=None, return_sequences: bool = True):
        self.name = name
        self.activation = _activation_of(activation)
        self.return_sequences = bool(return_sequences)
        allowed = {"input_weights", "recurrent_weights", "bias"} | ({"recurrent_bias"} if self.has_recurrent_bias else set())
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"{self.kind} '{name}': unknown parameter(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(allowed))}")
        for required in ("input_weights", "recurrent_weights"):
            if params.get(required) is None:
                raise ValueError(f"{self.kind} '{name}': missing parameter '{required}'")
        self.params = {key: value for key, value in params.items() if value is not None}
        w_x, w_h = self.params["input_weights"], self.params["recurrent_weights"]
        k = self.gates_per_unit
        if w_h.ndim != 2 or w_h.shape[1] % k or w_h.shape[1] != k * w_h.shape[0]:
            raise ValueError(f"{self.kind} '{name}': recurrent_weights must be (units, {k}·units), got {w_h.shape}")
        units = w_h.shape[0]
        expected = {"input_weights": (None, k * units), "bias": (k * units,), "recurrent_bias": (units,)}
        for key, shape in expected.items():
            value = self.params.get(key)
            if value is None:
                continue
            if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
                want = "(features, " + f"{k * units})" if key == "input_weights" else str(shape)
                raise ValueError(f"{self.kind} '{name}': {key} must be {want}, got {value.shape}")
        dtypes = {value.dtype for value in self.params.values()}
        if len(dtypes) != 1:
            raise ValueError(f"{self.kind} '{name}': parameters must share one dtype, got {sorted(map(str, dtypes))}")
        self.units = units
        self.features = w_x.shape[0]

    # ----------------------------------------------------------------- config and shapes
    @classmethod
    def from_config(cls, name: str, params: dict, config: dict):
        """The layer for a config from normalize_config and parameters shaped as parameter_shapes."""
        config = normalize_config(cls.kind, config)
        extra = {key: config[key] for key in config if key not in ("units", "return_sequences")}
        layer = cls(name, params, return_sequences=config["return_sequences"], **extra)
        if layer.units != config["units"]:
            raise ValueError(f"{cls.kind} '{name}': config has {config['units']} units, parameters {layer.units}")
        return layer

    @staticmethod
    def _features(input_shape) -> int:
        shape = tuple(input_shape)
        if len(shape) != 2:
            raise ValueError(f"a recurrent layer takes input of shape [steps, features] (without the batch), "
                             f"got {list(shape)}")
        return int(shape[1])

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        """(steps, units) with return_sequences, else (units,); input_shape = (steps, features), no batch."""
        cls._features(input_shape)
        config = normalize_config(cls.kind, config)
        units = config["units"]
        return (int(input_shape[0]), units) if config["return_sequences"] else (units,)

    @classmethod
    def parameter_shapes(cls, input_shape, config) -> dict:
        """name -> shape: weights (rows, cols) in our (fan_in, fan_out) layout, biases (length,).

        Lists every parameter the layer can hold, including the GRU's ``recurrent_bias`` (initialise
        it to zero as Keras does, or drop it: absent means zero). Biases have no fans.
        """
        features = cls._features(input_shape)
        units = normalize_config(cls.kind, config)["units"]
        width = cls.gates_per_unit * units
        shapes = {"input_weights": (features, width), "recurrent_weights": (units, width), "bias": (width,)}
        if cls.has_recurrent_bias:
            shapes["recurrent_bias"] = (units,)
        return shapes

    @classmethod
    def fans(cls, input_shape, config) -> dict:
        """name -> (fan_in, fan_out) for the two weight matrices, as torch.nn.init computes them
        on weight_ih_l0 (k·units, features) and weight_hh_l0 (k·units, units): fan_out counts all
        k gate blocks. Equal to the (rows, cols) of our layout."""
        shapes = cls.parameter_shapes(input_shape, config)
        return {name: shapes[name] for name in ("input_weights", "recurrent_weights")}

    @classmethod
    def cache_elements(cls, batch: int, input_shape, config) -> int:
        """Array elements a forward cache plus its backward hold at their peak (for a memory
        estimate; parameters and their gradients are extra: see parameter_shapes)."""
        steps, features = int(input_shape[0]), cls._features(input_shape)
        config = normalize_config(cls.kind, config)
        units, k = config["units"], cls.gates_per_unit
        output = steps * units if config["return_sequences"] else units
        forward = cls.kept_elements(batch, input_shape, config) + batch * output
        # backward: gate gradients (GRU: input- and recurrent-side), hidden_grad, dx
        # (dx is computed time-major, then copied batch-first: two of them at once)
        backward = steps * batch * ((2 if cls.kind == "gru" else 1) * k * units + units + 2 * features)
        return forward + backward

    @classmethod
    def kept_elements(cls, batch: int, input_shape, config) -> int:
        """Array elements the forward cache keeps beyond the output: every step's input, gates (z, and the gate
        values) and states (hidden; LSTM: cell and φ(c); GRU: the reset hidden)."""
        steps, features = int(input_shape[0]), cls._features(input_shape)
        config = normalize_config(cls.kind, config)
        units, k = config["units"], cls.gates_per_unit
        per_step = {"rnn": 1, "lstm": 3, "gru": 2}[cls.kind]     # hidden (+ cell, φ(c) | + m_t)
        gate_arrays = 1 if cls.kind == "rnn" else 2               # z (+ gate values)
        return steps * batch * (features + gate_arrays * k * units + per_step * units)

    # ----------------------------------------------------------------- forward / backward
    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.features:
            raise ValueError(f"{self.kind} '{self.name}' expects input (batch, steps, {self.features}), got {x.shape}")
        if x.shape[1] == 0:
            raise ValueError(f"{self.kind} '{self.name}' needs at least one time step")
        x_steps = np.ascontiguousarray(x.swapaxes(0, 1))        # (T, B, F)
        z = x_steps @ self.params["input_weights"]              # all steps' input projections at once
        bias = self.params.get("bias")
        if bias is not None:
            z += bias
        cache = self._run(x_steps, z)
        hidden = cache.hidden_steps
        cache.y = np.ascontiguousarray(hidden.swapaxes(0, 1)) if self.return_sequences else hidden[-1].copy()
        return cache.y, cache

    def backward(self, dy: np.ndarray, cache: RecurrentCache, need_dx: bool = True, *, dz=None):
        """dy = dLoss/dy, shaped as y -> (dx or None, grads).

        Also stores dLoss/dh_t, (batch, steps, units), on ``cache.hidden_grad``. ``dz`` exists
        only for the Dense call signature: a fused loss cannot sit on a recurrent layer.
        """
        if dz is not None:
            raise ValueError(f"{self.kind} '{self.name}': a recurrent layer cannot be the output of a fused loss (dz)")
        dy = np.asarray(dy)
        if dy.shape != cache.y.shape:
            raise ValueError(f"{self.kind} '{self.name}': dy has shape {dy.shape}, the output {cache.y.shape}")
        steps = cache.steps
        if self.return_sequences:
            direct = dy.swapaxes(0, 1)                        # (T, B, U) view
            direct_at = lambda t: direct[t]                   # noqa: E731
        else:
            direct_at = lambda t: dy if t == steps - 1 else None  # noqa: E731
        dzx, dzh = self._bptt(cache, direct_at)
        # dzx: dLoss/d(input-side pre-activation), (T, B, k·U), for W_x and bias;
        # dzh: dLoss/d(recurrent-side pre-activation h_{t-1} W_h [+ b_hn]), for W_h (dzh is dzx except in a GRU).
        flat = lambda a: a.reshape(-1, a.shape[-1])           # noqa: E731  (time-major, contiguous: a view)
        w_x = self.params["input_weights"]
        grads = {
            "input_weights": flat(cache.x_steps).T @ flat(dzx),
            # h_{-1} = 0: step 0 contributes nothing to dW_h
            "recurrent_weights": flat(cache.hidden_steps[:-1]).T @ flat(dzh[1:]),
        }
        if "bias" in self.params:
            grads["bias"] = flat(dzx).sum(axis=0)
        if "recurrent_bias" in self.params:
            grads["recurrent_bias"] = flat(dzh[..., 2 * self.units:]).sum(axis=0)
        for key, grad in grads.items():
            grads[key] = grad.astype(self.params[key].dtype, copy=False)
        dx = np.ascontiguousarray((dzx @ w_x.T).swapaxes(0, 1)) if need_dx else None
        return dx, grads

    def saturation(self, cache: RecurrentCache) -> dict:
        """Fraction saturated, per gate (σ gates by the sigmoid rule, g/n by φ's rule); RNN: {'h': ...}."""
        if cache.gate_steps is None:
            return {"h": self.activation.saturation(cache.z_steps, cache.hidden_steps)}
        u, result = self.units, {}
        for k, gate in enumerate(self.gate_names):
            block = slice(k * u, (k + 1) * u)
            fn = self.activation if gate in ("g", "n") else _SIGMOID
            result[gate] = fn.saturation(cache.z_steps[..., block], cache.gate_steps[..., block])
        return result

    def __repr__(self) -> str:
        extra = "" if self.return_sequences else ", last step"
        return f"{type(self).__name__}({self.name!r}, {self.features}->{self.units}, {self.activation!r}{extra})"

    # subclasses
    def _run(self, x_steps, z) -> RecurrentCache:
        raise NotImplementedError

    def _bptt(self, cache, direct_at):
        raise NotImplementedError

    def _start(self, cache):
        steps, batch, units = cache.hidden_steps.shape
        dtype = cache.z_steps.dtype
        cache.hidden_grad_steps = np.empty((steps, batch, units), dtype=dtype)
        cache.hidden_grad_var_steps = None
        return np.zeros((batch, units), dtype=dtype)


class RNN(_Recurrent):
    """Elman RNN: h_t = φ(x_t W_x + h_{t-1} W_h + b), h_{-1} = 0; φ = tanh unless given (any
    registered activation; PyTorch's nn.RNN offers tanh and relu).

    ``RNN(name, params, activation=None, return_sequences=True)``: params as in the module
    docstring (k = 1); activation an Activation, a name, {name: {param: value}} or None (tanh).
    """

    kind = "rnn"
    gates_per_unit = 1

    def _run(self, x_steps, z):
        w_h, phi = self.params["recurrent_weights"], self.activation
        hidden = np.empty(z.shape, dtype=z.dtype)
        recurrent = np.empty(z.shape[1:], dtype=np.result_type(z, w_h))     # h_{t-1} W_h, reused every step
        for t in range(z.shape[0]):
            if t:
                np.matmul(hidden[t - 1], w_h, out=recurrent)
                z[t] += recurrent
            _apply_into(phi, z[t], hidden[t])
        return RecurrentCache((), x_steps, z, None, hidden, None)

    def _bptt(self, cache, direct_at):
        w_h, phi = self.params["recurrent_weights"], self.activation
        z, hidden = cache.z_steps, cache.hidden_steps
        dz = np.empty_like(z)
        carried = self._start(cache)
        w_h_t = np.ascontiguousarray(w_h.T)        # a contiguous operand: the per-step product is faster
        for t in reversed(range(z.shape[0])):
            direct, dh = direct_at(t), cache.hidden_grad_steps[t]
            if direct is None:
                dh[...] = carried
            else:
                np.add(carried, direct, out=dh)
            dz[t] = phi.backward(z[t], hidden[t], dh)
            if t:
                np.matmul(dz[t], w_h_t, out=carried)
        return dz, dz


class LSTM(_Recurrent):
    """LSTM with PyTorch's gate order i, f, g, o (no peepholes, no projection).

    ``LSTM(name, params, activation=None, return_sequences=True, forget_bias=1.0)``: params as in
    the module docstring (k = 4). ``activation`` (default tanh) is φ of g and of the cell output,
    as Keras' ``activation``; the i, f, o gates are always σ. ``forget_bias`` is added to the
    forget block of a copy of ``params["bias"]`` (see the module docstring; PyTorch has none and
    draws its biases U(±1/sqrt(units))); with ``bias`` absent it must be 0.
    """

    kind = "lstm"
    gates_per_unit = 4
    gate_names = ("i", "f", "g", "o")

    def __init__(self, name: str, params: dict, activation=None, return_sequences: bool = True, forget_bias: float = 1.0):
        super().__init__(name, params, activation, return_sequences)
        self.forget_bias = float(forget_bias)
        if self.forget_bias:
            if "bias" not in self.params:
                raise ValueError(f"lstm '{name}': forget_bias {forget_bias} needs a bias; use forget_bias 0 without one")
            bias = self.params["bias"].copy()
            bias[self.units:2 * self.units] += self.forget_bias
            self.params["bias"] = bias

    def _run(self, x_steps, z):
        w_h, phi, u = self.params["recurrent_weights"], self.activation, self.units
        steps, batch, _ = z.shape
        gates = np.empty_like(z)
        cell = np.empty((steps, batch, u), dtype=z.dtype)
        cell_act = np.empty_like(cell)
        hidden = np.empty_like(cell)
        recurrent = np.empty((batch, 4 * u), dtype=np.result_type(z, w_h))  # h_{t-1} W_h, reused every step
        forget = np.empty((batch, u), dtype=z.dtype)                          # f c_{t-1}
        with np.errstate(over="ignore"):                                      # σ's e^-z -> inf gives 0, its limit
            for t in range(steps):
                zt, gt = z[t], gates[t]
                if t:
                    np.matmul(hidden[t - 1], w_h, out=recurrent)
                    zt += recurrent
                _sigmoid_into(zt, gt)           # i, f, o (and g, overwritten: one contiguous call is faster than two)
                _apply_into(phi, zt[:, 2 * u:3 * u], gt[:, 2 * u:3 * u])  # g
                i, f, g, o = gt[:, :u], gt[:, u:2 * u], gt[:, 2 * u:3 * u], gt[:, 3 * u:]
                np.multiply(i, g, out=cell[t])
                if t:
                    np.multiply(f, cell[t - 1], out=forget)
                    cell[t] += forget
                _apply_into(phi, cell[t], cell_act[t])
                np.multiply(o, cell_act[t], out=hidden[t])
        return RecurrentCache(self.gate_names, x_steps, z, gates, hidden, None,
                              cell_steps=cell, cell_act_steps=cell_act)

    def _bptt(self, cache, direct_at):
        """Each step works in place on its own (batch, 4·units) slice of dz, which stays in cache: the
        factors beside dc and dh first (dz_i = dc·g·σ'(a_i), dz_f = dc·c_{t-1}·σ'(a_f),
        dz_g = dc·i·φ'(a_g), dz_o = dh·φ(c_t)·σ'(a_o)), then one broadcast product by dc.

        The gradient carried back is linear in (dh, dc), and on long sequences it fades by e every few
        steps into the subnormal range (below 1.2e-38 in float32), where x86 cores without flush-to-zero
        take microcode assists on every product (an LSTM over 640 steps took 13x the time of 320).
        Numpy has no flush-to-zero switch, and flushing would turn a gradient that fades into one that
        is gone (0 at the first step: a different finding). So the carried pair is kept at scale 2^e
        instead: multiplied by a power of two (exact) whenever its largest value drops below
        sqrt(tiny), the exponent of every step recorded. Statistics are taken from the scaled values
        (exact: Var · 4^-e in float64); hidden_grad and dz are brought back to scale 1 after the loop,
        where their values below the normal range become 0 (dz's feed only the sums over all steps,
        dW and db, and dx, next to values 2^24 larger or more).
        """
        w_h, phi, u = self.params["recurrent_weights"], self.activation, self.units
        z, gates, cell, cell_act = cache.z_steps, cache.gate_steps, cache.cell_steps, cache.cell_act_steps
        steps, batch, _ = z.shape
        dz = np.empty_like(z)
        carried = self._start(cache)
        hidden_grad = cache.hidden_grad_steps
        dc = np.empty_like(carried)
        carried_cell = np.zeros_like(carried)
        w_h_t = np.ascontiguousarray(w_h.T)        # a contiguous operand: the per-step product is faster
        exponents = np.zeros(steps, dtype=np.int64)
        small = math.sqrt(np.finfo(dc.dtype).tiny) if dc.dtype.kind == "f" else 0.0
        e = 0                                       # the carried pair is the true one times 2^e
        for t in reversed(range(steps)):
            direct, dh, gt, dzt = direct_at(t), hidden_grad[t], gates[t], dz[t]
            if direct is None:
                dh[...] = carried
            elif e == 0:
                np.add(carried, direct, out=dh)
            else:
                e = _bring_down(e, direct, carried, carried_cell)
                np.ldexp(direct, e, out=dh)
                dh += carried
            exponents[t] = e
            i, f, g, o = gt[:, :u], gt[:, u:2 * u], gt[:, 2 * u:3 * u], gt[:, 3 * u:]
            dz_i, dz_f, dz_g, dz_o = dzt[:, :u], dzt[:, u:2 * u], dzt[:, 2 * u:3 * u], dzt[:, 3 * u:]
            _derivative_into(phi, cell[t], cell_act[t], o, dc)                # o·φ'(c_t)
            dc *= dh
            dc += carried_cell                      # dc_t = dh_t·o·φ'(c_t) + f_{t+1}·dc_{t+1}
            if t == steps - 1:  # the memory path: what reaches the first step through the cell
                cache.cell_grad_var_last_step = math.ldexp(_variance(dc), -2 * e)
            if t == 0:
                cache.cell_grad_var_first_step = math.ldexp(_variance(dc), -2 * e)
            np.subtract(1.0, gt, out=dzt)
            dzt *= gt                               # σ' = s(1 - s) on every block (g's is overwritten below)
            dz_i *= g
            if t:
                dz_f *= cell[t - 1]
            else:
                dz_f[...] = 0.0                     # c_{-1} = 0
            _derivative_into(phi, z[t, :, 2 * u:3 * u], g, i, dz_g)
            dz_o *= cell_act[t]
            first_three = dzt.reshape(batch, 4, u)[:, :3]
            np.multiply(first_three, dc[:, None, :], out=first_three)
            dz_o *= dh
            if t:
                np.multiply(dc, f, out=carried_cell)
                np.matmul(dzt, w_h_t, out=carried)
                e += _scale_up(small, carried, carried_cell)
        if exponents.any():
            _to_scale_one(cache, dz, exponents)
        return dz, dz


class GRU(_Recurrent):
    """GRU with PyTorch's equations and gate order r, z, n (the reset gate multiplies
    h W_hn + b_hn, i.e. Keras' ``reset_after=True``).

    ``GRU(name, params, activation=None, return_sequences=True)``: params as in the module
    docstring (k = 3), plus the optional ``recurrent_bias`` b_hn (units,). ``activation``
    (default tanh) is φ of the candidate n; r and z are always σ.
    """

    kind = "gru"
    gates_per_unit = 3
    gate_names = ("r", "z", "n")
    has_recurrent_bias = True
    default_init = {**_Recurrent.default_init, "recurrent_bias": "zero"}

    def _run(self, x_steps, z):
        w_h, phi, u = self.params["recurrent_weights"], self.activation, self.units
        b_hn = self.params.get("recurrent_bias")
        steps, batch, _ = z.shape
        gates = np.empty_like(z)
        hidden = np.empty((steps, batch, u), dtype=z.dtype)
        reset_hidden = np.empty_like(hidden)                # m_t = h_{t-1} W_hn + b_hn
        for t in range(steps):
            zt, gt, m = z[t], gates[t], reset_hidden[t]
            if t:
                zh = hidden[t - 1] @ w_h
                zt[:, :2 * u] += zh[:, :2 * u]
                m[...] = zh[:, 2 * u:]
            else:
                m[...] = 0.0
            if b_hn is not None:
                m += b_hn
            gt[:, :2 * u] = _SIGMOID.forward(zt[:, :2 * u])   # r, z
            r, update = gt[:, :u], gt[:, u:2 * u]
            zt[:, 2 * u:] += r * m
            n = gt[:, 2 * u:]
            n[...] = phi.forward(zt[:, 2 * u:])
            if t:
                hidden[t] = n + update * (hidden[t - 1] - n)  # (1 - z) n + z h_{t-1}
            else:
                hidden[t] = n - update * n
        return RecurrentCache(self.gate_names, x_steps, z, gates, hidden, None, reset_hidden_steps=reset_hidden)

    def _bptt(self, cache, direct_at):
        w_h, phi, u = self.params["recurrent_weights"], self.activation, self.units
        z, gates, hidden, reset_hidden = cache.z_steps, cache.gate_steps, cache.hidden_steps, cache.reset_hidden_steps
        dzx = np.empty_like(z)
        dzh = np.empty_like(z)
        carried = self._start(cache)
        w_h_t = np.ascontiguousarray(w_h.T)        # a contiguous operand: the per-step product is faster
        for t in reversed(range(z.shape[0])):
            direct = direct_at(t)
            dh = carried if direct is None else carried + direct
            cache.hidden_grad_steps[t] = dh
            gt = gates[t]
            r, update, n = gt[:, :u], gt[:, u:2 * u], gt[:, 2 * u:]
            dan = phi.backward(z[t, :, 2 * u:], n, dh * (1.0 - update))
            h_prev_minus_n = hidden[t - 1] - n if t else -n
            dzx[t, :, :u] = _sigmoid_backward(r, dan * reset_hidden[t])
            dzx[t, :, u:2 * u] = _sigmoid_backward(update, dh * h_prev_minus_n)
            dzx[t, :, 2 * u:] = dan
            dzh[t, :, :2 * u] = dzx[t, :, :2 * u]
            np.multiply(dan, r, out=dzh[t, :, 2 * u:])
            if t:
                carried = dh * update + dzh[t] @ w_h_t
        return dzx, dzh




def normalize_config(kind: str, raw) -> dict:
    """Fill defaults and check a recurrent layer's configuration; ValueError names the valid choices.

    ``raw`` is the width (an int) or a mapping with ``units`` and optionally
    ``return_sequences`` (default True), ``activation`` (rnn only; default 'tanh'; a registered
    name or {name: {param: value}}; kept as given, canonicalised) and ``forget_bias`` (lstm
    only; default 1.0). Init keys (init, recurrent_init, bias_init, name, ...) are the spec's
    business, not this function's: passing them is an error.

    Returns {"units": int, "return_sequences": bool} plus "activation" (rnn) or "forget_bias" (lstm).
    """
    from initdiag.layers import LAYERS, lookup  # the kinds' declared options (declared below: imported late)

    key = lookup(kind)
    if not issubclass(LAYERS[key].cls, _Recurrent):
        recurrent = (name for name, declared in LAYERS.items() if issubclass(declared.cls, _Recurrent))
        raise ValueError(f"unknown recurrent layer {kind!r}; valid: {', '.join(recurrent)}")
    valid = tuple(option.name for option in LAYERS[key].options)
    if isinstance(raw, dict):
        config = dict(raw)
    elif isinstance(raw, Integral) and not isinstance(raw, bool):
        config = {"units": raw}
    else:
        raise ValueError(f"{key}: expected the number of units or a mapping with 'units', not {raw!r}")
    unknown = sorted(set(config) - set(valid), key=str)
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(valid)}")
    if "units" not in config:
        raise ValueError(f"{key}: missing 'units' (a positive integer)")
    units = config["units"]
    if isinstance(units, bool) or not isinstance(units, Integral) or units < 1:
        raise ValueError(f"{key}: units must be a positive integer, not {units!r}")
    result = {"units": int(units)}
    sequences = config.get("return_sequences", True)
    if not isinstance(sequences, (bool, np.bool_)):
        raise ValueError(f"{key}: return_sequences must be true or false, not {sequences!r}")
    result["return_sequences"] = bool(sequences)
    if key == "rnn":
        value = config.get("activation", "tanh")
        try:
            act = _activation_of(value)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"rnn: bad activation {value!r} ({err}); valid: {', '.join(activations.ACTIVATIONS)}") from None
        result["activation"] = act.written()
    if key == "lstm":
        bias = config.get("forget_bias", 1.0)
        if isinstance(bias, bool) or not isinstance(bias, Real) or not math.isfinite(bias):
            raise ValueError(f"lstm: forget_bias must be a finite number (Keras' unit_forget_bias is 1.0, "
                             f"PyTorch has none: 0), not {bias!r}")
        result["forget_bias"] = float(bias)
    return result


def _build(spec, weights, bias, activation, context):
    kind = _BY_KIND[spec.kind]
    layer = kind.from_config(spec.name, weights, spec.config)
    return params_layer(layer, kind.fans(spec.input_shape, spec.config), kind)


def _weights(kind_class):
    def weights(input_shape, config) -> dict:
        fans = kind_class.fans(input_shape, config)
        return {name: Weight(tuple(shape), "recurrent" if name == "recurrent_weights" else "dense", tuple(shape))
                for name, shape in fans.items()}
    return weights


def _cache_elements(layer, batch: int) -> int:
    """What the forward cache keeps beyond the output (the estimate counts the output, the parameters at their
    shapes, and the backward as one gradient per kept element itself: network.estimate_memory)."""
    return _BY_KIND[layer.kind].kept_elements(batch, layer.input_shape, layer.config)


def _torch(module_name: str):
    def make(input_shape, config):
        import torch

        module = getattr(torch.nn, module_name)(input_shape[1], config["units"], batch_first=True)
        return module, {"input_weights": "weight_ih_l0", "recurrent_weights": "weight_hh_l0"}
    return make


_UNITS = Option("units", "int", "the hidden width (also as the bare value: lstm: 64)", required=True, minimum=1)
_SEQUENCES = Option("return_sequences", "bool", "output every step, or only the last", default=True)
_BY_KIND = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def _kind(kind_class, summary: str, options: tuple, example: tuple, **facts) -> LayerKind:
    return LayerKind(
        kind_class.kind, kind_class, summary, options=(_UNITS, _SEQUENCES) + options,
        parse=checked(lambda raw: normalize_config(kind_class.kind, raw)),
        takes=("name", "init", "recurrent_init", "bias_init", "ignore"), build=_build, example=example,
        torch=_torch(kind_class.__name__), weights=_weights(kind_class), bare="units", unit_axis=-1, layout=SEQUENCE,
        params_dict=True, inner_activation="tanh", cache_elements=_cache_elements,
        memory_doc="every step's input, gates and hidden (and cell) states, and their gradients",
        saturation_doc="the cell activation's rule on its pre-activations", **facts)


KINDS = (
    _kind(RNN, "an Elman RNN, h_t = φ(x_t W_x + h_{t-1} W_h + b)",
          (Option("activation", "activation", "the cell's nonlinearity", default="tanh"),), ((4, 3), {"units": 5}),
          aliases=("simple_rnn", "simplernn", "elman")),
    _kind(LSTM, "an LSTM (PyTorch's gates i, f, g, o), with a forget-gate bias",
          (Option("forget_bias", "number", "added to the forget gate's bias (PyTorch has none: 0)", default=1.0),),
          ((4, 3), {"units": 3, "return_sequences": False})),
    _kind(GRU, "a GRU (PyTorch's gates r, z, n; reset after the recurrent product)", (), ((3, 2), 4)),
)
