"""`supplied:` exact initial values for every parameter of every kind, generated from the layer registry (a
kind registered with parameters is covered the moment it exists), and the file's located errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import invoke, make_spec, write_spec

from initdiag import network, paramspec, spec, supplied, yamlsource
from initdiag.layers import LAYERS
from initdiag.yamlsource import SpecErrors

KINDS = [key for key, kind in LAYERS.items() if not kind.block]


def _example_spec(kind, extra: dict | None = None) -> dict:
    shape, config = kind.example
    joined = {"inputs": ["input"] * max(2, len(config.get("scales") or ()))} if kind.joins else {}  # a merge joins the input with itself
    data = {"input": list(shape), "batch": 3, "dtype": "float64", "loss": "mse",
            "layers": [{kind.key: config, **joined, **(extra or {})}]}
    if kind.reads_tokens:
        data["input_distribution"] = "tokens"
    return data


def _parse(data: dict, base_dir):
    return spec.parse(yamlsource.loads(json.dumps(data), "t.yaml"), base_dir=base_dir, default_name="t")


def _problems(data: dict, base_dir) -> list:
    with pytest.raises(SpecErrors) as info:
        _parse(data, base_dir)
    return info.value.problems


def _declared(kind, tmp_path) -> dict:
    layer = _parse(_example_spec(kind), tmp_path).layers[0]
    return LAYERS[kind.key].parameter_shapes(layer.input_shape, layer.config, layer.bias)


def _values(declared: dict) -> dict:
    rng = np.random.default_rng(7)
    return {name: rng.standard_normal(shape) + 3.0 * i for i, (name, shape) in enumerate(declared.items())}


@pytest.mark.parametrize("key", KINDS)
def test_every_parameter_of_every_kind_can_be_supplied_and_the_layer_holds_exactly_it(key, tmp_path):
    kind = LAYERS[key]
    declared = _declared(kind, tmp_path)
    if not declared:  # no parameters: the key is not taken
        assert "supplied" not in kind.accepts, f"{key} takes supplied but has no parameters"
        return
    assert "supplied" in kind.accepts, f"{key} has parameters {list(declared)} but does not take supplied"
    values = _values(declared)
    np.savez(tmp_path / "p.npz", **values)
    net = _parse(_example_spec(kind, {"supplied": "p.npz"}), tmp_path)
    layer = network.build(net).layers[0]
    arrays = supplied.held(layer)
    for name, value in values.items():
        assert name in arrays, f"{key}: the built layer holds no '{name}' (it holds {list(arrays)})"
        np.testing.assert_array_equal(arrays[name], value, err_msg=f"{key}.{name}")
    if kind.weights is not None:  # what statistics measure is the supplied main matrix (a table: transposed)
        main = next(iter(declared))
        weights = layer.weights
        np.testing.assert_array_equal(weights if weights.shape == values[main].shape else weights.T, values[main])
        assert net.layers[0].init.display == "supplied(p.npz)"


@pytest.mark.parametrize("key", [key for key in KINDS if "supplied" in LAYERS[key].accepts])
def test_a_folder_of_npy_files_supplies_some_parameters_and_the_rest_is_drawn(key, tmp_path):
    kind = LAYERS[key]
    declared = _declared(kind, tmp_path)
    name = list(declared)[-1]
    (tmp_path / "dir").mkdir()
    value = _values(declared)[name]
    np.save(tmp_path / "dir" / f"{name}.npy", value)
    drawn = network.build(_parse(_example_spec(kind), tmp_path)).layers[0]
    layer = network.build(_parse(_example_spec(kind, {"supplied": "dir"}), tmp_path)).layers[0]
    for other, array in supplied.held(layer).items():
        if other == name:
            np.testing.assert_array_equal(array, value)
        elif other in declared:  # each parameter keeps its own stream: the others are drawn as without the file
            np.testing.assert_array_equal(array, supplied.held(drawn)[other], err_msg=f"{key}.{other}")


def test_a_kind_without_parameters_refuses_the_key(tmp_path):
    (problem,) = _problems({"input": [4, 6], "layers": [{"flatten": {}, "supplied": "p.npz"}]}, tmp_path)
    assert problem.path == "layers[0].supplied" and "unknown key 'supplied'" in problem.message


def _dense(tmp_path, **arrays):
    np.savez(tmp_path / "d.npz", **arrays)
    return {"input": [3], "layers": [{"dense": 2, "supplied": "d.npz"}]}


def test_unknown_names_are_located_and_list_the_layers_parameters(tmp_path):
    (problem,) = _problems(_dense(tmp_path, weigths=np.zeros((3, 2))), tmp_path)
    assert str(problem).startswith("t.yaml:1:") and problem.path == "layers[0].supplied"
    assert "'weigths', which is not a parameter of dense_0 (its parameters: weights, bias)" in problem.message


def test_a_wrong_shape_names_the_array_and_both_shapes(tmp_path):
    (problem,) = _problems(_dense(tmp_path, weights=np.zeros((2, 3))), tmp_path)
    assert "array 'weights' has shape [2, 3], but dense_0 holds weights as [3, 2]" in problem.message


def test_a_bias_of_a_layer_without_bias_is_not_a_parameter(tmp_path):
    data = _dense(tmp_path, bias=np.zeros(2))
    data["layers"][0]["bias"] = False
    (problem,) = _problems(data, tmp_path)
    assert "'bias', which is not a parameter of dense_0 (its parameters: weights)" in problem.message


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_refused(tmp_path, bad):
    (problem,) = _problems(_dense(tmp_path, bias=np.array([0.0, bad])), tmp_path)
    assert "array 'bias' holds NaN or infinite values" in problem.message


def test_unreadable_missing_and_single_array_files_are_located(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    np.save(tmp_path / "one.npy", np.zeros((3, 2)))
    data = {"input": [3], "layers": [{"dense": 2, "supplied": "junk.npz"}, {"dense": 2, "supplied": "one.npy"},
                                     {"dense": 2, "supplied": "absent.npz"}]}
    problems = _problems(data, tmp_path)
    assert [p.path for p in problems] == ["layers[0].supplied", "layers[1].supplied", "layers[2].supplied"]
    assert "cannot read 'junk.npz'" in problems[0].message
    assert "not named ones" in problems[1].message
    assert "no such file or folder 'absent.npz'" in problems[2].message


def test_a_bad_file_is_reported_with_the_specs_other_problems_and_exit_2(tmp_path):
    np.savez(tmp_path / "d.npz", weights=np.zeros((5, 5)))
    path = write_spec(tmp_path, """\
        input: [3]
        layers:
          - {dense: 2, supplied: d.npz, activation: relu}
          - {dense: 2, init: no_such_scheme}
        """)
    result = invoke("check", path)
    assert result.exit_code == 2
    assert "layers[0].supplied" in result.stderr + result.stdout and "layers[1].init" in result.stderr + result.stdout


def test_the_report_says_the_main_matrix_is_supplied(tmp_path):
    np.savez(tmp_path / "d.npz", weights=np.ones((3, 2)))
    path = write_spec(tmp_path, """\
        input: [3]
        layers:
          - {dense: 2, supplied: d.npz}
        """)
    report = json.loads(invoke("check", path, "--format", "json").stdout)
    assert report["layers"][0]["init"] == "supplied(d.npz)"


def test_supplying_only_the_bias_keeps_the_drawn_matrix_and_the_init_column(tmp_path):
    np.savez(tmp_path / "d.npz", bias=np.array([0.5, -0.5]))
    net = _parse(_dense(tmp_path, bias=np.array([0.5, -0.5])), tmp_path)
    assert net.layers[0].init.display == "xavier"
    layer = network.build(net).layers[0]
    np.testing.assert_array_equal(layer.bias, np.float32([0.5, -0.5]))


def test_check_scheme_draws_supplied_matrices_and_keeps_supplied_vectors(tmp_path):
    """`check --scheme X` (with_init): every matrix is X's, supplied ones included; a supplied bias or norm
    parameter stays (a bias is not what the scheme decides)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", **{"attention.query_weights": rng.standard_normal((4, 4)),
                                    "attention.output_weights": rng.standard_normal((4, 4)),
                                    "attention.query_bias": np.full(4, 0.25), "norm1.gamma": np.full(4, 3.0)})
    text = """\
        input: [3, 4]
        layers:
          - transformer: {dim: 4, heads: 2, ffn: 6}
            supplied: a.npz
        """
    net = make_spec(text, base_dir=tmp_path)
    assert paramspec.main_supplied(net.layers[0])
    other = make_spec("input: [3, 4]\nlayers:\n  - transformer: {dim: 4, heads: 2, ffn: 6}\n    init: orthogonal\n")
    scheme = other.layers[0].init
    again = net.with_init(scheme)
    assert again.layers[0].init == scheme and set(again.layers[0].supplied.shapes) == {"attention.query_bias", "norm1.gamma"}
    layer = network.build(again).layers[0]
    reference = network.build(other).layers[0]
    for name in ("attention.query_weights", "attention.output_weights", "ffn.in_weights"):
        np.testing.assert_array_equal(layer.params[name], reference.params[name])
    np.testing.assert_array_equal(layer.params["attention.query_bias"], np.full(4, 0.25, np.float32))
    np.testing.assert_array_equal(layer.norm1.params["gamma"], np.full(4, 3.0, np.float32))


