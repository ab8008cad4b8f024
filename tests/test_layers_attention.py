"""Multi-head self-attention and the transformer block: forward and backward against PyTorch
(nn.MultiheadAttention, nn.TransformerEncoderLayer) and central finite differences, attention
saturation on constructed inputs, the heads check, fans, configuration and dtypes.

Torch tests skip where torch is not installed; the rest runs without it. Float64 wherever
values are compared, so agreement is to rounding.
"""

import math

import numpy as np
from gradcheck import assert_layer_gradients
import pytest

from initdiag.layers.attention import MultiHeadAttention, TransformerBlock, normalize_config
from initdiag.schemes import Fans


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


TORCH_TOL = {"rtol": 1e-10, "atol": 1e-12}


def random_params(shapes, rng, scale=0.5, dtype=np.float64):
    """Random values for every parameter (biases nonzero so each term is exercised; gammas around 1)."""
    out = {}
    for name, shape in shapes.items():
        value = rng.uniform(-scale, scale, shape)
        if name.endswith("gamma"):
            value += 1.0
        out[name] = value.astype(dtype)
    return out


def attention_layer(steps, features, dim, heads, rng, bias=True, **kw):
    shapes = MultiHeadAttention.parameter_shapes((steps, features), {"dim": dim, "heads": heads, "bias": bias})
    return MultiHeadAttention("mha", random_params(shapes, rng, **kw), heads)


def block(steps, dim, heads, ffn, rng, norm="pre", activation="gelu", bias=True):
    config = {"dim": dim, "heads": heads, "ffn": ffn, "norm": norm, "activation": activation, "bias": bias}
    params = random_params(TransformerBlock.parameter_shapes((steps, dim), config), rng)
    return TransformerBlock.from_config("block", params, config)


# --- PyTorch ------------------------------------------------------------------------------------

def _copy_attention(torch, module, params, prefix=""):
    """Our Q/K/V/output parameters into nn.MultiheadAttention: in_proj_weight packs [Wqᵀ; Wkᵀ; Wvᵀ] (3·dim, dim)."""
    p = lambda name: torch.tensor(np.ascontiguousarray(params[prefix + name]))  # noqa: E731
    with torch.no_grad():
        module.in_proj_weight.copy_(torch.cat([p(f"{n}_weights").T for n in ("query", "key", "value")]))
        module.out_proj.weight.copy_(p("output_weights").T)
        if module.in_proj_bias is not None:
            module.in_proj_bias.copy_(torch.cat([p(f"{n}_bias") for n in ("query", "key", "value")]))
            module.out_proj.bias.copy_(p("output_bias"))


def _attention_grads_from_torch(module):
    w, dim = module.in_proj_weight.grad.numpy(), module.embed_dim
    grads = {f"{n}_weights": w[i * dim:(i + 1) * dim].T for i, n in enumerate(("query", "key", "value"))}
    grads["output_weights"] = module.out_proj.weight.grad.numpy().T
    if module.in_proj_bias is not None:
        b = module.in_proj_bias.grad.numpy()
        grads.update({f"{n}_bias": b[i * dim:(i + 1) * dim] for i, n in enumerate(("query", "key", "value"))})
        grads["output_bias"] = module.out_proj.bias.grad.numpy()
    return grads


@pytest.mark.parametrize("dim, heads, bias", [(8, 2, True), (6, 1, True), (12, 4, False), (6, 6, True)])
def test_attention_matches_torch(torch, dim, heads, bias):
    rng = np.random.default_rng(1)
    batch, steps = 3, 5
    layer = attention_layer(steps, dim, dim, heads, rng, bias=bias, scale=0.7)
    module = torch.nn.MultiheadAttention(dim, heads, bias=bias, batch_first=True, dtype=torch.float64)
    _copy_attention(torch, module, layer.params)
    x = rng.standard_normal((batch, steps, dim))
    y, cache = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty, tweights = module(tx, tx, tx, need_weights=True, average_attn_weights=False)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cache.attention, tweights.detach().numpy(), rtol=1e-12, atol=1e-14)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)
    expected = _attention_grads_from_torch(module)
    assert set(grads) == set(expected) == set(layer.params)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, **TORCH_TOL, err_msg=name)


