"""Batch norm, layer norm, dropout and embedding: forward and backward against PyTorch and central
finite differences, dropout statistics and reproducibility, fans, configuration and dtypes.

Torch tests skip where torch is not installed; finite differences, dropout statistics and
fans by formula run without it. Float64 wherever values are compared, so agreement is to
rounding.
"""

import math

import numpy as np
from gradcheck import FD_TOL, assert_layer_gradients, numeric_gradient
import pytest

from initdiag.layers import normalize_config
from initdiag.layers.dropout import Dropout
from initdiag.layers.embedding import Embedding, token_batch
from initdiag.layers.norm import BatchNorm, LayerNorm
from initdiag.schemes import Fans


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


TORCH_TOL = {"rtol": 1e-10, "atol": 1e-12}


def random_affine(features, rng):
    return {"gamma": rng.uniform(0.5, 1.5, features), "beta": rng.uniform(-0.5, 0.5, features)}


# --- batch norm ---------------------------------------------------------------------------------

BN_SHAPES = {"features": (6, 4), "channels-length": (3, 4, 5), "channels-hw": (3, 2, 4, 3)}


def _torch_batchnorm(torch, layer, x_shape):
    cls = torch.nn.BatchNorm2d if len(x_shape) == 4 else torch.nn.BatchNorm1d
    module = cls(layer.channels, eps=layer.eps, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(layer.params["gamma"]))
        module.bias.copy_(torch.tensor(layer.params["beta"]))
        module.running_mean.copy_(torch.tensor(layer.running_mean))
        module.running_var.copy_(torch.tensor(layer.running_var))
    module.train(not layer.eval)
    return module


@pytest.mark.parametrize("shape", BN_SHAPES.values(), ids=BN_SHAPES.keys())
@pytest.mark.parametrize("mode", ["train", "eval-initial", "eval-running"])
def test_batchnorm_matches_torch(torch, shape, mode):
    rng = np.random.default_rng(1)
    c = shape[1]
    running = {}
    if mode == "eval-running":
        running = {"running_mean": rng.standard_normal(c), "running_var": rng.uniform(0.5, 2.0, c)}
    layer = BatchNorm("bn", random_affine(c, rng), eval=mode != "train", **running)
    module = _torch_batchnorm(torch, layer, shape)
    x = rng.standard_normal(shape) * 2 + 0.5
    y, cache = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)
    np.testing.assert_allclose(grads["gamma"], module.weight.grad.numpy(), **TORCH_TOL)
    np.testing.assert_allclose(grads["beta"], module.bias.grad.numpy(), **TORCH_TOL)
    if mode == "train":  # what one PyTorch training step stores (unbiased variance, momentum 0.1)
        mean, var = layer.running_update(cache)
        np.testing.assert_allclose(mean, module.running_mean.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(var, module.running_var.numpy(), rtol=1e-12)
        np.testing.assert_array_equal(layer.running_mean, np.zeros(c))  # forward itself changed nothing


def test_batchnorm_eval_initial_is_a_rescaling():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 4))
    y, cache = BatchNorm("bn", BatchNorm.default_params((3, 4)), eval=True).forward(x)
    np.testing.assert_allclose(y, x / math.sqrt(1 + 1e-5), rtol=1e-15)


def test_batchnorm_train_normalises_per_channel():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3, 5, 5)) * np.array([1.0, 5.0, 0.1])[:, None, None] + 7
    y, cache = BatchNorm("bn", BatchNorm.default_params((3, 5, 5))).forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    # biased variance: var(y) = var/(var + eps) exactly
    var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), var / (var + 1e-5), rtol=1e-12)
    assert cache.z.shape == y.shape


@pytest.mark.parametrize("shape", BN_SHAPES.values(), ids=BN_SHAPES.keys())
@pytest.mark.parametrize("eval_mode", [False, True], ids=["train", "eval"])
def test_batchnorm_backward_matches_finite_differences(shape, eval_mode):
    rng = np.random.default_rng(4)
    c = shape[1]
    layer = BatchNorm("bn", random_affine(c, rng), eval=eval_mode,
                      running_mean=rng.standard_normal(c), running_var=rng.uniform(0.5, 2, c))
    x = rng.standard_normal(shape)
    grads = assert_layer_gradients(layer, x, rng, ("gamma", "beta"))
    assert set(grads) == {"gamma", "beta"}


