"""Recurrent layers: forward and backward against PyTorch and finite differences, gradients
through time, the physics of recurrent initialisation, dtypes, fans and configuration.

Torch tests skip where torch is not installed; everything else (finite differences, physics,
fans by formula) runs without it. Float64 wherever values are compared, so agreement is to
rounding.
"""

import math

import numpy as np
from gradcheck import numeric_gradient
import pytest

from initdiag import schemes
from initdiag.layers.recurrent import GRU, LSTM, RNN, normalize_config

RECURRENT_LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}

KINDS = ("rnn", "lstm", "gru")
K = {"rnn": 1, "lstm": 4, "gru": 3}


def random_params(kind, features, units, rng, dtype=np.float64, scale=0.5):
    """Random parameters of every kind (biases and the GRU's recurrent bias nonzero, so each term is exercised)."""
    k = K[kind]
    params = {
        "input_weights": rng.uniform(-scale, scale, (features, k * units)),
        "recurrent_weights": rng.uniform(-scale, scale, (units, k * units)),
        "bias": rng.uniform(-scale, scale, k * units),
    }
    if kind == "gru":
        params["recurrent_bias"] = rng.uniform(-scale, scale, units)
    return {name: value.astype(dtype) for name, value in params.items()}


def make_layer(kind, params, return_sequences=True, activation=None, **extra):
    if kind == "lstm":
        extra.setdefault("forget_bias", 0.0)  # the tests' biases are taken as given
    return RECURRENT_LAYERS[kind]("layer", params, activation=activation, return_sequences=return_sequences, **extra)


def draw(scheme, params, rng, shape, dtype=np.float64):
    definition = schemes.lookup(scheme)
    return schemes.initial_weights(definition, {**definition.params, **params}, rng, shape, dtype)


# --- PyTorch ---------------------------------------------------------------------------------

def _torch_modules(layer):
    """nn.RNN/LSTM/GRU and the matching *Cell, float64, holding our layer's parameters.

    Our layout is the transpose of torch's. Our single bias goes to bias_ih, bias_hh is zero,
    except the GRU's n block of bias_hh, which is our recurrent_bias (b_hn, inside r * (...)).
    """
    torch = pytest.importorskip("torch")
    features, units = layer.features, layer.units
    kw = {"dtype": torch.float64}
    if layer.kind == "rnn":
        module = torch.nn.RNN(features, units, batch_first=True, nonlinearity=layer.activation.name, **kw)
        cell = torch.nn.RNNCell(features, units, nonlinearity=layer.activation.name, **kw)
    else:
        module = getattr(torch.nn, layer.kind.upper())(features, units, batch_first=True, **kw)
        cell = getattr(torch.nn, layer.kind.upper() + "Cell")(features, units, **kw)
    p = layer.params
    bias_hh = np.zeros(K[layer.kind] * units)
    if "recurrent_bias" in p:
        bias_hh[2 * units:] = p["recurrent_bias"]
    values = {"weight_ih": p["input_weights"].T, "weight_hh": p["recurrent_weights"].T,
              "bias_ih": p["bias"], "bias_hh": bias_hh}
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name + "_l0").copy_(torch.tensor(np.ascontiguousarray(value)))
            getattr(cell, name).copy_(torch.tensor(np.ascontiguousarray(value)))
    return torch, module, cell


def _torch_steps(torch, layer, cell, x):
    """Run the cell step by step; every h_t keeps its grad, the total dLoss/dh_t."""
    batch = x.shape[0]
    h = torch.zeros(batch, layer.units, dtype=torch.float64)
    c = torch.zeros_like(h)
    hs = []
    for t in range(x.shape[1]):
        if layer.kind == "lstm":
            h, c = cell(x[:, t], (h, c))
        else:
            h = cell(x[:, t], h)
        h.retain_grad()
        hs.append(h)
    return hs


CASES = [(kind, seq) for kind in KINDS for seq in (True, False)] + [("rnn-relu", True)]


