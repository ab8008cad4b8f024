"""Deeplearning4j's `MultiLayerConfiguration.toJson()` and `ComputationGraphConfiguration.toJson()` written as a spec.

The JSON (DL4J 1.0.0-beta to 1.0.0-M2: Jackson with "@class" type ids; the pre-1.0.0-alpha wrapper objects
{"dense": {...}} and enum fields "weightInit": "XAVIER", "dist", "activationFunction" are read too) holds each
layer's resolved configuration (the global builder's defaults already copied into it) and no weights. Read for
this module: deeplearning4j/deeplearning4j, deeplearning4j-nn/src/main/java/org/deeplearning4j/nn/conf/
(MultiLayerConfiguration: "confs", "inputPreProcessors"; ComputationGraphConfiguration: "vertices",
"vertexInputs", "networkInputs", "networkOutputs"; layers/*: "nin", "nout", "kernelSize", "stride", "padding",
"convolutionMode", "poolingType", "forgetGateBiasInit", "idropout", "lossFn"), nn/weights/WeightInit*.java and
nn/params/*ParamInitializer.java for what each WeightInit draws and with which fans:
- the schemes are DL4J's code, which differs from its page in four names: NORMAL (WeightInitNormal, as
  LECUN_NORMAL and XAVIER_FAN_IN) is N(0, 1/fan_in); UNIFORM is U(±1/sqrt(fan_in)); LECUN_UNIFORM and
  VAR_SCALING_UNIFORM_* have the bound 3·scale/sqrt(fan); VAR_SCALING_NORMAL_* draw a normal of std sqrt(scale/fan)
  cut at ±2σ (TruncatedNormalDistribution) without rescaling: `{truncated: true, gain: 0.8796...}`;
- ConvolutionParamInitializer: fan_in = nIn·kh·kw, fan_out = nOut·kh·kw / (sh·sw): the spec's `fans: dl4j`;
- LSTMParamInitializer (LSTM, GravesLSTM): fan_in = nOut, fan_out = nIn + nOut for the input and the recurrent
  weights, and EmbeddingLayer's table (vocab, dim): fan_in = vocab: a variance-scaling scheme's gain makes the spec
  (PyTorch's fans) draw DL4J's variance (jsonfile.refanned).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

from initdiag import schemes
from initdiag.importers.base import ImportProblem
from initdiag.importers.draft import Draft
from initdiag.importers.jsonfile import emit, parse_shape, read_json, refanned, spec_init

TRUNCATED_STD = schemes.FAMILY_STD["truncated_normal"]  # a N(0, 1) cut at ±2: its std, 0.8796

# DL4J's WeightInit enum (and the page's CONSTANT) -> (scheme, parameters) drawing what DL4J's code draws;
# a callable takes the scale of the VAR_SCALING_* classes (None: 1).
WEIGHT_INITS = {
    "XAVIER": ("xavier", {}),
    "XAVIER_UNIFORM": ("xavier_uniform", {}),
    "XAVIER_FAN_IN": ("xavier_fan_in", {}),
    "XAVIER_LEGACY": ("xavier_legacy", {}),
    "RELU": ("relu", {}),
    "RELU_UNIFORM": ("relu_uniform", {}),
    "LECUN_NORMAL": ("lecun_normal", {}),
    "NORMAL": ("lecun_normal", {}),
    "UNIFORM": ("lecun_uniform", {"gain": 1 / math.sqrt(3)}),
    "LECUN_UNIFORM": ("lecun_uniform", {"gain": math.sqrt(3)}),
    "SIGMOID_UNIFORM": ("sigmoid_uniform", {}),
    "IDENTITY": ("identity", {}),
    "ZERO": ("zeros", {}),
    "ONES": ("ones", {}),
    **{f"VAR_SCALING_NORMAL_FAN_{mode.upper()}": (f"var_scaling_normal_fan_{mode}", "truncated")
       for mode in ("in", "out", "avg")},
    **{f"VAR_SCALING_UNIFORM_FAN_{mode.upper()}": (f"var_scaling_uniform_fan_{mode}", "bound")
       for mode in ("in", "out", "avg")},
}
NOT_AS_PAGE = {  # where DL4J's code is not its page: the header says what is drawn
    "NORMAL": "NORMAL draws N(0, 1/fan_in) (DL4J's WeightInitNormal, as LECUN_NORMAL), not the page's N(0, 1)",
    "UNIFORM": "UNIFORM draws U(±1/sqrt(fan_in)) (DL4J's WeightInitUniform), not the page's U(-1, 1): lecun_uniform × 1/√3",
    "LECUN_UNIFORM": "LECUN_UNIFORM draws U(±3/sqrt(fan_in)) (DL4J's code), not the page's U(±sqrt(3/fan_in)): lecun_uniform × √3",
    "VAR_SCALING_UNIFORM": "VAR_SCALING_UNIFORM_* draw U(±3·scale/sqrt(fan)) (DL4J's code): gain √3·scale",
    "VAR_SCALING_NORMAL": "VAR_SCALING_NORMAL_* draw N(0, scale/fan) cut at ±2σ and not rescaled (DL4J's "
                          "TruncatedNormalDistribution): truncated, gain 0.8796·sqrt(scale)",
}
INIT_CLASSES = {"WeightInitXavier": "XAVIER", "WeightInitXavierUniform": "XAVIER_UNIFORM",
                "WeightInitXavierFanIn": "XAVIER_FAN_IN", "WeightInitXavierLegacy": "XAVIER_LEGACY",
                "WeightInitRelu": "RELU", "WeightInitReluUniform": "RELU_UNIFORM", "WeightInitNormal": "NORMAL",
                "WeightInitLecunNormal": "LECUN_NORMAL", "WeightInitUniform": "UNIFORM",
                "WeightInitLecunUniform": "LECUN_UNIFORM", "WeightInitSigmoidUniform": "SIGMOID_UNIFORM",
                "WeightInitIdentity": "IDENTITY", "WeightInitConstant": "CONSTANT",
                "WeightInitDistribution": "DISTRIBUTION",
                **{f"WeightInitVarScaling{family}Fan{mode}": f"VAR_SCALING_{family.upper()}_FAN_{mode.upper()}"
                   for family in ("Normal", "Uniform") for mode in ("In", "Out", "Avg")}}

# ND4J activation class (org.nd4j.linalg.activations.impl) or legacy name -> the spec's activation
ACTIVATIONS = {"ReLU": "relu", "TanH": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax", "Identity": "identity",
               "LReLU": "leaky_relu", "ELU": "elu", "SELU": "selu", "HardSigmoid": "hard_sigmoid",
               "HardTanH": "hardtanh", "SoftPlus": "softplus", "SoftSign": "softsign", "Swish": "swish",
               "GELU": "gelu", "ReLU6": "relu6", "Mish": "mish"}
LEGACY_ACTIVATIONS = {"relu": "ReLU", "tanh": "TanH", "sigmoid": "Sigmoid", "softmax": "Softmax",
                      "identity": "Identity", "leakyrelu": "LReLU", "elu": "ELU", "selu": "SELU",
                      "hardsigmoid": "HardSigmoid", "hardtanh": "HardTanH", "softplus": "SoftPlus",
                      "softsign": "SoftSign", "swish": "Swish", "gelu": "GELU", "relu6": "ReLU6", "mish": "Mish"}
LOSSES = {"LossMCXENT": "cross_entropy", "LossNegativeLogLikelihood": "cross_entropy", "LossMSE": "mse",
          "LossBinaryXENT": "binary_cross_entropy", "MCXENT": "cross_entropy",
          "NEGATIVELOGLIKELIHOOD": "cross_entropy", "MSE": "mse", "XENT": "binary_cross_entropy"}
LEGACY_LAYERS = {"dense": "DenseLayer", "output": "OutputLayer", "convolution": "ConvolutionLayer",
                 "convolution1d": "Convolution1DLayer", "subsampling": "SubsamplingLayer",
                 "batchNormalization": "BatchNormalization", "dropout": "DropoutLayer", "activation": "ActivationLayer",
                 "gravesLSTM": "GravesLSTM", "LSTM": "LSTM", "rnnoutput": "RnnOutputLayer",
                 "GlobalPooling": "GlobalPoolingLayer", "embedding": "EmbeddingLayer"}


def short(value) -> str:
    """The simple class name of a Jackson "@class" (org.x.y.Name -> Name), '' when there is none."""
    return value.rsplit(".", 1)[-1].rsplit("$", 1)[-1] if isinstance(value, str) else ""


def typed(value: dict | None) -> tuple[str, dict]:
    """(simple class name, fields) of a DL4J object: {"@class": ..., ...}, or a legacy wrapper {"name": {...}}."""
    if not isinstance(value, dict):
        return "", {}
    if "@class" in value:
        return short(value["@class"]), value
    if len(value) == 1 and isinstance(next(iter(value.values())), dict):
        (name, fields), = value.items()
        return name, fields
    return "", value


class Tensor(NamedTuple):
    source: str   # the spec layer that makes it ("input": the spec's input)
    layout: str   # flat, sequence, tokens, map1d, map2d


class Converter:
    def __init__(self, path: Path, fans: str):
        self.path, self.fans = path, fans
        self.layers: list[dict] = []
        self.notes: list[str] = []  # what is approximated
        self.facts: list[str] = []  # what DL4J draws that its page or PyTorch's fans would not say (exact)
        self.loss: str | None = None
        self.inits: list[str] = []  # the WeightInit names met, for the header

    def problem(self, name: str, cls: str, message: str) -> ImportProblem:
        return ImportProblem(f"{self.path}: layer '{name}' ({cls}): {message}")

    # -------------------------------------------------------------------- values
    def weight_init(self, name, cls, layer: dict, key: str = "weightInitFn", legacy: str = "weightInit"):
        """(spec scheme, DL4J WeightInit name) of the layer's weights; the recurrent key falls back to the main one."""
        value = layer.get(key)
        if value is None and layer.get(legacy) is not None:
            enum, fields = str(layer[legacy]), {"distribution": layer.get("dist" if legacy == "weightInit" else "distRecurrent")}
        elif value is None:
            return None
        else:
            init_class, fields = typed(value)
            if init_class == "WeightInitEmbedding":
                raise self.problem(name, cls, "WeightInitEmbedding: a pretrained table, not in the JSON")
            if init_class not in INIT_CLASSES:
                raise self.problem(name, cls, f"{key}: {init_class or json.dumps(value)} has no equivalent here; "
                                   f"known: {', '.join(INIT_CLASSES)}")
            enum = INIT_CLASSES[init_class]
        return self.scheme(name, cls, enum, fields), enum

    def scheme(self, name, cls, enum: str, fields: dict):
        """The spec scheme for DL4J's WeightInit `enum` (its class's `fields`: value, scale, distribution)."""
        self.inits.append(enum)
        if enum == "CONSTANT":
            return spec_init("constant", {"value": fields.get("value", 0.0)})
        if enum == "DISTRIBUTION":
            return self.distribution(name, cls, fields.get("distribution"))
        if enum == "SUPPLIED":
            raise self.problem(name, cls, "SUPPLIED: the array is not in the JSON")
        if enum not in WEIGHT_INITS:
            raise self.problem(name, cls, f"WeightInit {enum} is not one DL4J defines")
        scheme, params = WEIGHT_INITS[enum]
        scale = fields.get("scale")
        scale = 1.0 if scale is None else float(scale)
        if enum == "IDENTITY" and scale != 1.0:
            raise self.problem(name, cls, f"IDENTITY with scale {scale}: the identity scheme has no scale")
        family = enum.rsplit("_FAN_", 1)[0]
        if enum in NOT_AS_PAGE or family in NOT_AS_PAGE:
            self.facts.append(NOT_AS_PAGE.get(enum) or NOT_AS_PAGE[family])
        if params == "truncated":
            return spec_init(scheme, {"truncated": True, "gain": TRUNCATED_STD * math.sqrt(scale)})
        if params == "bound":
            return spec_init(scheme, {"gain": math.sqrt(3) * scale})
        return spec_init(scheme, params)

    def distribution(self, name, cls, value):
        kind, fields = typed(value)
        if kind == "" and isinstance(value, dict) and "type" in value:
            kind = short(value["type"])
        kind = {"normal": "NormalDistribution", "gaussian": "GaussianDistribution",
                "uniform": "UniformDistribution"}.get(kind, kind)
        if kind in ("NormalDistribution", "GaussianDistribution"):
            return spec_init("normal", {"mean": fields.get("mean", 0.0), "std": fields.get("std", 1.0)})
        if kind == "TruncatedNormalDistribution":
            return spec_init("truncated_normal", {"mean": fields.get("mean", 0.0), "std": fields.get("std", 1.0)})
        if kind == "UniformDistribution":
            return spec_init("uniform", {"low": fields.get("lower", -1.0), "high": fields.get("upper", 1.0)})
        if kind == "ConstantDistribution":
            return spec_init("constant", {"value": fields.get("value", 0.0)})
        if kind == "OrthogonalDistribution":
            gain = fields.get("gain", 1.0)
            return spec_init("orthogonal", {"gain": gain} if gain != 1.0 else {})
        raise self.problem(name, cls, f"DISTRIBUTION {kind or json.dumps(value)} has no equivalent here (normal, "
                           "gaussian, truncated normal, uniform, constant, orthogonal)")

    def activation(self, name, cls, layer: dict, key: str = "activationFn"):
        value = layer.get(key)
        if value is None and isinstance(layer.get("activationFunction"), str) and key == "activationFn":
            kind, fields = LEGACY_ACTIVATIONS.get(layer["activationFunction"].lower(), layer["activationFunction"]), {}
        elif value is None:
            self.notes.append(f"'{name}': no activation in the JSON: DL4J's default, sigmoid")
            return "sigmoid"
        else:
            kind, fields = typed(value)
            kind = kind.removeprefix("Activation")
        if kind not in ACTIVATIONS:
            raise self.problem(name, cls, f"{key}: Activation{kind} has no equivalent here; known: "
                               + ", ".join("Activation" + known for known in ACTIVATIONS))
        if kind == "LReLU":
            return {"leaky_relu": {"alpha": fields.get("alpha", 0.01)}}
        if kind == "ELU":
            alpha = fields.get("alpha", 1.0)
            return {"elu": {"alpha": alpha}} if alpha != 1.0 else "elu"
        if kind == "ReLU":
            maximum, threshold, slope = fields.get("max"), fields.get("threshold"), fields.get("negativeSlope")
            if threshold:
                raise self.problem(name, cls, f"ActivationReLU threshold {threshold}: no equivalent here")
            if maximum is not None and (maximum != 6 or slope):
                raise self.problem(name, cls, f"ActivationReLU max {maximum}: only relu6 has an equivalent")
            return "relu6" if maximum is not None else ({"leaky_relu": {"alpha": slope}} if slope else "relu")
        if kind == "GELU":
            if fields.get("precise"):
                return {"gelu": {"approximate": "tanh"}}
            self.notes.append(f"'{name}': DL4J's GELU x·sigmoid(1.702x) is written as the exact GELU")
        if kind == "HardSigmoid":
            self.notes.append(f"'{name}': DL4J's hard sigmoid clip(0.2x + 0.5, 0, 1) is written as hard_sigmoid, "
                              "relu6(x + 3)/6")
        return ACTIVATIONS[kind]


