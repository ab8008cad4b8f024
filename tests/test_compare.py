"""`initdiag compare`: candidates, common random numbers, ranking, identity with check, CLI."""

import json
import math
import textwrap

import numpy as np
import pytest

from initdiag import checks, compare, initspec, network, spec
from conftest import invoke, make_spec as make



def mlp(activation: str, depth: int, width: int, init: str = "xavier", head: str | None = None) -> spec.NetworkSpec:
    text = f"input: [{width}]\nbatch: 256\ndefaults: {{init: {init}, activation: {activation}}}\nlayers:\n"
    text += f"  - dense: {width}\n" * depth
    if head:
        text += f"  - dense: 10\n    activation: {head}\n"
    return make(text)


def ranked(net_spec, names: list[str]) -> list[str]:
    inits = compare.candidates(net_spec, names)
    return compare.build(net_spec, compare.run_all(net_spec, inits, False, checks.Thresholds()))["ranking"]


run_cli = invoke  # the CLI in process at 80 columns without colour


# --- rankings on networks whose best scheme is known ---------------------------------------

def test_deep_relu_ranks_he_above_xavier_and_normal():
    order = ranked(mlp("relu", 12, 256), ["normal", "xavier", "relu"])
    assert order.index("relu") < order.index("xavier") < order.index("normal")


def test_deep_tanh_ranks_xavier_above_normal_and_small_normal():
    order = ranked(mlp("tanh", 10, 256), ["{normal: {std: 0.01}}", "normal", "xavier"])
    assert order.index("xavier") < order.index("normal")
    assert order.index("xavier") < order.index("normal(std=0.01)")


def test_selu_ranks_lecun_normal_first_among_lecun_he_and_xavier():
    families = ["relu", "relu_uniform", "xavier", "xavier_uniform", "lecun_normal", "lecun_uniform"]
    # Alternating widths: on square layers Xavier's fan_avg equals LeCun's fan_in and the two coincide.
    widths = [512, 128] * 5
    net_spec = make("input: [128]\ndefaults: {init: lecun_normal, activation: selu}\nlayers:\n"
                    + "".join(f"  - dense: {width}\n" for width in widths))
    order = ranked(net_spec, families)
    # lecun_normal and lecun_uniform have the same variance: either may lead, the family must
    assert order[0] in ("lecun_normal", "lecun_uniform")
    assert all(order.index("lecun_normal") < order.index(other) for other in families[:4])


# --- common random numbers and identity with check ----------------------------------------

def test_schemes_of_a_family_share_each_layers_draw():
    net_spec = mlp("relu", 3, 64)
    draws: dict = {}
    he = network.build(net_spec.with_init(initspec.parse("relu", "x")), draws=draws)
    glorot = network.build(net_spec.with_init(initspec.parse("xavier", "x")), draws=draws)
    for a, b in zip(he.layers, glorot.layers):
        ratio = a.weights / b.weights
        # relu std sqrt(2/n) over xavier std sqrt(2/(n+n)) = sqrt(2) on square layers
        np.testing.assert_allclose(ratio, math.sqrt(2), rtol=4 * np.finfo(np.float32).eps)
    assert len(draws) == 3  # one normal draw per layer, shared by both schemes


