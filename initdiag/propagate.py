"""One forward and backward pass through a built network, measuring every layer on the way."""

from __future__ import annotations

import numpy as np

from initdiag import losses, probes, stats
from initdiag.layers import LAYERS
from initdiag.network import Network
from initdiag.schemes import Fans
from initdiag.stats import LayerStats, RunStats


def sources(spec) -> list:
    """Per layer, the indices of the layers it reads (-1: the network's input), in the order it takes them.
    A residual end reads its branch's last layer and its skip (see speclayers._residual)."""
    def read(i, layer):
        if layer.inputs:
            return tuple(layer.inputs)
        return (i - 1, layer.config["start"] - 1) if LAYERS[layer.kind].block else (i - 1,)
    return [read(i, layer) for i, layer in enumerate(spec.layers)]


def forward_pass(network: Network):
    """Yield (index, output, cache) for every layer, in run order, from the network's input batch.

    An output is kept until the last layer that reads it has run (a skip connection keeps its block's input)."""
    reads = sources(network.spec)
    last_reader = {source: i for i, read in enumerate(reads) for source in read}
    outputs = {-1: network.inputs}
    for i, layer in enumerate(network.layers):
        xs = [outputs[source] for source in reads[i]]
        for source in set(reads[i]):
            if last_reader[source] == i:
                del outputs[source]
        y, cache = layer.forward(*xs)
        outputs[i] = y
        yield i, y, cache


def backward_pass(network: Network, caches: list, dy, dz=None):
    """Yield (index, dLoss/d(layer output), grads, cache) from the last layer to the first. `dz`, for a fused
    loss, is dLoss/d(logits) of the last layer. A layer read by several others gets the sum of their
    gradients. Each layer's cache is released once it is used."""
    reads = sources(network.spec)
    last = len(network.layers) - 1
    pending = {last: dy}
    for i in reversed(range(len(network.layers))):
        layer, output_gradient = network.layers[i], pending.pop(i, None)
        if len(reads[i]) > 1 or LAYERS[layer.kind].joins:  # a join (a residual end): one gradient per input
            *dxs, grads = layer.backward(output_gradient, caches[i])
        else:
            dx, grads = layer.backward(output_gradient, caches[i], dz=dz if i == last else None, need_dx=reads[i][0] >= 0)
            dxs = [dx]
        for source, dx in zip(reads[i], dxs):
            if source >= 0 and dx is not None:
                pending[source] = pending[source] + dx if source in pending else dx
        yield i, output_gradient, grads, caches[i]
        caches[i] = None  # free activations as soon as their gradients are done


