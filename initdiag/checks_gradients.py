"""The checks of what learning can use: the gradient across depth, through time, and the input's
geometry at the features the readout learns from. README: "Findings and thresholds"."""

from __future__ import annotations

import math

import numpy as np

from initdiag import checks_signal
from initdiag.numbers import compact


def _ratio(ratio: float) -> str:
    """7.5e4x, 1/1.33e3 of, 0x (no signal left): a factor relative to what follows it."""
    return f"{compact(ratio)}x" if ratio >= 1 else f"1/{compact(1 / ratio)} of" if ratio > 0 else "0x (no signal left)"


_level = checks_signal.level


def gradient_energy(layer, spec_layer) -> float:
    """Per-sample energy of dLoss/d(layer output): its variance times the output's size. Conserved through
    a layer whose χ = 1 whatever the layer's width, positions or kind (He conserves it for ReLU), so a conv
    stem and a dense head compare like for like, as the weight gradients (summed over positions) do not."""
    return layer.grad_var * float(np.prod(spec_layer.output_shape))


def across_depth(run, spec, t, finding) -> list:
    """First weighted layer vs the readout: the RMS ratio of their output-gradient energies."""
    weighted = [layer for layer in run.layers if layer.weight_grad_var is not None]
    if len(weighted) < 2:
        return []
    first, last = weighted[0], weighted[-1]
    if first.weight_grad_var == 0 and last.weight_grad_var == 0:
        return [finding("error", "vanishing-gradients", first, "no gradient reaches any weight (all weight gradients are 0)",
                        "break the symmetry: zero or constant weights pass no gradient; use a random scheme")]
    top, bottom = gradient_energy(last, spec.layers[last.index]), gradient_energy(first, spec.layers[first.index])
    if not (top > 0 and math.isfinite(top) and math.isfinite(bottom)):
        return []
    ratio = math.sqrt(bottom / top)
    level = _level(max(ratio, 1 / ratio) if ratio > 0 else math.inf, t.gradient_warning, t.gradient_error)
    if not level:
        return []
    grows = ratio > 1
    healed = grows and level == "error" and checks_signal.normalized(spec)
    if healed:
        level = "warning"
    return [finding(
        level, "exploding-gradients" if grows else "vanishing-gradients", first,
        f"the gradient reaching {first.name} is {_ratio(ratio)} the one entering at {last.name} (RMS of the per-sample "
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


def body_learning(run, spec, t, finding) -> list:
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


def through_time(run, spec, t, finding) -> list:
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
            f"{layer.name}: through time, the RMS of dLoss/d({what}) at the first of {steps} steps is {_ratio(ratio)} "
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


def input_contrast(run, spec, t, finding) -> list:
    """depth-scale: the features the readout sees keep less than contrast_error (e^-3: deeper than three depth
    scales ξ_c) of the input's near/far contrast, or contrast_warning (e^-2); or their input-dependent part
    has collapsed below collapse_error of their second moment."""
    contrast = run.contrast
    if contrast is None:
        return []
    layer = run.layers[contrast.layer_index]
    before = run.layers[contrast.layer_index - 1]
    if contrast.signal_fraction < t.collapse_error:
        return [finding(
            "error", "depth-scale", before,
            f"the features {layer.name} reads (from {before.name}) barely depend on the input: the part that varies "
            f"across inputs is {compact(contrast.signal_fraction)} of their second moment, so every input looks alike "
            "(the ordered phase: the signal collapses onto one point)",
            "the biases or a contracting scale dominate the weights: use a fan-scaled scheme with zero bias_init, "
            "or fewer layers",
        )]
    level = _level(1 / contrast.contrast if contrast.contrast > 0 else math.inf, 1 / t.contrast_warning, 1 / t.contrast_error)
    if not level:
        return []
    depth = f"about {compact(-math.log(contrast.contrast))} depth scales ξ_c deep" if contrast.contrast > 0 else "far deeper than its depth scale ξ_c"
    # an estimate less precise than the threshold itself (a handful of pairs) cannot fail a network
    noisy = level == "error" and contrast.standard_error >= t.contrast_error
    healed = level == "error" and checks_signal.normalized(spec)
    return [finding(
        "warning" if noisy or healed else level, "depth-scale", before,
        f"the features {layer.name} reads (from {before.name}) keep {compact(max(contrast.contrast, 0.0))} of the input's "
        f"contrast between near and far inputs (±{compact(contrast.standard_error)} over {contrast.samples} pairs): "
        f"the network is {depth}; in a few hundred steps networks train up to about 3 ξ_c "
        "(Schoenholz et al. 2017: about 6 ξ_c with long training)"
        + (" — too few samples to be sure: use a larger batch or --seeds" if noisy else "")
        + ("; its layers feed normalizations, which make them scale-invariant: they train, more slowly"
           if healed and not noisy else ""),
        _edge_hint(run, spec),
    )]


def _edge_hint(run, spec) -> str:
    """Which way the edge of chaos lies: a gradient that grows towards the input marks the chaotic side."""
    weighted = [layer for layer in run.layers if layer.weight_grad_var is not None]
    energies = [gradient_energy(layer, spec.layers[layer.index]) for layer in (weighted[0], weighted[-1])] if weighted else []
    chaotic = len(energies) == 2 and energies[1] > 0 and energies[0] > energies[1]
    if chaotic:
        return ("the chaotic side (gradients grow towards the input): a smaller weight variance, e.g. init: xavier or "
                "a gain below 1, or fewer layers; residual connections with a small scale keep depth trainable")
    return ("the ordered side (gradients shrink towards the input): a larger weight variance (a gain above 1, or "
            "relu/He for ReLU-like units) or smaller biases (bias_init: 0), or fewer layers")
