"""exploding-gradients / vanishing-gradients: what learning can use. The gradient across depth (first
weighted layer vs the readout), the body's relative gradients, and the gradient through time in
recurrent layers. README: "Findings and thresholds"."""

from __future__ import annotations

import math

from initdiag.checks import Check, FindingCode, Threshold
from initdiag.checks._architecture import normalized
from initdiag.checks._shared import finding, gradient_energy, ratio_text
from initdiag.checks._shared import level as _level
from initdiag.numbers import compact


def gradients(run, spec, t, phase=None) -> list:
    return across_depth(run, spec, t) + body_learning(run, spec, t) + through_time(run, spec, t)


def across_depth(run, spec, t) -> list:
    """First weighted layer vs the readout: the RMS ratio of their output-gradient energies."""
    weighted = [layer for layer in run.layers if layer.weight_grad_var is not None]
    if len(weighted) < 2:
        return []
    first, last = weighted[0], weighted[-1]
    if first.weight_grad_var == 0 and last.weight_grad_var == 0:
        return [finding("error", "vanishing-gradients", first, "no gradient reaches any weight (all weight gradients are 0)",
                        "break the symmetry: zero or constant weights pass no gradient; use a random scheme")]
    if last.weight_std == 0 and last.weight_mean == 0 and last.weight_grad_var > 0:
        # a zero-initialised readout (torchvision's ViT, timm's Mixer, "zero-init the last layer"): it passes no
        # gradient down at the first step, but its own gradient is not 0, so from the second step it does
        return []
    top, bottom = gradient_energy(last, spec.layers[last.index]), gradient_energy(first, spec.layers[first.index])
    if not (top > 0 and math.isfinite(top) and math.isfinite(bottom)):
        return []
    ratio = math.sqrt(bottom / top)
    level = _level(max(ratio, 1 / ratio) if ratio > 0 else math.inf, t.gradient_warning, t.gradient_error)
    if not level:
        return []
    grows = ratio > 1
    healed = grows and level == "error" and normalized(spec)
    if healed:
        level = "warning"
    return [finding(
        level, "exploding-gradients" if grows else "vanishing-gradients", first,
        f"the gradient reaching {first.name} is {ratio_text(ratio)} the one entering at {last.name} (RMS of the per-sample "
        "gradient energy)" + ("" if level == "error" else ": the first layers learn far slower or faster than the last"),
        ("gradients grow towards the input through the normalized layers: they are scale-invariant, so training "
         "lowers their effective learning rate and it trains, more slowly; residual connections avoid it") if healed else
        "gradients grow towards the input: the weights are too large for this depth" if grows else
        "gradients shrink towards the input: the weights are too small for this depth, or saturated/dead units block them",
    )]


def relative_gradient(layer) -> float | None:
    """|dW|/|W| in RMS: the fraction of its own size a weight moves per unit of learning rate (SGD)."""
    if layer.weight_grad_var is None or layer.weight_std is None:
        return None
    size = math.sqrt(layer.weight_std**2 + layer.weight_mean**2)
    ratio = math.sqrt(layer.weight_grad_var) / size if size > 0 else None
    return ratio if ratio is not None and math.isfinite(ratio) else None


def body_learning(run, spec, t) -> list:
    """The body (every layer with weights but the readout) must be able to learn: if even its fastest
    layer moves by less than relative_gradient_error of its size per step at learning rate 1 (the top
    of SGD's usual range), the readout is left alone with the features the init drew."""
    readout = max((layer.index for layer in run.layers if layer.weight_grad_var is not None), default=None)
    body = [(relative_gradient(layer), layer) for layer in run.layers
            if layer.weight_grad_var is not None and layer.index != readout]
    body = [(ratio, layer) for ratio, layer in body if ratio is not None and ratio > 0]
    if not body:
        return []
    fastest, layer = max(body, key=lambda item: item[0])
    level = "error" if fastest < t.relative_gradient_error else "warning" if fastest < t.relative_gradient_warning else None
    if not level:
        return []
    return [finding(
        level, "vanishing-gradients", layer,
        f"the weights below the readout get relative gradients |dW|/|W| of at most {compact(fastest)} (at {layer.name}): "
        f"at learning rate 1 they move by {compact(fastest)} of their size per step, so the features stay "
        "what the init drew" + (" for thousands of steps" if level == "error" else " for hundreds of steps"),
        "the signal or the gradient reaching these layers is too small: a fan-scaled scheme (or a larger "
        "std/gain) for the layers whose scale shrinks",
    )]