def _case(case):
    kind, seq = case
    return ("rnn", seq, "relu") if kind == "rnn-relu" else (kind, seq, None)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'seq' if c[1] else 'last'}")
def test_forward_and_backward_match_torch(case):
    kind, seq, activation = _case(case)
    rng = np.random.default_rng(11)
    batch, steps, features, units = 4, 6, 5, 7
    layer = make_layer(kind, random_params(kind, features, units, rng), seq, activation)
    torch, module, _ = _torch_modules(layer)
    x = rng.standard_normal((batch, steps, features))
    y, cache = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)

    tx = torch.tensor(x, requires_grad=True)
    out, state = module(tx)
    h_n = state[0] if kind == "lstm" else state
    ty = out if seq else out[:, -1]
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cache.hidden[:, -1], h_n[0].detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cache.hidden, out.detach().numpy(), rtol=1e-12, atol=1e-13)
    if kind == "lstm":
        np.testing.assert_allclose(cache.cell[:, -1], state[1][0].detach().numpy(), rtol=1e-12, atol=1e-13)

    (ty * torch.tensor(dy)).sum().backward()
    grad = lambda name: getattr(module, name + "_l0").grad.numpy()  # noqa: E731
    tol = {"rtol": 1e-10, "atol": 1e-12}
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(grads["input_weights"], grad("weight_ih").T, **tol)
    np.testing.assert_allclose(grads["recurrent_weights"], grad("weight_hh").T, **tol)
    np.testing.assert_allclose(grads["bias"], grad("bias_ih"), **tol)
    if kind == "gru":
        # b_hr, b_hz are added like b_ir, b_iz: equal gradients; b_hn is ours, inside r * (...)
        np.testing.assert_allclose(grads["bias"][:2 * units], grad("bias_hh")[:2 * units], **tol)
        np.testing.assert_allclose(grads["recurrent_bias"], grad("bias_hh")[2 * units:], **tol)
    else:
        np.testing.assert_allclose(grads["bias"], grad("bias_hh"), **tol)
    assert set(grads) == set(layer.params)


@pytest.mark.parametrize("case", CASES[:-1], ids=lambda c: f"{c[0]}-{'seq' if c[1] else 'last'}")
def test_hidden_state_gradients_per_step_match_autograd(case):
    kind, seq, activation = _case(case)
    rng = np.random.default_rng(12)
    batch, steps, features, units = 3, 8, 4, 5
    layer = make_layer(kind, random_params(kind, features, units, rng), seq, activation)
    torch, module, cell = _torch_modules(layer)
    x = rng.standard_normal((batch, steps, features))
    y, cache = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    layer.backward(dy, cache, need_dx=False)

    hs = _torch_steps(torch, layer, cell, torch.tensor(x))
    # The step-by-step cell is the same network as the fused module.
    np.testing.assert_allclose(torch.stack(hs, 1).detach().numpy(), module(torch.tensor(x))[0].detach().numpy(),
                               rtol=1e-12, atol=1e-13)
    ty = torch.stack(hs, 1) if seq else hs[-1]
    (ty * torch.tensor(dy)).sum().backward()
    expected = np.stack([h.grad.numpy() for h in hs], axis=1)
    assert cache.hidden_grad.shape == (batch, steps, units)
    np.testing.assert_allclose(cache.hidden_grad, expected, rtol=1e-10, atol=1e-12)
    assert cache.grad_var_first_step == pytest.approx(expected[:, 0].var(), rel=1e-10)
    assert cache.grad_var_last_step == pytest.approx(expected[:, -1].var(), rel=1e-10)
    if not seq:
        np.testing.assert_array_equal(cache.hidden_grad[:, -1], dy)  # nothing arrives from later steps


# --- finite differences, no torch ----------------------------------------------------------

FD_CASES = [(kind, seq, None) for kind in KINDS for seq in (True, False)] + [
    ("rnn", True, "gelu"), ("rnn", False, "softsign"), ("lstm", True, "softsign"), ("gru", False, "swish"),
]