# ------------------------------------------------------------------------------ the layers


def _dims(value, ndim: int) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * ndim
    return values[:ndim]


def _pair(values: list):
    return values[0] if len(set(values)) == 1 else values


def _common(ctx: Converter, name, cls, layer: dict, written: dict, ours: tuple | None = None,
            theirs: tuple | None = None) -> dict:
    """activation, init, bias of a layer with weights; `ours`/`theirs`: PyTorch's and DL4J's fans when they differ."""
    activation = ctx.activation(name, cls, layer)
    if activation != "identity":
        written["activation"] = activation
    found = ctx.weight_init(name, cls, layer)
    init, enum = found if found else (ctx.scheme(name, cls, "XAVIER", {}), "XAVIER")
    if ours is not None and enum != "XAVIER_LEGACY":
        init = refanned(init, ours, theirs)
    written["init"] = init
    if layer.get("hasBias", True) is False:
        written["bias"] = False
    elif layer.get("biasInit"):
        written["bias_init"] = float(layer["biasInit"])
    return written


def _dense(ctx, name, cls, layer, tensor: Tensor):
    if tensor.layout not in ("flat", "sequence"):
        raise ctx.problem(name, cls, f"reads a {tensor.layout} tensor; initdiag's dense takes a flat or sequence input "
                          "(a CnnToFeedForwardPreProcessor flattens a feature map)")
    written = _common(ctx, name, cls, layer, {"dense": int(layer["nout"])})
    if cls in ("OutputLayer", "RnnOutputLayer"):
        _loss(ctx, name, cls, layer)
    return [written], tensor.layout


