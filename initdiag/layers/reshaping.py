"""Weightless layers that move or pick units without changing a value: a channel shuffle, a chunk of the units
and a transpose of a sequence, in the weightless layers' protocol of pooling.py (weights = bias = None, an
identity activation, grads {}); forward(x) -> (y, cache), backward(dy, cache, dz=None, need_dx=True) -> (dx, {}).

Each output is a permutation or a part of its input, so its second moment passes on: the checks treat them as
they treat pooling and flatten. Outputs are copies (a view would keep the whole input alive as the output).

``ChannelShuffle(name, input_shape, {groups})``
    torchvision.models.shufflenetv2.channel_shuffle (nn.ChannelShuffle): the channels of a feature map
    (batch, C, *spatial) viewed as (groups, C/groups), transposed and flattened, so channel g·(C/G) + i moves to
    i·G + g. Backward: the inverse permutation, (C/groups, groups) transposed.

``Chunk(name, input_shape, {chunks, index})``
    torch.chunk(x, chunks, dim)[index]: the index-th of `chunks` equal parts of the units, a feature map's
    channels (dim 1), a flat input's features or a sequence's features (its last axis). The units must divide
    evenly (torch.chunk would give unequal parts). Two chunks reading one layer (`inputs:`) are ShuffleNetV2's
    split. Backward: dy in the part, zeros elsewhere.

``Transpose(name, input_shape)``
    x.transpose(1, 2): [steps, features] -> [features, steps], read as a sequence, so that a dense layer after
    it mixes the tokens (MLP-Mixer's token mixing); a [channels, length] map becomes a sequence of `length`
    tokens. Backward: the transpose of dy.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from initdiag.layers.conv import Cache
from initdiag.layers.declare import CHANNELS, SEQUENCE, InputError, LayerKind, Option, checked
from initdiag.layers.norm import own_options
from initdiag.layers.pooling import _Weightless


def _feature_map(key: str, input_shape, config, what: str) -> int:
    """The channels of a feature map [channels, length] or [channels, height, width] (InputError otherwise)."""
    shape = tuple(input_shape)
    if len(shape) not in (2, 3) or 0 in shape or (len(shape) == 2 and config.get("sequence")):
        laid = " (a sequence [steps, features])" if len(shape) == 2 else ""
        raise InputError(f"{key} {what} a feature map [channels, height, width] or [channels, length], but its input "
                         f"is {list(shape)}{laid}")
    return shape[0]


def _whole(key: str, name: str, value, minimum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{key}: {name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------- channel shuffle
class ChannelShuffle(_Weightless):
    """(batch, C, *spatial) -> the same shape, the channels interleaved across `groups`; see the module docstring."""

    kind = "channel_shuffle"

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        channels, groups = _feature_map(cls.kind, input_shape, config, "shuffles the channels of"), config["groups"]
        if channels % groups:
            raise InputError(f"channel_shuffle: {channels} channels do not split into {groups} groups "
                             f"(torchvision's channel_shuffle needs channels divisible by groups)")
        return tuple(int(s) for s in input_shape)

    def _permuted(self, x: np.ndarray, rows: int) -> np.ndarray:
        """x with its channels read as (rows, C/rows) and transposed: a copy."""
        split = (x.shape[0], rows, x.shape[1] // rows) + x.shape[2:]
        return x.reshape(split).swapaxes(1, 2).reshape(x.shape)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        y = self._permuted(x, self.config["groups"])
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        return self._permuted(dz, dz.shape[1] // self.config["groups"])

    def __repr__(self) -> str:
        return f"ChannelShuffle({self.name!r}, {self.input_shape}, groups={self.config['groups']})"


def _shuffle_config(raw) -> dict:
    config = own_options("channel_shuffle", raw, SHUFFLE_OPTIONS)
    if "groups" not in config:
        raise ValueError("channel_shuffle: missing groups, the number of groups whose channels are interleaved "
                         "(ShuffleNetV2's 2)")
    config["groups"] = _whole("channel_shuffle", "groups", config["groups"], 1)
    return config


def _shuffle_torch(input_shape, config):
    """nn.ChannelShuffle(groups): the same permutation as torchvision's channel_shuffle (the test compares both)."""
    import torch

    return torch.nn.ChannelShuffle(config["groups"]), {}


# ------------------------------------------------------------------------------- chunk
def _chunk_axis(input_shape, config) -> int:
    """The per-sample axis split: a sequence's (and a flat input's) last, a feature map's channels."""
    return len(input_shape) - 1 if config.get("sequence") else 0


