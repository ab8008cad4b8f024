"""The architecture facts the checks share: which layer kinds normalize, recur or pass the scale on
unweighted (read from the layer registry's declarations), normalized
networks, residual branches, and the segments the signal scale is judged along. Each rule is
explained, with the networks it was checked against, in the README ("Findings and thresholds").

Where the scale is judged (drift):
- The network is cut into segments. A normalization (batchnorm, layernorm, a post-norm transformer
  block) and a recurrent layer (its state is bounded by construction) restart the reference at
  their own output; so does the end of a residual stream.
- A layer is judged against its segment's start (the input, the first normalized point, the
  stream's end): only layers that set a scale (weights, residual sums) and whose output does not
  feed a normalization, which undoes it on the next row; weightless layers (pooling, flatten) pass
  the scale on, except those declared to set it (`rescales`: layer_scale, a standalone activation).
  Layers inside a residual branch are judged through the stream they add to.
- A residual stream (consecutive residual ends and pre-norm transformer blocks) is judged by how
  it grows per block: additively (each block adds about as much as the one before: BN ResNets,
  pre-norm transformers, GPT-2 at 48 blocks) is how trainable streams grow; multiplicatively (each
  block's increment a constant factor larger than the last, as with unnormalized He branches at
  scale 1) is Hanin & Rolnick's (2018) failure mode 1.
"""

from __future__ import annotations

from initdiag.layers import LAYERS
from initdiag.layers.declare import activation_saturation

# Kind facts, from each kind's declaration (initdiag.layers): the ones the checks reason with.
NORMALIZING_KINDS = tuple(key for key, kind in LAYERS.items() if kind.normalizes)
RECURRENT_KINDS = tuple(key for key, kind in LAYERS.items() if "recurrent_init" in kind.takes)  # state bounded by its cell
# weightless kinds that pass the scale on (pooling, flatten, dropout, stochastic depth), and those that set it
# (layer_scale's gamma, a standalone activation): the latter are judged like layers with weights
WEIGHTLESS_PASS_KINDS = tuple(key for key, kind in LAYERS.items()
                              if kind.weightless and not kind.normalizes and not kind.rescales)
RESCALING_KINDS = tuple(key for key, kind in LAYERS.items() if kind.weightless and kind.rescales)
# kinds whose saturation is not their activation's (attention rows whose largest weight > 0.99)
OWN_SATURATION_KINDS = tuple(key for key, kind in LAYERS.items() if kind.saturation is not activation_saturation)


def _normalizes(spec_layer) -> bool:
    return LAYERS[spec_layer.kind].normalizes_output(spec_layer.config)


def _stream_block(spec_layer) -> bool:
    return LAYERS[spec_layer.kind].in_stream(spec_layer.config)


def reads(spec) -> list:
    """Per layer, the indices of the layers it reads (-1: the input): a chain's layer reads the one above it."""
    from initdiag.propagate import sources  # (the graph's convention lives beside the pass that walks it)

    return sources(spec)


def _ancestors(read: list, index: int) -> set:
    found, stack = set(), [index]
    while stack:
        for source in read[stack.pop()]:
            if source >= 0 and source not in found:
                found.add(source)
                stack.append(source)
    return found


def _first_reader(spec, read: list, index: int):
    """The first layer (in run order) that reads layer `index`'s output, or None."""
    return next((later for later in spec.layers[index + 1:] if index in read[later.index]), None)


def acting_activation(spec, index: int):
    """The activation a weighted layer's output meets (an ActivationSpec): its own, or, when that is the identity,
    the standalone activation layer it feeds through normalizations, weightless layers and residual ends
    (conv → batchnorm → activation: relu is a ReLU conv, whose rule of thumb is He)."""
    layer = spec.layers[index]
    if layer.activation.name != "identity" or layer.init is None:
        return layer.activation
    read = reads(spec)
    later = _first_reader(spec, read, index)
    while later is not None:
        if later.kind in RESCALING_KINDS and later.activation.name != "identity":
            return later.activation
        if not (_normalizes(later) or later.kind in WEIGHTLESS_PASS_KINDS + RESCALING_KINDS or LAYERS[later.kind].block):
            break
        later = _first_reader(spec, read, later.index)
    return layer.activation


def branch_layers(spec, gates_only: bool = False) -> set:
    """Indices of the layers inside residual branches and gate paths: the layers between a stream join (a
    residual end, an add) or a gate (multiply) and the point its inputs fork from, i.e. what only some of its
    inputs come through. `gates_only`: the gate paths alone."""
    read, inside = reads(spec), set()
    for layer in spec.layers:
        if LAYERS[layer.kind].block and not gates_only:
            inside.update(range(layer.config["start"], layer.index))
        elif LAYERS[layer.kind].joins and (LAYERS[layer.kind].gates or (_stream_block(layer) and not gates_only)):
            # each input's line back to the spec's input (-1); what is not on every line is a branch
            lines = [_ancestors(read, source) | {source} if source >= 0 else {-1} for source in read[layer.index]]
            inside.update((set().union(*lines) - set.intersection(*lines)) - {-1} if len(lines) > 1 else set())
    return inside


def stream_input(spec, layer) -> int:
    """The index of what a stream block adds to (-1: the input): a residual end's or an add's earliest input
    (its skip), a pre-norm transformer block's input."""
    return min(reads(spec)[layer.index])


def _feeds_normalization(spec, index: int) -> bool:
    """Whether the layer's output goes (through weightless layers, whatever scale they set) into a normalization:
    the first layer that reads it (in run order) does, or passes it on to one."""
    read = reads(spec)
    while True:
        first = _first_reader(spec, read, index)
        if first is None:
            return False
        if _normalizes(first):
            return True
        if first.kind not in WEIGHTLESS_PASS_KINDS + RESCALING_KINDS:
            return False
        index = first.index


def normalized(spec) -> bool:
    """Whether most layers with weights feed a normalization (batchnorm/layernorm, through weightless layers):
    they are then scale-invariant, and training lowers their effective learning rate as their weights grow
    (Arora, Li & Lyu 2019), which heals a chaotic or gradient-exploding start (Yang et al. 2019) instead of
    stopping it: deep plain batchnorm CNNs train although their inputs decorrelate with depth."""
    weighted = [layer for layer in spec.layers if layer.init is not None and not LAYERS[layer.kind].table]
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
                reference, origin = last.signal_second_moment, f"{last.name}'s"
            stream.append(stats)
            continue
        if stream:  # the stream ended: what follows is measured from its end
            end = stream[-1]
            close()
            reference, origin = end.signal_second_moment, f"the stream's end ({end.name})"
        if _normalizes(layer) or layer.kind in RECURRENT_KINDS or (LAYERS[layer.kind].reads_tokens and layer.index == 0):
            close()
            reference, origin = stats.signal_second_moment, f"{stats.name}'s"
            continue
        if layer.kind in WEIGHTLESS_PASS_KINDS or _feeds_normalization(spec, layer.index):
            continue
        judged.append(stats)
    close()
    return result
