"""The Geometry of every array a layer's inits draw, read from its kind's declaration
(layers.LAYERS[kind].weights: shape as the layer stores it, role, PyTorch's fans, a conv's kernel
and groups), so each scheme decides for itself what it makes of a layer (schemes.Geometry;
identity is the Dirac kernel on a conv, delta_orthogonal exists only there).

Which array which init draws: `init` draws the kind's first matrix (a block drawn wholly from
`init`, attention and transformer, every matrix); `recurrent_init` the hidden-to-hidden
`recurrent_weights` of rnn/lstm/gru. A layer's `inits`, `supplied` and `tie` change that per
parameter (paramspec: `drawn_by`); biases and norm parameters are vectors (schemes.vector).
"""

from __future__ import annotations

from initdiag.schemes import Fans, Geometry


def _declared(layer) -> dict:
    from initdiag.layers import LAYERS

    kind = LAYERS[layer.kind]
    if kind.weights is None:
        raise KeyError(f"layer kind '{layer.kind}' declares no weights")
    return kind.weights(layer.input_shape, layer.config)


def _geometry(weight) -> Geometry:
    return Geometry(tuple(weight.shape), weight.role, Fans(*weight.fans), tuple(weight.kernel), weight.groups)


def main(layer) -> Geometry:
    """The array `init` draws from the layer's own stream: its first matrix."""
    return _geometry(next(iter(_declared(layer).values())))


def weights(layer) -> dict:
    """{parameter name: Geometry} of every array `init` draws, in draw order; the first is `main`."""
    from initdiag.layers import LAYERS

    declared = _declared(layer)
    if not LAYERS[layer.kind].weights_from_init:
        first = next(iter(declared))
        return {first: _geometry(declared[first])}
    return {name: _geometry(weight) for name, weight in declared.items()}


def recurrent(layer) -> Geometry:
    """An RNN/LSTM/GRU's hidden-to-hidden weights (units, gates · units), drawn by `recurrent_init`."""
    return _geometry(_declared(layer)["recurrent_weights"])
