"""The JSON Schema of the spec format (initdiag.schema): valid, complete, and in agreement with initdiag's own checks."""

import textwrap
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
from jsonschema import Draft202012Validator  # noqa: E402

from initdiag import activations, checks, schemes, spec, speclayers, yamlsource  # noqa: E402
from initdiag.schema import spec_schema  # noqa: E402

SAMPLES = sorted((Path(__file__).parent.parent / "sample_specs").glob("*.yaml"))
SCHEMA = spec_schema()
VALIDATOR = Draft202012Validator(SCHEMA)


def schema_ok(text: str) -> bool:
    return VALIDATOR.is_valid(yaml.safe_load(textwrap.dedent(text)))


def initdiag_ok(text: str) -> bool:
    try:
        parsed = spec.parse(yamlsource.loads(textwrap.dedent(text), "t.yaml"), base_dir=".", default_name="t")
        checks.spec_thresholds(parsed)  # threshold names and finding codes: checked against the declared checks
    except yamlsource.SpecErrors:
        return False
    return True


def mlp(layer: str = "{dense: 4}", top: str = "") -> str:
    return f"input: [8]\n{top}\nlayers:\n  - {layer}\n"


def test_the_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] and SCHEMA["title"] == "initdiag spec"


def test_every_property_has_a_description():
    missing = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                if "description" not in value:
                    missing.append(f"{where}.{key}")
            for key, value in node.items():
                if key != "if":  # a condition, not documentation
                    walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(SCHEMA, "")
    assert not missing


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_spec_validates(path):
    errors = [error.message for error in VALIDATOR.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors


def test_there_are_samples():
    assert len(SAMPLES) >= 10


BAD = {
    "unknown top-level key": mlp(top="bacth: 4"),
    "dense: 0": mlp("{dense: 0}"),
    "dense: true": mlp("{dense: true}"),
    "dense: 2.5": mlp("{dense: 2.5}"),
    "unknown layer key": mlp("{dense: 4, activaton: relu}"),
    "two kinds in one layer": mlp("{dense: 4, dropout: 0.1}"),
    "no kind": mlp("{name: x}"),
    "unknown scheme": mlp("{dense: 4, init: xavir}"),
    "unknown scheme parameter": mlp("{dense: 4, init: {xavier: {gian: 2}}}"),
    "two schemes in one init": mlp("{dense: 4, init: {xavier: {}, relu: {}}}"),
    "non-positive gain": mlp("{dense: 4, init: {xavier: {gain: 0}}}"),
    "constant without a value": mlp("{dense: 4, init: constant}".replace("constant", "{constant: {}}")),
    "positional value on a scheme without one": mlp("{dense: 4, init: {xavier: 2}}"),
    "unknown activation": mlp("{dense: 4, activation: rleu}"),
    "unknown activation parameter": mlp("{dense: 4, activation: {leaky_relu: {beta: 1}}}"),
    "unknown gelu variant": mlp("{dense: 4, activation: {gelu: {approximate: sigmoid}}}"),
    "numeric gelu variant": mlp("{dense: 4, activation: {gelu: {approximate: 1}}}"),
    "conv2d without filters": "input: [3, 8, 8]\nlayers:\n  - conv2d: {kernel: 3}\n",
    "conv2d with a softmax": "input: [3, 8, 8]\nlayers:\n  - {conv2d: {filters: 4, kernel: 3}, activation: softmax}\n",
    "unknown conv option": "input: [3, 8, 8]\nlayers:\n  - conv2d: {filters: 4, kernel: 3, padd: same}\n",
    "kernel of three sizes on conv2d": "input: [3, 8, 8]\nlayers:\n  - conv2d: {filters: 4, kernel: [3, 3, 3]}\n",
    "dropout: 2": mlp("{dropout: 2}"),
    "input: '784'": 'input: "784"\nlayers:\n  - dense: 4\n',
    "input of four axes": "input: [1, 2, 3, 4]\nlayers:\n  - dense: 4\n",
    "no layers": "input: [8]\nlayers: []\n",
    "no input": "layers:\n  - dense: 4\n",
    "unknown dtype": mlp(top="dtype: float16"),
    "unknown loss": mlp(top="loss: hinge"),
    "negative seed": mlp(top="seed: -1"),
    "unknown defaults key": mlp(top="defaults: {inits: relu}"),
    "residual with an unknown key": mlp("{residual: [{dense: 8}], scael: 0.5}"),
    "residual with a layer kind": mlp("{residual: [{dense: 8}], dense: 8}"),
    "empty residual": mlp("{residual: []}"),
    "unknown shortcut": mlp("{residual: [{dense: 8}], shortcut: pool}"),
    "bias_init without a bias": mlp("{dense: 4, bias: false, bias_init: 0.1}"),
    "rnn without units": "input: [5, 8]\nlayers:\n  - rnn: {return_sequences: false}\n",
    "unknown threshold": mlp(top="thresholds: {drift_warnign: 5}"),
    "negative threshold": mlp(top="thresholds: {dead_error: -1}"),
    "unknown finding code": mlp(top="ignore: [saturaton]"),
    "ignore mapping without codes": mlp(top="ignore: {reason: legacy}"),
    "unknown finding code on a layer": mlp("{dense: 4, ignore: [dead]}"),
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_known_bad_specs_do_not_validate(text):
    assert not schema_ok(text)


def test_the_bad_specs_start_from_a_valid_one():
    """So each bad spec fails for its own flaw, not the scaffolding's."""
    assert schema_ok(mlp()) and initdiag_ok(mlp())


def test_every_layer_kind_scheme_activation_and_threshold_is_in_the_schema():
    defs = SCHEMA["$defs"]
    kinds = {ref["$ref"].rsplit("/", 1)[1].removesuffix("_layer") for ref in defs["layer"]["oneOf"]}
    assert set(speclayers.KIND_NAMES) | {"residual"} <= kinds  # each kind's own schema: tests/test_layers_contract.py
    for name, registry, aliases in (("init", schemes.SCHEMES, schemes.ALIASES),
                                    ("activation", activations.ACTIVATIONS, activations.ALIASES)):
        name_schema, mapping_schema = defs[name]["anyOf"]
        assert set(registry) | set(aliases) <= set(mapping_schema["properties"])
        validator = Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{name}"})
        for entry in list(registry) + list(aliases):
            assert validator.is_valid(entry), entry
            needs = [key for key, default in registry[aliases.get(entry, entry)].params.items() if default is None]
            assert validator.is_valid({entry: {}}) == (not needs), entry  # constant, supplied, custom need theirs
    assert set(defs["thresholds"]["properties"]) == set(checks.Thresholds._fields)
    assert set(defs["finding_code"]["enum"]) == set(checks.CHECKS)


@pytest.mark.parametrize("init", ["XAVIER", " He_Normal ", "{Normal: {std: 0.1}}", "{constant: 0.1}", "{ORTHOGONAL: {gain: 2}}",
                                  "{torch_default: }", "{truncated_normal: {mean: 0, std: 2}}", "{supplied: w.npy}",
                                  "{custom: 'pkg.mod:fn'}", "{supplied: {path: w.npy}}"])
def test_inits_in_any_case_and_form(init):
    assert schema_ok(mlp("{dense: 4, init: %s}" % init))


@pytest.mark.parametrize("activation", ["ReLU", "SiLU", "{LEAKY_RELU: {alpha: 0.2}}", "{elu: }", "Softmax"])
def test_activations_in_any_case_and_form(activation):
    assert schema_ok(mlp("{dense: 4, activation: %s}" % activation))


# A handful of specs for the consistency check: initdiag and the schema must agree on each.
AGREE = {
    "mlp": mlp("{dense: 4, activation: relu, init: He_Normal, bias_init: 0.1, name: head}"),
    "gelu's tanh form": mlp("{dense: 4, activation: {gelu: {approximate: tanh}}}"),
    "gelu's tanh form, misspelt": mlp("{dense: 4, activation: {gelu: {approximate: tahn}}}"),
    "relu6 and hardswish": mlp("{dense: 4, activation: relu6}\n  - {dense: 4, activation: hard_swish}"),
    "defaults in any case": "input: [8]\ndtype: Float64\nloss: MSE\ndefaults: {init: ORTHOGONAL, activation: Tanh}\nlayers:\n  - dense: 8\n",
    "cnn": textwrap.dedent("""\
        input: [4, 8, 8]
        layers:
          - conv2d: {filters: 4, kernel: [3, 3], padding: Same, stride: 1, groups: 2, bias: false}
            activation: {leaky_relu: {alpha: 0.1}}
          - maxpool2d: {kernel: 2}
          - batchnorm: {eval: true}
          - flatten:
          - dropout: 0.2
          - dense: 10
            activation: softmax
        """),
    "residual": "input: [8]\nlayers:\n  - residual: [{dense: 8}, {residual: [{dense: 8}], scale: 0}]\n    scale: 0.5\n"
                "  - residual: [{dense: 4}]\n    shortcut: dense\n    name: proj\n",
    "recurrent and attention": textwrap.dedent("""\
        input: [5, 8]
        layers:
          - lstm: {units: 8, forget_bias: 0}
            recurrent_init: {orthogonal: {gain: 1}}
          - rnn: 8
          - transformer: {dim: 8, heads: 2, ffn: 16, norm: post, activation: {elu: {alpha: 1}}}
          - attention: {dim: 8, heads: 4}
          - layernorm: {}
          - gru: {units: 4, return_sequences: false}
        """),
    "tokens": "input: [5]\ninput_distribution: tokens\nlayers:\n  - embedding: {vocab: 20, dim: 8}\n  - gru: 4\n",
    "thresholds and ignore": mlp("{dense: 4, ignore: {codes: [dead-units], reason: sparse}}",
                                 top="thresholds: {drift_warning: 20, dead-error: 0.9}\nignore: [edge-of-chaos, saturation]"),
    **BAD,
}
# What a schema cannot express (initdiag alone rejects these): shapes and relations between values.
SCHEMA_CANNOT = {
    "identity on a non-square layer": mlp("{dense: 4, init: identity}"),
    "kernel larger than the input": "input: [3, 2, 2]\nlayers:\n  - conv2d: {filters: 4, kernel: 3}\n",
    "dense on a non-flat input": "input: [3, 8, 8]\nlayers:\n  - dense: 4\n",
    "dim not divisible by heads": "input: [5, 8]\nlayers:\n  - attention: {dim: 8, heads: 3}\n",
    "duplicate layer names": mlp("{dense: 4, name: a}\n  - {dense: 4, name: a}"),
    "uniform with low above high": mlp("{dense: 4, init: {uniform: {low: 1, high: 0}}}"),
    "custom without --allow-custom": mlp("{dense: 4, init: {custom: 'pkg.mod:fn'}}"),
}


@pytest.mark.parametrize("text", AGREE.values(), ids=AGREE.keys())
def test_initdiag_and_the_schema_agree(text):
    assert schema_ok(text) == initdiag_ok(text)


@pytest.mark.parametrize("text", SCHEMA_CANNOT.values(), ids=SCHEMA_CANNOT.keys())
def test_what_only_initdiag_checks(text):
    assert schema_ok(text) and not initdiag_ok(text)
