"""exploding-activations / vanishing-activations: the signal's scale along the architecture's segments
(see checks._architecture for where it is judged), a residual stream's multiplicative growth, and
float32's range. README: "Findings and thresholds"."""

from __future__ import annotations

import math

from initdiag.checks import Check, FindingCode, Threshold
from initdiag.checks._architecture import segments, stream_input
from initdiag.checks._shared import better_scheme, finding, forward_finite, level
from initdiag.numbers import compact

PRECISION_LIMIT = 1e30  # a second moment this far from its reference leaves float32's range within a few layers


def _relative(ratio: float, origin: str) -> str:
    if ratio == 0:
        return "0 (no signal left)"
    return f"{compact(ratio)}x {origin}" if ratio >= 1 else f"1/{compact(1 / ratio)} of {origin}"


def drift(run, spec, t, phase=None) -> list:
    """exploding-/vanishing-activations along the chain segments, and the residual streams' growth."""
    if not forward_finite(run):
        return []  # overflow's story
    findings = []
    for reference, origin, judged, stream in segments(run, spec):
        if reference > 0 and judged:
            findings += _chain_drift(reference, origin, judged, spec, t)
        if len(stream) >= 2:
            findings += _stream_growth(run, spec, stream, t)
    failed = {f.code for f in findings if f.severity == "error"}
    return findings + [f for f in _precision(run, spec) if f.code not in failed]


def _chain_drift(reference, origin, judged, spec, t) -> list:
    findings = []
    for code, grows in (("exploding-activations", True), ("vanishing-activations", False)):
        ratios = [(layer, layer.signal_second_moment / reference) for layer in judged]
        ratios = [(layer, r) for layer, r in ratios if (r > 1) == grows and r != 1]
        if not grows:  # small logits are a calm start (zero-initialised heads train); vanishing features are judged below them
            ratios = [(layer, r) for layer, r in ratios if layer.index != len(spec.layers) - 1]
        levels = [(layer, r, level(max(r, 1 / r) if r > 0 else math.inf, t.drift_warning, t.drift_error))
                  for layer, r in ratios]
        levels = [item for item in levels if item[2]]
        if not levels:
            continue
        severity = "error" if any(level == "error" for *_, level in levels) else "warning"
        first, ratio, _ = next(item for item in levels if item[2] == severity)
        worst_layer, worst = max(ratios, key=lambda item: abs(math.log(item[1])) if item[1] > 0 else math.inf)
        direction = "grows" if grows else "shrinks"
        consequence = ("beyond what any usual learning rate absorbs (4 decades in RMS)" if severity == "error" else
                       "a learning rate far from the usual one is needed to absorb it")
        findings.append(finding(
            severity, code, first,
            f"activation second moment {direction} to {_relative(ratio, origin)} at {first.name}"
            + (f" ({_relative(worst, origin)} at {worst_layer.name})" if worst_layer is not first else "")
            + f": {consequence}",
            _scale_hint(spec.layers[first.index], grows),
        ))
    return findings


MIN_STREAM_BLOCKS = 3  # a steady per-block factor needs two ratios of increments that agree to be seen