class Chunk(_Weightless):
    """One of `chunks` equal parts of the units (torch.chunk(x, chunks, dim)[index]); see the module docstring."""

    kind = "chunk"

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (1, 2, 3) or 0 in shape:
            raise InputError(f"chunk takes a flat, sequence or feature-map input, but its input is {list(shape)}")
        axis, chunks = _chunk_axis(shape, config), config["chunks"]
        if shape[axis] % chunks:
            units = "channels" if axis == 0 and len(shape) > 1 else "features"
            raise InputError(f"chunk: {shape[axis]} {units} do not split into {chunks} equal parts (torch.chunk would "
                             f"give unequal ones): the input is {list(shape)}")
        return shape[:axis] + (shape[axis] // chunks,) + shape[axis + 1:]

    def __init__(self, name: str, input_shape, config: dict):
        super().__init__(name, input_shape, config)
        axis = _chunk_axis(self.input_shape, config)
        self.unit_axis = 1 + axis  # the batch array's
        width = self.out_shape[axis]
        self.part = (slice(None),) * (1 + axis) + (slice(config["index"] * width, (config["index"] + 1) * width),)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        y = np.ascontiguousarray(x[self.part])
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        dx = np.zeros(cache.x.shape, dtype=dz.dtype)
        dx[self.part] = dz
        return dx

    def __repr__(self) -> str:
        c = self.config
        return f"Chunk({self.name!r}, {self.input_shape}->{self.out_shape}, {c['index']} of {c['chunks']})"


def _chunk_config(raw) -> dict:
    config = own_options("chunk", raw, CHUNK_OPTIONS)
    for option in CHUNK_OPTIONS:
        if option.name not in config:
            raise ValueError(f"chunk: missing {option.name}, {option.doc}")
        config[option.name] = _whole("chunk", option.name, config[option.name], int(option.minimum))
    if config["index"] >= config["chunks"]:
        raise ValueError(f"chunk: index {config['index']} is not one of the {config['chunks']} parts "
                         f"(0 to {config['chunks'] - 1})")
    return config


def _chunk_torch(input_shape, config):
    import torch

    class ChunkModule(torch.nn.Module):
        def forward(self, x):
            return torch.chunk(x, config["chunks"], dim=-1 if config.get("sequence") else 1)[config["index"]]

    return ChunkModule(), {}


# ------------------------------------------------------------------------------- transpose
class Transpose(_Weightless):
    """(batch, a, b) -> (batch, b, a): x.transpose(1, 2); see the module docstring."""

    kind = "transpose"
    unit_axis = -1  # the output is a sequence: its features

    @classmethod
    def output_shape(cls, input_shape, config=None) -> tuple:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 2 or 0 in shape:
            raise InputError(f"transpose swaps the two axes of a sequence [steps, features] (or of a [channels, length] "
                             f"map), but its input is {list(shape)}")
        return shape[::-1]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        y = np.ascontiguousarray(x.transpose(0, 2, 1))
        return y, Cache(x, y, y)

    def input_gradient(self, dz: np.ndarray, cache: Cache) -> np.ndarray:
        return np.ascontiguousarray(dz.transpose(0, 2, 1))


def _transpose_torch(input_shape, config):
    import torch

    class TransposeModule(torch.nn.Module):
        def forward(self, x):
            return x.transpose(1, 2)

    return TransposeModule(), {}


# ------------------------------------------------------------------------------- declarations
SHUFFLE_OPTIONS = (Option("groups", "int", "the groups whose channels are interleaved (ShuffleNetV2's 2)", required=True,
                          minimum=1),)
CHUNK_OPTIONS = (
    Option("chunks", "int", "the number of equal parts the units are cut into (they must divide evenly)", required=True,
           minimum=1),
    Option("index", "int", "which part, 0 to chunks - 1", required=True, minimum=0),
)
_CLASSES = {"channel_shuffle": ChannelShuffle, "chunk": Chunk, "transpose": Transpose}
_FACTS = dict(takes=("name", "ignore"), memory_doc="its input and output (a copy)", saturation_doc="none (no activation)")


def _build(spec, weights, bias, activation, context):
    return _CLASSES[spec.kind](spec.name, spec.input_shape, spec.config)


KINDS = (
    LayerKind("channel_shuffle", ChannelShuffle, "a feature map's channels interleaved across groups: viewed as "
              "(groups, C/groups), transposed, flattened (torchvision's shufflenetv2.channel_shuffle, nn.ChannelShuffle)",
              options=SHUFFLE_OPTIONS, parse=checked(_shuffle_config), build=_build,
              example=((6, 2, 3), {"groups": 3}), torch=_shuffle_torch, unit_axis=1,
              reads_layout=True, assumes_layout=CHANNELS, **_FACTS),
    LayerKind("chunk", Chunk, "one of `chunks` equal parts of the channels (feature maps) or features (flat, "
              "sequence: the last axis): torch.chunk(x, chunks, dim)[index]; two chunks of one input are a split",
              options=CHUNK_OPTIONS, parse=checked(_chunk_config), build=_build,
              example=((6, 2, 3), {"chunks": 2, "index": 1}), torch=_chunk_torch, unit_axis=1,
              unit_axis_of=lambda config: -1 if config.get("sequence") else 1, reads_layout=True,
              assumes_layout=CHANNELS, **_FACTS),
    LayerKind("transpose", Transpose, "a sequence's two axes swapped, [steps, features] → [features, steps] "
              "(x.transpose(1, 2)), read as a sequence: a dense after it mixes the tokens (MLP-Mixer)",
              options=(), parse=checked(lambda raw: own_options("transpose", raw, ())), build=_build,
              example=((4, 3), {}), torch=_transpose_torch, unit_axis=-1, layout=SEQUENCE, assumes_layout=SEQUENCE,
              **_FACTS),
)