def _loss(ctx, name, cls, layer):
    loss_class, _ = typed(layer.get("lossFn"))
    loss_class = loss_class or str(layer.get("lossFunction", ""))
    if loss_class in LOSSES:
        ctx.loss = LOSSES[loss_class]
    else:
        ctx.notes.append(f"'{name}': the loss {loss_class or '(none)'} has no equivalent: the spec's default (auto)")


def _conv(ctx, name, cls, layer, tensor: Tensor):
    ndim = 1 if cls in ("Convolution1DLayer", "Convolution1D") else 2
    if tensor.layout != ("map1d" if ndim == 1 else "map2d"):
        raise ctx.problem(name, cls, f"reads a {tensor.layout} tensor, not a {ndim}-D feature map")
    kernel, stride = _dims(layer.get("kernelSize", 5), ndim), _dims(layer.get("stride", 1), ndim)
    padding, dilation = _dims(layer.get("padding", 0), ndim), _dims(layer.get("dilation", 1), ndim)
    mode = layer.get("convolutionMode") or "Truncate"
    options = {"filters": int(layer["nout"]), "kernel": _pair(kernel)}
    if _pair(stride) != 1:
        options["stride"] = _pair(stride)
    if mode == "Same":
        options["padding"] = "same"
    elif mode in ("Truncate", "Strict"):
        if _pair(padding) != 0:
            options["padding"] = _pair(padding)
    else:
        raise ctx.problem(name, cls, f"convolutionMode {mode}: no equivalent here (Truncate, Strict, Same)")
    if _pair(dilation) != 1:
        options["dilation"] = _pair(dilation)
    if str(layer.get("cnn2dDataFormat", "NCHW")) == "NHWC":
        ctx.notes.append(f"'{name}': cnn2dDataFormat NHWC is written channels-first")
    return [_common(ctx, name, cls, layer, {f"conv{ndim}d": options})], tensor.layout