@pytest.mark.parametrize("kind, seq, activation", FD_CASES)
def test_backward_matches_central_finite_differences(kind, seq, activation):
    rng = np.random.default_rng(5)
    batch, steps, features, units = 3, 5, 3, 4
    layer = make_layer(kind, random_params(kind, features, units, rng), seq, activation, **(
        {"forget_bias": 1.0} if kind == "lstm" else {}))
    x = rng.standard_normal((batch, steps, features))
    y, cache = layer.forward(x)
    target = rng.standard_normal(y.shape)
    dx, grads = layer.backward(target, cache)  # loss = sum(y * target), so dLoss/dy = target

    def loss():
        return float(np.sum(layer.forward(x)[0] * target))

    # Central differences: truncation h²·|L'''|/6 ≈ 1e-13 and rounding ε·|L|/h ≈ 2e-16·5/1e-6
    # ≈ 1e-9 absolute for this loss (|L| ≈ 5, a sum of ~60 O(1)-weighted outputs), so the
    # gradients, O(0.01-1), agree to rtol 1e-6 with atol 1e-8 covering the rounding floor.
    h = 1e-6

    def numeric(array):
        return numeric_gradient(loss, array, h)

    for name, param in layer.params.items():
        np.testing.assert_allclose(grads[name], numeric(param), rtol=1e-6, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(dx, numeric(x), rtol=1e-6, atol=1e-8, err_msg="dx")
    assert layer.backward(target, layer.forward(x)[1], need_dx=False)[0] is None


def test_single_step_and_shapes():
    rng = np.random.default_rng(0)
    for kind in KINDS:
        for seq in (True, False):
            layer = make_layer(kind, random_params(kind, 3, 4, rng), seq)
            x = rng.standard_normal((2, 1, 3))
            y, cache = layer.forward(x)
            assert y.shape == ((2, 1, 4) if seq else (2, 4))
            assert cache.z.shape == (2, 1, K[kind] * 4) and cache.hidden.shape == (2, 1, 4)
            dx, grads = layer.backward(np.ones_like(y), cache)
            assert dx.shape == x.shape
            assert not grads["recurrent_weights"].any()  # h_{-1} = 0: W_h never acts on a nonzero state
            assert {name: g.shape for name, g in grads.items()} == {name: p.shape for name, p in layer.params.items()}


# --- the physics of recurrent initialisation -------------------------------------------------

def _gradient_ratio(layer, rng, batch, steps, features):
    """Var(dLoss/dh_0) / Var(dLoss/dh_{T-1}) for a loss on the last hidden state only."""
    x = rng.standard_normal((batch, steps, features))
    y, cache = layer.forward(x)
    layer.backward(rng.standard_normal(y.shape), cache, need_dx=False)
    return cache.grad_var_first_step / cache.grad_var_last_step, cache


def test_forget_bias_one_keeps_lstm_gradients_through_50_steps():
    units, features, batch, steps = 32, 8, 64, 50
    ratios, forget = {}, {}
    for forget_bias in (1.0, 0.0):
        rng = np.random.default_rng(0)  # the same weights, inputs and dy for both
        params = {
            "input_weights": draw("xavier_uniform", {}, rng, (features, 4 * units)),
            "recurrent_weights": draw("orthogonal", {}, rng, (units, 4 * units)),
            "bias": np.zeros(4 * units),
        }
        layer = LSTM("lstm", params, return_sequences=False, forget_bias=forget_bias)
        ratios[forget_bias], cache = _gradient_ratio(layer, rng, batch, steps, features)
        forget[forget_bias] = cache.gate("f").mean()
    # The forget gate opens to σ(1) = 0.731 instead of σ(0) = 0.5 (a_f's spread is small and
    # symmetric, so the mean stays close: measured 0.725 and 0.4997).
    assert forget[1.0] == pytest.approx(0.731, abs=0.02)
    assert forget[0.0] == pytest.approx(0.5, abs=0.02)
    # The cell path multiplies dc by f at every step, so over 49 steps the variance ratio gains
    # about (0.73/0.5)^(2·49) ≈ 1e16 from the forget gate alone; the output gate and φ'(c) cost
    # both runs alike. Measured (seeds 0-4): 4e12-1.3e13. A margin of 1e6, half the orders of
    # magnitude measured, cannot be reached by seed noise (spread < 1 order).
    assert ratios[1.0] / ratios[0.0] > 1e6
    assert ratios[0.0] < 1e-18 < ratios[1.0]  # measured 3e-24 and 3.5e-11


def test_orthogonal_recurrent_weights_keep_tanh_rnn_gradients_far_better_than_small_normal():
    units, features, batch, steps = 64, 16, 64, 50
    observed, predicted = {}, {}
    for recurrent in ("orthogonal", "small"):
        rng = np.random.default_rng(0)
        input_weights = draw("xavier_uniform", {}, rng, (features, units))
        if recurrent == "orthogonal":
            w_h, gain = draw("orthogonal", {"gain": 1.0}, rng, (units, units)), 1.0
        else:
            w_h, gain = draw("normal", {"std": 0.01}, rng, (units, units)), units * 0.01**2
        layer = RNN("rnn", {"input_weights": input_weights, "recurrent_weights": w_h, "bias": np.zeros(units)},
                    return_sequences=False)
        ratio, cache = _gradient_ratio(layer, rng, batch, steps, features)
        observed[recurrent] = math.log10(ratio)
        # Backward, dh_{t-1} = (φ'(z_t) ⊙ dh_t) W_hᵀ. An orthogonal W_h preserves the norm exactly;
        # N(0, σ²) multiplies the mean square by units·σ² on average. So the log ratio should be
        # Σ_t log(gain · E[φ'(z_t)²]), with tanh' = 1 - h², over steps 1..T-1 (mean-field: φ'
        # independent of dh).
        slope = (1 - cache.hidden[:, 1:] ** 2) ** 2
        predicted[recurrent] = float(np.sum(np.log10(gain * slope.mean(axis=(0, 2)))))
    # Measured (seeds 0-4): orthogonal -13.6 to -13.9 decades (tanh' < 1 still costs ~0.28 per
    # step); N(0, 0.01²): -114 to -118 (units·σ² = 0.0064 per step on top).
    assert observed["orthogonal"] > -20
    assert observed["small"] < -80
    assert observed["orthogonal"] - observed["small"] > 60
    # Mean-field agreement: measured within 0.3 decades (orthogonal) and 3% (small normal, whose
    # norm gain per step fluctuates around units·σ²).
    assert observed["orthogonal"] == pytest.approx(predicted["orthogonal"], abs=1.0)
    assert observed["small"] == pytest.approx(predicted["small"], rel=0.1)


def test_default_recurrent_init_is_orthogonal_on_the_stacked_matrix():
    # Keras' Orthogonal on (units, 4·units): orthonormal rows, W_h W_hᵀ = I; no gate block alone is orthogonal.
    rng = np.random.default_rng(3)
    units = 6
    w_h = draw(LSTM.default_init["recurrent_weights"], {}, rng, (units, 4 * units))
    np.testing.assert_allclose(w_h @ w_h.T, np.eye(units), atol=1e-12)
    blocks = [w_h[:, k * units:(k + 1) * units] for k in range(4)]
    np.testing.assert_allclose(sum(b @ b.T for b in blocks), np.eye(units), atol=1e-12)
    assert not np.allclose(blocks[0] @ blocks[0].T, np.eye(units), atol=0.1)


# --- dtypes, parameters, configuration -------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq", [True, False])
def test_float32_stays_float32(kind, seq):
    rng = np.random.default_rng(2)
    layer = make_layer(kind, random_params(kind, 5, 6, rng, np.float32), seq,
                       **({"forget_bias": 1.0} if kind == "lstm" else {}))
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    y, cache = layer.forward(x)
    dy = np.ones_like(y)
    dx, grads = layer.backward(dy, cache)
    arrays = [y, cache.z, cache.hidden, cache.hidden_grad, dx, *grads.values(), *layer.params.values()]
    if kind != "rnn":
        arrays.append(cache.gates)
    assert all(a.dtype == np.float32 for a in arrays), [a.dtype for a in arrays]
    reference = make_layer(kind, {n: p.astype(np.float64) for n, p in layer.params.items()}, seq)
    np.testing.assert_allclose(y, reference.forward(x.astype(np.float64))[0], rtol=1e-5, atol=1e-6)


def test_forget_bias_is_added_to_a_copy_of_the_forget_block():
    rng = np.random.default_rng(4)
    params = random_params("lstm", 3, 5, rng)
    original = params["bias"].copy()
    layer = LSTM("l", params)  # default forget_bias 1.0
    np.testing.assert_array_equal(params["bias"], original)  # the caller's array is untouched
    expected = original.copy()
    expected[5:10] += 1.0
    np.testing.assert_array_equal(layer.params["bias"], expected)
    no_bias = {k: v for k, v in params.items() if k != "bias"}
    with pytest.raises(ValueError, match="forget_bias"):
        LSTM("l", no_bias)
    assert "bias" not in LSTM("l", no_bias, forget_bias=0).params


def test_layers_without_bias():
    rng = np.random.default_rng(6)
    for kind in KINDS:
        params = {k: v for k, v in random_params(kind, 3, 4, rng).items() if k not in ("bias", "recurrent_bias")}
        layer = make_layer(kind, params, True)
        y, cache = layer.forward(rng.standard_normal((2, 3, 3)))
        _, grads = layer.backward(np.ones_like(y), cache)
        assert set(grads) == {"input_weights", "recurrent_weights"}


def test_bad_parameters_are_refused():
    rng = np.random.default_rng(7)
    params = random_params("lstm", 3, 4, rng)
    with pytest.raises(ValueError, match="recurrent_weights"):
        LSTM("l", {**params, "recurrent_weights": np.zeros((4, 12))})
    with pytest.raises(ValueError, match="bias"):
        LSTM("l", {**params, "bias": np.zeros(15)})
    with pytest.raises(ValueError, match="recurrent_bias"):
        LSTM("l", {**params, "recurrent_bias": np.zeros(4)})  # only the GRU has one
    with pytest.raises(ValueError, match="dtype"):
        LSTM("l", {**params, "bias": params["bias"].astype(np.float32)})
    layer = LSTM("l", params)
    with pytest.raises(ValueError, match="expects input"):
        layer.forward(np.zeros((2, 3, 4)))


FANS_INPUT = (9, 5)  # (steps, features)


@pytest.mark.parametrize("kind", KINDS)
def test_fans_and_shapes_by_formula(kind):
    k, units, features = K[kind], 7, FANS_INPUT[1]
    cls = RECURRENT_LAYERS[kind]
    fans = cls.fans(FANS_INPUT, {"units": units})
    # torch: weight_ih (k·units, features) -> fan_in = features, fan_out = k·units;
    #        weight_hh (k·units, units)    -> fan_in = units,    fan_out = k·units.
    assert fans == {"input_weights": (features, k * units), "recurrent_weights": (units, k * units)}
    shapes = cls.parameter_shapes(FANS_INPUT, units)
    expected = {"input_weights": (features, k * units), "recurrent_weights": (units, k * units), "bias": (k * units,)}
    if kind == "gru":
        expected["recurrent_bias"] = (units,)
    assert shapes == expected
    assert cls.output_shape(FANS_INPUT, units) == (9, units)
    assert cls.output_shape(FANS_INPUT, {"units": units, "return_sequences": False}) == (units,)
    # fans are what schemes.initial_weights uses on the shape (our layout's rows, cols)
    for name, shape in cls.fans(FANS_INPUT, units).items():
        assert schemes.Fans(*shapes[name]) == schemes.Fans(*shape)


@pytest.mark.parametrize("kind", KINDS)
def test_fans_match_torch(kind):
    torch = pytest.importorskip("torch")
    units = 7
    module = getattr(torch.nn, kind.upper())(FANS_INPUT[1], units)
    fan = torch.nn.init._calculate_fan_in_and_fan_out
    fans = RECURRENT_LAYERS[kind].fans(FANS_INPUT, {"units": units})
    assert fans["input_weights"] == fan(module.weight_ih_l0)
    assert fans["recurrent_weights"] == fan(module.weight_hh_l0)
    # and the parameter shapes are torch's, transposed
    shapes = RECURRENT_LAYERS[kind].parameter_shapes(FANS_INPUT, units)
    assert shapes["input_weights"] == tuple(module.weight_ih_l0.shape[::-1])
    assert shapes["recurrent_weights"] == tuple(module.weight_hh_l0.shape[::-1])
    assert shapes["bias"] == tuple(module.bias_ih_l0.shape)


def test_normalize_config_fills_defaults():
    assert normalize_config("rnn", 8) == {"units": 8, "return_sequences": True, "activation": "tanh"}
    assert normalize_config("LSTM", {"units": 8}) == {"units": 8, "return_sequences": True, "forget_bias": 1.0}
    assert normalize_config("gru", {"units": 8, "return_sequences": False}) == {"units": 8, "return_sequences": False}
    assert normalize_config("rnn", {"units": 2, "activation": "ReLU"})["activation"] == "relu"
    assert normalize_config("rnn", {"units": 2, "activation": {"leaky_relu": {"alpha": 0.2}}})["activation"] == {
        "leaky_relu": {"alpha": 0.2}}
    assert normalize_config("lstm", {"units": 2, "forget_bias": 0})["forget_bias"] == 0.0
    assert normalize_config("simple_rnn", 3)["units"] == 3


@pytest.mark.parametrize("kind, raw, message", [
    ("transformer", 8, "rnn, lstm, gru"),
    ("lstm", 0, "positive integer"),
    ("lstm", 2.5, "number of units"),
    ("lstm", True, "number of units"),
    ("lstm", {"units": 4, "activation": "relu"}, "valid: units, return_sequences, forget_bias"),
    ("gru", {"units": 4, "forget_bias": 1.0}, "valid: units, return_sequences"),
    ("gru", {"return_sequences": False}, "missing 'units'"),
    ("rnn", {"units": 4, "return_sequences": "yes"}, "true or false"),
    ("rnn", {"units": 4, "activation": "tanhh"}, "valid: identity, relu"),
    ("rnn", {"units": 4, "activation": {"elu": {"beta": 1}}}, "valid:"),
    ("lstm", {"units": 4, "forget_bias": float("nan")}, "finite number"),
    ("lstm", {"units": 4, "forget_bias": "one"}, "finite number"),
])
def test_normalize_config_rejects_bad_values(kind, raw, message):
    with pytest.raises(ValueError, match=message):
        normalize_config(kind, raw)


def test_from_config_builds_the_configured_layer():
    rng = np.random.default_rng(8)
    params = random_params("lstm", 3, 4, rng)
    layer = LSTM.from_config("l", params, {"units": 4, "return_sequences": False, "forget_bias": 0.5})
    assert not layer.return_sequences and layer.forget_bias == 0.5
    np.testing.assert_array_equal(layer.params["bias"][4:8], params["bias"][4:8] + 0.5)
    rnn = RNN.from_config("r", random_params("rnn", 3, 4, rng), {"units": 4, "activation": {"leaky_relu": {"alpha": 0.3}}})
    assert rnn.activation.name == "leaky_relu" and rnn.activation.alpha == 0.3
    with pytest.raises(ValueError, match="units"):
        GRU.from_config("g", random_params("gru", 3, 4, rng), {"units": 5})


@pytest.mark.parametrize("kind", KINDS)
def test_cache_elements_bounds_what_a_run_holds(kind):
    rng = np.random.default_rng(9)
    batch, steps, features, units = 6, 5, 3, 4
    for seq in (True, False):
        layer = make_layer(kind, random_params(kind, features, units, rng), seq)
        y, cache = layer.forward(rng.standard_normal((batch, steps, features)))
        dx, _ = layer.backward(np.ones_like(y), cache)
        held = [cache.x_steps, cache.z_steps, cache.gate_steps, cache.hidden_steps, cache.y, cache.cell_steps,
                cache.cell_act_steps, cache.reset_hidden_steps, cache.hidden_grad_steps, dx]
        held = sum(a.size for a in held if a is not None)
        estimate = RECURRENT_LAYERS[kind].cache_elements(batch, (steps, features), {"units": units, "return_sequences": seq})
        assert held <= estimate <= 2 * held


def test_saturation_and_gate_access():
    rng = np.random.default_rng(10)
    layer = make_layer("lstm", random_params("lstm", 3, 4, rng, scale=20.0), True)
    _, cache = layer.forward(rng.standard_normal((5, 6, 3)))
    saturation = layer.saturation(cache)
    assert set(saturation) == {"i", "f", "g", "o"} and all(0 <= v <= 1 for v in saturation.values())
    assert min(saturation.values()) > 0.5  # weights of scale 20 saturate every gate
    np.testing.assert_array_equal(cache.gate("f"), cache.gates[..., 4:8])
    with pytest.raises(KeyError):
        cache.gate("r")
    with pytest.raises(ValueError, match="backward"):
        cache.grad_var_first_step
    rnn = make_layer("rnn", random_params("rnn", 3, 4, rng), True)
    assert set(rnn.saturation(rnn.forward(rng.standard_normal((5, 6, 3)))[1])) == {"h"}


def _fading_lstm(dtype, rng, units=16, features=4):
    """An LSTM whose gradient fades by about 1/3 per step (small weights, no forget bias)."""
    params = random_params("lstm", features, units, rng, scale=0.1)
    return make_layer("lstm", {name: value.astype(dtype) for name, value in params.items()}, True)


@pytest.mark.parametrize("early_direct", [False, True])
def test_a_gradient_fading_below_float32s_range_keeps_its_statistics(early_direct):
    # Over 200 steps dLoss/dc falls to ~1e-55, far below float32's smallest subnormal (1.4e-45). The
    # backward pass carries it at a power-of-two scale (no subnormal arithmetic), so the float32 run's
    # per-step variances agree with float64's, where an unscaled float32 run would report 0 or the
    # subnormal floor. With early_direct, a gradient arriving at step 0 (next to a carried one 1e-60
    # of it) brings the scale back down.
    rng = np.random.default_rng(11)
    batch, steps = 8, 200
    layer64 = _fading_lstm(np.float64, rng)
    layer32 = make_layer("lstm", {n: p.astype(np.float32) for n, p in layer64.params.items()}, True)
    x = rng.standard_normal((batch, steps, 4))
    dy = np.zeros((batch, steps, 16))
    dy[:, -1] = rng.standard_normal((batch, 16))
    if early_direct:
        dy[:, 0] = rng.standard_normal((batch, 16))
    results = []
    for layer, dtype in ((layer64, np.float64), (layer32, np.float32)):
        y, cache = layer.forward(x.astype(dtype))
        dx, grads = layer.backward(dy.astype(dtype), cache)
        results.append((cache, dx, grads))
    (c64, dx64, g64), (c32, dx32, g32) = results
    by_step64, by_step32 = c64.hidden_grad_var_by_step(), c32.hidden_grad_var_by_step()
    assert by_step64[1] < 1e-100 and (early_direct or by_step64[0] < 1e-100)  # RMS below float32's subnormals
    np.testing.assert_allclose(by_step32, by_step64, rtol=1e-3)
    assert c32.grad_var_first_step == pytest.approx(c64.grad_var_first_step, rel=1e-3)
    assert c32.cell_grad_var_first_step == pytest.approx(c64.cell_grad_var_first_step, rel=1e-3)
    assert c32.grad_var_last_step == pytest.approx(c64.grad_var_last_step, rel=1e-5)
    for name in g64:
        np.testing.assert_allclose(g32[name], g64[name], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-6)
    if early_direct:
        np.testing.assert_allclose(c32.hidden_grad[:, 0], dy[:, 0], rtol=1e-6)
    assert c32.hidden_grad.dtype == np.float32