def _stream_growth(run, spec, stream, t) -> list:
    """How a residual stream grows per block: the increments s_k - s_{k-1} of its second moment stay about
    constant when it grows additively; when each is a steady factor g larger than the last, the stream
    grows multiplicatively, g^blocks over its blocks, judged with stream_warning / stream_error. g is
    fitted to the logarithms of all the increments (least squares), so one noisy block does not decide."""
    begins = stream_input(spec, spec.layers[stream[0].index])
    if begins < 0:
        return []  # the stream starts at the input: measured against the input by the chain rules' precision check
    start = run.layers[begins]  # the first block's input
    moments = [start.signal_second_moment] + [block.signal_second_moment for block in stream]
    if not all(math.isfinite(m) and m > 0 for m in moments):
        return []
    increments = [later - earlier for earlier, later in zip(moments, moments[1:])]
    if min(increments) <= 0:
        return []  # not a steadily growing stream: the chain rules and the gradients speak for it
    blocks = len(stream)
    if blocks < MIN_STREAM_BLOCKS:
        return []  # two increments are one ratio: a one-off step, not yet a steady factor (the chain rules judge it)
    logs = [math.log(increment) for increment in increments]
    mean_k, mean_log = (blocks - 1) / 2, sum(logs) / blocks
    slope = sum((k - mean_k) * (y - mean_log) for k, y in enumerate(logs)) / sum((k - mean_k) ** 2 for k in range(blocks))
    factor = math.exp(slope)
    multiplied = factor ** blocks
    severity = level(multiplied, t.stream_warning, t.stream_error)
    if not severity or factor <= 1:
        return []
    end = stream[-1]
    return [finding(
        severity, "exploding-activations", end,
        f"the residual stream grows multiplicatively: each block's increment about {compact(factor)}x the last's, "
        f"{compact(multiplied)}x over {blocks} blocks (the stream's second moment is {compact(moments[-1] / moments[0])}x "
        f"{start.name}'s at {end.name}); additive growth (a constant increment per block) is what trains at depth",
        "scale each residual branch down (scale: 1/sqrt(blocks), or a zero-initialised last layer in the branch, "
        "as Fixup and ReZero do), or normalize inside the branch (batchnorm/layernorm)",
    )]


def _precision(run, spec) -> list:
    """Layers the drift rules skip can still lose float32's range: a scale beyond 1e±30 of the input's."""
    reference = run.input_second_moment
    if not reference > 0:
        return []
    for layer in run.layers:
        moment = layer.signal_second_moment
        if moment > 0 and max(moment / reference, reference / moment) > PRECISION_LIMIT:
            grows = moment > reference
            return [finding("error", "exploding-activations" if grows else "vanishing-activations", layer,
                            f"{layer.name}: activation second moment {_relative(moment / reference, 'the input')}'s: "
                            "beyond float32's precision", "the weights are far off scale for this depth: use a fan-scaled scheme")]
    return []


def _scale_hint(layer_spec, grows: bool) -> str:
    """What to change, in the spec's terms: the scheme when it is not the one for the activation, else the depth."""
    better = better_scheme(layer_spec)
    if better:
        return (f"{layer_spec.name} uses {layer_spec.init.display} with {layer_spec.activation.name}: "
                f"init: {better} keeps the scale ({'too large' if grows else 'too small'} now)")
    return ("the schemes already match their activations: the scale drifts with depth; "
            "add normalization (batchnorm/layernorm) or residual connections, or a gain that keeps it (recommend --calibrate)")


DRIFT = "above this factor of a layer's activation second moment vs its segment's reference, either direction"
STREAM = "above this multiplicative growth of a residual stream over its blocks"

CHECK = Check(
    order=40,
    codes=(
        FindingCode("exploding-activations", ("warning", "error"), "The signal grows beyond what training absorbs",
                    "Along a chain, the activation second moment left its reference (the input, or the last "
                    "normalization) by the drift thresholds; along a residual stream, each block multiplies "
                    "the stream. Use the fan-scaled scheme for the activation, or scale residual branches down.",
                    flag="explode", panel="signal"),
        FindingCode("vanishing-activations", ("warning", "error"), "The signal shrinks beyond what training absorbs",
                    "The weights are too small for the depth: the signal dies before the output. Use a fan-scaled "
                    "scheme (relu/He for ReLU-like, xavier for tanh/sigmoid, lecun_normal for SELU).",
                    flag="vanish", panel="signal"),
    ),
    thresholds=(
        Threshold("drift_warning", 10.0, DRIFT),
        Threshold("drift_error", 1e8, DRIFT),  # 1e4 in RMS: beyond the ~4 decades of learning rate that SGD is used with
        Threshold("stream_warning", 10.0, STREAM),
        Threshold("stream_error", 10000.0, STREAM),
    ),
    find=drift,
)