def _subsampling(ctx, name, cls, layer, tensor: Tensor):
    if tensor.layout != "map2d":
        raise ctx.problem(name, cls, f"reads a {tensor.layout} tensor; initdiag pools 2-D feature maps only")
    pooling = str(layer.get("poolingType", "MAX")).upper()
    kind = {"MAX": "maxpool2d", "AVG": "avgpool2d"}.get(pooling)
    if kind is None:
        raise ctx.problem(name, cls, f"poolingType {pooling}: no equivalent here (MAX, AVG)")
    kernel, stride = _dims(layer.get("kernelSize", 1), 2), _dims(layer.get("stride", 2), 2)
    padding = _dims(layer.get("padding", 0), 2)
    options = {"kernel": _pair(kernel)}
    if stride != kernel:
        options["stride"] = _pair(stride)
    mode = layer.get("convolutionMode") or "Truncate"
    if mode == "Same":
        if stride != kernel or kind != "maxpool2d":
            raise ctx.problem(name, cls, "convolutionMode Same is written only for a MAX pool whose stride is its "
                              "kernel (a ceil-mode pool)")
        options["ceil_mode"] = True
        ctx.notes.append(f"'{name}': convolutionMode Same is a ceil-mode max pool (a last, partial window)")
    elif _pair(padding) != 0:
        options["padding"] = _pair(padding)
        if kind == "avgpool2d" and layer.get("avgPoolIncludePadInDivisor") is False:
            ctx.notes.append(f"'{name}': avgPoolIncludePadInDivisor false: the spec counts the padding in the mean")
    return [{kind: options}], "map2d"


def _batchnorm(ctx, name, cls, layer, tensor: Tensor):
    if tensor.layout not in ("flat", "map1d", "map2d"):
        raise ctx.problem(name, cls, f"reads a {tensor.layout} tensor; initdiag's batchnorm takes flat inputs and "
                          "feature maps")
    if layer.get("gamma", 1.0) != 1.0 or layer.get("beta", 0.0) != 0.0:
        raise ctx.problem(name, cls, f"gamma {layer.get('gamma')} and beta {layer.get('beta')}: initdiag's "
                          "batchnorm starts at gamma 1, beta 0")
    eps = layer.get("eps", 1e-5)
    return [{"batchnorm": {} if eps == 1e-5 else {"eps": eps}}], tensor.layout


def _dropout_layer(ctx, name, cls, layer, tensor: Tensor):
    p = _drop_probability(ctx, name, cls, layer.get("idropout"))
    return ([{"dropout": p}] if p is not None else []), tensor.layout