def test_a_supplied_main_matrix_leaves_the_blocks_other_matrices_to_the_written_init(tmp_path):
    np.savez(tmp_path / "q.npz", **{"query_weights": np.eye(4)})
    text = "input: [3, 4]\nlayers:\n  - attention: {dim: 4, heads: 2}\n    init: orthogonal\n"
    drawn = network.build(make_spec(text)).layers[0]
    layer = network.build(make_spec(text + "    supplied: q.npz\n", base_dir=tmp_path)).layers[0]
    np.testing.assert_array_equal(layer.params["query_weights"], np.eye(4, dtype=np.float32))
    for name in ("key_weights", "value_weights", "output_weights"):
        np.testing.assert_array_equal(layer.params[name], drawn.params[name])


def test_supplied_values_are_exact_an_lstm_adds_no_forget_bias_to_them(tmp_path):
    np.savez(tmp_path / "b.npz", bias=np.arange(12.0))
    net = make_spec("input: [4, 3]\ndtype: float64\nlayers:\n  - {lstm: 3, supplied: b.npz}\n", base_dir=tmp_path)
    layer = network.build(net).layers[0]
    np.testing.assert_array_equal(layer.params["bias"], np.arange(12.0))


def test_the_schema_takes_supplied_where_the_parser_does():
    pytest.importorskip("jsonschema")
    from jsonschema import Draft202012Validator

    from initdiag.schema import spec_schema

    validator = Draft202012Validator(spec_schema())
    assert validator.is_valid({"input": [3], "layers": [{"layernorm": {}, "supplied": "n.npz"}]})
    assert validator.is_valid({"input": [3], "layers": [{"dense": 2, "supplied": "folder"}]})
    assert not validator.is_valid({"input": [3, 4], "layers": [{"flatten": {}, "supplied": "f.npz"}]})
    assert not validator.is_valid({"input": [3], "layers": [{"dense": 2, "supplied": 3}]})


def test_a_residual_projection_shortcut_can_be_supplied_and_its_shape_is_checked(tmp_path):
    from initdiag.schema import spec_schema
    from jsonschema import Draft202012Validator

    value = np.arange(15, dtype=float).reshape(5, 3) / 10
    np.savez(tmp_path / "p.npz", weights=value)
    data = {"input": [5], "batch": 4, "dtype": "float64",
            "layers": [{"residual": [{"dense": 3}], "shortcut": "dense", "supplied": "p.npz"}, {"dense": 2}]}
    assert Draft202012Validator(spec_schema()).is_valid(data)
    net = _parse(data, tmp_path)
    block = network.build(net).layers[1]
    np.testing.assert_array_equal(block.weights, value)
    assert net.layers[1].init.display == "supplied(p.npz)"
    np.savez(tmp_path / "p.npz", weights=np.ones((4, 3)))
    problems = _problems(data, tmp_path)
    assert any("[4, 3]" in p.message and "[5, 3]" in p.message for p in problems), problems
