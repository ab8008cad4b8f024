"""What a layer kind declares, in one place: the types the family modules fill in.

A family module (dense.py, conv.py, ...) ends with `KINDS = (LayerKind(...), ...)`; the package
(`initdiag.layers.LAYERS`) collects them. Everything the spec parser, the JSON Schema, the memory
estimate, the report, the README table and the contract tests need about a kind is a field here,
so adding a kind is one module and forgetting a fact fails a contract test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple


SEQUENCE, CHANNELS = "sequence", "channels"  # what a 2-D per-sample shape is: [steps, features] or [channels, length]
COMMON_KEYS = ("name", "activation", "init", "recurrent_init", "bias_init", "bias", "ignore", "supplied", "inits", "tie")


@dataclass(frozen=True)
class Option:
    """One of a kind's own options (`conv2d: {filters: 8, kernel: 3}`).

    `type`: "int" (with `minimum`), "ints" (an int or one per spatial axis, `minimum`), "number"
    (`minimum`/`maximum`, `exclusive` for a strict lower bound), "numbers" (a list of them), "bool", "choice"
    (`choices`), "activation" (an elementwise activation), "any_activation" (softmax too), "padding". Validation
    (with its error messages) is the kind's `parse`; these fields describe the option for the schema and the README.
    """

    name: str
    type: str
    doc: str
    default: object = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False
    below_maximum: bool = False  # `maximum` is a strict upper bound (stochastic depth's p < 1)
    choices: tuple = ()


class Weight(NamedTuple):
    """A weight matrix of a layer: the shape a scheme draws (our (fan_in, fan_out) layout: x @ W),
    its role (one of ROLES) and PyTorch's fans of the torch equivalent's weight."""

    shape: tuple
    role: str
    fans: tuple  # (fan_in, fan_out)
    kernel: tuple = ()  # a conv kernel's spatial size: the matrix rows are (in_channels/groups, *kernel) in C order
    groups: int = 1


class BuildContext(NamedTuple):
    dtype: object
    rng: object  # dropout's mask stream
    eval: bool  # dropout off, batchnorm on its initial running statistics
    weights_rng: object = None  # the layer's own weight stream, for a value drawn outside `init` (a class token)


class InputError(ValueError):
    """An input shape a kind cannot take, the message already naming the input (no "(input [...])" added)."""


def no_elements(layer_spec, batch: int = 0) -> int:
    return 0


def activation_saturation(layer, cache) -> float:
    """The activation's own rule on the layer's pre-activation and output."""
    return layer.activation.saturation(cache.z, cache.y)


@dataclass(frozen=True)
class LayerKind:
    """A layer kind: every fact about it that a stage outside its module needs.

    parse(check, path, value) -> config or None (problems reported on `check`, located at `path`).
    output_shape(input_shape, config) -> per-sample output shape (ValueError: the input does not fit).
    weights(input_shape, config) -> {name: Weight}, first = the matrix `init` draws and statistics measure.
    build(layer_spec, weights, bias, activation, context) -> the layer object.
    torch(input_shape, config) -> (nn.Module, {our weight name: its parameter name}), torch imported lazily.
    """

    key: str
    cls: type
    summary: str
    options: tuple
    parse: Callable
    takes: tuple  # which of COMMON_KEYS a layer of this kind may carry
    build: Callable
    example: tuple  # (input shape, the spec's value for the kind key)
    torch: Callable | None
    output_shape: Callable | None = None  # default: cls.output_shape
    weights: Callable | None = None  # None: weightless
    aliases: tuple = ()
    bare: str | None = None  # the option a bare value stands for (`dropout: 0.1` is p)
    unit_axis: int = 1  # the batch array's axis of units (1: features / channels; -1: a sequence's features)
    # config -> the unit axis where the kind's options or its input's layout decide it (a layernorm over channels,
    # a chunk of a sequence); None: `unit_axis`
    unit_axis_of: Callable | None = None
    layout: str | None = None  # what a 2-D output is (SEQUENCE, CHANNELS); None: the input's
    assumes_layout: str | None = None  # how it reads a 2-D input no layer has laid out yet
    reads_layout: bool = False  # its config learns whether the input is a sequence (config["sequence"])
    normalizes: bool = False  # a normalization layer: resets the signal's scale (batchnorm, layernorm)
    # a weightless layer that sets the signal's scale rather than passing it on (layer_scale's gamma, a standalone
    # activation: relu halves the second moment); the other weightless, non-normalizing kinds pass it on
    rescales: bool = False
    # config -> whether its output is normalized (a post-norm transformer block); None: `normalizes`
    output_normalized: Callable | None = None
    # config -> whether it adds to a residual stream (a residual block's end; a pre-norm transformer block)
    adds_to_stream: Callable | None = None
    params_dict: bool = False  # built from several named parameters (recurrent, attention, embedding)
    weights_from_init: bool = False  # every weight matrix is drawn from `init` (attention, transformer)
    inner_activation: str | None = None  # the default activation acting inside (recurrent: tanh); None: `activation` key
    elementwise_activation: bool = False  # its `activation` must be elementwise (a conv's last axis is spatial)
    cache_elements: Callable = no_elements  # (layer_spec, batch) -> elements its backward cache keeps beyond its output
    scratch_elements: Callable = no_elements  # (layer_spec) -> per-sample scratch (a conv's im2col matrix)
    memory_doc: str = "its input, pre-activation and output"
    saturation: Callable = activation_saturation  # (layer, cache) -> the saturated fraction the statistics report
    saturation_doc: str = "the activation's rule on its pre-activation"
    block: bool = False  # a block of nested layers (residual), parsed by its own grammar
    # a merge: reads two or more layers (`inputs: [a, b]`); the parser puts their shapes and names in its
    # config ("shapes", "sources"); forward(*xs) -> (y, cache), backward(dy, cache) -> (*dxs, grads)
    joins: bool = False
    # a merge whose inputs scale each other (multiply): what reaches it through only some inputs (a squeeze-
    # excitation's pooled path) is judged by the product it feeds, not against the chain above it
    gates: bool = False
    # weightless (no `init` matrix) but holding learned parameters its class's parameter_shapes names (a class
    # token, a layer scale's gamma): a `supplied:` file may give them
    holds_parameters: bool = False
    reads_tokens: bool = False  # takes integer tokens: the first layer, on input_distribution: tokens (embedding)
    table: bool = False  # a learned lookup table (token and position embeddings): outside the rules-of-thumb schemes
    extra: dict = field(default_factory=dict)

    def normalizes_output(self, config) -> bool:
        return self.output_normalized(config) if self.output_normalized is not None else self.normalizes

    def in_stream(self, config) -> bool:
        return bool(self.adds_to_stream(config)) if self.adds_to_stream is not None else False

    @property
    def weightless(self) -> bool:
        return self.weights is None

    @property
    def accepts(self) -> tuple:
        """Every key a layer of this kind may carry: `takes`, and the keys of per-parameter initial values
        (paramspec): `supplied` on a kind with parameters (weights, a norm's gamma and beta, or `holds_parameters`), `inits` on a
        kind with an init that has parameters besides its main matrix (not a lookup table)."""
        extra = ()
        if self.weights is not None or self.normalizes or self.holds_parameters:  # (a residual end: its projection)
            extra += ("supplied",)
        if "init" in self.takes and not self.table:
            extra += ("inits",)
        return self.takes + tuple(key for key in extra if key not in self.takes)

    def parameter_shapes(self, input_shape, config, bias: bool = True) -> dict:
        """{name: shape} of every parameter as the built layer holds it (its `params`, or a dense or conv
        layer's `weights` and `bias`): what a `supplied:` file and `inits:` name. The class's own
        `parameter_shapes` where it has one; else the declared weights and, with a bias, one per output column."""
        own = getattr(self.cls, "parameter_shapes", None)
        if own is not None:
            return {name: tuple(shape) for name, shape in own(input_shape, config).items()}
        if self.weights is None:
            return {}
        shapes = {name: tuple(weight.shape) for name, weight in self.weights(input_shape, config).items()}
        if bias and shapes:
            shapes["bias"] = (next(iter(shapes.values()))[-1],)
        return shapes

    def shape_of(self, input_shape, config) -> tuple:
        return tuple((self.output_shape or self.cls.output_shape)(input_shape, config))

    def units(self, output_shape, config=None) -> int:
        """The output's unit count: features, channels or a sequence's features."""
        axis = self.unit_axis if self.unit_axis_of is None or config is None else self.unit_axis_of(config)
        return output_shape[axis - 1 if axis > 0 else -1]


def checked(normalize: Callable) -> Callable:
    """A kind's `parse` from a normalizer raising ValueError (its message is the problem's)."""
    def parse(check, path, value):
        try:
            return normalize(value if value not in (None, True) else {})
        except ValueError as err:
            check.problem(path, str(err))
            return None
    return parse


def params_layer(layer, weights: dict, kind_class):
    """Point a layer built from a parameter dict at its first weight matrix (what statistics measure)."""
    layer.main_param = next(iter(weights))
    layer.weights = layer.params[layer.main_param]
    layer.bias = layer.params.get(layer.main_param.replace("weights", "bias"))
    layer.unit_axis = -1  # (batch, [steps,] units)
    return layer