def test_causal_attention_matches_torch_with_a_causal_mask(torch):
    rng = np.random.default_rng(11)
    batch, steps, dim, heads = 2, 6, 8, 2
    shapes = MultiHeadAttention.parameter_shapes((steps, dim), {"dim": dim, "heads": heads})
    layer = MultiHeadAttention("mha", random_params(shapes, rng, scale=0.7), heads, causal=True)
    module = torch.nn.MultiheadAttention(dim, heads, batch_first=True, dtype=torch.float64)
    _copy_attention(torch, module, layer.params)
    x = rng.standard_normal((batch, steps, dim))
    y, cache = layer.forward(x)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(steps, dtype=torch.float64)
    tx = torch.tensor(x, requires_grad=True)
    ty, tweights = module(tx, tx, tx, attn_mask=mask, need_weights=True, average_attn_weights=False)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cache.attention, tweights.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert (np.triu(cache.attention[0, 0], 1) == 0).all() and cache.attention[..., 0, 0].min() == 1.0
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)
    for name, value in _attention_grads_from_torch(module).items():
        np.testing.assert_allclose(grads[name], value, **TORCH_TOL, err_msg=name)
    assert_layer_gradients(layer, x, rng)
    # the first query sees only itself: certain by construction, not saturated
    assert layer.saturation(cache) == MultiHeadAttention("mha", layer.params, heads).saturation(
        cache._replace(scores=cache.scores[..., 1:, :], attention=cache.attention[..., 1:, :]))


@pytest.mark.parametrize("features, dim, heads, bias", [(4, 4, 2, True), (3, 4, 2, True), (5, 6, 3, False)])
def test_attention_backward_matches_finite_differences(features, dim, heads, bias):
    rng = np.random.default_rng(2)
    layer = attention_layer(3, features, dim, heads, rng, bias=bias, scale=0.8)
    x = rng.standard_normal((2, 3, features))
    grads = assert_layer_gradients(layer, x, rng)
    assert set(grads) == set(layer.params)
    y, cache = layer.forward(x)
    upstream = rng.standard_normal(y.shape)
    full = layer.backward(upstream, cache)[1]
    no_dx, grads_only = layer.backward(upstream, cache, need_dx=False)
    assert no_dx is None and all(np.array_equal(grads_only[k], full[k]) for k in full)


# --- saturation ---------------------------------------------------------------------------------

def _one_hot_attention(c, heads):
    """dim 2, Q = K = c·x, V = x, output = identity, no biases: scores are known exactly."""
    eye = np.eye(2)
    return MultiHeadAttention("mha", {"query_weights": c * eye, "key_weights": c * eye,
                                      "value_weights": eye, "output_weights": eye}, heads)


def test_attention_saturation_on_constructed_inputs():
    x = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # tokens e1, e1, e2
    # one head (d = 2): scores c²/√2 · (x_i · x_j). Rows 0 and 1 see [s, s, 0]: their largest weight
    # is below 1/2; row 2 sees [0, 0, s]: e^s/(e^s + 2) > 0.99 for s = 20. So 1 row in 3.
    layer = _one_hot_attention(math.sqrt(20 * math.sqrt(2)), 1)
    y, cache = layer.forward(x)
    np.testing.assert_allclose(cache.scores[0, 0], 20 * np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]]), rtol=1e-14)
    assert layer.saturation(cache) == pytest.approx(1 / 3, abs=0)
    # two heads (d = 1, scale 1): head 0 reads column 0 ([1, 1, 0]): rows 0, 1 split between two
    # keys, row 2 is all zeros (uniform 1/3); head 1 reads column 1 ([0, 0, 1]): rows 0, 1 uniform,
    # row 2 sees [0, 0, c²] = [0, 0, 20]. So 1 row in 6.
    layer = _one_hot_attention(math.sqrt(20), 2)
    y, cache = layer.forward(x)
    np.testing.assert_allclose(cache.attention[0, 0, 2], [1 / 3] * 3, rtol=1e-15)
    assert cache.attention[0, 1, 2, 2] > 0.99
    assert layer.saturation(cache) == pytest.approx(1 / 6, abs=0)
    # c = 0: every row uniform over 3 keys, nothing saturated; one step: every row is [1], all saturated
    layer = _one_hot_attention(0.0, 2)
    assert layer.saturation(layer.forward(x)[1]) == 0.0
    np.testing.assert_array_equal(layer.forward(x)[1].attention, 1 / 3)
    assert layer.saturation(layer.forward(x[:, :1])[1]) == 1.0


