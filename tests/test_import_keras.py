"""`initdiag import keras model.json`: Keras' model.to_json() (Keras 2 and 3, Sequential and Functional) as a spec.

The JSON texts are what Keras writes: Keras 3's `serialize_keras_object` form ({"module", "class_name", "config",
"registered_name", "build_config"}, functional layers with "inbound_nodes" of {"args", "kwargs"} holding
`__keras_tensor__`s) and tf.keras 2's ({"class_name", "config"}, "inbound_nodes" as [[name, node, tensor, {}]]).
Expected standard deviations are Keras' formulas written out here (glorot_uniform: sqrt(6/(fan_in+fan_out)) bound;
he_normal: a variance of 2/fan_in; ...), compared with what the written spec draws.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import invoke
from initdiag import spec, weightgeometry
from initdiag.importers import IMPORTERS

DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def _init(class_name: str, **config) -> dict:
    defaults = {"Orthogonal": {"gain": 1.0, "seed": None}, "Zeros": {}, "Ones": {}}
    return {"module": "keras.initializers", "class_name": class_name,
            "config": config or defaults.get(class_name, {"seed": None}), "registered_name": None}


# Keras 3, Sequential: Input(784) -> Dense(256, relu, he_normal) -> Dropout(0.2) -> Dense(10, softmax)
MLP3 = """{"module": "keras", "class_name": "Sequential", "config": {"name": "mnist_mlp", "trainable": true, "dtype":
{"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "layers":
[{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 784], "dtype": "float32",
"sparse": false, "name": "input_layer"}, "registered_name": null}, {"module": "keras.layers", "class_name": "Dense",
"config": {"name": "dense", "trainable": true, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config":
{"name": "float32"}, "registered_name": null}, "units": 256, "activation": "relu", "use_bias": true,
"kernel_initializer": {"module": "keras.initializers", "class_name": "HeNormal", "config": {"seed": null},
"registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {},
"registered_name": null}, "kernel_regularizer": null, "bias_regularizer": null, "kernel_constraint": null,
"bias_constraint": null}, "registered_name": null, "build_config": {"input_shape": [null, 784]}}, {"module":
"keras.layers", "class_name": "Dropout", "config": {"name": "dropout", "trainable": true, "dtype": {"module": "keras",
"class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "rate": 0.2, "seed": null,
"noise_shape": null}, "registered_name": null}, {"module": "keras.layers", "class_name": "Dense", "config": {"name":
"dense_1", "trainable": true, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
"registered_name": null}, "units": 10, "activation": "softmax", "use_bias": true, "kernel_initializer": {"module":
"keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null},
"bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null},
"kernel_regularizer": null, "bias_regularizer": null, "kernel_constraint": null, "bias_constraint": null},
"registered_name": null, "build_config": {"input_shape": [null, 256]}}], "build_input_shape": [null, 784]},
"registered_name": null, "build_config": {"input_shape": [null, 784]}}"""

# Keras 3, Sequential: Input(20, int32) -> Embedding(1000, 32) -> LSTM(64) -> Dense(1, sigmoid)
LSTM3 = """{"module": "keras", "class_name": "Sequential", "config": {"name": "sentiment", "trainable": true, "dtype":
{"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "layers":
[{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 20], "dtype": "int32",
"sparse": false, "name": "input_layer"}, "registered_name": null}, {"module": "keras.layers", "class_name":
"Embedding", "config": {"name": "embedding", "trainable": true, "dtype": {"module": "keras", "class_name":
"DTypePolicy", "config": {"name": "float32"}, "registered_name": null}, "input_dim": 1000, "output_dim": 32,
"embeddings_initializer": {"module": "keras.initializers", "class_name": "RandomUniform", "config": {"minval": -0.05,
"maxval": 0.05, "seed": null}, "registered_name": null}, "embeddings_regularizer": null, "activity_regularizer": null,
"embeddings_constraint": null, "mask_zero": false}, "registered_name": null, "build_config": {"input_shape": [null,
20]}}, {"module": "keras.layers", "class_name": "LSTM", "config": {"name": "lstm", "trainable": true, "dtype":
{"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null},
"return_sequences": false, "return_state": false, "go_backwards": false, "stateful": false, "unroll": false,
"zero_output_for_mask": false, "units": 64, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": true,
"kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null},
"registered_name": null}, "recurrent_initializer": {"module": "keras.initializers", "class_name": "Orthogonal",
"config": {"gain": 1.0, "seed": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers",
"class_name": "Zeros", "config": {}, "registered_name": null}, "unit_forget_bias": true, "kernel_regularizer": null,
"recurrent_regularizer": null, "bias_regularizer": null, "activity_regularizer": null, "kernel_constraint": null,
"recurrent_constraint": null, "bias_constraint": null, "dropout": 0.0, "recurrent_dropout": 0.0, "seed": null},
"registered_name": null, "build_config": {"input_shape": [null, 20, 32]}}, {"module": "keras.layers", "class_name":
"Dense", "config": {"name": "dense", "trainable": true, "dtype": {"module": "keras", "class_name": "DTypePolicy",
"config": {"name": "float32"}, "registered_name": null}, "units": 1, "activation": "sigmoid", "use_bias": true,
"kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null},
"registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {},
"registered_name": null}, "kernel_regularizer": null, "bias_regularizer": null, "kernel_constraint": null,
"bias_constraint": null}, "registered_name": null, "build_config": {"input_shape": [null, 64]}}], "build_input_shape":
[null, 20]}, "registered_name": null, "build_config": {"input_shape": [null, 20]}}"""


def _tensor(source: str, shape: list) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": "float32", "keras_history": [source, 0, 0]}}


def _layer3(class_name: str, name: str, config: dict, args, shape) -> dict:
    """A Keras 3 functional layer entry: its config, and one inbound node reading `args` (keras tensors)."""
    return {"module": "keras.layers", "class_name": class_name,
            "config": {"name": name, "trainable": True, "dtype": DTYPE, **config}, "registered_name": None,
            "build_config": {"input_shape": shape}, "name": name, "inbound_nodes": [{"args": args, "kwargs": {}}]}


def _conv3(name: str, filters: int, activation: str, init: str = "GlorotUniform") -> dict:
    return {"filters": filters, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
            "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": activation,
            "use_bias": True, "kernel_initializer": _init(init), "bias_initializer": _init("Zeros"),
            "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
            "kernel_constraint": None, "bias_constraint": None}


MAP = [None, 32, 32, 16]
# Keras 3, Functional residual CNN: x = Conv2D(16)(input); y = Conv2D(16, relu)(x); y = Conv2D(16)(y);
# Add([x, y]) -> ReLU -> BatchNormalization -> MaxPooling2D -> GlobalAveragePooling2D -> Dense(10, softmax)
RESNET3 = {"module": "keras", "class_name": "Functional", "config": {"name": "tiny_resnet", "trainable": True, "layers": [
    {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 32, 32, 3], "dtype": "float32",
     "sparse": False, "name": "input_layer"}, "registered_name": None, "name": "input_layer", "inbound_nodes": []},
    _layer3("Conv2D", "conv2d", _conv3("conv2d", 16, "relu", "HeNormal"), [_tensor("input_layer", [None, 32, 32, 3])], [None, 32, 32, 3]),
    _layer3("Conv2D", "conv2d_1", _conv3("conv2d_1", 16, "relu", "HeNormal"), [_tensor("conv2d", MAP)], MAP),
    _layer3("Conv2D", "conv2d_2", _conv3("conv2d_2", 16, "linear", "HeNormal"), [_tensor("conv2d_1", MAP)], MAP),
    _layer3("Add", "add", {}, [[_tensor("conv2d", MAP), _tensor("conv2d_2", MAP)]], [MAP, MAP]),
    _layer3("ReLU", "re_lu", {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}, [_tensor("add", MAP)], MAP),
    _layer3("BatchNormalization", "batch_normalization", {
        "axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True, "beta_initializer": _init("Zeros"),
        "gamma_initializer": _init("Ones"), "moving_mean_initializer": _init("Zeros"),
        "moving_variance_initializer": _init("Ones"), "beta_regularizer": None, "gamma_regularizer": None,
        "beta_constraint": None, "gamma_constraint": None, "synchronized": False}, [_tensor("re_lu", MAP)], MAP),
    _layer3("MaxPooling2D", "max_pooling2d", {"pool_size": [2, 2], "padding": "valid", "strides": [2, 2],
                                              "data_format": "channels_last"}, [_tensor("batch_normalization", MAP)], MAP),
    _layer3("GlobalAveragePooling2D", "global_average_pooling2d", {"data_format": "channels_last", "keepdims": False},
            [_tensor("max_pooling2d", [None, 16, 16, 16])], [None, 16, 16, 16]),
    _layer3("Dense", "dense", {"units": 10, "activation": "softmax", "use_bias": True,
                               "kernel_initializer": _init("GlorotUniform"), "bias_initializer": _init("Zeros"),
                               "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
                               "bias_constraint": None}, [_tensor("global_average_pooling2d", [None, 16])], [None, 16]),
], "input_layers": [["input_layer", 0, 0]], "output_layers": [["dense", 0, 0]]}, "registered_name": "Functional",
    "build_config": {"input_shape": None}}


def _layer2(class_name: str, name: str, config: dict, inbound: list) -> dict:
    return {"class_name": class_name, "config": {"name": name, "trainable": True, "dtype": "float32", **config},
            "name": name, "inbound_nodes": [[[source, 0, 0, {}] for source in inbound]] if inbound else []}


# tf.keras 2.13, Functional: Input(28, 28, 1) -> Conv2D(32, relu) -> MaxPooling2D -> Flatten -> Dropout(0.5) ->
# Dense(10, softmax, VarianceScaling(2.0, fan_in, truncated_normal))
CNN2 = {"class_name": "Functional", "config": {"name": "mnist_cnn", "trainable": True, "layers": [
    {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 28, 28, 1], "dtype": "float32", "sparse": False,
                                            "ragged": False, "name": "input_1"}, "name": "input_1", "inbound_nodes": []},
    _layer2("Conv2D", "conv2d", {"filters": 32, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid",
                                 "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "relu",
                                 "use_bias": True, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                                 "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
                                 "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
                                 "bias_constraint": None}, ["input_1"]),
    _layer2("MaxPooling2D", "max_pooling2d", {"pool_size": [2, 2], "padding": "valid", "strides": [2, 2],
                                              "data_format": "channels_last"}, ["conv2d"]),
    _layer2("Flatten", "flatten", {"data_format": "channels_last"}, ["max_pooling2d"]),
    _layer2("Dropout", "dropout", {"rate": 0.5, "noise_shape": None, "seed": None}, ["flatten"]),
    _layer2("Dense", "dense", {"units": 10, "activation": "softmax", "use_bias": True, "kernel_initializer": {
        "class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal",
                                                    "seed": None}},
        "bias_initializer": {"class_name": "Constant", "config": {"value": 0.1}}, "kernel_regularizer": None,
        "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None},
        ["dropout"]),
], "input_layers": [["input_1", 0, 0]], "output_layers": [["dense", 0, 0]]}, "keras_version": "2.13.1",
    "backend": "tensorflow"}


def _write(tmp_path: Path, value, name: str = "model.json") -> Path:
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
    return path


def _import(tmp_path: Path, value, *options) -> tuple[Path, dict, str]:
    out = tmp_path / "model.yaml"
    result = invoke("import", "keras", _write(tmp_path, value), "-o", out, *options)
    assert result.exit_code == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    return out, yaml.safe_load(text), text


def _checks(path: Path) -> None:
    spec.load(path)
    result = invoke("check", path)
    assert result.exit_code in (0, 1), result.stderr


def _std(layer, geometry=None, init=None) -> float:
    geometry = geometry or weightgeometry.main(layer)
    init = init or layer.init
    return init.definition.std(geometry.fans, init.params)


def test_keras3_sequential_mlp(tmp_path):
    path, data, text = _import(tmp_path, MLP3)
    assert data["input"] == [784] and "Keras 3" in text
    dense, dropout, head = data["layers"]
    assert dense == {"dense": 256, "activation": "relu", "init": {"relu": {"truncated": True}}, "name": "dense"}
    assert dropout == {"dropout": 0.2, "name": "dropout"}
    assert (head["activation"], head["init"]) == ("softmax", "xavier_uniform")
    loaded = spec.load(path)
    assert _std(loaded.layers[0]) == pytest.approx(math.sqrt(2 / 784))  # Keras' HeNormal: variance 2/fan_in
    assert _std(loaded.layers[2]) == pytest.approx(math.sqrt(6 / (256 + 10)) / math.sqrt(3))  # glorot_uniform
    _checks(path)


def test_keras3_functional_residual_cnn(tmp_path):
    path, data, text = _import(tmp_path, RESNET3)
    assert data["input"] == [3, 32, 32] and "channels-last" in text and "[32, 32, 3] is written [3, 32, 32]" in text
    names = [layer["name"] for layer in data["layers"]]
    assert names == ["conv2d", "conv2d_1", "conv2d_2", "add", "re_lu", "batch_normalization", "max_pooling2d",
                     "global_average_pooling2d", "dense"]
    by_name = {layer["name"]: layer for layer in data["layers"]}
    assert by_name["conv2d"]["conv2d"] == {"filters": 16, "kernel": 3, "padding": "same"}
    assert "activation" not in by_name["conv2d_2"] and by_name["conv2d_2"]["init"] == {"relu": {"truncated": True}}
    assert by_name["add"]["inputs"] == ["conv2d", "conv2d_2"]
    assert by_name["re_lu"]["activation"] == "relu" and by_name["batch_normalization"]["batchnorm"] == {"eps": 0.001}
    loaded = spec.load(path)
    assert _std(loaded.layers[0]) == pytest.approx(math.sqrt(2 / (3 * 9)))  # HeNormal on fan_in = 3·3·3
    _checks(path)


def test_keras3_embedding_lstm(tmp_path):
    path, data, _ = _import(tmp_path, LSTM3)
    assert data["input"] == [20] and data["input_distribution"] == "tokens"
    embedding, lstm, head = data["layers"]
    assert embedding["embedding"] == {"vocab": 1000, "dim": 32}
    assert embedding["init"] == {"uniform": {"low": -0.05, "high": 0.05}}
    assert lstm["lstm"] == {"units": 64, "return_sequences": False, "forget_bias": 1.0}
    assert (lstm["init"], lstm["recurrent_init"]) == ("xavier_uniform", "orthogonal")
    assert head["activation"] == "sigmoid"
    layer = spec.load(path).layers[1]
    # glorot_uniform on Keras' kernel (32, 4·64): fans 32 and 256, as PyTorch's weight_ih (256, 32)
    assert _std(layer) == pytest.approx(math.sqrt(6 / (32 + 256)) / math.sqrt(3))
    _checks(path)


def test_keras2_functional_cnn(tmp_path):
    path, data, text = _import(tmp_path, CNN2)
    assert data["input"] == [1, 28, 28] and "Keras 2.13.1" in text
    kinds = [next(iter(layer)) for layer in data["layers"]]
    assert kinds == ["conv2d", "maxpool2d", "flatten", "dropout", "dense"]
    head = data["layers"][-1]
    assert head["init"] == {"var_scaling_normal_fan_in": {"gain": math.sqrt(2.0), "truncated": True}}
    assert head["bias_init"] == 0.1
    assert "flattens channels-last" in text  # the permutation is said
    loaded = spec.load(path)
    assert _std(loaded.layers[-1]) == pytest.approx(math.sqrt(2 / (32 * 13 * 13)))  # VarianceScaling(2, fan_in)
    _checks(path)


def test_an_embeddings_fan_based_init_keeps_keras_fans(tmp_path):
    model = json.loads(LSTM3)
    model["config"]["layers"][1]["config"]["embeddings_initializer"] = _init("HeUniform")
    path, _, text = _import(tmp_path, model)
    layer = spec.load(path).layers[0]
    assert _std(layer) == pytest.approx(math.sqrt(2 / 1000))  # Keras: fan_in = input_dim = 1000
    assert "fan_in = input_dim" in text


def test_an_open_input_takes_input_in_keras_order(tmp_path):
    model = json.loads(json.dumps(RESNET3))
    model["config"]["layers"][0]["config"]["batch_shape"] = [None, None, None, 3]
    result = invoke("import", "keras", _write(tmp_path, model))
    assert result.exit_code == 2 and "give it with --input" in result.stderr
    _, data, _ = _import(tmp_path, model, "--input", "24,24,3")
    assert data["input"] == [3, 24, 24]


def test_unknown_layer_class_is_a_located_error(tmp_path):
    model = json.loads(MLP3)
    model["config"]["layers"][2]["class_name"] = "SpatialDropout1D"
    result = invoke("import", "keras", _write(tmp_path, model))
    assert result.exit_code == 2
    assert "model.json: layer 'dropout' (SpatialDropout1D) has no spec equivalent" in result.stderr, result.stderr


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update({"activation": "exponential"}), "layer 'dense' (Dense): activation: the activation \"exponential\" has no equivalent"),
    (lambda c: c.update({"kernel_initializer": _init("STFT")}), "layer 'dense' (Dense): kernel_initializer: the initializer STFT"),
])
def test_unknown_activations_and_initializers_are_located(tmp_path, change, message):
    model = json.loads(MLP3)
    change(model["config"]["layers"][1]["config"])
    result = invoke("import", "keras", _write(tmp_path, model))
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_invalid_json_is_located(tmp_path):
    result = invoke("import", "keras", _write(tmp_path, '{"class_name": "Sequential",\n "config": {]}'))
    assert result.exit_code == 2 and "model.json:2:13: invalid JSON" in result.stderr, result.stderr
    result = invoke("import", "keras", _write(tmp_path, {"class_name": "Conv2D", "config": {}}))
    assert result.exit_code == 2 and "expected a Keras model's to_json()" in result.stderr


def test_the_importer_is_registered_with_its_options():
    assert IMPORTERS["keras"].takes == ("input", "batch")
    result = invoke("import", "keras", "model.json", "--fans", "dl4j")
    assert result.exit_code == 2 and "--fans: not read by the keras importer" in result.stderr


def test_unit_forget_bias_sets_the_forget_gate_to_one_over_a_constant_bias(tmp_path):
    model = json.loads(LSTM3)
    model["config"]["layers"][2]["config"]["bias_initializer"] = _init("Constant", value=0.25)
    path, data, _ = _import(tmp_path, model)
    assert data["layers"][1]["bias_init"] == 0.25 and data["layers"][1]["lstm"]["forget_bias"] == 0.75
    from initdiag import network
    lstm = network.build(spec.load(path)).layers[1]
    bias = lstm.params["bias"]
    units = 64  # PyTorch's gates i, f, g, o: the forget gate's slice is 1 as Keras sets it, the others 0.25
    assert np.allclose(bias[units:2 * units], 1.0) and np.allclose(bias[:units], 0.25) and np.allclose(bias[2 * units:], 0.25)