def test_batchnorm_training_needs_more_than_one_value_per_channel():
    layer = BatchNorm("bn", BatchNorm.default_params((3,)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer.forward(np.ones((1, 3)))
    y, _ = BatchNorm("bn", BatchNorm.default_params((3,)), eval=True).forward(np.ones((1, 3)))
    assert y.shape == (1, 3)


def test_batchnorm_shape_errors():
    layer = BatchNorm("bn", BatchNorm.default_params((3,)))
    with pytest.raises(ValueError, match="expects input"):
        layer.forward(np.ones((4, 5)))
    with pytest.raises(ValueError, match="per-sample input"):
        BatchNorm.output_shape((2, 3, 4, 5))


# --- layer norm ---------------------------------------------------------------------------------

LN_SHAPES = {"features": (4, 6), "sequence": (3, 5, 4)}


@pytest.mark.parametrize("shape", LN_SHAPES.values(), ids=LN_SHAPES.keys())
def test_layernorm_matches_torch(torch, shape):
    rng = np.random.default_rng(5)
    f = shape[-1]
    layer = LayerNorm("ln", random_affine(f, rng))
    module = torch.nn.LayerNorm(f, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(layer.params["gamma"]))
        module.bias.copy_(torch.tensor(layer.params["beta"]))
    x = rng.standard_normal(shape) * 3 - 1
    y, cache = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)
    np.testing.assert_allclose(grads["gamma"], module.weight.grad.numpy(), **TORCH_TOL)
    np.testing.assert_allclose(grads["beta"], module.bias.grad.numpy(), **TORCH_TOL)


@pytest.mark.parametrize("shape", LN_SHAPES.values(), ids=LN_SHAPES.keys())
def test_layernorm_backward_matches_finite_differences(shape):
    rng = np.random.default_rng(6)
    layer = LayerNorm("ln", random_affine(shape[-1], rng))
    x = rng.standard_normal(shape)
    assert_layer_gradients(layer, x, rng, ("gamma", "beta"))


def test_layernorm_normalises_each_position():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 8)) * 4 + 2
    y, cache = LayerNorm("ln", LayerNorm.default_params((3, 8))).forward(x)
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-12)
    var = x.var(axis=-1)
    np.testing.assert_allclose(y.var(axis=-1), var / (var + 1e-5), rtol=1e-12)
    np.testing.assert_array_equal(cache.z, y)  # gamma 1, beta 0: y is the normalised value


# --- dtypes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("param_dtype", [np.float32, np.float64])
def test_norms_keep_float32(param_dtype):
    rng = np.random.default_rng(8)
    for layer, shape in ((BatchNorm("bn", BatchNorm.default_params((3, 4), dtype=param_dtype)), (5, 3, 4)),
                         (BatchNorm("bn", BatchNorm.default_params((3,), dtype=param_dtype), eval=True), (5, 3)),
                         (LayerNorm("ln", LayerNorm.default_params((4, 6), dtype=param_dtype)), (5, 4, 6))):
        x = rng.standard_normal(shape).astype(np.float32)
        y, cache = layer.forward(x)
        assert y.dtype == cache.z.dtype == np.float32
        dx, grads = layer.backward(np.ones_like(y), cache)
        assert dx.dtype == np.float32
        assert all(grads[k].dtype == np.dtype(param_dtype) for k in grads)
    d = Dropout("d", 0.3, rng=np.random.default_rng(0))
    y, cache = d.forward(np.ones((10, 10), dtype=np.float32))
    assert y.dtype == np.float32 and d.backward(np.ones_like(y), cache)[0].dtype == np.float32
    emb = Embedding("e", {"weights": rng.standard_normal((7, 3)).astype(np.float32)})
    y, cache = emb.forward(token_batch(rng, 2, 4, 7))
    assert y.dtype == np.float32 and emb.backward(np.ones_like(y), cache)[1]["weights"].dtype == np.float32


# --- dropout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_the_right_fraction_and_scales(p):
    n = 400 * 500
    layer = Dropout("d", p, rng=np.random.default_rng(9))
    x = np.ones((400, 500))
    y, cache = layer.forward(x)
    kept = np.count_nonzero(y) / n
    # binomial: the kept fraction has standard error sqrt(p(1-p)/n) (~1e-3 here); 5 SE is a
    # one-in-a-million false alarm, and the seed is fixed anyway
    se = math.sqrt(p * (1 - p) / n)
    assert abs(kept - (1 - p)) < 5 * se
    assert layer.kept_fraction(cache) == kept
    # every kept unit is scaled by exactly 1/(1-p), so E[y] = x: the mean is kept/(1-p)
    np.testing.assert_allclose(np.unique(y), [0.0, 1.0 / (1 - p)], rtol=1e-15)
    assert abs(y.mean() - 1.0) < 5 * se / (1 - p)


