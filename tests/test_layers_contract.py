"""Contract tests generated from initdiag.layers.LAYERS: every declared kind builds from its example, its
backward agrees with finite differences (float64), its fans are PyTorch's, the JSON Schema accepts exactly
what the spec parser accepts, its aliases parse to it, and the README documents it. A kind registered
without one of its facts fails here with a message naming the kind and the missing fact.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from gradcheck import FD_TOL, numeric_gradient
from initdiag import layers, network, pipeline, spec, yamlsource
from initdiag.layers import LAYERS
from initdiag.layers.declare import COMMON_KEYS
from initdiag.schemes import ROLES

README = Path(__file__).parent.parent / "README.md"
OPTION_TYPES = ("int", "ints", "number", "numbers", "bool", "choice", "activation", "any_activation", "padding")
UNKNOWN = "zz_not_an_option"


# ------------------------------------------------------------------ the spec around a kind's example
def _layer(kind, key: str | None = None, value=...) -> dict:
    """The spec's layer mapping for `kind`'s example (under `key`: an alias), or with `value` instead."""
    key = key or kind.key
    shape, config = kind.example
    value = config if value is ... else value
    if kind.block:  # residual: [inner layers], its options beside the key
        inner = [{"dense": value.get("units", shape[0])}]
        return {key: inner, **{o.name: value[o.name] for o in kind.options if o.name in value}}
    if kind.joins:  # a merge joins the spec's input with itself (one input per example scale, at least two)
        joined = len(value.get("scales") or ()) if isinstance(value, dict) else 0
        return {key: value, "inputs": ["input"] * max(2, joined)}
    return {key: value}


def _spec(kind, layer: dict, dtype: str = "float32") -> dict:
    shape, _ = kind.example
    data = {"input": list(shape), "batch": 3, "dtype": dtype, "layers": [layer]}
    if kind.key == "embedding" or layer.get("embedding") is not None:  # tokens feed an embedding
        data["input_distribution"] = "tokens"
    return data


def _parse(data: dict):
    """The NetworkSpec, or the list of problem messages."""
    try:
        return spec.parse(yamlsource.loads(json.dumps(data), "contract.yaml"), base_dir=".", default_name="contract")
    except yamlsource.SpecErrors as errors:
        return [problem.message for problem in errors.problems]


def _schema_ok(data: dict) -> bool | None:
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        return None
    from initdiag.schema import spec_schema

    return Draft202012Validator(spec_schema()).is_valid(data)


def _agreement(kind, what: str, data: dict, expect: bool) -> list:
    parsed = _parse(data)
    parser = not isinstance(parsed, list)
    schema = _schema_ok(data)
    problems = []
    if parser != expect:
        problems.append(f"{what}: the parser {'accepts' if parser else 'rejects'} it ({parsed if not parser else 'ok'})")
    if schema is not None and schema != expect:
        problems.append(f"{what}: the schema {'accepts' if schema else 'rejects'} it")
    return problems


# ------------------------------------------------------------------ the contract
def declared_problems(kind) -> list:
    """The facts `kind` fails to declare, without running it."""
    problems = []
    for fact in ("summary", "memory_doc", "saturation_doc"):
        if not getattr(kind, fact):
            problems.append(f"no {fact}")
    if kind.torch is None:
        problems.append("no torch equivalent")
    if not kind.example or len(kind.example) != 2:
        problems.append("no example (input shape, config)")
    for option in kind.options:
        if not option.doc:
            problems.append(f"option '{option.name}' has no doc")
        if option.type not in OPTION_TYPES:
            problems.append(f"option '{option.name}' has type {option.type!r}, not one of {', '.join(OPTION_TYPES)}")
    unknown = [key for key in kind.takes if key not in COMMON_KEYS]
    if unknown:
        problems.append(f"takes unknown common key(s) {', '.join(unknown)}")
    if kind.bare is not None and kind.bare not in [option.name for option in kind.options]:
        problems.append(f"its bare value stands for '{kind.bare}', which is not an option")
    return problems


def schema_problems(kind) -> list:
    """Where the schema and the parser disagree on `kind`'s example, a missing required option, an unknown
    option and each alias."""
    problems = _agreement(kind, "its example", _spec(kind, _layer(kind)), True)
    shape, config = kind.example
    mapping = config if isinstance(config, dict) else {kind.bare: config}
    for option in kind.options:
        if option.required and not kind.block:
            without = {k: v for k, v in mapping.items() if k != option.name}
            value = without if len(kind.options) > 1 else None
            problems += _agreement(kind, f"without required option '{option.name}'", _spec(kind, _layer(kind, value=value)), False)
    for option in kind.options:  # the bounds: schema and parser agree at each declared end
        if kind.block or option.type != "number" or not isinstance(config, dict):
            continue
        for bound, strict in ((option.minimum, option.exclusive), (option.maximum, option.below_maximum)):
            if bound is not None:
                problems += _agreement(kind, f"with '{option.name}' at its bound {bound}",
                                       _spec(kind, _layer(kind, value={**mapping, option.name: bound})), not strict)
    if not kind.block:
        problems += _agreement(kind, f"with an unknown option '{UNKNOWN}'",
                               _spec(kind, _layer(kind, value={**mapping, UNKNOWN: 1})), False)
    for alias in kind.aliases:
        data = _spec(kind, _layer(kind, alias))
        problems += _agreement(kind, f"under its alias '{alias}'", data, True)
        parsed = _parse(data)
        if not isinstance(parsed, list) and parsed.layers[-1].kind != kind.key:
            problems.append(f"its alias '{alias}' parses to '{parsed.layers[-1].kind}'")
    return problems


def readme_problems(kind) -> list:
    rows = [row for row in layers.readme_table().splitlines() if row.startswith(f"| `{kind.key}` |")]
    if len(rows) != 1:
        return ["no row in layers.readme_table()"]
    return [f"option '{o.name}' is not in its README row" for o in kind.options if f"`{o.name}`" not in rows[0]]


def contract_problems(key: str) -> list:
    """Every fact LAYERS[key] lacks or gets wrong, each as '<kind>: <what>' (the runs are checked apart)."""
    kind = LAYERS[key]
    return [f"{key}: {problem}" for problem in declared_problems(kind) + schema_problems(kind) + readme_problems(kind)]


# ------------------------------------------------------------------ generated tests
KINDS = sorted(LAYERS)


@pytest.mark.parametrize("key", KINDS)
def test_every_kind_declares_its_facts_and_the_schema_parser_and_readme_agree(key):
    problems = contract_problems(key)
    assert not problems, "\n".join(problems)


def _built(kind):
    """The example's LayerSpec, the built layer (float64) and the network's input batch."""
    parsed = _parse(_spec(kind, _layer(kind), dtype="float64"))
    assert not isinstance(parsed, list), f"{kind.key}: its example does not parse: {parsed}"
    net = network.build(parsed)
    return parsed.layers[-1], net.layers[-1], net.inputs


def _parameters(layer) -> dict:
    params = getattr(layer, "params", None)
    if params:
        return params
    return {name: getattr(layer, name) for name in ("weights", "bias") if getattr(layer, name, None) is not None}


@pytest.mark.parametrize("key", KINDS)
def test_every_kind_builds_and_its_backward_agrees_with_finite_differences(key):
    kind = LAYERS[key]
    layer_spec, layer, x = _built(kind)
    assert layer.kind == key, f"{key}: built a {layer.kind} layer"
    rng = np.random.default_rng(0)
    if kind.block:  # the block's end: its branch's output beside the block's input
        inputs = (rng.standard_normal((x.shape[0],) + tuple(layer_spec.output_shape)), x)
    elif kind.joins:  # a merge: independent inputs of the shapes it joins
        inputs = tuple(rng.standard_normal((x.shape[0],) + tuple(shape)) for shape in layer_spec.config["shapes"])
    else:
        inputs = (x,)
    seeded = hasattr(layer, "rng")  # dropout: the same mask on every pass

    def forward():
        if seeded:
            layer.rng = np.random.default_rng(1)
        return layer.forward(*inputs)

    y, cache = forward()
    assert y.shape[1:] == tuple(layer_spec.output_shape), f"{key}: output {y.shape[1:]}, declared {layer_spec.output_shape}"
    target = rng.standard_normal(y.shape)
    result = layer.backward(target, cache)
    grads = result[-1]
    loss = lambda: float(np.sum(forward()[0] * target))  # noqa: E731
    for position, (array, d_array) in enumerate(zip(inputs, result[:-1])):
        if array.dtype.kind == "f":  # (tokens have no gradient)
            np.testing.assert_allclose(d_array, numeric_gradient(loss, array), **FD_TOL, err_msg=f"{key}: input {position}")
    for name, array in _parameters(layer).items():
        np.testing.assert_allclose(grads[name], numeric_gradient(loss, array), **FD_TOL, err_msg=f"{key}: {name}")


@pytest.mark.parametrize("key", KINDS)
def test_every_kind_runs_through_the_whole_check(key):
    """Beyond its own forward and backward, what `check` does with a layer: statistics read its cache, the
    checks its declared facts, the report its fans. A kind whose cache lacks what the statistics read fails here."""
    kind = LAYERS[key]
    parsed = _parse(_spec(kind, _layer(kind)))
    assert not isinstance(parsed, list), f"{key}: its example does not parse: {parsed}"
    try:
        diagnosis = pipeline.diagnose(parsed)
    except Exception as err:  # noqa: BLE001  (the contract names the kind and what broke)
        pytest.fail(f"{key}: check on its example raised {type(err).__name__}: {err}")
    rows = {row["name"]: row for row in diagnosis.report["layers"]}
    assert parsed.layers[-1].name in rows, f"{key}: no report row for the layer"
    assert diagnosis.report["verdict"] in ("healthy", "warning", "failing")


@pytest.mark.parametrize("key", KINDS)
def test_every_kinds_fans_and_roles_are_pytorchs(key):
    torch = pytest.importorskip("torch")
    kind = LAYERS[key]
    parsed = _parse(_spec(kind, _layer(kind)))
    layer_spec = parsed.layers[-1]
    module, names = kind.torch(layer_spec.input_shape, layer_spec.config)
    weights = kind.weights(layer_spec.input_shape, layer_spec.config) if kind.weights else {}
    assert set(names) == set(weights), f"{key}: torch names {sorted(names)}, declared weights {sorted(weights)}"
    for name, weight in weights.items():
        assert weight.role in ROLES, f"{key}: weight {name} has role {weight.role!r}"
        tensor = module.get_parameter(names[name])
        assert tuple(weight.fans) == torch.nn.init._calculate_fan_in_and_fan_out(tensor), f"{key}: fans of {name}"
    if weights:
        first = next(iter(weights.values()))
        assert (layer_spec.fan_in, layer_spec.fan_out) == tuple(first.fans), f"{key}: the spec's fans are not the first weight's"
    else:
        assert not [p for p in module.parameters() if p.dim() >= 2], f"{key}: weightless, but its torch twin has weights"


def test_the_readme_holds_the_generated_table_of_layer_kinds():
    """The lead pastes layers.readme_table() (NOTES-README-layers.md) into README.md; regenerate it when a kind changes."""
    assert layers.readme_table() in README.read_text(encoding="utf-8"), (
        "README.md lacks the current table of layer kinds: paste initdiag.layers.readme_table()")


def test_aliases_are_unique_and_name_no_kind():
    assert not set(layers.ALIASES) & set(LAYERS)
    assert len(layers.ALIASES) == sum(len(kind.aliases) for kind in LAYERS.values())
    assert not set(layers.ALIASES) & set(COMMON_KEYS)


# ------------------------------------------------------------------ meta-tests: a kind missing a fact is reported
def _without(monkeypatch, key: str, **changes):
    monkeypatch.setitem(LAYERS, key, dataclasses.replace(LAYERS[key], **changes))


def test_a_kind_without_a_torch_equivalent_or_docs_is_reported(monkeypatch):
    _without(monkeypatch, "dense", torch=None, summary="")
    assert contract_problems("dense") == ["dense: no summary", "dense: no torch equivalent"]


def test_an_undocumented_option_is_reported(monkeypatch):
    options = tuple(dataclasses.replace(o, doc="") if o.name == "eps" else o for o in LAYERS["layernorm"].options)
    _without(monkeypatch, "layernorm", options=options)
    assert contract_problems("layernorm") == ["layernorm: option 'eps' has no doc"]


def test_an_option_the_parser_takes_but_the_schema_lacks_is_reported(monkeypatch):
    pytest.importorskip("jsonschema")
    # the declaration forgets `dim`, which the embedding's own validation still requires
    _without(monkeypatch, "embedding", options=LAYERS["embedding"].options[:1])
    problems = contract_problems("embedding")
    assert "embedding: its example: the schema rejects it" in problems
    assert not [p for p in problems if "parser" in p and "example" in p]


def test_a_parser_that_accepts_unknown_options_is_reported(monkeypatch):
    pytest.importorskip("jsonschema")
    lenient = lambda check, path, value: {"p": 0.5, "eval": False}  # noqa: E731
    _without(monkeypatch, "dropout", parse=lenient)
    assert contract_problems("dropout") == [f"dropout: with an unknown option '{UNKNOWN}': the parser accepts it (ok)"]


def test_a_kind_missing_from_the_readme_table_is_reported(monkeypatch):
    monkeypatch.setattr(layers, "readme_table", lambda: "| kind |\n")
    assert contract_problems("flatten") == ["flatten: no row in layers.readme_table()"]