def _drop_probability(ctx, name, cls, value):
    """DL4J's IDropout as the spec's drop probability (DL4J's Dropout p is the probability of keeping), or None."""
    kind, fields = typed(value)
    if not kind and value is None:
        return None
    if isinstance(value, (int, float)):  # legacy: "dropOut": retain probability
        kind, fields = "Dropout", {"p": value}
    if kind != "Dropout":
        raise ctx.problem(name, cls, f"idropout {kind or json.dumps(value)}: only Dropout has an equivalent")
    retain = fields.get("p")
    if retain is None or not 0 < float(retain) <= 1:
        raise ctx.problem(name, cls, f"idropout p {retain}: expected the probability of keeping an input, in (0, 1]")
    return None if float(retain) == 1 else round(1 - float(retain), 12)


def _activation_layer(ctx, name, cls, layer, tensor: Tensor):
    return [{"activation": ctx.activation(name, cls, layer)}], tensor.layout


def _global_pooling(ctx, name, cls, layer, tensor: Tensor):
    pooling = str(layer.get("poolingType", "MAX")).upper()
    if pooling != "AVG":
        raise ctx.problem(name, cls, f"poolingType {pooling}: only AVG has an equivalent (global_avgpool)")
    if layer.get("collapseDimensions") is False:
        raise ctx.problem(name, cls, "collapseDimensions false: no equivalent here")
    return [{"global_avgpool": {}}], "flat"


def _recurrent(ctx, name, cls, layer, tensor: Tensor, return_sequences: bool = True):
    if tensor.layout != "sequence":
        raise ctx.problem(name, cls, f"reads a {tensor.layout} tensor; initdiag's recurrent layers read a sequence "
                          "[steps, features]")
    units, features = int(layer["nout"]), int(layer.get("nin") or 0)
    kind = "rnn" if cls == "SimpleRnn" else "lstm"
    options = {"units": units}
    if not return_sequences:
        options["return_sequences"] = False
    activation = ctx.activation(name, cls, layer)
    if kind == "rnn":
        if activation != "tanh":
            options["activation"] = activation
    else:
        gate = ctx.activation(name, cls, layer, "gateActivationFn") if layer.get("gateActivationFn") else "sigmoid"
        if activation != "tanh" or gate != "sigmoid":
            raise ctx.problem(name, cls, f"activation {activation} with gates {gate}: initdiag's lstm is tanh with "
                              "sigmoid gates")
        options["forget_bias"] = float(layer.get("forgetGateBiasInit", 1.0))
        if cls == "GravesLSTM":
            ctx.notes.append(f"'{name}': GravesLSTM's peephole connections are left out (an LSTM without them)")
    found = ctx.weight_init(name, cls, layer)
    init, enum = found if found else (ctx.scheme(name, cls, "XAVIER", {}), "XAVIER")
    recurrent = ctx.weight_init(name, cls, layer, "weightInitFnRecurrent", "weightInitRecurrent") or (init, enum)
    written = {kind: options}
    if kind == "lstm":  # DL4J's LSTM fans: fan_in = nOut, fan_out = nIn + nOut, for both matrices
        theirs = (units, features + units)
        if enum != "XAVIER_LEGACY":
            init = refanned(init, (features, 4 * units), theirs)
        if recurrent[1] != "XAVIER_LEGACY":
            recurrent = (refanned(recurrent[0], (units, 4 * units), theirs), recurrent[1])
        if {enum, recurrent[1]} - {"XAVIER_LEGACY", "DISTRIBUTION", "CONSTANT", "ZERO", "ONES", "IDENTITY"}:
            ctx.facts.append(f"'{name}': DL4J's LSTM fans are fan_in = nOut, fan_out = nIn + nOut: the gains make the "
                             "spec draw DL4J's variance")
    written.update({"init": init, "recurrent_init": recurrent[0]})
    if layer.get("biasInit"):
        written["bias_init"] = float(layer["biasInit"])
        if kind == "lstm":  # DL4J sets the forget gate's bias to forgetGateBiasInit; the spec adds to bias_init
            options["forget_bias"] -= float(layer["biasInit"])
    return [written], "sequence" if return_sequences else "flat"


def _embedding(ctx, name, cls, layer, tensor: Tensor):
    if tensor.source != "input" or ctx.layers:
        raise ctx.problem(name, cls, "an embedding must read the network's input (token ids), first")
    vocab, dim = int(layer["nin"]), int(layer["nout"])
    found = ctx.weight_init(name, cls, layer)
    init = found[0] if found else ctx.scheme(name, cls, "XAVIER", {})
    if not found or found[1] != "XAVIER_LEGACY":
        adjusted = refanned(init, (dim, vocab), (vocab, dim))  # DL4J's table (nIn, nOut): fan_in = vocab
        if adjusted != init:
            ctx.facts.append(f"'{name}': DL4J's embedding fans are fan_in = nIn (the vocabulary), fan_out = nOut: "
                             "the gain makes the spec draw DL4J's variance")
        init = adjusted
    written = [{"embedding": {"vocab": vocab, "dim": dim}, "init": init}]
    if layer.get("hasBias") and layer.get("biasInit"):
        raise ctx.problem(name, cls, f"hasBias with biasInit {layer['biasInit']}: initdiag's embedding has no bias")
    if layer.get("hasBias"):
        ctx.notes.append(f"'{name}': its bias (0 at init) is left out")
    if cls == "EmbeddingLayer":
        written.append({"select": 0})  # one index per example: [1, dim] -> [dim]
    activation = ctx.activation(name, cls, layer)
    if activation != "identity":
        written.append({"activation": activation})
    return written, "sequence" if cls == "EmbeddingSequenceLayer" else "flat"


