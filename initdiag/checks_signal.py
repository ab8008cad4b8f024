"""The checks of a network's signal scale along its architecture (exploding- and vanishing-activations),
and the architecture facts other checks share (normalized layers, residual branches). Each rule is
explained, with the networks it was checked against, in the README ("Findings and thresholds").

Where the scale is judged (drift):
- The network is cut into segments. A normalization (batchnorm, layernorm, a post-norm transformer
  block) and a recurrent layer (its state is bounded by construction) restart the reference at
  their own output; so does the end of a residual stream.
- A layer is judged against its segment's start (the input, the first normalized point, the
  stream's end): only layers that set a scale (weights, residual sums) and whose output does not
  feed a normalization, which undoes it on the next row; weightless layers (pooling, flatten) pass
  the scale on. Layers inside a residual branch are judged through the stream they add to.
- A residual stream (consecutive residual ends and pre-norm transformer blocks) is judged by how
  it grows per block: additively (each block adds about as much as the one before: BN ResNets,
  pre-norm transformers, GPT-2 at 48 blocks) is how trainable streams grow; multiplicatively (each
  block's increment a constant factor larger than the last, as with unnormalized He branches at
  scale 1) is Hanin & Rolnick's (2018) failure mode 1.
"""

from __future__ import annotations

import math

from initdiag.numbers import compact

NORMALIZING_KINDS = ("batchnorm", "layernorm")
RECURRENT_KINDS = ("rnn", "lstm", "gru")
WEIGHTLESS_PASS_KINDS = ("maxpool2d", "avgpool2d", "global_avgpool", "flatten", "dropout")
PRECISION_LIMIT = 1e30  # a second moment this far from its reference leaves float32's range within a few layers


from initdiag.stats import signal_second_moment  # noqa: E402,F401  (a statistic: moved to stats; alias for now)


def _normalizes(spec_layer) -> bool:
    kind = spec_layer.kind
    return kind in NORMALIZING_KINDS or (kind == "transformer" and spec_layer.config.get("norm") == "post")


def _stream_block(spec_layer) -> bool:
    return spec_layer.kind == "residual" or (spec_layer.kind == "transformer" and spec_layer.config.get("norm") != "post")


def branch_layers(spec) -> set:
    """Indices of the layers inside residual branches."""
    inside = set()
    for layer in spec.layers:
        if layer.kind == "residual":
            inside.update(range(layer.config["start"], layer.index))
    return inside


def _feeds_normalization(spec, index: int) -> bool:
    """Whether the layer's output goes (through weightless layers) into a normalization."""
    for later in spec.layers[index + 1:]:
        if _normalizes(later):
            return True
        if later.kind not in WEIGHTLESS_PASS_KINDS:
            return False
    return False


def normalized(spec) -> bool:
    """Whether most layers with weights feed a normalization (batchnorm/layernorm, through weightless layers):
    they are then scale-invariant, and training lowers their effective learning rate as their weights grow
    (Arora, Li & Lyu 2019), which heals a chaotic or gradient-exploding start (Yang et al. 2019) instead of
    stopping it: deep plain batchnorm CNNs train although their inputs decorrelate with depth."""
    weighted = [layer for layer in spec.layers if layer.init is not None and layer.kind != "embedding"]
    feeding = [layer for layer in weighted if _feeds_normalization(spec, layer.index)]
    return bool(weighted) and 2 * len(feeding) >= len(weighted)


