"""`initdiag import dl4j conf.json`: a Deeplearning4j configuration's toJson() written as a spec, and `fans: dl4j`.

The JSON texts below are what DL4J 1.0.0-M2's `MultiLayerConfiguration.toJson()` and
`ComputationGraphConfiguration.toJson()` write (Jackson, properties sorted, "@class" type ids) for the
documentation's examples: the MNIST MLP (dl4j-examples MNISTDoubleLayer) and LeNet (LeNetMNIST, with
`setInputType(InputType.convolutionalFlat(28, 28, 1))`, which adds the two input preprocessors), and a small
computation graph with a residual add and a merge. The expected schemes are DL4J's code, written out here from
its WeightInit classes (not from the importer's table), and the drawn standard deviations are compared with them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import invoke
from initdiag import schemes, spec, weightgeometry
from initdiag.importers import IMPORTERS, ImportProblem, dl4j

ADAM = '{"@class" : "org.nd4j.linalg.learning.config.Adam", "beta1" : 0.9, "beta2" : 0.999, "epsilon" : 1.0E-8, "learningRate" : 0.001}'
L2 = ('[ {"@class" : "org.nd4j.linalg.learning.regularization.L2Regularization", "l2" : {"@class" : '
      '"org.nd4j.linalg.schedule.FixedSchedule", "value" : 5.0E-4}} ]')
XAVIER = '{"@class" : "org.deeplearning4j.nn.weights.WeightInitXavier"}'


def _act(name: str) -> str:
    return '{"@class" : "org.nd4j.linalg.activations.impl.Activation%s"}' % name


def _conf(layer: str, seed: int = 123) -> str:
    """One NeuralNetConfiguration as MultiLayerConfiguration.toJson() writes it."""
    return ('{"cacheMode" : "NONE", "dataType" : "FLOAT", "epochCount" : 0, "iterationCount" : 0, "layer" : ' + layer
            + ', "maxNumLineSearchIterations" : 5, "miniBatch" : true, "minimize" : true, "optimizationAlgo" : '
            '"STOCHASTIC_GRADIENT_DESCENT", "seed" : %d, "stepFunction" : null, "variables" : [ "W", "b" ]}' % seed)


def _dense(cls: str, name: str, nin: int, nout: int, activation: str, init: str = XAVIER, extra: str = "") -> str:
    return ('{"@class" : "org.deeplearning4j.nn.conf.layers.%s", "activationFn" : %s, "biasInit" : 0.0, '
            '"biasUpdater" : null, "constraints" : null, "gainInit" : 1.0, "gradientNormalization" : "None", '
            '"gradientNormalizationThreshold" : 1.0, "hasBias" : true, %s"idropout" : null, "iupdater" : %s, '
            '"layerName" : "%s", "nin" : %d, "nout" : %d, "regularization" : %s, "regularizationBias" : [ ], '
            '"timeDistributedFormat" : null, "weightInitFn" : %s, "weightNoise" : null}'
            % (cls, _act(activation), extra, ADAM, name, nin, nout, L2, init))


def _multilayer(confs: list, preprocessors: str = "{ }") -> str:
    return ('{\n  "backpropType" : "Standard",\n  "cacheMode" : "NONE",\n  "confs" : [ ' + ", ".join(confs)
            + ' ],\n  "dataType" : "FLOAT",\n  "epochCount" : 0,\n  "inferenceWorkspaceMode" : "ENABLED",\n'
            '  "inputPreProcessors" : ' + preprocessors + ',\n  "iterationCount" : 0,\n  "tbpttBackLength" : 20,\n'
            '  "tbpttFwdLength" : 20,\n  "trainingWorkspaceMode" : "ENABLED",\n  "validateOutputLayerConfig" : true\n}')


NLL = ', "lossFn" : {"@class" : "org.nd4j.linalg.lossfunctions.impl.LossNegativeLogLikelihood", "softmaxClipEps" : 1.0E-10, "weights" : null}'

# MNISTDoubleLayer: 784 -> 500 relu -> 100 relu -> 10 softmax, XAVIER everywhere, NEGATIVELOGLIKELIHOOD
MNIST_MLP = _multilayer([
    _conf(_dense("DenseLayer", "layer0", 784, 500, "ReLU", extra='"hasLayerNorm" : false, ')),
    _conf(_dense("DenseLayer", "layer1", 500, 100, "ReLU", extra='"hasLayerNorm" : false, ')),
    _conf(_dense("OutputLayer", "layer2", 100, 10, "Softmax").replace('"nin"', NLL[2:] + ', "nin"')),
])


def _convolution(name: str, nin: int, nout: int, kernel: int, stride: int = 1, init: str = XAVIER,
                 activation: str = "Identity", mode: str = "Truncate") -> str:
    return ('{"@class" : "org.deeplearning4j.nn.conf.layers.ConvolutionLayer", "activationFn" : %s, "biasInit" : 0.0, '
            '"biasUpdater" : null, "cnn2dDataFormat" : "NCHW", "constraints" : null, "convolutionMode" : "%s", '
            '"cudnnAlgoMode" : "PREFER_FASTEST", "cudnnAllowFallback" : true, "cudnnBwdDataAlgo" : null, '
            '"cudnnBwdFilterAlgo" : null, "cudnnFwdAlgo" : null, "dilation" : [ 1, 1 ], "gainInit" : 1.0, '
            '"gradientNormalization" : "None", "gradientNormalizationThreshold" : 1.0, "hasBias" : true, '
            '"idropout" : null, "iupdater" : %s, "kernelSize" : [ %d, %d ], "layerName" : "%s", "nin" : %d, '
            '"nout" : %d, "padding" : [ 0, 0 ], "regularization" : %s, "regularizationBias" : [ ], '
            '"stride" : [ %d, %d ], "timeDistributedFormat" : null, "weightInitFn" : %s, "weightNoise" : null}'
            % (_act(activation), mode, ADAM, kernel, kernel, name, nin, nout, L2, stride, stride, init))


def _subsampling(name: str) -> str:
    return ('{"@class" : "org.deeplearning4j.nn.conf.layers.SubsamplingLayer", "avgPoolIncludePadInDivisor" : true, '
            '"cnn2dDataFormat" : "NCHW", "constraints" : null, "convolutionMode" : "Truncate", '
            '"cudnnAllowFallback" : true, "dilation" : [ 1, 1 ], "eps" : 1.0E-8, "gradientNormalization" : "None", '
            '"gradientNormalizationThreshold" : 1.0, "idropout" : null, "kernelSize" : [ 2, 2 ], "layerName" : "%s", '
            '"padding" : [ 0, 0 ], "pnorm" : 0, "poolingType" : "MAX", "stride" : [ 2, 2 ]}' % name)


# LeNetMNIST: conv 5x5 20 (identity) -> max 2x2 -> conv 5x5 50 -> max 2x2 -> dense 500 relu -> output 10 softmax
LENET = _multilayer([
    _conf(_convolution("layer0", 1, 20, 5)), _conf(_subsampling("layer1")),
    _conf(_convolution("layer2", 20, 50, 5)), _conf(_subsampling("layer3")),
    _conf(_dense("DenseLayer", "layer4", 800, 500, "ReLU", extra='"hasLayerNorm" : false, ')),
    _conf(_dense("OutputLayer", "layer5", 500, 10, "Softmax").replace('"nin"', NLL[2:] + ', "nin"')),
], preprocessors='{\n    "0" : {"@class" : "org.deeplearning4j.nn.conf.preprocessor.FeedForwardToCnnPreProcessor", '
   '"inputHeight" : 28, "inputWidth" : 28, "numChannels" : 1},\n    "4" : {"@class" : '
   '"org.deeplearning4j.nn.conf.preprocessor.CnnToFeedForwardPreProcessor", "format" : "NCHW", "inputHeight" : 4, '
   '"inputWidth" : 4, "numChannels" : 50}\n  }')


def _vertex(layer: str) -> str:
    return ('{"@class" : "org.deeplearning4j.nn.conf.graph.LayerVertex", "layerConf" : ' + _conf(layer)
            + ', "outputVertex" : false, "preProcessor" : null}')


RELU = '{"@class" : "org.deeplearning4j.nn.weights.WeightInitRelu"}'
# input -> dense1 -> dense2; add = dense1 + dense2; merge = concat(add, dense1); out (softmax, MCXENT)
GRAPH = ('{\n  "backpropType" : "Standard",\n  "cacheMode" : "NONE",\n  "dataType" : "FLOAT",\n'
         '  "defaultConfiguration" : ' + _conf("null") + ',\n  "epochCount" : 0,\n  "inferenceWorkspaceMode" : "ENABLED",\n'
         '  "iterationCount" : 0,\n  "networkInputs" : [ "in" ],\n  "networkOutputs" : [ "out" ],\n'
         '  "tbpttBackLength" : 20,\n  "tbpttFwdLength" : 20,\n  "trainingWorkspaceMode" : "ENABLED",\n'
         '  "validateOutputLayerConfig" : true,\n'
         '  "vertexInputs" : {"dense1" : [ "in" ], "dense2" : [ "dense1" ], "add" : [ "dense1", "dense2" ], '
         '"merge" : [ "add", "dense1" ], "out" : [ "merge" ]},\n'
         '  "vertices" : {"dense1" : ' + _vertex(_dense("DenseLayer", "dense1", 20, 32, "ReLU", RELU))
         + ', "dense2" : ' + _vertex(_dense("DenseLayer", "dense2", 32, 32, "ReLU", RELU))
         + ', "add" : {"@class" : "org.deeplearning4j.nn.conf.graph.ElementWiseVertex", "op" : "Add"}'
         + ', "merge" : {"@class" : "org.deeplearning4j.nn.conf.graph.MergeVertex", "mergeAxis" : 1}'
         + ', "out" : ' + _vertex(_dense("OutputLayer", "out", 64, 5, "Softmax").replace(
             '"nin"', '"lossFn" : {"@class" : "org.nd4j.linalg.lossfunctions.impl.LossMCXENT", "softmaxClipEps" : '
             '1.0E-10, "weights" : null}, "nin"')) + '}\n}')


def _write(tmp_path: Path, text: str, name: str = "conf.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    json.loads(text)  # the fixtures are JSON
    return path


def _import(tmp_path: Path, text: str, *options) -> tuple[Path, dict]:
    out = tmp_path / "model.yaml"
    result = invoke("import", "dl4j", _write(tmp_path, text), "-o", out, *options)
    assert result.exit_code == 0, result.stderr
    return out, yaml.safe_load(out.read_text(encoding="utf-8"))


def _layer(data: dict, name: str) -> dict:
    return next(layer for layer in data["layers"] if layer["name"] == name)


def _checks(path: Path) -> None:
    spec.load(path)
    result = invoke("check", path)
    assert result.exit_code in (0, 1), result.stderr


def test_mnist_mlp_imports_with_xavier_and_nll(tmp_path):
    path, data = _import(tmp_path, MNIST_MLP)
    assert data["input"] == [784] and data["loss"] == "cross_entropy" and data["fans"] == "dl4j"
    assert [(layer["dense"], layer.get("activation"), layer["init"]) for layer in data["layers"]] == [
        (500, "relu", "xavier"), (100, "relu", "xavier"), (10, "softmax", "xavier")]
    loaded = spec.load(path)
    first = weightgeometry.main(loaded.layers[0])
    assert loaded.layers[0].init.definition.std(first.fans, loaded.layers[0].init.params) == pytest.approx(
        math.sqrt(2 / (784 + 500)))  # DL4J's WeightInitXavier: N(0, 2/(fanIn + fanOut))
    _checks(path)


def test_lenet_imports_with_its_preprocessors(tmp_path):
    path, data = _import(tmp_path, LENET)
    assert data["input"] == [1, 28, 28]  # FeedForwardToCnnPreProcessor(28, 28, 1) at layer 0
    kinds = [next(key for key in layer if key not in ("name", "init", "activation", "inputs")) for layer in data["layers"]]
    assert kinds == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten", "dense", "dense"]
    assert _layer(data, "layer0")["conv2d"] == {"filters": 20, "kernel": 5}
    loaded = spec.load(path)
    assert loaded.layers[-2].fan_in == 800  # 50 · 4 · 4: the CnnToFeedForwardPreProcessor's flatten
    _checks(path)


def test_computation_graph_keeps_its_joins(tmp_path):
    path, data = _import(tmp_path, GRAPH)
    assert data["input"] == [20] and data["loss"] == "cross_entropy"
    assert _layer(data, "add") == {"add": {}, "inputs": ["dense1", "dense2"], "name": "add"}
    assert _layer(data, "merge") == {"concat": {}, "inputs": ["add", "dense1"], "name": "merge"}
    assert _layer(data, "dense1")["init"] == "relu"
    assert spec.load(path).layers[-1].fan_in == 64
    _checks(path)


# What DL4J's code draws for each WeightInit, with PyTorch-like fans (fan_in, fan_out): the std, from
# org.deeplearning4j.nn.weights.WeightInit*.java (NORMAL: randn/sqrt(fanIn); UNIFORM: U(±1/sqrt(fanIn));
# LECUN_UNIFORM and VAR_SCALING_UNIFORM_*: U(±3/sqrt(fan)); VAR_SCALING_NORMAL_*: TruncatedNormal(0, sqrt(1/fan)),
# whose std is 0.8796 · sqrt(1/fan); XAVIER_LEGACY: randn / sqrt(fanIn + fanOut)).
T2 = 0.8796256610342398
DL4J_STD = {
    "XAVIER": lambda i, o: math.sqrt(2 / (i + o)), "XAVIER_UNIFORM": lambda i, o: math.sqrt(6 / (i + o)) / math.sqrt(3),
    "XAVIER_FAN_IN": lambda i, o: math.sqrt(1 / i), "XAVIER_LEGACY": lambda i, o: 1 / math.sqrt(i + o),
    "RELU": lambda i, o: math.sqrt(2 / i), "RELU_UNIFORM": lambda i, o: math.sqrt(6 / i) / math.sqrt(3),
    "LECUN_NORMAL": lambda i, o: math.sqrt(1 / i), "NORMAL": lambda i, o: math.sqrt(1 / i),
    "UNIFORM": lambda i, o: 1 / math.sqrt(i) / math.sqrt(3), "LECUN_UNIFORM": lambda i, o: 3 / math.sqrt(i) / math.sqrt(3),
    "SIGMOID_UNIFORM": lambda i, o: 4 * math.sqrt(6 / (i + o)) / math.sqrt(3),
    "VAR_SCALING_NORMAL_FAN_IN": lambda i, o: T2 * math.sqrt(1 / i),
    "VAR_SCALING_NORMAL_FAN_OUT": lambda i, o: T2 * math.sqrt(1 / o),
    "VAR_SCALING_NORMAL_FAN_AVG": lambda i, o: T2 * math.sqrt(2 / (i + o)),
    "VAR_SCALING_UNIFORM_FAN_IN": lambda i, o: 3 / math.sqrt(i) / math.sqrt(3),
    "VAR_SCALING_UNIFORM_FAN_OUT": lambda i, o: 3 / math.sqrt(o) / math.sqrt(3),
    "VAR_SCALING_UNIFORM_FAN_AVG": lambda i, o: 3 / math.sqrt((i + o) / 2) / math.sqrt(3),
}
# every WeightInit value of the DL4J page (/work/shared/seeds: the WeightInit enum)
PAGE_NAMES = ("XAVIER", "XAVIER_UNIFORM", "RELU", "RELU_UNIFORM", "LECUN_NORMAL", "LECUN_UNIFORM",
              "VAR_SCALING_NORMAL_FAN_IN", "VAR_SCALING_NORMAL_FAN_OUT", "VAR_SCALING_NORMAL_FAN_AVG",
              "VAR_SCALING_UNIFORM_FAN_IN", "VAR_SCALING_UNIFORM_FAN_OUT", "VAR_SCALING_UNIFORM_FAN_AVG",
              "NORMAL", "UNIFORM", "ZERO", "ONES", "CONSTANT", "IDENTITY", "DISTRIBUTION", "SUPPLIED")


def _scheme(value):
    name, params = (value, {}) if isinstance(value, str) else next(iter(value.items()))
    scheme = schemes.lookup(name)
    return scheme, {**scheme.params, **params}


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_every_weight_init_of_the_page_maps_to_a_scheme_that_exists(name):
    converter = dl4j.Converter(Path("conf.json"), "dl4j")
    fields = {"distribution": {"type": "org.deeplearning4j.nn.conf.distribution.NormalDistribution", "mean": 0.0,
                               "std": 0.01}, "value": 0.1}
    if name == "SUPPLIED":  # the array is not in a JSON configuration: a located refusal, not a guess
        with pytest.raises(ImportProblem, match="layer 'd'.*SUPPLIED"):
            converter.scheme("d", "DenseLayer", name, fields)
        return
    scheme, params = _scheme(converter.scheme("d", "DenseLayer", name, fields))
    fans = schemes.Fans(300, 100)
    if name in DL4J_STD:
        assert scheme.std(fans, params) == pytest.approx(DL4J_STD[name](300, 100), rel=1e-9), name
    elif name == "DISTRIBUTION":
        assert (scheme.name, params["std"]) == ("normal", 0.01)
    elif name == "CONSTANT":
        assert (scheme.name, params["value"]) == ("constant", 0.1)
    else:
        assert scheme.name == {"ZERO": "zero", "ONES": "ones", "IDENTITY": "identity"}[name]


@pytest.mark.parametrize("distribution, expected", [
    ({"type": "org.deeplearning4j.nn.conf.distribution.UniformDistribution", "lower": -0.05, "upper": 0.05},
     ("uniform", {"low": -0.05, "high": 0.05})),
    ({"type": "org.deeplearning4j.nn.conf.distribution.TruncatedNormalDistribution", "mean": 0.0, "std": 0.02},
     ("truncated_normal", {"mean": 0.0, "std": 0.02})),
    ({"normal": {"mean": 0.0, "std": 0.1}}, ("normal", {"mean": 0.0, "std": 0.1})),  # the pre-beta wrapper format
    ({"type": "org.deeplearning4j.nn.conf.distribution.OrthogonalDistribution", "gain": 2.0},
     ("orthogonal", {"gain": 2.0})),
])
def test_distribution_parameters_are_kept(distribution, expected):
    written = dl4j.Converter(Path("c.json"), "dl4j").scheme("d", "DenseLayer", "DISTRIBUTION", {"distribution": distribution})
    assert written == {expected[0]: expected[1]}


def test_legacy_enum_fields_are_read(tmp_path):
    layer = json.loads(_dense("DenseLayer", "layer0", 10, 4, "TanH"))
    del layer["weightInitFn"], layer["activationFn"]
    layer.update({"weightInit": "DISTRIBUTION", "dist": {"normal": {"mean": 0.0, "std": 0.05}}, "activationFunction": "tanh"})
    text = json.dumps({"confs": [{"layer": layer}], "inputPreProcessors": {}})
    _, data = _import(tmp_path, text)
    assert data["layers"][0]["init"] == {"normal": {"mean": 0.0, "std": 0.05}} and data["layers"][0]["activation"] == "tanh"


def _strided(tmp_path, *options):
    conf = _multilayer([_conf(_convolution("conv", 3, 16, 3, stride=2, activation="ReLU")),
                        _conf(_dense("OutputLayer", "out", 16, 4, "Identity"))])
    data = json.loads(conf)
    data["confs"].insert(1, {"layer": {"@class": "org.deeplearning4j.nn.conf.layers.GlobalPoolingLayer",
                                       "poolingType": "AVG", "collapseDimensions": True, "layerName": "pool"}})
    out = tmp_path / "strided.yaml"
    result = invoke("import", "dl4j", _write(tmp_path, json.dumps(data)), "--input", "3,17,17", "-o", out, *options)
    assert result.exit_code == 0, result.stderr
    return spec.load(out), yaml.safe_load(out.read_text(encoding="utf-8"))


def test_fans_dl4j_divides_a_strided_convs_fan_out_by_the_stride_area(tmp_path):
    loaded, data = _strided(tmp_path)
    assert data["fans"] == "dl4j"
    conv = loaded.layers[0]
    fan_in, fan_out = 3 * 9, 16 * 9 / 4  # ConvolutionParamInitializer: nOut·kh·kw / (sh·sw)
    geometry = weightgeometry.main(conv)
    assert conv.init.definition.std(geometry.fans, conv.init.params) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)))
    from initdiag import network
    weights = network.build(loaded).layers[0].weights  # the drawn kernel has DL4J's std
    assert np.std(weights) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.1)


def test_fans_torch_keeps_pytorchs_fans(tmp_path):
    loaded, data = _strided(tmp_path, "--fans", "torch")
    assert "fans" not in data
    conv = loaded.layers[0]
    geometry = weightgeometry.main(conv)
    assert tuple(geometry.fans) == (27, 144)
    assert conv.init.definition.std(geometry.fans, conv.init.params) == pytest.approx(math.sqrt(2 / (27 + 144)))


def test_fans_dl4j_leaves_stride_one_and_other_layers_alone(tmp_path):
    text = (Path(__file__).resolve().parent.parent / "sample_specs" / "cifar_cnn_relu.yaml").read_text()
    plain = tmp_path / "plain.yaml"
    plain.write_text(text)
    with_dl4j = tmp_path / "dl4j.yaml"
    with_dl4j.write_text("fans: dl4j\n" + text)
    for a, b in zip(spec.load(plain).layers, spec.load(with_dl4j).layers):
        stride = a.config.get("stride", (1,)) if a.kind in ("conv1d", "conv2d") else (1,)
        if math.prod(stride) == 1:
            assert (a.fan_in, a.fan_out) == (b.fan_in, b.fan_out), a.name
        else:
            assert b.fan_out == a.fan_out / math.prod(stride), a.name


def test_an_lstm_keeps_dl4js_fans_through_the_gain(tmp_path):
    lstm = json.loads(_dense("LSTM", "lstm", 8, 16, "TanH"))
    lstm.update({"forgetGateBiasInit": 1.0, "gateActivationFn": json.loads(_act("Sigmoid")), "weightInitFnRecurrent": None})
    out_layer = json.loads(_dense("RnnOutputLayer", "out", 16, 3, "Softmax"))
    out_layer["lossFn"] = {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMCXENT"}
    text = json.dumps({"confs": [{"layer": lstm}, {"layer": out_layer}], "inputPreProcessors": {}})
    out = tmp_path / "lstm.yaml"
    result = invoke("import", "dl4j", _write(tmp_path, text), "--input", "12,8", "-o", out)
    assert result.exit_code == 0, result.stderr
    loaded = spec.load(out)
    layer = loaded.layers[0]
    assert layer.kind == "lstm" and layer.config["forget_bias"] == 1.0
    wanted = math.sqrt(2 / (16 + 8 + 16))  # XAVIER with DL4J's LSTM fans: fan_in = nOut, fan_out = nIn + nOut
    for geometry, init in ((weightgeometry.main(layer), layer.init), (weightgeometry.recurrent(layer), layer.recurrent_init)):
        assert init.definition.std(geometry.fans, init.params) == pytest.approx(wanted)
    _checks(out)


def test_idropout_is_a_dropout_before_the_layer_with_the_drop_probability(tmp_path):
    layer = json.loads(_dense("DenseLayer", "layer0", 10, 4, "ReLU"))
    layer["idropout"] = {"@class": "org.deeplearning4j.nn.conf.dropout.Dropout", "p": 0.8}  # DL4J: keep 80 %
    _, data = _import(tmp_path, json.dumps({"confs": [{"layer": layer}]}))
    assert data["layers"][0]["dropout"] == pytest.approx(0.2) and data["layers"][1]["dense"] == 4


@pytest.mark.parametrize("change, message", [
    (lambda layer: layer.update({"@class": "org.deeplearning4j.nn.conf.layers.LocalResponseNormalization"}),
     "layer 'layer0' (LocalResponseNormalization): no spec equivalent"),
    (lambda layer: layer.update({"activationFn": json.loads(_act("Cube"))}),
     "layer 'layer0' (DenseLayer): activationFn: ActivationCube has no equivalent"),
    (lambda layer: layer.update({"weightInitFn": {"@class": "org.deeplearning4j.nn.weights.WeightInitMystery"}}),
     "layer 'layer0' (DenseLayer): weightInitFn: WeightInitMystery has no equivalent"),
])
def test_unknown_layers_activations_and_inits_are_located(tmp_path, change, message):
    layer = json.loads(_dense("DenseLayer", "layer0", 10, 4, "ReLU"))
    change(layer)
    result = invoke("import", "dl4j", _write(tmp_path, json.dumps({"confs": [{"layer": layer}]})))
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_invalid_json_and_a_missing_input_shape_are_located(tmp_path):
    (tmp_path / "bad.json").write_text('{"confs": [ {"layer": } ]}')
    result = invoke("import", "dl4j", tmp_path / "bad.json")
    assert result.exit_code == 2 and "bad.json:1:23: invalid JSON" in result.stderr, result.stderr
    conv_only = _multilayer([_conf(_convolution("layer0", 1, 4, 3))])
    result = invoke("import", "dl4j", _write(tmp_path, conv_only))
    assert result.exit_code == 2 and "give it with --input" in result.stderr


def test_the_importer_is_registered_with_its_options():
    assert IMPORTERS["dl4j"].takes == ("input", "batch", "fans")


def test_an_embedding_layer_reads_one_token_with_dl4js_fans(tmp_path):
    embedding = json.loads(_dense("EmbeddingLayer", "emb", 500, 16, "Identity", RELU))
    embedding["hasBias"] = False
    head = json.loads(_dense("OutputLayer", "out", 16, 2, "Sigmoid"))
    head["lossFn"] = {"@class": "org.nd4j.linalg.lossfunctions.impl.LossBinaryXENT"}
    path, data = _import(tmp_path, json.dumps({"confs": [{"layer": embedding}, {"layer": head}]}))
    assert data["input"] == [1] and data["input_distribution"] == "tokens" and data["loss"] == "binary_cross_entropy"
    assert [next(iter(layer)) for layer in data["layers"]] == ["embedding", "select", "dense"]
    table = spec.load(path).layers[0]
    geometry = weightgeometry.main(table)
    assert table.init.definition.std(geometry.fans, table.init.params) == pytest.approx(math.sqrt(2 / 500))  # RELU, fan_in = nIn
    _checks(path)


def test_a_graph_vertex_preprocessor_and_an_average(tmp_path):
    conv = json.loads(_convolution("c1", 3, 8, 3, stride=2, activation="ReLU", mode="Same"))
    conv2 = json.loads(_convolution("c2", 8, 8, 3, activation="ReLU", mode="Same"))
    head = json.loads(_dense("OutputLayer", "out", 512, 10, "Softmax"))
    vertex = {"@class": "org.deeplearning4j.nn.conf.graph.LayerVertex", "preProcessor": None, "outputVertex": False}
    graph = {"networkInputs": ["img"], "networkOutputs": ["out"],
             "vertexInputs": {"c1": ["img"], "c2": ["c1"], "mean": ["c1", "c2"], "out": ["mean"]},
             "vertices": {"c1": {**vertex, "layerConf": {"layer": conv}}, "c2": {**vertex, "layerConf": {"layer": conv2}},
                          "mean": {"@class": "org.deeplearning4j.nn.conf.graph.ElementWiseVertex", "op": "Average"},
                          "out": {**vertex, "layerConf": {"layer": head}, "preProcessor": {
                              "@class": "org.deeplearning4j.nn.conf.preprocessor.CnnToFeedForwardPreProcessor",
                              "inputHeight": 8, "inputWidth": 8, "numChannels": 8}}}}
    path, data = _import(tmp_path, json.dumps(graph), "--input", "3,16,16")
    assert _layer(data, "c1")["conv2d"] == {"filters": 8, "kernel": 3, "stride": 2, "padding": "same"}
    assert _layer(data, "mean") == {"add": {"scales": [0.5, 0.5]}, "name": "mean", "inputs": ["c1", "c2"]}
    assert _layer(data, "out.preprocess")["flatten"] == {}
    assert spec.load(path).layers[-1].fan_in == 512
    _checks(path)


def test_forget_gate_bias_init_is_the_forget_gates_bias_over_a_bias_init(tmp_path):
    lstm = json.loads(_dense("LSTM", "lstm", 8, 16, "TanH"))
    lstm.update({"forgetGateBiasInit": 1.0, "biasInit": 0.5})  # DL4J: every bias 0.5, then the forget slice 1.0
    text = json.dumps({"confs": [{"layer": lstm}]})
    out = tmp_path / "lstm.yaml"
    assert invoke("import", "dl4j", _write(tmp_path, text), "--input", "5,8", "-o", out).exit_code == 0
    from initdiag import network
    bias = network.build(spec.load(out)).layers[0].params["bias"]
    assert np.allclose(bias[16:32], 1.0) and np.allclose(bias[:16], 0.5) and np.allclose(bias[32:], 0.5)


def test_an_unknown_fans_value_is_a_located_spec_error(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [3, 8, 8]\nfans: dl4k\nlayers:\n  - conv2d: {filters: 4, kernel: 3, stride: 2}\n")
    result = invoke("check", path)
    assert result.exit_code == 2 and "net.yaml:2:7: fans: unknown fans 'dl4k' (did you mean 'dl4j'?)" in result.stderr, result.stderr
