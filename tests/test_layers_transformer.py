"""Modern attention and transformer blocks: grouped-/multi-query attention (kv_heads), rotary position
embeddings, gated feed-forward networks (swiglu, geglu), sandwich norms and RMSNorm, each forward and
backward against a PyTorch reference written from torch ops here (scaled_dot_product_attention,
repeat_interleave, an explicit RoPE, nn.RMSNorm, F.silu/F.gelu), in float64; and central finite
differences, fans, configuration errors, the draw streams and the memory estimate.
"""

import tracemalloc

import numpy as np
from conftest import invoke, make_spec, write_spec
from gradcheck import assert_layer_gradients
import pytest

from initdiag import layers, network, pipeline
from initdiag.layers import rotary
from initdiag.layers.attention import MultiHeadAttention, normalize_config
from initdiag.layers.transformer import RMSNorm, TransformerBlock
from initdiag.schemes import Fans
from initdiag.yamlsource import SpecErrors


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


TORCH_TOL = {"rtol": 1e-10, "atol": 1e-12}
LLAMA = {"dim": 16, "heads": 4, "kv_heads": 2, "ffn": 24, "norm": "pre", "norm_kind": "rmsnorm", "ffn_kind": "swiglu",
         "bias": False, "rotary": True, "causal": True}


def random_params(shapes, rng, scale=0.5):
    """Random float64 values for every parameter (biases nonzero; gammas around 1)."""
    return {name: rng.uniform(-scale, scale, shape) + (1.0 if name.endswith("gamma") else 0.0)
            for name, shape in shapes.items()}


def attention(config, steps, rng, scale=0.7):
    return MultiHeadAttention.from_config("mha", random_params(MultiHeadAttention.parameter_shapes(
        (steps, config["dim"]), config), rng, scale), config)


def block(config, steps, rng):
    return TransformerBlock.from_config("block", random_params(TransformerBlock.parameter_shapes(
        (steps, config["dim"]), config), rng), config)


# --- the PyTorch reference, from torch ops ---------------------------------------------------------------

