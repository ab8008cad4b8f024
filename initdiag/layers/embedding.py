"""Token embedding (nn.Embedding): integer tokens (batch, steps) -> (batch, steps, dim); see norm.py's docstring
for its fans, which are the transpose of the table's (rows, cols) as torch reads any 2-D tensor.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from initdiag.layers.declare import SEQUENCE, LayerKind, Option, Weight, checked
from initdiag.layers.norm import Cache, _shape_str, own_options
from initdiag.schemes import Fans


def token_batch(rng: np.random.Generator, batch: int, steps: int, vocab: int) -> np.ndarray:
    """(batch, steps) int64 tokens drawn uniformly from [0, vocab)."""
    return rng.integers(0, vocab, size=(batch, steps), dtype=np.int64)


class Embedding:
    """Table lookup (nn.Embedding): tokens (batch, steps) -> (batch, steps, dim); see the module docstring."""

    kind = "embedding"
    unit_axis = -1
    default_init = {"weights": "normal"}  # PyTorch's N(0, 1)

    @classmethod
    def _steps(cls, input_shape) -> int:
        shape = tuple(input_shape)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"{cls.kind} expects a per-sample input of shape (steps,) of integer tokens, "
                             f"got {_shape_str(shape)}")
        return int(shape[0])

    @classmethod
    def output_shape(cls, input_shape, config) -> tuple:
        config = _normalize(config)
        return (cls._steps(input_shape), config["dim"])

    @classmethod
    def parameter_shapes(cls, input_shape, config) -> dict:
        config = _normalize(config)
        cls._steps(input_shape)
        return {"weights": (config["vocab"], config["dim"])}

    @classmethod
    def fans(cls, input_shape, config) -> dict:
        """{"weights": Fans(fan_in=dim, fan_out=vocab)}: torch's fans of nn.Embedding.weight (vocab, dim),
        the transpose of the table's (rows, cols); see the module docstring."""
        vocab, dim = cls.parameter_shapes(input_shape, config)["weights"]
        return {"weights": Fans(dim, vocab)}

    @classmethod
    def from_config(cls, name: str, params, config, input_shape=None):
        config = _normalize(config)
        layer = cls(name, params)
        if (layer.vocab, layer.dim) != (config["vocab"], config["dim"]):
            raise ValueError(f"embedding '{name}': config is vocab={config['vocab']}, dim={config['dim']}; "
                             f"weights are {_shape_str(layer.params['weights'].shape)}")
        return layer

    def __init__(self, name: str, params: dict):
        self.name = name
        unknown = sorted(set(params) - {"weights"})
        if unknown:
            raise ValueError(f"embedding '{name}': unknown parameter(s) {', '.join(unknown)}; valid: weights")
        weights = params.get("weights")
        if weights is None or np.ndim(weights) != 2:
            raise ValueError(f"embedding '{name}': weights must be a (vocab, dim) matrix")
        self.params = {"weights": np.asarray(weights)}
        self.vocab, self.dim = self.params["weights"].shape

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise ValueError(f"embedding '{self.name}' takes integer tokens, got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"embedding '{self.name}' expects input (batch, steps), got {_shape_str(x.shape)}")
        if x.size and (x.min() < 0 or x.max() >= self.vocab):
            raise ValueError(f"embedding '{self.name}': tokens must lie in [0, {self.vocab}), "
                             f"got values from {x.min()} to {x.max()}")
        y = self.params["weights"][x]  # fancy indexing: a new (batch, steps, dim) array
        return y, Cache(x, y, y)

    def backward(self, dy: np.ndarray, cache: Cache, need_dx: bool = True, *, dz=None):
        """dy (batch, steps, dim) -> (None, {"weights": dW}); dW[v] = sum of dy over the positions holding token v."""
        if dz is not None:
            raise ValueError(f"embedding '{self.name}' cannot be the output of a fused loss (dz)")
        dy = np.asarray(dy)
        if dy.shape != cache.y.shape:
            raise ValueError(f"embedding '{self.name}': dy has shape {dy.shape}, the output {cache.y.shape}")
        weights = self.params["weights"]
        dw = np.zeros(weights.shape, dtype=np.result_type(dy, weights))
        np.add.at(dw, cache.x.reshape(-1), dy.reshape(-1, self.dim))  # unbuffered: repeats accumulate
        return None, {"weights": dw.astype(weights.dtype, copy=False)}

    def saturation(self, cache: Cache) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"Embedding({self.name!r}, vocab={self.vocab}, dim={self.dim})"


def _normalize(raw) -> dict:
    """{vocab, dim}, both required positive integers; ValueError names them."""
    config = own_options("embedding", raw, OPTIONS)
    missing = [option.name for option in OPTIONS if option.name not in config]
    if missing:
        raise ValueError(f"embedding needs {' and '.join(missing)} (positive integers)")
    for k in ("vocab", "dim"):
        v = config[k]
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise ValueError(f"embedding: {k} must be a positive integer, got {v!r}")
        config[k] = int(v)
    return config


_parse = checked(_normalize)


def _weights(input_shape, config) -> dict:
    """The table as a scheme draws it, (dim, vocab): torch's fans of nn.Embedding.weight (vocab, dim), one column
    per token; the layer holds its transpose."""
    fans = Embedding.fans(input_shape, config)["weights"]
    return {"weights": Weight(tuple(fans), "embedding", tuple(fans))}


def _build(spec, weights, bias, activation, context):
    # torch's fans on the (vocab, dim) table are (dim, vocab): the scheme drew (dim, vocab), one column per token
    layer = Embedding(spec.name, {"weights": np.ascontiguousarray(weights.T)})
    layer.main_param, layer.weights, layer.bias = "weights", weights, None  # columns = tokens, for symmetry
    layer.activation = activation
    return layer


def _torch(input_shape, config):
    import torch

    return torch.nn.Embedding(config["vocab"], config["dim"]), {"weights": "weight"}


OPTIONS = (Option("vocab", "int", "the vocabulary size", required=True, minimum=1),
           Option("dim", "int", "the vector width", required=True, minimum=1))
KINDS = (LayerKind(
    "embedding", Embedding, "a table lookup of integer tokens (nn.Embedding); the first layer, on input_distribution: tokens",
    options=OPTIONS, parse=_parse, takes=("name", "init", "ignore"), build=_build, example=((5,), {"vocab": 7, "dim": 3}),
    torch=_torch, weights=_weights, unit_axis=-1, layout=SEQUENCE, params_dict=True, reads_tokens=True, table=True, inner_activation="identity",
    memory_doc="its tokens and output", saturation_doc="none (no activation)",
),)