def test_compare_report_is_identical_to_check_with_that_scheme(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [32]\nbatch: 64\nlayers:\n  - {dense: 48, activation: tanh}\n  - {dense: 4, activation: softmax}\n")
    compared = json.loads(run_cli("compare", path, "--schemes", "relu,xavier,lecun_uniform", "--format", "json").stdout)
    for name in ("relu", "xavier", "lecun_uniform"):
        checked = json.loads(run_cli("check", path, "--scheme", name, "--format", "json").stdout)
        ours = next(rep for rep in compared["reports"] if rep["scheme"] == name)
        assert ours == checked


def test_jobs_give_identical_results(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [16]\nbatch: 32\nlayers:\n  - {dense: 24, activation: relu}\n  - {dense: 3}\n")
    one = run_cli("compare", path, "--format", "json", "--jobs", "1").stdout
    two = run_cli("compare", path, "--format", "json", "--jobs", "2").stdout
    assert json.loads(one) == json.loads(two)


# --- candidates ---------------------------------------------------------------------------

def test_default_candidates_are_own_recommended_and_the_four_families():
    net_spec = make("input: [8]\ndefaults: {init: {normal: {std: 0.1}}}\nlayers:\n"
                    "  - {dense: 8, activation: selu}\n  - {dense: 8, activation: gelu, init: torch_default}\n")
    names = [init.display for init in compare.candidates(net_spec, None)]
    for expected in ("normal(std=0.1)", "torch_default", "lecun_normal", "xavier", "relu", "orthogonal"):
        assert expected in names
    assert len(names) == len(set(names))


def test_all_includes_identity_only_for_square_networks_and_never_unsupplied_arrays():
    square = [i.scheme for i in compare.candidates(make("input: [8]\nlayers:\n  - {dense: 8}\n"), ["all"])]
    wide = [i.scheme for i in compare.candidates(make("input: [8]\nlayers:\n  - {dense: 9}\n"), ["all"])]
    assert "identity" in square and "identity" not in wide
    assert not {"supplied", "custom", "constant"} & set(square)
    assert {"xavier", "relu_uniform", "var_scaling_normal_fan_out", "torch_default", "zero"} <= set(square)


def test_keep_overrides_keeps_layers_that_pin_their_init():
    net_spec = make("input: [8]\nlayers:\n  - {dense: 8, init: orthogonal}\n  - {dense: 8}\n")
    kept = compare.replace_inits(net_spec, initspec.parse("relu", "x"), keep_overrides=True)
    assert [layer.init.scheme for layer in kept.layers] == ["orthogonal", "relu"]
    replaced = compare.replace_inits(net_spec, initspec.parse("relu", "x"), keep_overrides=False)
    assert [layer.init.scheme for layer in replaced.layers] == ["relu", "relu"]


# --- CLI ----------------------------------------------------------------------------------

def test_exit_codes_follow_the_best_scheme(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(textwrap.dedent("""\
        input: [64]
        defaults: {activation: relu}
        layers:
          - dense: 64
          - dense: 64
        """))
    assert run_cli("compare", path, "--schemes", "relu,zero").exit_code == 0
    assert run_cli("compare", path, "--schemes", "zero,ones").exit_code == 1
    assert run_cli("compare", path, "--schemes", "zero", "--fail-on", "never").exit_code == 0
    assert run_cli("compare", path, "--schemes", "xavir").exit_code == 2
    assert run_cli("compare", path, "--schemes", "identity,relu").exit_code == 0
    assert run_cli("compare", path, "--jobs", "zero").exit_code == 2


def test_json_shape_and_text_fit_80_columns():
    result = run_cli("compare", "sample_specs/deep_tanh_xavier.yaml", "--format", "json")
    data = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert {"initdiag_version", "spec", "seed", "reports", "ranking"} <= set(data)
    assert [rep["scheme"] for rep in data["reports"]] == data["ranking"]
    text = run_cli("compare", "sample_specs/deep_tanh_xavier.yaml").stdout
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    for name in data["ranking"]:
        assert name in text


def test_default_candidates_leave_out_inits_that_fit_only_their_own_layer(tmp_path):
    np.save(tmp_path / "w.npy", np.full((4, 8), 0.1))
    path = tmp_path / "net.yaml"
    path.write_text("input: [4]\nlayers:\n  - {dense: 8, init: {supplied: w.npy}}\n  - {dense: 8, init: identity}\n")
    net_spec = spec.load(path)
    names = [init.scheme for init in compare.candidates(net_spec, None)]
    assert "supplied" not in names and "identity" not in names and "xavier" in names
    result = run_cli("compare", path, "--keep-overrides", "--format", "json")
    assert result.exit_code in (0, 1)
    assert "supplied" not in json.loads(result.stdout)["ranking"]


def test_scores_come_from_the_statistics_not_from_the_report_read_back():
    """Issue 9: compare._stats rebuilt LayerStats from report dicts. The typed statistics (Diagnosis.run) flow
    forward instead: the score reads them, so a report's figures are only what is shown."""
    net_spec = mlp("tanh", 4, 32)
    (diagnosis,) = compare.run_all(net_spec, [initspec.parse("xavier", "t")], False, checks.Thresholds())
    before = compare.summary(diagnosis)
    for layer in diagnosis.report["layers"]:
        layer["act_var"], layer["dead_fraction"] = 1e9, 1.0
    assert compare.summary(diagnosis) == before
    assert before["activation_profile"][0] == pytest.approx(
        math.log10(diagnosis.run.layers[0].signal_second_moment / diagnosis.run.input_second_moment))