def _loss_layer(ctx, name, cls, layer, tensor: Tensor):
    _loss(ctx, name, cls, layer)
    activation = ctx.activation(name, cls, layer)
    return ([{"activation": activation}] if activation != "identity" else []), tensor.layout


LAYERS = {
    "DenseLayer": _dense, "OutputLayer": _dense, "RnnOutputLayer": _dense,
    "ConvolutionLayer": _conv, "Convolution1DLayer": _conv, "Convolution1D": _conv,
    "SubsamplingLayer": _subsampling, "BatchNormalization": _batchnorm, "DropoutLayer": _dropout_layer,
    "ActivationLayer": _activation_layer, "GlobalPoolingLayer": _global_pooling,
    "LSTM": _recurrent, "GravesLSTM": _recurrent, "SimpleRnn": _recurrent,
    "EmbeddingLayer": _embedding, "EmbeddingSequenceLayer": _embedding, "LossLayer": _loss_layer,
}


def _layer(ctx: Converter, name: str, layer_value, tensor: Tensor) -> tuple[list, str]:
    """The spec layers for one DL4J layer configuration reading `tensor`, and its output's layout."""
    cls, layer = typed(layer_value)
    cls = LEGACY_LAYERS.get(cls, cls)
    if cls == "LastTimeStep":
        inner_cls, inner = typed(layer.get("underlying"))
        if inner_cls not in ("LSTM", "GravesLSTM", "SimpleRnn"):
            raise ctx.problem(name, cls, f"wraps {inner_cls or '?'}; only a recurrent layer has an equivalent")
        return _with_dropout(ctx, name, inner_cls, inner, tensor,
                             lambda: _recurrent(ctx, name, inner_cls, inner, tensor, return_sequences=False))
    if cls not in LAYERS:
        raise ctx.problem(name, cls or "?", "no spec equivalent; supported: " + ", ".join(sorted(LAYERS)) + ", LastTimeStep")
    return _with_dropout(ctx, name, cls, layer, tensor, lambda: LAYERS[cls](ctx, name, cls, layer, tensor))


def _with_dropout(ctx, name, cls, layer, tensor, convert):
    """DL4J applies a layer's `idropout` to its input: a dropout layer before it (not for a DropoutLayer itself)."""
    written, layout = convert()
    if cls != "DropoutLayer":
        p = _drop_probability(ctx, name, cls, layer.get("idropout", layer.get("dropOut") or None))
        if p is not None:
            written = [{"dropout": p}] + written
    return written, layout


# ------------------------------------------------------------------------------ preprocessors and the input


INPUT_LAYOUTS = {"DenseLayer": "flat", "OutputLayer": "flat", "ConvolutionLayer": "map2d",
                 "Convolution1DLayer": "map1d", "Convolution1D": "map1d", "SubsamplingLayer": "map2d",
                 "LSTM": "sequence", "GravesLSTM": "sequence", "SimpleRnn": "sequence", "RnnOutputLayer": "sequence",
                 "EmbeddingLayer": "tokens", "EmbeddingSequenceLayer": "tokens", "BatchNormalization": "flat"}


def _preprocessor(ctx, name, value, tensor: Tensor):
    """(spec layers, layout) for an InputPreProcessor before layer `name`."""
    kind, fields = typed(value)
    if kind in ("CnnToFeedForwardPreProcessor", "Cnn3DToFeedForwardPreProcessor"):
        return [{"flatten": {}}] if tensor.layout in ("map1d", "map2d") else [], "flat"
    if kind in ("RnnToFeedForwardPreProcessor", "FeedForwardToRnnPreProcessor"):
        return [], tensor.layout  # a dense layer applies per step either way: nothing to write
    if kind == "FeedForwardToCnnPreProcessor" and tensor.source == "input":
        return [], "map2d"       # the input, read as the image it is (see _input)
    raise ctx.problem(name, kind or "?", "this input preprocessor has no spec equivalent")


def _input_type(data: dict):
    """The input shape an InputType in the JSON gives (channels-first, [steps, features] for a sequence), or None."""
    for key in ("inputType", "networkInputType", "inputTypes", "networkInputTypes"):
        value = data.get(key)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        kind, fields = typed(value)
        if kind.endswith("InputTypeFeedForward") and fields.get("size"):
            return (int(fields["size"]),), "flat"
        if kind.endswith("InputTypeRecurrent") and fields.get("size") and (fields.get("timeSeriesLength") or 0) > 0:
            return (int(fields["timeSeriesLength"]), int(fields["size"])), "sequence"
        if kind.endswith(("InputTypeConvolutional", "InputTypeConvolutionalFlat")):
            channels = fields.get("channels", fields.get("depth", 1))
            return (int(channels), int(fields["height"]), int(fields["width"])), "map2d"
    return None


def _input(path, data, first_cls, first: dict, preprocessor, given):
    """(input shape, layout, where it came from) of the network."""
    layout = INPUT_LAYOUTS.get(first_cls, "flat")
    kind, fields = typed(preprocessor)
    declared = _input_type(data)
    if declared is None and kind == "FeedForwardToCnnPreProcessor":
        declared = (int(fields["numChannels"]), int(fields["inputHeight"]), int(fields["inputWidth"])), "map2d"
    if declared is None and layout == "flat" and first.get("nin"):
        declared = (int(first["nin"]),), "flat"
    if declared is None and first_cls == "EmbeddingLayer":
        declared = (1,), "tokens"
    if declared is None and first_cls == "EmbeddingSequenceLayer" and first.get("inputLength"):
        declared = (int(first["inputLength"]),), "tokens"
    if given is not None:
        if declared is not None and tuple(given) != tuple(declared[0]):
            raise ImportProblem(f"--input {','.join(map(str, given))}: the configuration's input is {list(declared[0])}")
        return tuple(given), (declared[1] if declared else layout), "--input"
    if declared is None:
        raise ImportProblem(f"{path}: the configuration does not give the input's shape ({first_cls} first); give it "
                            "with --input as initdiag writes it: channels-first (1,28,28), a sequence as steps,features")
    return declared[0], declared[1], "the configuration"