# --- heads, fans, config ------------------------------------------------------------------------

def test_heads_must_divide_dim():
    rng = np.random.default_rng(3)
    eye = np.eye(10)
    params = {name: eye for name in MultiHeadAttention.WEIGHTS}
    with pytest.raises(ValueError, match=r"dim=10 is not divisible by heads=3"):
        MultiHeadAttention("mha", params, 3)
    with pytest.raises(ValueError, match=r"dim=10 is not divisible by heads=4"):
        normalize_config("attention", {"dim": 10, "heads": 4})
    with pytest.raises(ValueError, match=r"dim=8 is not divisible by heads=3"):
        normalize_config("transformer", {"dim": 8, "heads": 3, "ffn": 16})
    assert attention_layer(2, 10, 10, 5, rng).head_dim == 2


def test_attention_fans_by_formula():
    fans = MultiHeadAttention.fans((7, 12), {"dim": 16, "heads": 4})
    assert fans == {"query_weights": Fans(12, 16), "key_weights": Fans(12, 16),
                    "value_weights": Fans(12, 16), "output_weights": Fans(16, 16)}
    fans = TransformerBlock.fans((7, 16), {"dim": 16, "heads": 4, "ffn": 64})
    assert fans["attention.query_weights"] == Fans(16, 16)
    assert fans["ffn.in_weights"] == Fans(16, 64) and fans["ffn.out_weights"] == Fans(64, 16)
    assert set(fans) == {"attention.query_weights", "attention.key_weights", "attention.value_weights",
                         "attention.output_weights", "ffn.in_weights", "ffn.out_weights"}


def test_fans_match_torch(torch):
    fan = torch.nn.init._calculate_fan_in_and_fan_out
    dim, heads, ffn = 16, 4, 48
    # separate projections (kdim = vdim != embed_dim makes torch keep q/k/v_proj_weight apart)
    module = torch.nn.MultiheadAttention(dim, heads, kdim=12, vdim=12)
    ours = MultiHeadAttention.fans((5, dim), {"dim": dim, "heads": heads})
    assert ours["query_weights"] == fan(module.q_proj_weight) == (dim, dim)
    assert MultiHeadAttention.fans((5, 12), {"dim": dim, "heads": heads})["key_weights"] == fan(module.k_proj_weight)
    assert ours["output_weights"] == fan(module.out_proj.weight)
    # each Q/K/V block of the packed in_proj_weight, as its own (out, in) matrix
    packed = torch.nn.MultiheadAttention(dim, heads).in_proj_weight
    for i, name in enumerate(("query", "key", "value")):
        assert ours[f"{name}_weights"] == fan(packed[i * dim:(i + 1) * dim])
    # the surprise: torch's own init computes fans on the packed (3·dim, dim) matrix
    assert fan(packed) == (dim, 3 * dim)
    assert packed.abs().max().item() <= math.sqrt(6 / (4 * dim))
    assert packed.abs().max().item() > 0.95 * math.sqrt(6 / (4 * dim))  # 768 uniform draws reach the bound
    layer = torch.nn.TransformerEncoderLayer(dim, heads, ffn)
    block_fans = TransformerBlock.fans((5, dim), {"dim": dim, "heads": heads, "ffn": ffn})
    assert block_fans["ffn.in_weights"] == fan(layer.linear1.weight)
    assert block_fans["ffn.out_weights"] == fan(layer.linear2.weight)


