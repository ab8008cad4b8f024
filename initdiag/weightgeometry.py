"""The Geometry of every array a layer's inits draw: its shape as the layer stores it, its role, fans,
and a conv's kernel and groups, so each scheme decides for itself what it makes of a layer
(schemes.Geometry; identity is the Dirac kernel on a conv, delta_orthogonal exists only there).

Roles (schemes.ROLES), by layer kind:
    dense                          "dense"
    conv1d, conv2d                 "conv"        kernel = config["kernel"], groups = config["groups"]
    rnn, lstm, gru                 "dense" for the input weights (x_t @ W_ih, a plain matrix of the step's
                                   input) and "recurrent" for the hidden-to-hidden weights (recurrent_init)
    embedding                      "embedding"   the (dim, vocab) table torch's fans read
    residual (shortcut)            "projection"  a dense or strided 1x1 conv projection: a plain matrix
    attention, transformer         "attention"   every weight matrix of the block

The fans are those network.build has always used: the layer's PyTorch fans for the matrix `init`
draws first, the layer class's `fans` for a block's other matrices, the shape's own for recurrent weights.
"""

from __future__ import annotations

from initdiag.schemes import Fans, Geometry

ROLE_OF_KIND = {
    "dense": "dense",
    "conv1d": "conv",
    "conv2d": "conv",
    "rnn": "dense",
    "lstm": "dense",
    "gru": "dense",
    "embedding": "embedding",
    "residual": "projection",
    "attention": "attention",
    "transformer": "attention",
}
BLOCK_KINDS = ("attention", "transformer")


def role_of(kind: str) -> str:
    """The role of the weights `init` draws for a layer of `kind` (KeyError names a kind with none)."""
    if kind not in ROLE_OF_KIND:
        raise KeyError(f"layer kind '{kind}' has weights but no role in weightgeometry.ROLE_OF_KIND")
    return ROLE_OF_KIND[kind]


def main(layer) -> Geometry:
    """The array `init` draws from the layer's own stream: its `weights` (a block's first matrix)."""
    role = role_of(layer.kind)
    fans = Fans(layer.fan_in, layer.fan_out)
    if role == "conv":
        return Geometry(tuple(layer.matrix), role, fans, tuple(layer.config["kernel"]), layer.config["groups"])
    return Geometry(tuple(layer.matrix), role, fans)


def weights(layer) -> dict:
    """{parameter name: Geometry} of every array `init` draws, in draw order; the first is `main`."""
    if layer.kind not in BLOCK_KINDS:
        return {"weights": main(layer)}
    from initdiag.layers import layer_class

    kind_class = layer_class(layer.kind)
    shapes = kind_class.parameter_shapes(layer.input_shape, layer.config)
    fans = kind_class.fans(layer.input_shape, layer.config)
    drawn = {}
    for j, (name, (fan_in, fan_out)) in enumerate(fans.items()):
        drawn[name] = main(layer) if j == 0 else Geometry(tuple(shapes[name]), "attention", Fans(fan_in, fan_out))
    return drawn


def recurrent(layer) -> Geometry:
    """An RNN/LSTM/GRU's hidden-to-hidden weights (units, gates · units), drawn by `recurrent_init`."""
    from initdiag.layers import layer_class

    rows, cols = layer_class(layer.kind).parameter_shapes(layer.input_shape, layer.config)["recurrent_weights"]
    return Geometry((rows, cols), "recurrent", Fans(rows, cols))