def through_time(run, spec, t) -> list:
    """Recurrent layers: how the gradient carried back along the sequence changes per step. An LSTM's
    memory runs through its cell state, so its ratio is the cell's; a plain RNN's and a GRU's the hidden
    state's. The per-step factor ρ = ratio^(1/(steps-1)) gives the memory length ξ_t = 1/|ln ρ| steps:
    below one step (ρ < 1/e or > e) the state forgets (or amplifies) by more than e every step, which no
    gate learns around at init: error. Over the whole sequence the gradient thresholds apply as a warning:
    a gated cell can learn longer memory (forget gates), but starts from a weak signal."""
    findings = []
    for layer, layer_spec in zip(run.layers, spec.layers):
        cell = layer.kind == "lstm" and layer.cell_grad_var_first_step is not None
        first = layer.cell_grad_var_first_step if cell else layer.grad_var_first_step
        last = layer.cell_grad_var_last_step if cell else layer.grad_var_last_step
        steps = layer_spec.input_shape[0] if layer_spec.input_shape else 0
        if first is None or last is None or not last > 0 or steps < 2 or not math.isfinite(first):
            continue
        ratio = math.sqrt(first / last)
        per_step = ratio ** (1 / (steps - 1)) if ratio > 0 else 0.0
        memory = 1 / abs(math.log(per_step)) if 0 < per_step != 1 else math.inf
        what = "cell state" if cell else "hidden state"
        grows = ratio > 1
        if per_step > math.e or per_step < 1 / math.e:
            level = "error"  # the state forgets (or amplifies) by more than e every single step
        elif _level(max(ratio, 1 / ratio) if ratio > 0 else math.inf, t.gradient_warning, t.gradient_error):
            level = "warning"  # over the whole sequence only: a gate can learn longer memory
        else:
            continue
        fade = f"{compact(memory)} steps" if math.isfinite(memory) else "no change"
        findings.append(finding(
            level, "exploding-gradients" if grows else "vanishing-gradients", layer,
            f"{layer.name}: through time, the RMS of dLoss/d({what}) at the first of {steps} steps is {ratio_text(ratio)} "
            f"that at the last: {compact(per_step)}x per step, a factor e every {fade}",
            _recurrent_hint(layer_spec, grows),
        ))
    return findings


def _recurrent_hint(layer_spec, grows: bool) -> str:
    recurrent = getattr(layer_spec, "recurrent_init", None)
    recurrent_name = recurrent.scheme if recurrent is not None else "orthogonal"
    if grows:
        return ("the recurrent weights are too large: " +
                ("lower the orthogonal gain" if recurrent_name == "orthogonal" else "recurrent_init: orthogonal keeps the scale"))
    advice = []
    if recurrent_name != "orthogonal":
        advice.append("recurrent_init: orthogonal")
    if layer_spec.kind == "lstm" and not layer_spec.config.get("forget_bias"):
        advice.append("forget_bias: 1")
    if not advice:
        return ("the scheme is already the usual one: the sequence is long for this cell; "
                "a gated cell (lstm/gru), a shorter sequence or truncated backpropagation helps")
    return "the gradient fades along the sequence: " + " and ".join(advice)


GRADIENT = "above this factor of the first layer's vs the readout's gradient energy (RMS), either direction"
RELATIVE = "below this largest |dW|/|W| (RMS) among the layers below the readout"

CHECK = Check(
    order=50,
    codes=(
        FindingCode("exploding-gradients", ("warning", "error"), "The gradient grows towards the input",
                    "The first layer's gradient energy exceeds the readout's, or the gradient grows along a "
                    "sequence; lower the weight (or recurrent) scale or add normalization.",
                    flag="grad-explode", panel="gradient"),
        FindingCode("vanishing-gradients", ("warning", "error"), "The gradient cannot move the weights",
                    "The first layers' gradient energy is far below the readout's, the layers below the readout "
                    "get relative gradients too small for any usual learning rate, or the gradient fades along a "
                    "sequence; raise the weight scale, use a matched scheme, or add residual connections.",
                    flag="grad-vanish", panel="gradient"),
    ),
    thresholds=(
        # first-layer vs readout RMS of the per-sample gradient energy, either way (also over a sequence)
        Threshold("gradient_warning", 100.0, GRADIENT),
        Threshold("gradient_error", 10000.0, GRADIENT),
        # the body's largest |dW|/|W|: its fraction moved per step at lr 1
        Threshold("relative_gradient_warning", 1e-3, RELATIVE),
        Threshold("relative_gradient_error", 1e-4, RELATIVE),
    ),
    find=gradients,
)
