"""The checks' rules (initdiag/checks/), each test able to fail on the rule it names: verdicts that follow the architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from initdiag import checks, losses, network, pipeline, probes, propagate, spec, stats
from initdiag.checks import _architecture
from conftest import make_spec as make

SAMPLES = Path(__file__).resolve().parent.parent / "sample_specs"


def findings_of(text: str, code: str) -> list:
    """The findings of one code when the spec `text` is checked."""
    return [f for f in pipeline.diagnose(make(text)).findings if f.code == code]


def codes(findings, severity=None):
    return {(f.code, f.layer) for f in findings if severity is None or f.severity == severity}


def mlp(depth: int, width: int, batch: int, init: str = "relu", bias: str = "") -> spec.NetworkSpec:
    text = f"input: [32]\nbatch: {batch}\ndefaults: {{init: {init}, activation: relu{bias}}}\nlayers:\n"
    text += f"  - dense: {width}\n" * depth + "  - dense: 10\n    activation: softmax\n    init: xavier\n"
    return make(text)


def test_resnet20_without_batchnorm_fails_for_its_stream_not_for_an_overflow():
    findings = pipeline.diagnose(spec.load(SAMPLES / "resnet20_no_bn.yaml")).findings
    errors = [f for f in findings if f.severity == "error"]
    assert [f.code for f in errors] == ["exploding-activations"], errors
    assert "residual stream grows multiplicatively" in errors[0].message
    assert not any(f.code == "overflow" for f in findings)


def test_a_stream_of_two_blocks_is_not_called_multiplicative_but_the_same_blocks_at_depth_are():
    """Two blocks give one ratio of increments: no steady factor can be seen in it (a 2-block Llama whose second
    increment is 3x its first, from a 0.02-std embedding, trains); four such blocks show it."""
    def stream(blocks: int) -> str:
        # each block multiplies the stream's second moment by about 1 + 3² = 10: over 2 blocks 100x, past stream_warning
        block = "  - residual:\n      - dense: 64\n      - {dense: 64, activation: identity}\n    scale: 3\n"
        return ("input: [64]\nbatch: 128\ndefaults: {init: relu, activation: relu}\nlayers:\n  - dense: 64\n"
                + block * blocks + "  - dense: 10\n")

    def multiplicative(text: str) -> list:
        return [f for f in findings_of(text, "exploding-activations") if "grows multiplicatively" in f.message]

    assert multiplicative(stream(4)), "He branches at scale 3 multiply the stream per block"
    assert not multiplicative(stream(2))


def test_the_output_gradient_is_the_logits_gradient_with_a_fused_loss():
    net_spec = mlp(3, 64, 64)
    run = pipeline.diagnose(net_spec).run
    built = network.build(net_spec)
    y = built.inputs
    for layer in built.layers:
        y, _ = layer.forward(y)
    targets = losses.resolve("auto", "softmax").targets(network.stream(net_spec.seed, network.STREAM_TARGETS), y.shape, y.dtype)
    # softmax + cross-entropy: dLoss/dz = (p - onehot)/B, the gradient entering the network, as torch computes it
    assert run.layers[-1].grad_var == pytest.approx(float(np.var((y.astype(np.float64) - targets) / 64)), rel=1e-5)


@pytest.mark.parametrize("batch", [8, 16, 256])
def test_a_unit_with_a_large_negative_bias_is_dead_at_every_batch_size(batch):
    run = pipeline.diagnose(mlp(2, 64, batch, bias=", bias_init: -100")).run
    assert run.layers[0].dead_fraction == 1.0
    assert run.probe_samples == min(256, batch * (1 + probes.DEAD_PROBE_PASSES)) if batch < 256 else run.probe_samples == 256


@pytest.mark.parametrize("batch", [8, 16, 256])
def test_dead_units_are_counted_over_more_inputs_than_a_small_batch(batch):
    """A deep He ReLU stack has units that are off for most inputs (its features are correlated across
    samples). Counted on the batch alone, a small batch calls many of them dead; the probe adds fresh
    inputs, which can only reveal activity: its count is never above the batch's own."""
    net_spec = mlp(16, 64, batch)
    built = network.build(net_spec)
    alone = []
    x = built.inputs
    for layer in built.layers:
        x, _ = layer.forward(x)
        alone.append(stats.dead_fraction(x))
    run = propagate.run(network.build(net_spec))
    probed = [layer.dead_fraction for layer in run.layers]
    assert all(p <= a + 1e-12 for p, a in zip(probed, alone))
    if batch == 8:  # 8 correlated samples over-count: somewhere the probe finds units the batch called dead
        assert any(p < a for p, a in zip(probed[:-1], alone[:-1]))
    if batch == 256:  # the batch alone is the probe
        assert probed == alone