def _rope(torch, a, base):
    """Hugging Face Llama's rotary embedding, written out: rotate_half over the two halves of head_dim."""
    steps, d = a.shape[-2], a.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.outer(torch.arange(steps, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    rotated_half = torch.cat([-a[..., d // 2:], a[..., :d // 2]], dim=-1)
    return a * angles.cos() + rotated_half * angles.sin()


def torch_attention(torch, x, p, config):
    """Self-attention from torch ops; p: our parameter names (no prefix) -> leaf tensors."""
    batch, steps, _ = x.shape
    heads, dim = config["heads"], config["dim"]
    kv_heads, d = config.get("kv_heads", heads), dim // heads

    def project(name, n):
        out = x @ p[f"{name}_weights"]
        if f"{name}_bias" in p:
            out = out + p[f"{name}_bias"]
        return out.view(batch, steps, n, d).transpose(1, 2)

    q, k, v = project("query", heads), project("key", kv_heads), project("value", kv_heads)
    if config.get("rotary"):
        q, k = _rope(torch, q, config.get("rotary_base", 10000.0)), _rope(torch, k, config.get("rotary_base", 10000.0))
    k, v = k.repeat_interleave(heads // kv_heads, dim=1), v.repeat_interleave(heads // kv_heads, dim=1)  # repeat_kv
    context = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=config.get("causal", False))
    y = context.transpose(1, 2).reshape(batch, steps, dim) @ p["output_weights"]
    return y + p["output_bias"] if "output_bias" in p else y


def torch_block(torch, x, p, config):
    """A transformer block from torch ops; p: our prefixed parameter names -> leaf tensors (nn.Parameter)."""
    F = torch.nn.functional
    dim, eps = config["dim"], config.get("eps", 1e-5)

    def norm(name, u):
        if config.get("norm_kind") == "rmsnorm":
            module = torch.nn.RMSNorm(dim, eps=eps, dtype=torch.float64)
            module.weight = p[name + ".gamma"]
            return module(u)
        return F.layer_norm(u, (dim,), p[name + ".gamma"], p[name + ".beta"], eps)

    def linear(name, u):
        out = u @ p[name + "_weights"]
        return out + p[name + "_bias"] if name + "_bias" in p else out

    def ffn(u):
        kind = config.get("ffn_kind", "mlp")
        if kind == "mlp":
            return linear("ffn.out", F.gelu(linear("ffn.in", u)))
        gate = F.silu if kind == "swiglu" else F.gelu
        return linear("ffn.out", gate(linear("ffn.gate", u)) * linear("ffn.in", u))

    def attend(u):
        return torch_attention(torch, u, {k[len("attention."):]: v for k, v in p.items()
                                          if k.startswith("attention.")}, config)

    order = config.get("norm", "pre")
    if order == "post":
        m = norm("norm1", x + attend(x))
        return norm("norm2", m + ffn(m))
    if order == "sandwich":
        m = x + norm("post_norm1", attend(norm("norm1", x)))
        return m + norm("post_norm2", ffn(norm("norm2", m)))
    m = x + attend(norm("norm1", x))
    return m + ffn(norm("norm2", m))


def assert_matches_torch(torch, layer, reference, config, x, rng):
    """y, dx and every parameter's gradient of `layer` against `reference(torch, x, params, config)`."""
    params = {name: torch.nn.Parameter(torch.tensor(value)) for name, value in layer.params.items()}
    tx = torch.tensor(x, requires_grad=True)
    ty = reference(torch, tx, params, config)
    y, cache = layer.forward(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-11, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(dy, cache)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TORCH_TOL, err_msg="dx")
    assert set(grads) == set(params) == set(layer.params)
    for name, param in params.items():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), **TORCH_TOL, err_msg=name)
    return cache


# --- attention -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    {"dim": 16, "heads": 4, "kv_heads": 2},                                   # grouped-query
    {"dim": 16, "heads": 4, "kv_heads": 1, "bias": False},                    # multi-query
    {"dim": 16, "heads": 4, "kv_heads": 2, "causal": True},
    {"dim": 16, "heads": 4, "rotary": True, "causal": True},                  # RoPE with a causal mask
    {"dim": 16, "heads": 2, "rotary": True, "rotary_base": 500.0},
    {"dim": 24, "heads": 6, "kv_heads": 2, "rotary": True, "causal": True},   # all of them
], ids=["gqa", "mqa", "gqa-causal", "rotary-causal", "rotary-base", "gqa-rotary-causal"])
def test_attention_matches_torch(torch, config):
    rng = np.random.default_rng(20)
    config = normalize_config("attention", config)
    layer = attention(config, 7, rng)
    cache = assert_matches_torch(torch, layer, torch_attention, config, rng.standard_normal((3, 7, config["dim"])), rng)
    kv = config.get("kv_heads", config["heads"])
    assert cache.k.shape == cache.v.shape == (3, kv, 7, config["dim"] // config["heads"])
    assert cache.scores.shape == cache.attention.shape == (3, config["heads"], 7, 7)


def test_attention_is_torchs_own_gqa(torch):
    """scaled_dot_product_attention's own enable_gqa (no repeat) agrees with the repeat_interleave reference."""
    rng = np.random.default_rng(21)
    config = normalize_config("attention", {"dim": 12, "heads": 6, "kv_heads": 3, "bias": False})
    layer = attention(config, 5, rng)
    x = rng.standard_normal((2, 5, 12))
    p = {k: torch.tensor(v) for k, v in layer.params.items()}
    tx = torch.tensor(x)
    q, k, v = ((tx @ p[f"{n}_weights"]).view(2, 5, -1, 2).transpose(1, 2) for n in ("query", "key", "value"))
    context = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    expected = context.transpose(1, 2).reshape(2, 5, 12) @ p["output_weights"]
    np.testing.assert_allclose(layer.forward(x)[0], expected.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("config", [{"dim": 8, "heads": 4, "kv_heads": 2, "rotary": True, "causal": True},
                                    {"dim": 6, "heads": 3, "kv_heads": 1}])
def test_attention_backward_matches_finite_differences(config):
    rng = np.random.default_rng(22)
    layer = attention(normalize_config("attention", config), 4, rng, scale=0.8)
    assert_layer_gradients(layer, rng.standard_normal((2, 4, config["dim"])), rng)


def test_rotary_is_a_rotation_whose_backward_is_its_transpose():
    rng = np.random.default_rng(23)
    cos, sin = rotary.tables(5, 6, 10000.0, np.float64)
    x, g = rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 5, 6))
    rotated = rotary.rotate(x, cos, sin)
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(np.sum(rotated * g), np.sum(x * rotary.rotate_back(g, cos, sin)), rtol=1e-13)
    np.testing.assert_array_equal(rotated[:, 0], x[:, 0])  # position 0: angle 0
    # column i pairs with column i + d/2 at angle t · base^(-2i/d)
    angle = 3 * 10000.0 ** (-2 / 6)
    np.testing.assert_allclose(rotated[:, 3, 1], x[:, 3, 1] * np.cos(angle) - x[:, 3, 4] * np.sin(angle), rtol=1e-13)
    # relative positions: a query and key rotated by the same offset keep their dot product
    q, k = rng.standard_normal(6), rng.standard_normal(6)
    cos8, sin8 = rotary.tables(8, 6, 10000.0, np.float64)
    dots = [rotary.rotate(np.stack([q] * 8), cos8, sin8)[t] @ rotary.rotate(np.stack([k] * 8), cos8, sin8)[t - 2]
            for t in (2, 5, 7)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-12)


# --- transformer blocks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    {"dim": 16, "heads": 4, "ffn": 24, "ffn_kind": "swiglu"},
    {"dim": 16, "heads": 4, "ffn": 24, "ffn_kind": "geglu", "norm": "post"},
    {"dim": 16, "heads": 4, "ffn": 24, "norm": "sandwich"},
    {"dim": 16, "heads": 4, "ffn": 24, "norm": "sandwich", "norm_kind": "rmsnorm", "ffn_kind": "geglu"},
    {"dim": 16, "heads": 4, "ffn": 24, "norm_kind": "rmsnorm"},
    {"dim": 16, "heads": 4, "ffn": 24, "norm_kind": "rmsnorm", "norm": "post", "kv_heads": 1},
    LLAMA,
], ids=["swiglu", "geglu-post", "sandwich", "sandwich-rmsnorm-geglu", "rmsnorm", "rmsnorm-post-mqa", "llama"])
def test_transformer_block_matches_torch(torch, config):
    rng = np.random.default_rng(24)
    config = normalize_config("transformer", config)
    layer = block(config, 6, rng)
    assert_matches_torch(torch, layer, torch_block, config, rng.standard_normal((3, 6, 16)), rng)