def run(network: Network, histogram_bins: int = 0) -> RunStats:
    """Propagate the network's input batch forward, its loss backward, and measure each layer.

    With histogram_bins, also histogram every layer's output (for plots): (counts, edges) per layer.

    Overflow is not an error here: inf and NaN flow into the statistics, where the checks
    name the first layer they appear in; numpy's warnings about them are silenced.
    """
    spec, layers = network.spec, network.layers
    with np.errstate(all="ignore"):
        caches, forward, histograms = [], [], []
        for i, y, cache in forward_pass(network):
            caches.append(cache)
            forward.append(_forward_stats(layers[i], cache))
            if histogram_bins:
                histograms.append(_histogram(y, histogram_bins))

        readout = probes.readout_index(spec)
        contrast = probes.input_contrast(network, readout) if readout else None
        # more inputs can only reveal activity: without a unit dead on the batch there is nothing to probe (behind
        # the identity a 0 is a zero scale, not a dead unit: a zero-initialised head does not cost three passes)
        suspects = any(measured["dead_fraction"] > 0 and spec_layer.activation.name != "identity"
                       for measured, spec_layer in zip(forward, spec.layers))
        dead, probed = (probes.never_active(network, forward_pass, caches)
                        if suspects and network.inputs.shape[0] < probes.DEAD_PROBE else (None, network.inputs.shape[0]))

        loss = losses.resolve(spec.loss, layers[-1].activation.name)
        targets = loss.targets(network.target_rng, y.shape, y.dtype)
        dz = loss.logit_gradient(y, targets) if loss.fused else None
        backward = [None] * len(layers)
        for i, dy, grads, cache in backward_pass(network, caches, loss.output_gradient(y, targets), dz):
            main = grads.get("weights", grads.get(getattr(layers[i], "main_param", None)))
            # A fused loss's gradient enters the network at the logits (as PyTorch computes it), not
            # at the probabilities, whose dLoss/dp = -onehot/(B·p) overflows when a p underflows.
            entering = dz if (i == len(layers) - 1 and dz is not None) else dy
            backward[i] = (stats.mean_var(entering)[1] if entering is not None else 0.0,
                           stats.mean_var(main)[1] if main is not None else None,
                           getattr(cache, "grad_var_first_step", None), getattr(cache, "grad_var_last_step", None),
                           getattr(cache, "cell_grad_var_first_step", None), getattr(cache, "cell_grad_var_last_step", None))
        if dead is not None:
            for i, fraction in enumerate(dead):
                forward[i]["dead_fraction"] = fraction

        measured = [
            _layer_stats(i, layer, spec_layer, forward[i], backward[i])
            for i, (layer, spec_layer) in enumerate(zip(layers, spec.layers))
        ]
        if network.inputs.dtype.kind in "iu":  # token ids: the embedding's output is the signal's start
            input_mean, input_var = forward[0]["act_mean"], forward[0]["act_var"]
        else:
            input_mean, input_var = stats.mean_var(network.inputs)
    return RunStats(input_mean, input_var, loss.name, tuple(measured), tuple(histograms), contrast,
                    probed)


def _histogram(y: np.ndarray, bins: int) -> tuple:
    """(counts, edges) of the finite outputs, as lists: plain data for a plot."""
    finite = y[np.isfinite(y)]
    if finite.size == 0:
        return [], []
    counts, edges = np.histogram(finite, bins=bins)
    return counts.tolist(), edges.tolist()


def _forward_stats(layer, cache) -> dict:
    preact_mean, preact_var = stats.mean_var(cache.z)
    act_mean, act_var = stats.mean_var(cache.y)
    return {
        "preact_mean": preact_mean,
        "preact_var": preact_var,
        "act_mean": act_mean,
        "act_var": act_var,
        "dead_fraction": stats.dead_fraction(cache.y, getattr(layer, "unit_axis", 1)),
        "saturation": _saturation(layer, cache),
    }


def _saturation(layer, cache) -> float:
    """The kind's declared saturation rule (the activation's, by default; attention: rows whose largest
    weight exceeds 0.99)."""
    return LAYERS[layer.kind].saturation(layer, cache)


def _layer_stats(index, layer, spec_layer, forward: dict, backward: tuple) -> LayerStats:
    """A layer's statistics; the weight figures are None for a layer without weights (pooling, flatten)."""
    init = spec_layer.init
    weights = None
    if init is not None:
        weight_mean, weight_var = stats.mean_var(layer.weights)
        weights = {
            "weight_mean": weight_mean,
            "weight_std": float(np.sqrt(weight_var)),
            "weight_std_expected": init.definition.std(Fans(spec_layer.fan_in, spec_layer.fan_out), init.params),
            "symmetry": stats.symmetry(layer.weights, layer.bias),
        }
    return LayerStats(
        index=index,
        name=spec_layer.name,
        kind=spec_layer.kind,
        activation=spec_layer.activation.display,
        init=init.display if init is not None else None,
        fan_in=spec_layer.fan_in,
        fan_out=spec_layer.fan_out,
        units=spec_layer.units,
        grad_var=backward[0],
        weight_grad_var=backward[1],
        grad_var_first_step=backward[2],
        grad_var_last_step=backward[3],
        cell_grad_var_first_step=backward[4],
        cell_grad_var_last_step=backward[5],
        **(weights or {"weight_mean": None, "weight_std": None, "weight_std_expected": None, "symmetry": 0.0}),
        **forward,
    )