def test_a_layer_feeding_a_batchnorm_has_no_drift_target():
    text = ("input: [3, 16, 16]\nbatch: 16\ndefaults: {init: relu, activation: relu}\nlayers:\n"
            "  - conv2d: {filters: 8, kernel: 3, padding: 1}\n    init: {normal: {std: 0.001}}\n    activation: identity\n"
            "  - batchnorm: {}\n  - conv2d: {filters: 8, kernel: 3, padding: 1}\n  - global_avgpool: {}\n"
            "  - dense: 10\n    activation: softmax\n    init: xavier\n")
    findings = pipeline.diagnose(make(text)).findings
    assert not any(f.code in ("vanishing-activations", "exploding-activations") for f in findings), findings


def test_the_same_conv_without_the_batchnorm_is_judged():
    text = ("input: [3, 16, 16]\nbatch: 16\ndefaults: {init: relu, activation: relu}\nlayers:\n"
            "  - conv2d: {filters: 8, kernel: 3, padding: 1}\n    init: {normal: {std: 0.001}}\n    activation: identity\n"
            "  - conv2d: {filters: 8, kernel: 3, padding: 1}\n  - global_avgpool: {}\n"
            "  - dense: 10\n    activation: softmax\n    init: xavier\n")
    findings = pipeline.diagnose(make(text)).findings
    assert ("vanishing-activations", "conv2d_0") in codes(findings)


def test_a_dead_channel_is_reported_where_it_dies_not_again_at_the_batchnorm():
    text = ("input: [3, 8, 8]\nbatch: 32\ndefaults: {init: relu, activation: relu}\nlayers:\n"
            "  - conv2d: {filters: 8, kernel: 3, padding: 1}\n    bias_init: -100\n  - batchnorm: {}\n"
            "  - flatten: {}\n  - dense: 10\n    activation: softmax\n    init: xavier\n")
    dead = findings_of(text, "dead-units")
    assert [f.layer for f in dead] == ["conv2d_0"]


def test_chaotic_deep_tanh_loses_the_input_contrast():
    deep = ("input: [64]\nbatch: 128\ndefaults: {init: {lecun_normal: {gain: 2.0}}, activation: tanh, bias_init: 0.2236}\n"
            "layers:\n" + "  - dense: 128\n" * 100 + "  - dense: 10\n    activation: softmax\n    init: xavier\n")
    run = pipeline.diagnose(make(deep))
    # 100 layers at xi_c = 7: D ~ e^-14, measured within a few standard errors of 0
    contrast = run.run.contrast
    assert contrast.contrast < checks.Thresholds().contrast_error and abs(contrast.contrast) < 3 * contrast.standard_error
    assert ("depth-scale", "dense_99") in codes(run.findings, "error")
    shallow = make(deep.replace("  - dense: 128\n" * 100, "  - dense: 128\n" * 5))
    assert pipeline.diagnose(shallow).run.contrast.contrast > 0.3
    assert not any(f.code == "depth-scale" for f in pipeline.diagnose(shallow).findings)


def test_hints_do_not_recommend_the_scheme_already_in_use():
    findings = pipeline.diagnose(spec.load(SAMPLES / "deep_tanh_xavier.yaml")).findings
    drift = [f for f in findings if f.code == "vanishing-activations"]
    assert drift and "init: xavier" not in drift[0].hint and "already match" in drift[0].hint
    wrong_text = ("input: [64]\nbatch: 64\ndefaults: {init: {normal: {std: 0.01}}, activation: tanh}\nlayers:\n"
                 + "  - dense: 64\n" * 6 + "  - dense: 10\n    activation: softmax\n    init: xavier\n")
    hints = [f.hint for f in findings_of(wrong_text, "vanishing-activations")]
    assert hints and "init: xavier" in hints[0]


def test_attention_saturation_is_named_as_attention():
    text = ("input: [16, 32]\nbatch: 8\ndefaults: {init: {normal: {std: 1.0}}}\nlayers:\n"
            "  - transformer: {heads: 4, dim: 32, ffn: 64, activation: gelu, norm: pre}\n  - layernorm: {}\n")
    saturation = findings_of(text, "saturation")
    assert saturation and all("attention rows" in f.message and "gelu" not in f.message for f in saturation)


def test_a_calibrated_gain_is_not_a_scheme_mismatch():
    text = ("input: [32]\nbatch: 64\ndefaults: {activation: tanh}\nlayers:\n"
            "  - dense: 32\n    init: {relu: {gain: 0.96}}\n  - dense: 32\n    init: {relu: {gain: 1.34}}\n"
            "  - dense: 32\n    init: relu\n")
    mismatches = findings_of(text, "scheme-activation-mismatch")
    assert [f.layer for f in mismatches] == ["dense_2"]