def test_llama_block_parameters_are_llamas():
    shapes = TransformerBlock.parameter_shapes((6, 16), LLAMA)
    assert shapes == {"attention.query_weights": (16, 16), "attention.key_weights": (16, 8),
                      "attention.value_weights": (16, 8), "attention.output_weights": (16, 16),
                      "ffn.in_weights": (16, 24), "ffn.out_weights": (24, 16), "ffn.gate_weights": (16, 24),
                      "norm1.gamma": (16,), "norm2.gamma": (16,)}
    sandwich = TransformerBlock.parameter_shapes((6, 16), {"dim": 16, "heads": 4, "ffn": 24, "norm": "sandwich"})
    assert {k for k in sandwich if "norm" in k} == {f"{n}.{p}" for n in ("norm1", "norm2", "post_norm1", "post_norm2")
                                                    for p in ("gamma", "beta")}


@pytest.mark.parametrize("config", [LLAMA, {"dim": 8, "heads": 2, "ffn": 6, "norm": "sandwich", "ffn_kind": "geglu"},
                                    {"dim": 8, "heads": 2, "ffn": 6, "norm": "post", "norm_kind": "rmsnorm"}])
def test_transformer_block_backward_matches_finite_differences(config):
    rng = np.random.default_rng(25)
    layer = block(normalize_config("transformer", config), 3, rng)
    assert_layer_gradients(layer, rng.standard_normal((2, 3, config["dim"])), rng)