def test_normalize_config_and_shapes():
    assert normalize_config("MHA", {"dim": 8, "heads": 2}) == {"dim": 8, "heads": 2, "bias": True, "causal": False}
    assert normalize_config("transformer", {"dim": 8, "heads": 2, "ffn": 32, "causal": True}) == {
        "dim": 8, "heads": 2, "ffn": 32, "bias": True, "causal": True, "activation": "gelu", "norm": "pre", "eps": 1e-5}
    with pytest.raises(ValueError, match="causal must be true or false"):
        normalize_config("attention", {"dim": 8, "heads": 2, "causal": "yes"})
    with pytest.raises(ValueError, match="unknown layer kind 'conv'"):
        normalize_config("conv", {})
    with pytest.raises(ValueError, match="valid options: dim, heads, bias, causal"):
        normalize_config("attention", {"dim": 8, "heads": 2, "dropout": 0.1})
    with pytest.raises(ValueError, match="needs ffn"):
        normalize_config("transformer", {"dim": 8, "heads": 2})
    with pytest.raises(ValueError, match="pre, post"):
        normalize_config("transformer", {"dim": 8, "heads": 2, "ffn": 4, "norm": "middle"})
    with pytest.raises(ValueError, match="bad activation"):
        normalize_config("transformer", {"dim": 8, "heads": 2, "ffn": 4, "activation": "nope"})
    assert MultiHeadAttention.output_shape((5, 3), {"dim": 8, "heads": 2}) == (5, 8)
    assert set(MultiHeadAttention.parameter_shapes((5, 3), {"dim": 8, "heads": 2, "bias": False})) == set(
        MultiHeadAttention.WEIGHTS)
    with pytest.raises(ValueError, match="must equal dim"):
        TransformerBlock.output_shape((5, 6), {"dim": 8, "heads": 2, "ffn": 4})
    with pytest.raises(ValueError, match=r"\(steps, features\)"):
        MultiHeadAttention.output_shape((5,), {"dim": 8, "heads": 2})


def test_float32_preserved():
    rng = np.random.default_rng(4)
    for param_dtype in (np.float32, np.float64):
        layer = attention_layer(4, 6, 6, 2, rng, dtype=param_dtype)
        b = block(4, 6, 2, 12, rng)
        for lay in (layer, b):
            x = rng.standard_normal((2, 4, 6)).astype(np.float32)
            y, cache = lay.forward(x)
            assert y.dtype == np.float32
            dx, grads = lay.backward(np.ones_like(y), cache)
            assert dx.dtype == np.float32
            assert all(grads[k].dtype == lay.params[k].dtype for k in grads)
        assert cache.attention.y.dtype == cache.ffn_h.dtype == np.float32


# --- transformer block --------------------------------------------------------------------------

def _torch_encoder_layer(torch, layer):
    module = torch.nn.TransformerEncoderLayer(layer.dim, layer.heads, layer.ffn, dropout=0.0, activation="gelu",
                                              batch_first=True, norm_first=layer.norm == "pre", dtype=torch.float64)
    module.train()  # no fast path; dropout is 0
    _copy_attention(torch, module.self_attn, layer.params, "attention.")
    p = lambda name: torch.tensor(np.ascontiguousarray(layer.params[name]))  # noqa: E731
    with torch.no_grad():
        module.linear1.weight.copy_(p("ffn.in_weights").T)
        module.linear1.bias.copy_(p("ffn.in_bias"))
        module.linear2.weight.copy_(p("ffn.out_weights").T)
        module.linear2.bias.copy_(p("ffn.out_bias"))
        for norm in ("norm1", "norm2"):
            getattr(module, norm).weight.copy_(p(norm + ".gamma"))
            getattr(module, norm).bias.copy_(p(norm + ".beta"))
    return module


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_transformer_block_matches_torch(torch, norm):
    rng = np.random.default_rng(5)
    layer = block(6, 8, 2, 16, rng, norm=norm)
    module = _torch_encoder_layer(torch, layer)
    x = rng.standard_normal((3, 6, 8))
    y, cache = layer.forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)
    expected = {"attention." + k: v for k, v in _attention_grads_from_torch(module.self_attn).items()}
    expected.update({"ffn.in_weights": module.linear1.weight.grad.numpy().T, "ffn.in_bias": module.linear1.bias.grad,
                     "ffn.out_weights": module.linear2.weight.grad.numpy().T, "ffn.out_bias": module.linear2.bias.grad})
    for n in ("norm1", "norm2"):
        expected[n + ".gamma"] = getattr(module, n).weight.grad
        expected[n + ".beta"] = getattr(module, n).bias.grad
    assert set(grads) == set(expected) == set(layer.params)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], np.asarray(value), **TORCH_TOL, err_msg=name)