# ------------------------------------------------------------------------------ the networks


def _multilayer(ctx: Converter, data: dict, given):
    confs = data.get("confs")
    if not isinstance(confs, list) or not confs or not all(isinstance(c, dict) and "layer" in c for c in confs):
        raise ImportProblem(f"{ctx.path}: confs: expected the list of layer configurations (each with a 'layer')")
    preprocessors = data.get("inputPreProcessors") or {}
    first_cls, first = typed(confs[0]["layer"])
    first_cls = LEGACY_LAYERS.get(first_cls, first_cls)
    if first_cls == "LastTimeStep":
        first_cls, first = typed(first.get("underlying"))
    shape, input_layout, origin = _input(ctx.path, data, first_cls, first, preprocessors.get("0"), given)
    tensor = Tensor("input", input_layout)
    for index, conf in enumerate(confs):
        layer_cls, layer = typed(conf["layer"])
        name = str(layer.get("layerName") or f"layer{index}")
        if str(index) in preprocessors:
            written, layout = _preprocessor(ctx, name, preprocessors[str(index)], tensor)
            if written:
                emit(ctx.layers, written, f"{name}.preprocess", [tensor.source])
                tensor = Tensor(ctx.layers[-1]["name"], layout)
            else:
                tensor = Tensor(tensor.source, layout)
        written, layout = _layer(ctx, name, conf["layer"], tensor)
        if written:
            emit(ctx.layers, written, name, [tensor.source])
            tensor = Tensor(name, layout)
        else:
            tensor = Tensor(tensor.source, layout)
    return shape, input_layout, origin, f"MultiLayerConfiguration ({len(confs)} layers)"


def _graph(ctx: Converter, data: dict, given):
    vertices, inputs = data.get("vertices"), data.get("vertexInputs") or {}
    network_inputs, outputs = data.get("networkInputs") or [], data.get("networkOutputs") or []
    if not isinstance(vertices, dict) or not vertices:
        raise ImportProblem(f"{ctx.path}: vertices: expected the graph's vertices by name")
    if len(network_inputs) != 1 or len(outputs) != 1:
        raise ImportProblem(f"{ctx.path}: networkInputs {network_inputs} and networkOutputs {outputs}: a spec has "
                            "exactly one input and one output")
    order = _order(ctx.path, data, vertices, inputs, network_inputs[0])
    readers = [name for name in order if network_inputs[0] in inputs.get(name, [])]
    first_cls, first = _vertex_layer(vertices[readers[0]]) if readers else ("", {})
    first_pre = typed(vertices[readers[0]])[1].get("preProcessor") if readers else None
    shape, layout, origin = _input(ctx.path, data, first_cls, first, first_pre, given)
    tensors = {network_inputs[0]: Tensor("input", layout)}
    for name in order:
        vertex_cls, vertex = typed(vertices[name])
        sources = [tensors[source] for source in inputs.get(name, [])]
        if not sources:
            raise ctx.problem(name, vertex_cls, "reads no vertex")
        if vertex_cls == "LayerVertex":
            if len(sources) != 1:
                raise ctx.problem(name, vertex_cls, f"a layer given {len(sources)} inputs (DL4J merges them first)")
            tensor = sources[0]
            if vertex.get("preProcessor"):
                written, pre_layout = _preprocessor(ctx, name, vertex["preProcessor"], tensor)
                if written:
                    emit(ctx.layers, written, f"{name}.preprocess", [tensor.source])
                    tensor = Tensor(ctx.layers[-1]["name"], pre_layout)
                else:
                    tensor = Tensor(tensor.source, pre_layout)
            written, out_layout = _layer(ctx, name, vertex.get("layerConf", {}).get("layer"), tensor)
            reads = [tensor.source]
        else:
            written, out_layout = _vertex(ctx, name, vertex_cls, vertex, sources)
            reads = [source.source for source in sources]
        if written:
            emit(ctx.layers, written, name, reads)
            tensors[name] = Tensor(name, out_layout)
        else:
            tensors[name] = Tensor(reads[0], out_layout)
    if not ctx.layers or tensors[outputs[0]].source != ctx.layers[-1]["name"]:
        raise ImportProblem(f"{ctx.path}: the output '{outputs[0]}' must come last; another vertex is not read by it")
    return shape, layout, origin, f"ComputationGraphConfiguration ({len(vertices)} vertices)"


def _vertex_layer(value) -> tuple[str, dict]:
    kind, vertex = typed(value)
    if kind != "LayerVertex":
        return kind, {}
    cls, layer = typed(vertex.get("layerConf", {}).get("layer"))
    if cls == "LastTimeStep":
        cls, layer = typed(layer.get("underlying"))
    return LEGACY_LAYERS.get(cls, cls), layer