def test_dropout_same_seed_same_mask_and_backward_uses_it():
    x = np.random.default_rng(10).standard_normal((6, 7, 8))
    y1, c1 = Dropout("d", 0.4, rng=np.random.default_rng(123)).forward(x)
    y2, c2 = Dropout("d", 0.4, rng=np.random.default_rng(123)).forward(x)
    y3, c3 = Dropout("d", 0.4, rng=np.random.default_rng(124)).forward(x)
    np.testing.assert_array_equal(c1.mask, c2.mask)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(c1.mask, c3.mask)
    layer = Dropout("d", 0.4, rng=np.random.default_rng(123))
    y, cache = layer.forward(x)
    dy = np.random.default_rng(11).standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    assert grads == {}
    np.testing.assert_allclose(dx, np.where(c1.mask, dy / 0.6, 0.0), rtol=1e-15)
    # y is linear in x with the mask fixed: dx is exactly the Jacobian-vector product
    np.testing.assert_allclose(np.sum(dx * x), np.sum(dy * y), rtol=1e-12)


def test_dropout_eval_and_edge_probabilities():
    x = np.random.default_rng(12).standard_normal((4, 5))
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    y, cache = Dropout("d", 0.5, rng=rng, eval=True).forward(x)
    assert y is x and cache.mask is None
    assert rng.bit_generator.state == state  # eval draws nothing
    assert Dropout("d", 0.5, rng=rng, eval=True).backward(x, cache)[0] is x
    y, _ = Dropout("d", 0.0, rng=rng).forward(x)
    assert y is x
    y, cache = Dropout("d", 1.0, rng=rng).forward(x)
    np.testing.assert_array_equal(y, 0)
    np.testing.assert_array_equal(Dropout("d", 1.0).backward(x, cache)[0], 0)
    with pytest.raises(ValueError, match="Generator"):
        Dropout("d", 0.5)
    with pytest.raises(ValueError, match="probability"):
        Dropout("d", 1.5, rng=rng)


# --- embedding ----------------------------------------------------------------------------------

def test_token_batch():
    tokens = token_batch(np.random.default_rng(13), 200, 50, 10)
    assert tokens.shape == (200, 50) and tokens.dtype.kind == "i"
    assert tokens.min() == 0 and tokens.max() == 9
    counts = np.bincount(tokens.ravel(), minlength=10)
    # uniform: each count ~ Binomial(10000, 0.1), sd 30
    assert np.all(np.abs(counts - 1000) < 5 * 30)
    np.testing.assert_array_equal(tokens, token_batch(np.random.default_rng(13), 200, 50, 10))


def test_embedding_matches_torch(torch):
    rng = np.random.default_rng(14)
    vocab, dim = 6, 4
    layer = Embedding("e", {"weights": rng.standard_normal((vocab, dim))})
    module = torch.nn.Embedding(vocab, dim, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(layer.params["weights"]))
    x = token_batch(rng, 5, 7, vocab)  # 35 tokens out of 6: many repeats
    y, cache = layer.forward(x)
    ty = module(torch.tensor(x))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    (ty * torch.tensor(dy)).sum().backward()
    assert dx is None
    np.testing.assert_allclose(grads["weights"], module.weight.grad.numpy(), **TORCH_TOL)


def test_embedding_backward_matches_finite_differences():
    rng = np.random.default_rng(15)
    layer = Embedding("e", {"weights": rng.standard_normal((5, 3))})
    x = np.array([[0, 1, 1, 3], [3, 3, 0, 1]])  # token 2 and 4 unused: zero rows
    y, cache = layer.forward(x)
    target = rng.standard_normal(y.shape)
    _, grads = layer.backward(target, cache)

    def loss():
        return float(np.sum(layer.forward(x)[0] * target))

    np.testing.assert_allclose(grads["weights"], numeric_gradient(loss, layer.params["weights"]), **FD_TOL)
    np.testing.assert_array_equal(grads["weights"][[2, 4]], 0)
    np.testing.assert_allclose(grads["weights"][3], target[0, 3] + target[1, 0] + target[1, 1], rtol=1e-15)