def test_causal_transformer_block_matches_torch(torch):
    rng = np.random.default_rng(12)
    config = {"dim": 8, "heads": 2, "ffn": 16, "norm": "pre", "activation": "gelu", "bias": True, "causal": True}
    layer = TransformerBlock.from_config("block", random_params(TransformerBlock.parameter_shapes((5, 8), config), rng), config)
    module = _torch_encoder_layer(torch, layer)
    x = rng.standard_normal((3, 5, 8))
    y, cache = layer.forward(x)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx, src_mask=mask, is_causal=True)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    dx, _ = layer.backward(np.ones_like(y), cache)
    ty.sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL)


@pytest.mark.parametrize("norm, activation", [("pre", "gelu"), ("post", "gelu"), ("pre", "tanh")])
def test_transformer_block_backward_matches_finite_differences(norm, activation):
    rng = np.random.default_rng(6)
    layer = block(3, 4, 2, 6, rng, norm=norm, activation=activation)
    x = rng.standard_normal((2, 3, 4))
    assert_layer_gradients(layer, x, rng)  # the sublayers hold these very arrays, so perturbing them reaches the block


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_transformer_block_cache_exposes_sublayers(norm):
    rng = np.random.default_rng(7)
    layer = block(5, 8, 4, 12, rng, norm=norm, bias=False)
    assert not any(name.endswith("bias") for name in layer.params)
    x = rng.standard_normal((2, 5, 8))
    y, cache = layer.forward(x)
    outputs = layer.sublayer_outputs(cache)
    assert list(outputs)[-1] == ("residual2" if norm == "pre" else "norm2")
    np.testing.assert_array_equal(list(outputs.values())[-1], y)
    assert outputs["ffn.hidden"].shape == (2, 5, 12) and outputs["attention"].shape == (2, 5, 8)
    if norm == "pre":
        np.testing.assert_allclose(cache.z, x + cache.attention.y, rtol=1e-15)
        np.testing.assert_allclose(y, cache.z + cache.ffn_out, rtol=1e-15)
    else:
        np.testing.assert_allclose(cache.sum1, x + cache.attention.y, rtol=1e-15)
        np.testing.assert_array_equal(cache.z, cache.norm1.y)
    sat = layer.saturation(cache)
    assert set(sat) == {"attention", "ffn"} and 0 <= sat["attention"] <= 1
    assert cache.attention.scores.shape == (2, 4, 5, 5)


def test_transformer_block_default_norm_params_and_errors():
    rng = np.random.default_rng(8)
    shapes = TransformerBlock.parameter_shapes((3, 4), {"dim": 4, "heads": 2, "ffn": 8})
    params = random_params({k: v for k, v in shapes.items() if not k.startswith("norm")}, rng)
    layer = TransformerBlock("b", params, 2)
    np.testing.assert_array_equal(layer.params["norm1.gamma"], np.ones(4))
    assert layer.params["norm1.gamma"] is not layer.params["norm2.gamma"]
    with pytest.raises(ValueError, match="unknown parameter"):
        TransformerBlock("b", {**params, "ffn.extra": np.ones(3)}, 2)
    with pytest.raises(ValueError, match="divisible"):
        TransformerBlock("b", params, 3)
