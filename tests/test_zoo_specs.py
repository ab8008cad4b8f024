"""Convolutional, pooling and flatten layers in specs: fans, shapes, errors, and the physics end to end."""

import json
import math
import textwrap

import numpy as np
import pytest
from gradcheck import numeric_gradient

from initdiag import checks, compare, initspec, pipeline, spec, yamlsource
from conftest import invoke, make_spec as make



run_cli = invoke  # the CLI in process at 80 columns without colour


def test_fans_follow_pytorchs_rule_for_every_weighted_kind():
    net = make("""\
        input: [8, 20, 20]
        layers:
          - conv2d: {filters: 16, kernel: 3}
          - conv2d: {filters: 32, kernel: [3, 5], groups: 4, padding: same}
          - global_avgpool: {}
          - dense: 10
        """)
    # torch: fan_in = in_channels / groups · kernel area; fan_out = out_channels · kernel area
    expected = [(8 * 9, 16 * 9), (16 // 4 * 15, 32 * 15), (None, None), (32, 10)]
    assert [(layer.fan_in, layer.fan_out) for layer in net.layers] == expected
    conv1d = make("input: [4, 50]\nlayers:\n  - {conv1d: {filters: 6, kernel: 5, stride: 2}}\n  - {flatten: {}}\n  - {dense: 3}\n")
    assert (conv1d.layers[0].fan_in, conv1d.layers[0].fan_out) == (4 * 5, 6 * 5)
    assert conv1d.layers[0].output_shape == (6, 23) and conv1d.layers[2].fan_in == 6 * 23


def test_fans_match_torch_where_torch_is_installed():
    torch = pytest.importorskip("torch")
    net = make("input: [6, 9, 9]\nlayers:\n  - {conv2d: {filters: 12, kernel: 3, groups: 3}}\n")
    weight = torch.empty(12, 6 // 3, 3, 3)
    assert torch.nn.init._calculate_fan_in_and_fan_out(weight) == (net.layers[0].fan_in, net.layers[0].fan_out)


@pytest.mark.parametrize("layers, message", [
    ("  - conv2d: {filters: 4, kernel: 9}\n", "kernel"),
    ("  - conv2d: {filters: 4, kernel: 3}\n  - dense: 10\n", "flatten"),
    ("  - conv2d: {filters: 4, kernal: 3}\n", "kernal"),
    ("  - conv2d: {filters: 4, kernel: 3, activation: softmax}\n", "unknown"),
    ("  - conv2d: {filters: 4, kernel: 3}\n    activation: softmax\n", "elementwise"),
    ("  - conv2d: {filters: 4, kernel: 3}\n    init: identity\n", "identity"),
    ("  - conv1d: {filters: 4, kernel: 3}\n", "conv1d"),
    ("  - maxpool2d: {kernel: 2}\n    init: relu\n", "init"),
])
def test_impossible_layers_are_located_errors(tmp_path, layers, message):
    path = tmp_path / "net.yaml"
    path.write_text("input: [3, 8, 8]\nlayers:\n" + layers)
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:")
    assert message in result.stderr


def test_he_keeps_a_deep_cnn_flat_and_normal_explodes_it():
    # Valid padding: zero padding at the borders ("same") removes inputs there and shrinks the
    # signal layer after layer on small maps, which is padding's doing, not the init's.
    text = "input: [32, 24, 24]\nbatch: 16\ndefaults: {init: relu, activation: relu}\nlayers:\n"
    text += "  - conv2d: {filters: 32, kernel: 3}\n" * 8
    he = pipeline.diagnose(make(text))
    # He: E[z²] = fan_in · 2/fan_in · E[x²] per conv in expectation, so E[relu(z)²] keeps the input's
    # second moment. With 32 filters over spatially correlated inputs one draw moves each layer by
    # tens of percent, so the claim tested is the product's own: inside the healthy band (10x).
    second = [layer.act_second_moment / he.run.input_second_moment for layer in he.run.layers]
    assert all(0.1 < ratio < 10 for ratio in second), second
    assert not {"exploding-activations", "vanishing-activations"} & {f.code for f in he.findings}
    normal = pipeline.diagnose(make(text.replace("init: relu", "init: normal")))
    assert "exploding-activations" in {f.code for f in normal.findings if f.severity == "error"}


def test_dirac_identity_passes_the_input_through_a_same_padded_conv():
    net = make("""\
        input: [4, 7, 7]
        batch: 8
        dtype: float64
        layers:
          - conv2d: {filters: 4, kernel: 3, padding: same}
            init: identity
            activation: identity
        """)
    result = pipeline.diagnose(net)
    assert result.run.layers[0].preact_var == pytest.approx(result.run.input_var, rel=1e-12)
    assert result.run.layers[0].preact_mean == pytest.approx(result.run.input_mean, abs=1e-12)


def test_pooling_and_flatten_have_no_weight_figures_and_json_says_null(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [3, 8, 8]\nlayers:\n  - {conv2d: {filters: 4, kernel: 3}}\n  - {maxpool2d: {kernel: 2}}\n"
                    "  - {flatten: {}}\n  - {dense: 5}\n")
    report = json.loads(run_cli("check", path, "--format", "json").stdout)
    pool, flat = report["layers"][1], report["layers"][2]
    for layer in (pool, flat):
        assert layer["init"] is None and layer["fan_in"] is None and layer["weight_grad_var"] is None
        assert layer["grad_var"] is not None and layer["act_var"] is not None
    assert flat["units"] == 4 * 3 * 3 and report["layers"][3]["fan_in"] == 36


def test_compare_ranks_he_above_normal_on_a_cnn(tmp_path):
    net = make("""\
        input: [8, 10, 10]
        batch: 16
        defaults: {activation: relu}
        layers:
          - conv2d: {filters: 8, kernel: 3, padding: same}
          - conv2d: {filters: 8, kernel: 3, padding: same}
          - avgpool2d: {kernel: 2}
          - flatten: {}
          - dense: 4
            activation: identity
        """)
    inits = compare.candidates(net, ["normal", "relu"])
    order = compare.build(net, compare.run_all(net, inits, False, checks.Thresholds()))["ranking"]
    assert order.index("relu") < order.index("normal")


def test_recommend_says_it_handles_dense_networks_only(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [3, 8, 8]\nlayers:\n  - {conv2d: {filters: 4, kernel: 3}}\n  - {flatten: {}}\n  - {dense: 5}\n")
    result = run_cli("recommend", path)
    assert result.exit_code == 2 and "dense networks only" in result.stderr


# --- normalisation and dropout ------------------------------------------------------------

NORM_SPEC = """\
    input: [64]
    batch: 256
    dtype: float64
    defaults: {init: normal, activation: relu}
    layers:
      - dense: 128
      - batchnorm: {}
      - dropout: 0.25
      - dense: 32
      - layernorm: {}
    """


def test_batchnorm_layernorm_and_dropout_in_training_mode():
    result = pipeline.diagnose(make(NORM_SPEC))
    dense, batchnorm, dropout, _, layernorm = result.run.layers
    # batch statistics: every feature has mean 0 and variance var/(var+eps) ≈ 1 over the batch
    assert batchnorm.act_mean == pytest.approx(0, abs=1e-12)
    assert batchnorm.act_var == pytest.approx(1, abs=1e-3)
    # inverted dropout keeps E[y] and multiplies E[y²] by 1/(1-p); kept units ~ Binomial(n, 0.75),
    # so the second moment's relative error is about sqrt(p/((1-p)·n)) = 0.0036 for n = 256·128
    n = 256 * 128
    assert dropout.act_second_moment == pytest.approx(batchnorm.act_second_moment / 0.75, rel=5 * math.sqrt(0.25 / (0.75 * n)))
    assert layernorm.act_var == pytest.approx(1, abs=1e-3) and layernorm.act_mean == pytest.approx(0, abs=1e-12)
    # dense_0 under N(0,1) grows the signal, but it feeds a batchnorm that undoes its scale on the next row:
    # no drift target of its own (issue 8), so no finding
    assert not {"exploding-activations"} & {f.code for f in result.findings}
    assert layernorm.fan_in is None and layernorm.weight_grad_var is None


def test_eval_mode_passes_batchnorm_and_dropout_through():
    net = make(NORM_SPEC)._replace(eval=True)
    dense, batchnorm, dropout, _, _ = pipeline.diagnose(net).run.layers
    # running statistics mean 0, variance 1: y = x / sqrt(1 + eps)
    assert batchnorm.act_second_moment == pytest.approx(dense.act_second_moment / (1 + 1e-5), rel=1e-12)
    assert dropout.act_second_moment == pytest.approx(batchnorm.act_second_moment, rel=1e-12)


def test_dropout_masks_are_reproducible_and_change_with_the_seed():
    first = pipeline.diagnose(make(NORM_SPEC)).report
    again = pipeline.diagnose(make(NORM_SPEC)).report
    other = pipeline.diagnose(make(NORM_SPEC).with_seed(1)).report
    assert first == again and first["layers"][2] != other["layers"][2]


def test_bad_norm_options_are_located_errors(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [8]\nlayers:\n  - dense: 8\n  - dropout: 2\n  - batchnorm: {momentum: 0.1}\n")
    result = run_cli("check", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"{path}:4:") and "dropout" in lines[0] and "[0, 1]" in lines[0]
    assert lines[1].startswith(f"{path}:5:") and "momentum" in lines[1]


# --- recurrent layers -----------------------------------------------------------------------

def lstm_spec(forget_bias: float, recurrent_init: str = "orthogonal") -> spec.NetworkSpec:
    return make(f"""\
        input: [50, 32]
        batch: 64
        loss: unit
        layers:
          - lstm: {{units: 64, return_sequences: false, forget_bias: {forget_bias}}}
            init: xavier
            recurrent_init: {recurrent_init}
          - dense: 8
        """)


def test_recurrent_fans_and_defaults_follow_pytorch_and_keras():
    net = lstm_spec(1.0)
    lstm = net.layers[0]
    # torch computes fans on weight_ih_l0, shape (4·units, features): fan_in 32, fan_out 256
    assert (lstm.fan_in, lstm.fan_out, lstm.units, lstm.matrix) == (32, 256, 64, (32, 256))
    assert lstm.recurrent_init.scheme == "orthogonal"  # Keras' default recurrent initializer
    assert make("input: [5, 3]\nlayers:\n  - gru: 4\n").layers[0].recurrent_init.scheme == "orthogonal"


def test_lstm_forget_bias_one_keeps_gradients_across_50_steps_better_than_zero():
    kept = pipeline.diagnose(lstm_spec(1.0)).run.layers[0]
    lost = pipeline.diagnose(lstm_spec(0.0)).run.layers[0]
    # dLoss/dh at step 0 relative to the last step; with forget gates near sigmoid(1) = 0.73 instead
    # of 0.5 the product over 50 steps is larger by orders of magnitude (the layer tests measure ~1e13)
    ratio_kept = kept.grad_var_first_step / kept.grad_var_last_step
    ratio_lost = lost.grad_var_first_step / lost.grad_var_last_step
    assert ratio_kept > 1e6 * ratio_lost


def test_vanishing_gradients_through_time_is_a_finding():
    findings = pipeline.diagnose(lstm_spec(0.0)).findings
    through_time = [f for f in findings if f.code == "vanishing-gradients" and f.layer == "lstm_0"]
    # the cell state halves per step without a forget bias: > 1/e per step, so a warning (a gate can learn
    # longer memory), measured on the cell (the LSTM's memory path), with the forget bias as the fix
    assert through_time and through_time[0].severity == "warning" and "through time" in through_time[0].message
    assert "cell state" in through_time[0].message and "forget_bias: 1" in through_time[0].hint


def test_rnn_with_small_recurrent_weights_loses_the_gradient(tmp_path):
    path = tmp_path / "rnn.yaml"
    path.write_text("input: [30, 16]\nbatch: 32\nloss: unit\nlayers:\n"
                    "  - rnn: {units: 32, return_sequences: false}\n    recurrent_init: {normal: {std: 0.01}}\n")
    report = json.loads(run_cli("check", path, "--format", "json").stdout)
    layer = report["layers"][0]
    assert layer["grad_var_first_step"] < 1e-20 * layer["grad_var_last_step"]
    assert report["verdict"] == "failing"


# --- attention and transformer blocks -------------------------------------------------------

def test_attention_and_transformer_fans_errors_and_saturation(tmp_path):
    net = make("input: [10, 24]\nlayers:\n  - attention: {heads: 4, dim: 32}\n  - transformer: {heads: 2, dim: 32, ffn: 64}\n")
    attention, block = net.layers
    # torch computes fans per (out, in) projection: the query weights map 24 features to 32
    assert (attention.fan_in, attention.fan_out, attention.units) == (24, 32, 32)
    assert (block.fan_in, block.fan_out) == (32, 32) and block.activation.name == "gelu"
    path = tmp_path / "bad.yaml"
    path.write_text("input: [10, 24]\nlayers:\n  - attention: {heads: 5, dim: 32}\n")
    result = run_cli("check", path)
    assert result.exit_code == 2 and "32" in result.stderr and "5" in result.stderr
    # huge query/key weights make every attention row one-hot: saturation 100%
    hot = pipeline.diagnose(make("input: [10, 24]\nlayers:\n  - attention: {heads: 4, dim: 32}\n    init: {normal: {std: 10}}\n"))
    assert hot.run.layers[0].saturation > 0.9
    assert "saturation" in {f.code for f in hot.findings}


def test_schemes_of_a_family_share_draws_on_attention_layers_too():
    net = make("input: [6, 16]\nbatch: 8\nlayers:\n  - attention: {heads: 2, dim: 16}\n")
    relu = pipeline.diagnose(net.with_init(initspec.parse("relu", "x"))).run.layers[0]
    lecun = pipeline.diagnose(net.with_init(initspec.parse("lecun_normal", "x"))).run.layers[0]
    assert relu.weight_std / lecun.weight_std == pytest.approx(math.sqrt(2), rel=1e-6)


# --- embeddings -----------------------------------------------------------------------------

def test_embedding_on_tokens_uses_torch_fans_and_the_embedding_output_as_reference():
    net = make("""\
        input: [12]
        input_distribution: tokens
        batch: 32
        layers:
          - embedding: {vocab: 500, dim: 16}
            init: {normal: {std: 1.0}}
          - flatten: {}
          - {dense: 8, init: xavier}
        """)
    embedding = net.layers[0]
    assert (embedding.fan_in, embedding.fan_out, embedding.matrix) == (16, 500, (16, 500))
    result = pipeline.diagnose(net)
    built_std = result.run.layers[0].weight_std
    assert built_std == pytest.approx(1.0, abs=5 / math.sqrt(2 * 16 * 500))  # SE of a sample std
    assert result.run.input_var == result.run.layers[0].act_var  # the embedding's output stands in
    assert "scheme-activation-mismatch" not in {f.code for f in result.findings if f.layer == "embedding_0"}


def test_tokens_and_embeddings_go_together(tmp_path):
    for text in ("input: [12]\nlayers:\n  - embedding: {vocab: 10, dim: 4}\n",
                 "input: [12]\ninput_distribution: tokens\nlayers:\n  - dense: 4\n"):
        path = tmp_path / "net.yaml"
        path.write_text(text)
        result = run_cli("check", path)
        assert result.exit_code == 2 and "embedding" in result.stderr


# --- residual blocks ------------------------------------------------------------------------

def _loss_and_gradients(net_spec):
    """MSE against fixed targets through initdiag's own passes: the loss, dLoss/dW per weighted layer."""
    from initdiag import losses, network, propagate

    built = network.build(net_spec)
    caches, y = [], None
    for _, y, cache in propagate.forward_pass(built):
        caches.append(cache)
    loss = losses.resolve("mse", "identity")
    targets = np.random.default_rng(5).standard_normal(y.shape)
    grads = {i: g.get("weights", g.get(getattr(built.layers[i], "main_param", None)))  # a recurrent layer's input weights
             for i, _, g, _ in propagate.backward_pass(built, caches, loss.output_gradient(y, targets))}
    return built, targets, grads


@pytest.mark.parametrize("block", [
    "  - residual:\n      - {dense: 6, activation: tanh}\n      - {dense: 6}\n    scale: 0.7\n",
    "  - residual:\n      - {dense: 4, activation: tanh}\n    shortcut: dense\n",
    "  - residual:\n      - residual:\n          - {dense: 6, activation: tanh}\n      - {dense: 6, activation: gelu}\n",
])
def test_residual_backward_matches_finite_differences(block):
    from initdiag import propagate

    net_spec = make("input: [6]\nbatch: 5\ndtype: float64\ndefaults: {init: xavier_uniform}\nlayers:\n"
                    "  - {dense: 6, activation: tanh}\n" + block + "  - {dense: 3}\n")
    built, targets, grads = _loss_and_gradients(net_spec)

    def loss_value():
        *_, (_, y, _) = propagate.forward_pass(built)
        return np.mean((y - targets) ** 2)

    for i, layer in enumerate(built.layers):
        if layer.weights is None or grads.get(i) is None:
            continue
        numeric = numeric_gradient(loss_value, layer.weights)  # tests/gradcheck.py
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-6, atol=1e-9, err_msg=layer.name)


@pytest.mark.parametrize("input_shape, conv", [
    ("[2, 6, 6]", "conv2d: {filters: 3, kernel: 3, stride: 2, padding: 1}"),
    ("[2, 9]", "conv1d: {filters: 3, kernel: 3, stride: 2, padding: 1}"),  # length 5 ≠ 3 channels out
], ids=["conv2d", "conv1d"])
def test_conv_residual_with_a_strided_projection_matches_finite_differences(input_shape, conv):
    from initdiag import propagate

    net_spec = make(f"input: {input_shape}\nbatch: 2\ndtype: float64\ndefaults: {{init: xavier_uniform, activation: tanh}}\n"
                    f"layers:\n  - residual:\n      - {{{conv}}}\n"
                    "    shortcut: conv\n  - {flatten: {}}\n  - {dense: 2}\n")
    built, targets, grads = _loss_and_gradients(net_spec)
    shortcut = next(i for i, layer in enumerate(built.layers) if layer.kind == "residual")
    assert built.layers[shortcut].weights.shape == (2, 3)  # (in channels, out channels)

    def loss_value():
        *_, (_, y, _) = propagate.forward_pass(built)
        return np.mean((y - targets) ** 2)

    for i, layer in enumerate(built.layers):
        if layer.weights is not None:
            numeric = numeric_gradient(loss_value, layer.weights)
            np.testing.assert_allclose(grads[i], numeric, rtol=1e-6, atol=1e-9, err_msg=layer.name)


CONV1D_RESIDUAL = """\
    input: [3, 12]
    batch: 4
    seed: 2
    dtype: float64
    defaults: {init: xavier_uniform, activation: tanh, bias_init: 0.1}
    layers:
      - residual:
          - conv1d: {filters: 5, kernel: 3, stride: 2, padding: 1}
          - conv1d: {filters: 5, kernel: 3, padding: same}
            activation: identity
        shortcut: conv
        scale: 0.5
      - residual:
          - conv1d: {filters: 5, kernel: 3, padding: same}
      - global_avgpool: {}
      - dense: 2
        activation: identity
    """


def test_conv1d_residual_with_a_channel_changing_projection_has_torchs_shapes_and_fans(tmp_path):
    net = make(CONV1D_RESIDUAL)
    projection, identity = (layer for layer in net.layers if layer.kind == "residual")
    assert projection.input_shape == (3, 12) and projection.output_shape == (5, 6)
    # torch's fans of nn.Conv1d(3, 5, kernel_size=1).weight (5, 3, 1): fan_in 3, fan_out 5; 5 output channels
    assert (projection.fan_in, projection.fan_out, projection.units, projection.matrix) == (3, 5, 5, (3, 5))
    assert projection.config["stride"] == 2 and not projection.config["sequence"]
    assert (identity.units, identity.fan_in, identity.config["sequence"]) == (5, None, False)
    assert net.layers[-2].output_shape == (5,) and net.layers[-1].fan_in == 5
    torch = pytest.importorskip("torch")
    weight = torch.nn.Conv1d(3, 5, kernel_size=1).weight
    assert torch.nn.init._calculate_fan_in_and_fan_out(weight) == (projection.fan_in, projection.fan_out)
    path = tmp_path / "net.yaml"
    path.write_text(textwrap.dedent(CONV1D_RESIDUAL).replace("float64", "float32"))
    assert run_cli("check", path).exit_code == 0  # it ran (it used to end in a traceback)


def test_conv1d_residual_blocks_match_torch():
    """Forward outputs, the statistics and every gradient against torch.nn.Conv1d on the same weights."""
    torch = pytest.importorskip("torch")
    from initdiag import losses, network, propagate
    from initdiag.layers.conv import torch_layout

    net_spec = make(CONV1D_RESIDUAL)
    built = network.build(net_spec)
    caches, outputs = [], []
    for _, y, cache in propagate.forward_pass(built):
        caches.append(cache), outputs.append(y)
    loss = losses.resolve("auto", "identity")  # mse, on the targets propagate.run draws
    targets = loss.targets(network.stream(net_spec.seed, network.STREAM_TARGETS), outputs[-1].shape, outputs[-1].dtype)
    dys, grads = {}, {}
    for i, dy, g, _ in propagate.backward_pass(built, caches, loss.output_gradient(outputs[-1], targets)):
        dys[i], grads[i] = dy.copy(), g.get("weights")  # copied: the next layer's backward may work in place
    run = propagate.run(network.build(net_spec))

    def conv(layer):
        config = layer.config
        module = torch.nn.Conv1d(layer.geometry.channels, config["filters"], config["kernel"][0], stride=config["stride"][0],
                                 padding="same" if config["padding"] == "same" else config["padding"][0], dtype=torch.float64)
        module.weight.data = torch.from_numpy(torch_layout(layer.weights, config["kernel"]))
        module.bias.data = torch.from_numpy(layer.bias.copy())
        return module

    c0, c1, _, c3, _, _, dense = built.layers
    projection = torch.nn.Conv1d(3, 5, kernel_size=1, stride=2, bias=False, dtype=torch.float64)
    projection.weight.data = torch.from_numpy(built.layers[2].weights.T.copy()[:, :, None])  # (out, in, 1)
    modules = [conv(c0), conv(c1), projection, conv(c3)]
    x = torch.from_numpy(built.inputs.copy())
    h0 = torch.tanh(modules[0](x))
    h1 = modules[1](h0)  # identity activation
    r2 = modules[2](x) + 0.5 * h1
    h3 = torch.tanh(modules[3](r2))
    r4 = r2 + h3
    pooled = r4.mean(dim=2)
    w = torch.from_numpy(dense.weights.T.copy()).requires_grad_()
    out = torch.nn.functional.linear(pooled, w, torch.from_numpy(dense.bias.copy()))
    ours = [h0, h1, r2, h3, r4, pooled, out]
    for tensor in ours:
        tensor.retain_grad()
    torch.nn.functional.mse_loss(out, torch.from_numpy(targets)).backward()
    parameters = {0: modules[0].weight, 1: modules[1].weight, 2: modules[2].weight, 3: modules[3].weight, 6: w}
    for i, tensor in enumerate(ours):
        name = built.layers[i].name
        np.testing.assert_allclose(outputs[i], tensor.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(dys[i], tensor.grad.numpy(), rtol=1e-10, atol=1e-16, err_msg=name)
        stats = run.layers[i]
        assert stats.act_var == pytest.approx(tensor.detach().var(unbiased=False).item(), rel=1e-9), name
        assert stats.grad_var == pytest.approx(tensor.grad.var(unbiased=False).item(), rel=1e-9), name
        if i in parameters:
            theirs = parameters[i].grad.numpy()
            expected = theirs.T if i == 6 else theirs.reshape(theirs.shape[0], -1).T  # our (fan_in, units) layout
            np.testing.assert_allclose(grads[i], expected, rtol=1e-10, atol=1e-16, err_msg=name)


@pytest.mark.parametrize("input_shape, zero, inner, units", [
    ((3, 8), (slice(None), 1), "conv1d: {filters: 3, kernel: 3, padding: same}", 3),  # [channels, length]
    ((5, 4), (slice(None), slice(None), 2), "attention: {heads: 2, dim: 4}", 4),  # [steps, features]
], ids=["conv1d", "sequence"])
def test_identity_residual_measures_dead_units_over_channels_or_features(tmp_path, input_shape, zero, inner, units):
    """y = x + f(x) with f = 0 and x zero in one channel of a feature map (one feature of a sequence): that one
    unit is dead, though no position (step) is."""
    x = np.random.default_rng(3).standard_normal((6,) + input_shape)
    x[zero] = 0.0
    np.save(tmp_path / "x.npy", x)
    text = (f"input: {list(input_shape)}\ninput_distribution: x.npy\ndtype: float64\ndefaults: {{init: zero}}\n"
            f"layers:\n  - residual:\n      - {inner}\n")
    net = spec.parse(yamlsource.loads(text, "t.yaml"), base_dir=tmp_path, default_name="t")
    block = net.layers[-1]
    assert block.kind == "residual" and block.units == units
    measured = pipeline.diagnose(net).run.layers[-1]
    assert measured.units == units and measured.dead_fraction == pytest.approx(1 / units)


def _residual_stack(blocks: int, scale: float) -> spec.NetworkSpec:
    block = ("  - residual:\n      - {layernorm: {}}\n      - {dense: 256, activation: relu}\n"
             f"      - {{dense: 256, activation: identity}}\n    scale: {scale}\n")
    return make("input: [256]\nbatch: 128\ndefaults: {init: relu}\nlayers:\n" + block * blocks)


def test_fifty_residual_blocks_grow_the_variance_linearly_and_scale_zero_keeps_it_flat():
    run = pipeline.diagnose(_residual_stack(50, 1.0)).run
    outputs = [layer.act_second_moment for layer in run.layers if layer.kind == "residual"]
    # each branch normalises its input (layer norm), so f(x) has a fixed second moment c whatever x is:
    # E[x_l²] = E[x_0²] + l·c, a straight line in l (finite-width noise: a few percent per block)
    depth = np.arange(1, 51)
    slope, intercept = np.polyfit(depth, outputs, 1)
    residuals = np.array(outputs) - (slope * depth + intercept)
    assert slope > 0 and np.max(np.abs(residuals)) < 0.1 * outputs[-1]  # on a line...
    assert 10 < outputs[-1] / outputs[0] < 200  # ...not exponential: 1 + 50·c over 1 + c, not (1 + c)^50
    frozen = pipeline.diagnose(_residual_stack(50, 0.0)).run
    flat = [layer.act_second_moment for layer in frozen.layers if layer.kind == "residual"]
    assert all(value == pytest.approx(frozen.input_second_moment, rel=1e-6) for value in flat)


def test_residual_shape_mismatch_needs_a_shortcut(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [8]\nlayers:\n  - residual:\n      - {dense: 4}\n")
    result = run_cli("check", path)
    assert result.exit_code == 2 and "shortcut" in result.stderr and result.stderr.startswith(f"{path}:3:")


@pytest.mark.parametrize("sample", ["transformer_encoder", "lstm_sequence", "deep_residual_cnn", "cifar_cnn_relu"])
def test_compare_runs_on_every_layer_zoo_sample(sample):
    result = run_cli("compare", f"sample_specs/{sample}.yaml", "--schemes", "xavier,relu,normal", "--format", "json")
    assert result.exit_code in (0, 1)
    data = json.loads(result.stdout)
    assert sorted(data["ranking"]) == ["normal", "relu", "xavier"]


@pytest.mark.parametrize("text, line, message", [
    ("input: [5, 4]\nlayers:\n  - lstm: {units: 0}\n", 3, "units"),
    ("input: [5, 64]\nlayers:\n  - transformer: {heads: 3, dim: 64, ffn: 10}\n", 3, "heads=3"),
    ("input: [8]\nlayers:\n  - residual: []\n", 3, "empty list"),
    ("input: [5, 4]\nlayers:\n  - rnn: {units: 3, activation: softmax}\n", 3, "elementwise"),
    ("input: [5, 4]\nlayers:\n  - lstm: 4\n    recurrent_init: identity\n", 4, "4×16"),
    ("input: [8]\nlayers:\n  - attention: {heads: 2, dim: 4}\n", 3, "(steps, features)"),
    ("input: [3, 8, 8]\nlayers:\n  - residual:\n      - conv2d: {filters: 4, kernel: 3, stride: 2, padding: 1}\n"
     "    shortcut: dense\n", 5, "flat"),
    ("input: [5, 8]\nlayers:\n  - residual:\n      - attention: {heads: 2, dim: 4}\n    shortcut: conv\n", 5, "sequence"),
])
def test_impossible_zoo_layers_are_located_errors(tmp_path, text, line, message):
    path = tmp_path / "net.yaml"
    path.write_text(text)
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:{line}:") and message in result.stderr


# --- global average pooling: a sequence over its steps, a feature map over its positions ----------

@pytest.mark.parametrize("layers, pooled", [
    ("  - lstm: 16\n", 16),
    ("  - attention: {heads: 2, dim: 12}\n  - layernorm: {}\n  - dropout: 0.1\n", 12),
    ("  - transformer: {heads: 2, dim: 8, ffn: 16}\n  - residual:\n      - layernorm: {}\n", 8),
    ("  - layernorm: {}\n", 8),  # a layernorm reads a 2-D input as [steps, features]
    ("  - conv1d: {filters: 6, kernel: 3}\n", 6),
    ("  - conv1d: {filters: 6, kernel: 3}\n  - layernorm: {}\n", 6),  # still a feature map after a layernorm
    ("  - batchnorm: {}\n", 10),  # a batchnorm reads a 2-D input as [channels, length]
    ("", 10),  # a 2-D input that nothing has read: [channels, length], as before
], ids=["lstm", "attention-norm-dropout", "transformer-residual", "layernorm", "conv1d", "conv1d-layernorm",
        "batchnorm", "input"])
def test_global_avgpool_pools_a_sequence_over_its_steps_and_a_feature_map_over_its_positions(layers, pooled):
    net = make("input: [10, 8]\nbatch: 8\nlayers:\n" + layers + "  - global_avgpool: {}\n  - dense: 3\n")
    pool = net.layers[-2]
    assert pool.output_shape == (pooled,) and pool.units == pooled and net.layers[-1].fan_in == pooled
    assert pool.config["sequence"] == (pooled not in (6, 10))
    assert pipeline.diagnose(net).run.layers[-2].units == pooled
    tokens = make("input: [12]\ninput_distribution: tokens\nlayers:\n  - embedding: {vocab: 50, dim: 6}\n"
                  "  - global_avgpool: {}\n")
    assert tokens.layers[-1].output_shape == (6,)
    image = make("input: [3, 9, 9]\nlayers:\n  - conv2d: {filters: 5, kernel: 3}\n  - global_avgpool: {}\n")
    assert image.layers[-1].output_shape == (5,) and not image.layers[-1].config["sequence"]


def test_global_avgpool_after_a_layernorm_on_a_sequence_keeps_the_signal():
    """A layer-normalised step has mean 0 over its features, so averaging over the features gave exactly 0
    (act var ~1e-16); averaged over 10 independent steps of variance 1, the variance is 1/10."""
    net = make("input: [10, 32]\nbatch: 64\ndtype: float64\nlayers:\n  - layernorm: {}\n  - global_avgpool: {}\n"
               "  - dense: 3\n")
    assert pipeline.diagnose(net).run.layers[1].act_var == pytest.approx(1 / 10, rel=0.15)  # SE ~3% on 2048 values
    lstm = make("input: [20, 8]\nbatch: 32\nlayers:\n  - lstm: 16\n  - layernorm: {}\n  - global_avgpool: {}\n"
                "  - dense: 3\n")
    result = pipeline.diagnose(lstm)
    assert result.run.layers[2].act_var > 0.01
    assert not [f for f in result.findings if f.layer == "global_avgpool_2" and f.code == "vanishing-activations"]


def test_sequence_pooling_backward_matches_finite_differences():
    from initdiag import propagate

    net_spec = make("input: [5, 3]\nbatch: 4\ndtype: float64\ndefaults: {init: xavier_uniform}\nlayers:\n"
                    "  - rnn: 4\n  - layernorm: {}\n  - global_avgpool: {}\n  - {dense: 2, activation: tanh}\n")
    built, targets, grads = _loss_and_gradients(net_spec)

    def loss_value():
        *_, (_, y, _) = propagate.forward_pass(built)
        return np.mean((y - targets) ** 2)

    for i in (0, 3):  # the rnn's input weights, reached only through the pooling; the dense weights
        numeric = numeric_gradient(loss_value, built.layers[i].weights)
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-6, atol=1e-9, err_msg=built.layers[i].name)