def test_embedding_input_errors():
    layer = Embedding("e", {"weights": np.zeros((5, 3))})
    with pytest.raises(ValueError, match="integer"):
        layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        layer.forward(np.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        layer.forward(np.array([[-1, 2]]))


# --- fans ---------------------------------------------------------------------------------------

def test_embedding_fans_by_formula():
    # torch reads nn.Embedding.weight (vocab, dim) as a Linear's (out, in): fan_in = dim, fan_out = vocab,
    # the transpose of the table's (rows, cols)
    assert Embedding.fans((7,), {"vocab": 100, "dim": 16}) == {"weights": Fans(16, 100)}
    assert Embedding.parameter_shapes((7,), {"vocab": 100, "dim": 16}) == {"weights": (100, 16)}


def test_embedding_fans_match_torch(torch):
    vocab, dim = 100, 16
    weight = torch.nn.Embedding(vocab, dim).weight
    assert tuple(weight.shape) == (vocab, dim)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(weight)
    assert Embedding.fans((7,), {"vocab": vocab, "dim": dim})["weights"] == (fan_in, fan_out) == (dim, vocab)


def test_norm_layers_have_no_fans():
    for cls, shape in ((BatchNorm, (3, 4, 4)), (LayerNorm, (5, 8)), (Dropout, (4,))):
        assert cls.fans(shape, normalize_config(cls.kind, None)) == {}


def test_torch_has_no_fans_for_gamma(torch):
    with pytest.raises(ValueError):  # torch cannot compute fans of gamma/beta either
        torch.nn.init._calculate_fan_in_and_fan_out(torch.nn.BatchNorm1d(3).weight)


# --- configuration and shapes -------------------------------------------------------------------

def test_normalize_config_defaults_and_errors():
    assert normalize_config("batchnorm", None) == {"eps": 1e-5, "eval": False}
    assert normalize_config("BatchNorm2d", {"eval": True}) == {"eps": 1e-5, "eval": True}
    assert normalize_config("layer_norm", {"eps": 1e-6}) == {"eps": 1e-6, "over": "last"}
    assert normalize_config("dropout", None) == {"p": 0.5, "eval": False}
    assert normalize_config("dropout", 0.2) == {"p": 0.2, "eval": False}
    assert normalize_config("embedding", {"vocab": 10, "dim": 4}) == {"vocab": 10, "dim": 4}
    with pytest.raises(ValueError, match="unknown layer kind 'groupnorm'"):
        normalize_config("groupnorm", None)
    with pytest.raises(ValueError, match="valid options: eps, eval"):
        normalize_config("batchnorm", {"momentum": 0.1})
    with pytest.raises(ValueError, match="needs vocab and dim"):
        normalize_config("embedding", {})
    with pytest.raises(ValueError, match="positive integer"):
        normalize_config("embedding", {"vocab": 0, "dim": 4})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        normalize_config("dropout", {"p": -0.1})
    with pytest.raises(ValueError, match="eps"):
        normalize_config("layernorm", {"eps": 0})
    with pytest.raises(ValueError, match="true or false"):
        normalize_config("batchnorm", {"eval": "yes"})


def test_shapes_and_registry():
    assert BatchNorm.output_shape((3, 5, 5)) == (3, 5, 5)
    assert BatchNorm.parameter_shapes((3, 5, 5)) == {"gamma": (3,), "beta": (3,)}
    assert LayerNorm.parameter_shapes((7, 8)) == {"gamma": (8,), "beta": (8,)}
    assert Dropout.output_shape((7, 8)) == (7, 8) and Dropout.parameter_shapes((7, 8)) == {}
    assert Embedding.output_shape((7,), {"vocab": 10, "dim": 4}) == (7, 4)
    with pytest.raises(ValueError, match=r"\(steps,\)"):
        Embedding.output_shape((7, 3), {"vocab": 10, "dim": 4})
    layer = BatchNorm.from_config("bn", None, {}, input_shape=(4, 6))
    np.testing.assert_array_equal(layer.params["gamma"], np.ones(4))
    np.testing.assert_array_equal(layer.params["beta"], np.zeros(4))
    d = Dropout.from_config("d", {}, 0.25, rng=np.random.default_rng(0))
    assert d.p == 0.25
    with pytest.raises(ValueError, match="config is vocab=10"):
        Embedding.from_config("e", {"weights": np.zeros((9, 4))}, {"vocab": 10, "dim": 4})