def test_rmsnorm_is_torchs(torch):
    rng = np.random.default_rng(26)
    gamma, x = rng.uniform(0.5, 1.5, 5), rng.standard_normal((3, 4, 5)) * 3
    y, cache = RMSNorm("n", {"gamma": gamma}, eps=1e-6).forward(x)
    module = torch.nn.RMSNorm(5, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(gamma))
    np.testing.assert_allclose(y, module(torch.tensor(x)).detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(np.mean(cache.z**2, axis=-1), 1 / (1 + 1e-6 / np.mean(x**2, axis=-1)), rtol=1e-13)


def test_sublayer_outputs_and_caches_of_the_new_forms():
    rng = np.random.default_rng(27)
    layer = block(normalize_config("transformer", {**LLAMA, "norm": "sandwich"}), 5, rng)
    x = rng.standard_normal((2, 5, 16))
    y, cache = layer.forward(x)
    outputs = layer.sublayer_outputs(cache)
    assert list(outputs) == ["norm1", "attention", "post_norm1", "residual1", "norm2", "ffn.pre_activation",
                             "ffn.gate", "ffn.up", "ffn.hidden", "ffn", "post_norm2", "residual2"]
    np.testing.assert_allclose(outputs["ffn.hidden"], outputs["ffn.gate"] * outputs["ffn.up"], rtol=1e-15)
    np.testing.assert_allclose(cache.z, x + cache.post_norm1.y, rtol=1e-15)
    np.testing.assert_array_equal(outputs["residual2"], y)
    assert set(layer.saturation(cache)) == {"attention", "ffn"}
    assert "swiglu" in repr(layer) and "kv_heads=2" in repr(layer.attention)


def test_float32_preserved():
    rng = np.random.default_rng(28)
    layer = block(normalize_config("transformer", {**LLAMA, "norm": "sandwich"}), 4, rng)
    y, cache = layer.forward(rng.standard_normal((2, 4, 16)).astype(np.float32))
    assert y.dtype == cache.ffn_gated.dtype == cache.attention.q.dtype == cache.post_norm2.y.dtype == np.float32
    dx, grads = layer.backward(np.ones_like(y), cache)
    assert dx.dtype == np.float32 and all(grads[k].dtype == np.float64 for k in grads)


# --- fans, config, declared facts ------------------------------------------------------------------------

def test_fans_match_torch_linears(torch):
    fan = torch.nn.init._calculate_fan_in_and_fan_out
    fans = TransformerBlock.fans((6, 16), LLAMA)
    assert list(fans) == ["attention.query_weights", "attention.key_weights", "attention.value_weights",
                          "attention.output_weights", "ffn.in_weights", "ffn.out_weights", "ffn.gate_weights"]
    assert fans["attention.key_weights"] == fan(torch.nn.Linear(16, 2 * 4).weight) == Fans(16, 8)
    assert fans["attention.value_weights"] == Fans(16, 8) and fans["attention.query_weights"] == Fans(16, 16)
    assert fans["ffn.gate_weights"] == fans["ffn.in_weights"] == fan(torch.nn.Linear(16, 24).weight)
    assert fans["ffn.out_weights"] == fan(torch.nn.Linear(24, 16).weight)
    module, names = layers.LAYERS["transformer"].torch((6, 16), normalize_config("transformer", LLAMA))
    twin = dict(module.named_parameters())
    assert {ours: fan(twin[theirs]) for ours, theirs in names.items()} == {k: tuple(v) for k, v in fans.items()}


def test_config_defaults_stay_out_and_errors_name_the_option():
    assert normalize_config("attention", {"dim": 8, "heads": 2, "kv_heads": 2, "rotary": False}) == {
        "dim": 8, "heads": 2, "bias": True, "causal": False}
    assert normalize_config("attention", {"dim": 8, "heads": 2, "kv_heads": 1, "rotary": True}) == {
        "dim": 8, "heads": 2, "bias": True, "causal": False, "kv_heads": 1, "rotary": True, "rotary_base": 10000.0}
    config = normalize_config("transformer", {"dim": 8, "heads": 2, "ffn": 4, "ffn_kind": "SwiGLU", "norm": "sandwich",
                                              "norm_kind": "rmsnorm"})
    assert (config["ffn_kind"], config["activation"], config["norm"], config["norm_kind"]) == (
        "swiglu", "swish", "sandwich", "rmsnorm")
    assert normalize_config("transformer", {"dim": 8, "heads": 2, "ffn": 4, "ffn_kind": "geglu", "activation": "gelu"})[
        "activation"] == "gelu"
    errors = [({"dim": 8, "heads": 4, "kv_heads": 3}, "heads=4 is not divisible by kv_heads=3"),
              ({"dim": 8, "heads": 2, "kv_heads": 0}, "kv_heads must be a positive integer"),
              ({"dim": 12, "heads": 4, "rotary": True}, "rotary needs an even head size, dim/heads = 3"),
              ({"dim": 8, "heads": 2, "rotary_base": 500}, "needs rotary: true"),
              ({"dim": 8, "heads": 2, "rotary": True, "rotary_base": -1}, "rotary_base must be a positive number"),
              ({"dim": 8, "heads": 2, "ffn": 4, "ffn_kind": "swiglu", "activation": "relu"}, "swiglu gates with silu"),
              ({"dim": 8, "heads": 2, "ffn": 4, "ffn_kind": "reglu"}, "ffn_kind must be one of mlp, swiglu, geglu"),
              ({"dim": 8, "heads": 2, "ffn": 4, "norm_kind": "batchnorm"}, "layernorm, rmsnorm")]
    for raw, message in errors:
        with pytest.raises(ValueError, match=message):
            normalize_config("transformer" if "ffn" in raw else "attention", raw)
    with pytest.raises(ValueError, match=r"key_weights must be \(8, 4\)"):
        MultiHeadAttention("m", {name: np.eye(8) for name in MultiHeadAttention.WEIGHTS}, 2, kv_heads=1)
    with pytest.raises(ValueError, match="unknown parameter.*ffn.gate_weights"):
        TransformerBlock("b", {**random_params(TransformerBlock.parameter_shapes((3, 8), {"dim": 8, "heads": 2, "ffn": 4,
                                                                                         "ffn_kind": "geglu"}),
                                               np.random.default_rng(0))}, 2)


def test_spec_errors_are_located():
    for options, message in (("{dim: 8, heads: 4, kv_heads: 3}", "heads=4 is not divisible by kv_heads=3"),
                             ("{dim: 12, heads: 4, rotary: true}", "rotary needs an even head size")):
        with pytest.raises(SpecErrors, match=rf"t.yaml:5:\d+: layers\[1\]\.attention: .*{message}"):
            make_spec(f"""
                input: [5, 8]
                layers:
                  - dense: 8
                  - attention: {options}
                """)


def test_sandwich_declares_a_residual_stream_and_no_normalized_output():
    kind = layers.LAYERS["transformer"]
    assert kind.in_stream({"norm": "sandwich"}) and not kind.normalizes_output({"norm": "sandwich"})
    assert kind.in_stream({"norm": "pre"}) and not kind.in_stream({"norm": "post"})
    assert kind.normalizes_output({"norm": "post"})


def test_a_gated_block_draws_its_other_matrices_as_an_mlp_block_does():
    """The gate is drawn last, from a stream of its own: the matrices an mlp block has keep their numbers."""
    text = """
        input: [4, 8]
        seed: 3
        layers:
          - transformer: {{dim: 8, heads: 2, ffn: 12{extra}}}
        """
    mlp = network.build(make_spec(text.format(extra=""))).layers[0]
    gated = network.build(make_spec(text.format(extra=", ffn_kind: swiglu"))).layers[0]
    for name in mlp.params:
        if name.endswith("weights"):
            np.testing.assert_array_equal(mlp.params[name], gated.params[name], err_msg=name)
    assert not np.array_equal(gated.params["ffn.gate_weights"], gated.params["ffn.in_weights"])


# --- memory and the whole pipeline -----------------------------------------------------------------------

BLOCK = ("  - transformer: {dim: 64, heads: 8, kv_heads: 2, ffn: 172, ffn_kind: swiglu, norm: pre, norm_kind: rmsnorm, "
         "bias: false, rotary: true, causal: true}")


def llama_spec_text(blocks: int, steps: int) -> str:
    """A Llama-like decoder body: tokens, `blocks` Llama blocks (GQA, RoPE, SwiGLU, RMSNorm, causal), a small head."""
    return "\n".join([f"name: llama-like\ninput: [{steps}]\ninput_distribution: tokens\nbatch: 4",
                      "defaults:\n  init: {normal: {std: 0.02}}\nlayers:\n  - embedding: {vocab: 256, dim: 64}",
                      *[BLOCK] * blocks,
                      "  - layernorm: {}\n  - global_avgpool: {}\n  - dense: 2\n    activation: softmax\n"])


def test_memory_estimate_covers_a_measured_llama_like_run():
    spec = make_spec(llama_spec_text(2, steps=48))
    estimate = network.estimate_memory(spec).total
    tracemalloc.start()
    try:
        pipeline.diagnose(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= estimate, (peak, estimate)


def test_a_llama_like_decoder_runs_through_check_and_compare(tmp_path):
    path = write_spec(tmp_path, llama_spec_text(4, steps=16), "llama.yaml")
    for args in (("check", path), ("compare", path, "--schemes", "xavier,normal")):
        result = invoke(*args)
        assert result.exit_code in (0, 1), result.output
