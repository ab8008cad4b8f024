"""Learned position embedding (GPT-2's wpe, BERT's position_embeddings): y = x + P, P a (steps, dim) table,
one row per position, the same for every sample. `init` draws it as nn.Embedding(steps, dim) would be
drawn: torch's fans of that (steps, dim) weight are (dim, steps), so the scheme draws (dim, steps), one
column per position, and the layer holds its transpose (as the token embedding does)."""

from __future__ import annotations

import numpy as np

from initdiag.layers.declare import SEQUENCE, InputError, LayerKind, Weight, checked
from initdiag.layers.norm import Cache, own_options


class PositionEmbedding:
    """(batch, steps, dim) -> the same plus the table (steps, dim)."""

    kind = "position_embedding"
    unit_axis = -1

    @classmethod
    def parameter_shapes(cls, input_shape, config=None) -> dict:
        """{"weights": (steps, dim)}: the table as the layer holds it (the scheme draws its transpose)."""
        return {"weights": tuple(_output_shape(input_shape, config))}

    def __init__(self, name: str, table: np.ndarray):
        self.name = name
        self.params = {"weights": np.asarray(table)}

    def forward(self, x: np.ndarray):
        table = self.params["weights"]
        if x.shape[1:] != table.shape:
            raise ValueError(f"position_embedding '{self.name}' expects (batch, {table.shape[0]}, {table.shape[1]}), "
                             f"got {x.shape}")
        y = x + table.astype(x.dtype, copy=False)
        return y, Cache(x, y, y)

    def backward(self, dy: np.ndarray, cache: Cache, need_dx: bool = True, *, dz=None):
        """dy (batch, steps, dim) -> (dy, {"weights": dy summed over the batch}): each position's row gets its tokens' gradient."""
        if dz is not None:
            raise ValueError(f"position_embedding '{self.name}' cannot be the output of a fused loss (dz)")
        return (dy if need_dx else None), {"weights": dy.sum(axis=0)}

    def saturation(self, cache: Cache) -> float:
        return 0.0

    def __repr__(self) -> str:
        steps, dim = self.params["weights"].shape
        return f"PositionEmbedding({self.name!r}, steps={steps}, dim={dim})"


def _output_shape(input_shape, config) -> tuple:
    if len(input_shape) != 2:
        raise InputError(f"position_embedding adds a (steps, dim) table to a sequence [steps, features], but its "
                         f"input is {list(input_shape)}")
    return tuple(input_shape)


def _weights(input_shape, config) -> dict:
    steps, dim = input_shape
    return {"weights": Weight((dim, steps), "embedding", (dim, steps))}


def _build(spec, weights, bias, activation, context):
    layer = PositionEmbedding(spec.name, np.ascontiguousarray(weights.T))
    layer.main_param, layer.weights, layer.bias = "weights", weights, None  # columns = positions, for symmetry
    layer.activation = activation
    return layer


def _torch(input_shape, config):
    import torch

    return torch.nn.Embedding(*input_shape), {"weights": "weight"}


KINDS = (LayerKind(
    "position_embedding", PositionEmbedding,
    "a learned position embedding added to a sequence: y = x + P, P (steps, dim), as GPT-2's and BERT's",
    options=(), parse=checked(lambda raw: own_options("position_embedding", raw, ())), takes=("name", "init", "ignore"),
    build=_build, example=((4, 3), {}), torch=_torch, output_shape=_output_shape, weights=_weights, unit_axis=-1,
    layout=SEQUENCE, params_dict=True, inner_activation="identity", table=True, aliases=("positional_embedding",),
    memory_doc="its input and output", saturation_doc="none (no activation)",
),)