def _vertex(ctx, name, cls, vertex, sources):
    layouts = {source.layout for source in sources}
    if cls == "MergeVertex":
        if len(layouts) != 1:
            raise ctx.problem(name, cls, "merges inputs laid out differently")
        axis = vertex.get("mergeAxis")
        if axis not in (None, 1):
            raise ctx.problem(name, cls, f"mergeAxis {axis}: initdiag joins along the channels (features) only")
        return [{"concat": {}}], sources[0].layout
    if cls == "ElementWiseVertex":
        op, n = str(vertex.get("op", "Add")), len(sources)
        written = {"Add": {"add": {}}, "Product": {"multiply": {}}, "Average": {"add": {"scales": [1 / n] * n}},
                   "Subtract": {"add": {"scales": [1, -1]}}}.get(op)
        if written is None or (op == "Subtract" and n != 2):
            raise ctx.problem(name, cls, f"op {op}: no equivalent here (Add, Product, Average, Subtract)")
        return [written], sources[0].layout
    if cls == "PreprocessorVertex":
        return _preprocessor(ctx, name, vertex.get("preProcessor"), sources[0])
    raise ctx.problem(name, cls or "?", "this vertex has no spec equivalent (LayerVertex, MergeVertex, "
                      "ElementWiseVertex, PreprocessorVertex)")


def _order(path, data, vertices, inputs, network_input) -> list:
    """The vertices in topological order: DL4J's own (topologicalOrderStr) when the JSON has it, else Kahn's."""
    written = data.get("topologicalOrderStr")
    if isinstance(written, list) and set(written) - {network_input} == set(vertices):
        return [name for name in written if name in vertices]
    placed, order, pending = {network_input}, [], list(vertices)
    while pending:
        ready = next((name for name in pending if all(source in placed for source in inputs.get(name, []))), None)
        if ready is None:
            missing = sorted({s for name in pending for s in inputs.get(name, []) if s not in placed and s not in vertices})
            raise ImportProblem(f"{path}: vertexInputs name " + (f"unknown vertices {missing}" if missing else "a cycle"))
        order.append(ready)
        placed.add(ready)
        pending.remove(ready)
    return order


# ------------------------------------------------------------------------------ the import


def import_dl4j(path, *, input: str | None = None, batch: int | None = None, fans: str | None = None) -> Draft:
    """The spec for the Deeplearning4j configuration (MultiLayerConfiguration or ComputationGraphConfiguration
    `toJson()`) in the file at `path`. `input` ("1,28,28": initdiag's order, channels-first, a sequence as
    steps,features) gives an input shape the JSON does not; `batch` the batch; `fans` "dl4j" (default: the spec says
    `fans: dl4j`, DL4J's conv fans) or "torch" (PyTorch's). Raises ImportProblem (located)."""
    path = Path(path)
    if fans not in (None, "dl4j", "torch"):
        raise ImportProblem(f"--fans {fans}: expected dl4j (DL4J's conv fans, the default) or torch")
    data = read_json(path, "a Deeplearning4j configuration's toJson()")
    ctx = Converter(path, fans or "dl4j")
    given = parse_shape(input)
    if "confs" in data:
        shape, layout, origin, what = _multilayer(ctx, data, given)
    elif "vertices" in data:
        shape, layout, origin, what = _graph(ctx, data, given)
    else:
        raise ImportProblem(f"{path}: expected a MultiLayerConfiguration ('confs') or a ComputationGraphConfiguration "
                            "('vertices') toJson()")
    return _draft(path, ctx, shape, layout, origin, what, batch)


def _draft(path, ctx: Converter, shape, layout, origin, what, batch) -> Draft:
    draft = Draft(path.stem)
    convs = any(("conv1d" in layer or "conv2d" in layer) for layer in ctx.layers)
    draft.header = [f"Deeplearning4j {what}, imported by `initdiag import dl4j` from {path}; a JSON configuration "
                    "holds no weights: every parameter is drawn by its WeightInit.",
                    f"Input {list(shape)} from {origin}" + (" (DL4J's recurrent [features, steps] is written "
                                                            "[steps, features])" if layout == "sequence" else "") + ".",
                    "Init as DL4J's code draws it (org.deeplearning4j.nn.weights): "
                    + ", ".join(dict.fromkeys(ctx.inits)) + "; biases at biasInit"
                    + ("; an LSTM's forget gate at forgetGateBiasInit." if any("lstm" in layer for layer in ctx.layers)
                       else ".")]
    if ctx.fans == "dl4j":
        draft.header.append("Fans: DL4J's (fans: dl4j): a convolution's fan_out is nOut·kh·kw / (sh·sw)."
                            if convs else "Fans: DL4J's (fans: dl4j; the same as PyTorch's for these layers).")
    elif convs:
        draft.header.append("Fans: PyTorch's (--fans torch): a strided convolution's fan_out is nOut·kh·kw; DL4J "
                            "divides it by the stride area, so fan_out- and fan_avg-based schemes draw otherwise here.")
    if ctx.facts:
        draft.header.append("Drawn as DL4J's code does: " + "; ".join(dict.fromkeys(ctx.facts)) + ".")
    draft.header.append("Approximated: " + ("; ".join(dict.fromkeys(ctx.notes)) if ctx.notes else "nothing") + ".")
    draft.keys["input"] = list(shape)
    if layout == "tokens":
        draft.keys["input_distribution"] = "tokens"
    if batch or layout != "flat":
        draft.keys["batch"] = batch or 32
    if ctx.loss:
        draft.keys["loss"] = ctx.loss
    if ctx.fans == "dl4j":
        draft.keys["fans"] = "dl4j"
    draft.keys["defaults"] = {"init": "xavier"}
    for layer in ctx.layers:
        draft.add(layer)
    return draft