def segments(run, spec) -> list:
    """[(reference second moment, what it is, [layer stats judged against it], [stream blocks])] in run order."""
    inside = branch_layers(spec)
    reference, origin = run.input_second_moment, "the input's"
    result, judged, stream = [], [], []

    def close():
        if judged or stream:
            result.append((reference, origin, list(judged), list(stream)))
        judged.clear()
        stream.clear()

    for stats, layer in zip(run.layers, spec.layers):
        if layer.index in inside:
            continue
        if _stream_block(layer):
            if judged and not stream:  # the chain before the stream is its own segment
                last = judged[-1]
                close()
                reference, origin = signal_second_moment(last), f"{last.name}'s"
            stream.append(stats)
            continue
        if stream:  # the stream ended: what follows is measured from its end
            end = stream[-1]
            close()
            reference, origin = signal_second_moment(end), f"the stream's end ({end.name})"
        if _normalizes(layer) or layer.kind in RECURRENT_KINDS or (layer.kind == "embedding" and layer.index == 0):
            close()
            reference, origin = signal_second_moment(stats), f"{stats.name}'s"
            continue
        if layer.kind in WEIGHTLESS_PASS_KINDS or _feeds_normalization(spec, layer.index):
            continue
        judged.append(stats)
    close()
    return result


def _relative(ratio: float, origin: str) -> str:
    if ratio == 0:
        return "0 (no signal left)"
    return f"{compact(ratio)}x {origin}" if ratio >= 1 else f"1/{compact(1 / ratio)} of {origin}"


def level(magnitude: float, warning: float, error: float) -> str | None:
    """The severity a magnitude reaches (a factor either way, or 1/a share)."""
    return "error" if magnitude > error else "warning" if magnitude > warning else None


def drift(run, spec, t, finding, scale_hint) -> list:
    """exploding-/vanishing-activations along the chain segments, and the residual streams' growth."""
    findings = []
    for reference, origin, judged, stream in segments(run, spec):
        if reference > 0 and judged:
            findings += _chain_drift(reference, origin, judged, spec, t, finding, scale_hint)
        if len(stream) >= 2:
            findings += _stream_growth(run, spec, stream, t, finding)
    failed = {f.code for f in findings if f.severity == "error"}
    return findings + [f for f in _precision(run, spec, finding) if f.code not in failed]


def _chain_drift(reference, origin, judged, spec, t, finding, scale_hint) -> list:
    findings = []
    for code, grows in (("exploding-activations", True), ("vanishing-activations", False)):
        ratios = [(layer, signal_second_moment(layer) / reference) for layer in judged]
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
            scale_hint(spec.layers[first.index], grows),
        ))
    return findings


def _stream_growth(run, spec, stream, t, finding) -> list:
    """How a residual stream grows per block: the increments s_k - s_{k-1} of its second moment stay about
    constant when it grows additively; when each is a steady factor g larger than the last, the stream
    grows multiplicatively, g^blocks over its blocks, judged with stream_warning / stream_error. g is
    fitted to the logarithms of all the increments (least squares), so one noisy block does not decide."""
    first_block = spec.layers[stream[0].index]
    begins = first_block.config["start"] if first_block.kind == "residual" else first_block.index
    if begins == 0:
        return []  # the stream starts at the input: measured against the input by the chain rules' precision check
    start = run.layers[begins - 1]  # the first block's input
    moments = [signal_second_moment(start)] + [signal_second_moment(block) for block in stream]
    if not all(math.isfinite(m) and m > 0 for m in moments):
        return []
    increments = [later - earlier for earlier, later in zip(moments, moments[1:])]
    if min(increments) <= 0:
        return []  # not a steadily growing stream: the chain rules and the gradients speak for it
    blocks = len(stream)
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


def _precision(run, spec, finding) -> list:
    """Layers the drift rules skip can still lose float32's range: a scale beyond 1e±30 of the input's."""
    reference = run.input_second_moment
    if not reference > 0:
        return []
    for layer in run.layers:
        moment = signal_second_moment(layer)
        if moment > 0 and max(moment / reference, reference / moment) > PRECISION_LIMIT:
            grows = moment > reference
            return [finding("error", "exploding-activations" if grows else "vanishing-activations", layer,
                            f"{layer.name}: activation second moment {_relative(moment / reference, 'the input')}'s: "
                            "beyond float32's precision", "the weights are far off scale for this depth: use a fan-scaled scheme")]
    return []