def test_an_lstm_is_judged_through_its_cell_state():
    text = ("input: [10, 16]\nbatch: 64\ndefaults: {init: xavier}\nlayers:\n"
            "  - lstm: {units: 32, return_sequences: false}\n    recurrent_init: {normal: {std: 0.01}}\n"
            "  - dense: 8\n    activation: softmax\n")
    layer = pipeline.diagnose(make(text)).run.layers[0]
    # forget gates at sigmoid(1) = 0.73 carry the cell back; the hidden state, through tiny recurrent
    # weights, barely carries anything: the two ratios differ by orders of magnitude
    cell = layer.cell_grad_var_first_step / layer.cell_grad_var_last_step
    hidden = layer.grad_var_first_step / layer.grad_var_last_step
    assert cell > 100 * hidden


def test_a_deep_plain_batchnorm_cnn_decorrelates_but_is_not_failing():
    """24 x (conv, relu, batchnorm) on 8x8 inputs: its inputs decorrelate with depth and its gradients grow
    towards the input (batchnorm's chaotic start), yet it trains (0.91 at lr 0.01 in our own labelled set):
    its layers are scale-invariant, so both are warnings."""
    text = "input: [1, 8, 8]\nbatch: 64\ndefaults: {init: relu, activation: relu}\nlayers:\n"
    text += "  - conv2d: {filters: 16, kernel: 3, padding: same}\n  - batchnorm: {}\n" * 24
    text += "  - flatten: {}\n  - dense: 10\n    activation: softmax\n    init: xavier\n"
    diagnosis = pipeline.diagnose(make(text))
    assert diagnosis.run.contrast.contrast < checks.Thresholds().contrast_error
    assert {f.code for f in diagnosis.findings if f.severity == "warning"} >= {"depth-scale"}
    assert not [f for f in diagnosis.findings if f.severity == "error"]
    # the same stack without its batchnorms is judged on the contrast alone
    assert not _architecture.normalized(make(text.replace("  - batchnorm: {}\n", "")))
    assert _architecture.normalized(make(text))


def test_dead_relus_after_an_identity_layer_are_reported_at_the_activation_layer():
    """dense (identity) → activation: relu is dense with relu: the units die at the activation layer, judged there."""
    dead = findings_of("""\
        input: [16]
        layers:
          - dense: 32
            init: {normal: {std: 0.01}}
            bias_init: -10
          - activation: relu
          - dense: 4
            init: xavier
        """, "dead-units")
    assert ("dead-units", "activation_1") in codes(dead, "error")
    assert ("dead-units", "dense_0") not in codes(dead)


def test_a_healthy_conv_batchnorm_relu_net_gets_no_finding_from_its_activation_layers():
    """conv → batchnorm → activation: relu, He-initialised: no dead units, no drift, and no scheme mismatch for the
    convs' identity (the relu after the batchnorm is their activation); a layer scale and stochastic depth pass."""
    findings = pipeline.diagnose(make("""\
        input: [3, 16, 16]
        batch: 64
        defaults: {init: relu}
        layers:
          - conv2d: {filters: 8, kernel: 3, padding: same}
          - batchnorm: {}
          - activation: relu
          - conv2d: {filters: 8, kernel: 3, padding: same}
          - batchnorm: {}
          - activation: relu
          - stochastic_depth: 0.1
          - global_avgpool: {}
          - dense: 10
            init: xavier
            activation: softmax
        """)).findings
    assert findings == [], findings


def test_the_architecture_tells_scale_setting_weightless_kinds_from_those_passing_it_on():
    assert {"layer_scale", "activation"} <= set(_architecture.RESCALING_KINDS)
    assert not {"layer_scale", "activation"} & set(_architecture.WEIGHTLESS_PASS_KINDS)
    assert {"dropout", "stochastic_depth", "flatten"} <= set(_architecture.WEIGHTLESS_PASS_KINDS)


def test_a_small_layer_scale_on_the_main_chain_is_judged_as_setting_the_scale():
    vanishing = findings_of("input: [16]\nlayers:\n  - dense: 16\n  - layer_scale: {value: 1e-6}\n  - dense: 16\n",
                            "vanishing-activations")
    assert ("vanishing-activations", "layer_scale_1") in codes(vanishing, "error")


# ------------------------------------------------------------------ rules met on imported real models
def _codes(text: str, tmp_path=None) -> dict:
    report = pipeline.diagnose(make(text, base_dir=tmp_path or "."), checks.Thresholds()).report
    return {(f["code"], f["layer"]) for f in report["findings"] if f["severity"] != "info"}, report["verdict"]


def test_the_input_contrast_is_measured_with_dropout_off():
    body = ("input: [64]\nbatch: 64\nlayers:\n" + "".join("  - {dense: 64, activation: tanh}\n" for _ in range(3)))
    contrasts = []
    for dropout in ("{p: 0.5}", "{p: 0.5, eval: true}"):
        parsed = make(body + f"  - dropout: {dropout}\n  - dense: 10\n")
        built = network.build(parsed)
        contrasts.append(probes.input_contrast(built, len(parsed.layers) - 1).contrast)
    assert contrasts[0] == contrasts[1] > 0.5  # the masks' noise is not counted as lost geometry


SQUEEZE = """\
input: [16, 8, 8]
batch: 32
layers:
  - {conv2d: {filters: 16, kernel: 3, padding: 1}, activation: relu, init: relu, name: trunk}
  - {global_avgpool: {}, name: squeeze}
  - {dense: 4, activation: tanh, init: {normal: {std: 0.002}}, name: reduce}
  - {dense: 16, activation: sigmoid, init: {normal: {std: 0.002}}, name: expand}
  - {multiply: {}, inputs: [trunk, expand], name: excite}
  - {conv2d: {filters: 16, kernel: 3, padding: 1}, activation: relu, init: relu}
  - {global_avgpool: {}}
  - {dense: 10}
"""


def test_a_gate_path_is_judged_through_the_product_not_against_the_chain():
    found, _ = _codes(SQUEEZE)
    assert not {code for code, layer in found if layer in ("reduce", "expand")}, found
    # the same tiny layers in the chain itself are judged (the rule still sees them)
    chain = SQUEEZE.replace("  - {multiply: {}, inputs: [trunk, expand], name: excite}\n", "").replace(
        "  - {dense: 16, activation: sigmoid", "  - {dense: 16, activation: tanh")
    chain = chain.replace("  - {conv2d: {filters: 16, kernel: 3, padding: 1}, activation: relu, init: relu}\n"
                          "  - {global_avgpool: {}}\n", "")
    found, _ = _codes(chain)
    assert {("vanishing-activations", "reduce"), ("vanishing-activations", "expand")} & found, found


def test_a_zero_initialised_head_trains_and_is_not_dead_symmetric_or_gradient_blocking():
    found, verdict = _codes("input: [32]\nbatch: 64\nloss: cross_entropy\nlayers:\n"
                            "  - {dense: 64, activation: relu, init: relu}\n  - {dense: 64, activation: relu, init: relu}\n"
                            "  - {dense: 10, init: zeros}\n")
    assert verdict == "healthy", found
    # a zero hidden layer is still symmetric, and its relu units dead
    found, verdict = _codes("input: [32]\nbatch: 64\nlayers:\n  - {dense: 64, activation: relu, init: zeros}\n"
                            "  - {dense: 10}\n")
    assert verdict == "failing" and ("symmetry", "dense_0") in found


def test_a_batchnorm_with_gamma_zero_in_a_residual_branch_has_no_dead_units(tmp_path):
    np.savez(tmp_path / "bn.npz", gamma=np.zeros(8, dtype=np.float32))
    text = ("input: [8, 8, 8]\nbatch: 16\nlayers:\n"
            "  - {conv2d: {filters: 8, kernel: 3, padding: 1, bias: false}, init: relu, name: conv}\n"
            "  - {batchnorm: {}, supplied: bn.npz, name: bn}\n  - {add: {}, inputs: [bn, input], name: join}\n"
            "  - {activation: relu}\n  - {global_avgpool: {}}\n  - {dense: 4}\n")
    found, _ = _codes(text, tmp_path)
    assert not {code for code, layer in found if code == "dead-units"}, found


def test_dead_units_on_a_gate_path_are_a_warning_and_in_the_chain_an_error():
    gated = SQUEEZE.replace("{dense: 4, activation: tanh, init: {normal: {std: 0.002}}, name: reduce}",
                            "{dense: 4, activation: relu, bias_init: -1.0, name: reduce}")
    report = pipeline.diagnose(make(gated), checks.Thresholds()).report
    dead = [f for f in report["findings"] if f["code"] == "dead-units" and f["layer"] == "reduce"]
    assert [f["severity"] for f in dead] == ["warning"] and "gate" in dead[0]["message"]
    chain = gated.replace("  - {multiply: {}, inputs: [trunk, expand], name: excite}\n", "").replace(
        "  - {conv2d: {filters: 16, kernel: 3, padding: 1}, activation: relu, init: relu}\n  - {global_avgpool: {}}\n", "")
    report = pipeline.diagnose(make(chain), checks.Thresholds()).report
    assert [f["severity"] for f in report["findings"] if f["code"] == "dead-units" and f["layer"] == "reduce"] == ["error"]
