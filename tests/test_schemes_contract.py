"""Contract tests generated from schemes.SCHEMES and schemes.ROLES: a scheme registered with its facts
is tested the moment it is registered, and one registered without them fails here with a message that
names the scheme and the missing fact.

Facts every scheme declares: a formula, the roles it initialises (`roles`, a non-empty subset of
ROLES), and how it draws: a family with its affine map (variance-based) or a `build` (structured).
Every parameter a scheme requires (default None) needs an example value in PARAM_EXAMPLES, and every
role an example geometry in GEOMETRIES and an example layer in ROLE_LAYERS.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from initdiag import network, paramspec, schemes, spec, weightgeometry, yamlsource
from initdiag.schemes import Fans, Geometry
from initdiag.yamlsource import SpecErrors

Z = 5.0  # standard errors

# One geometry per role, sized for a std within a few percent; square where a scheme may need it
# (identity: square matrices, a conv with as many filters as input channels).
GEOMETRIES = {
    "dense": Geometry((128, 128), "dense", Fans(128, 128)),
    "conv": Geometry((32 * 9, 32), "conv", Fans(32 * 9, 32 * 9), (3, 3), 1),
    "recurrent": Geometry((96, 96), "recurrent", Fans(96, 96)),
    "embedding": Geometry((64, 200), "embedding", Fans(64, 200)),
    "projection": Geometry((80, 80), "projection", Fans(80, 80)),
    "attention": Geometry((64, 64), "attention", Fans(64, 64)),
    "conv_transpose": Geometry((32 * 9, 32), "conv_transpose", Fans(32 * 9, 32 * 9), (3, 3), 1),
    "vector": Geometry((4096,), "vector", Fans(64, 4096)),
}

# One small spec per role, (head, layers): `{init}` is the scheme under test, the last layer's (for
# "recurrent" its recurrent_init; for "projection" the residual block's shortcut, drawn by defaults.init;
# for "vector" its bias_init).
ROLE_LAYERS = {
    "dense": ("input: [8]", "- {dense: 8, init: {init}}"),
    "conv": ("input: [4, 6, 6]", "- {conv2d: {filters: 4, kernel: 3, padding: same}, init: {init}}"),
    "recurrent": ("input: [5, 4]", "- {rnn: 4, init: xavier, recurrent_init: {init}}"),
    "embedding": ("input: [5]\ninput_distribution: tokens", "- {embedding: {vocab: 20, dim: 8}, init: {init}}"),
    "projection": ("input: [8]\ndefaults: {init: {init}}", "- residual:\n    - {dense: 6, init: xavier}\n  shortcut: dense"),
    "attention": ("input: [5, 8]", "- {attention: {heads: 2, dim: 8}, init: {init}}"),
    "conv_transpose": ("input: [4, 3, 3]", "- {conv_transpose2d: {filters: 4, kernel: 3, stride: 2}, init: {init}}"),
    "vector": ("input: [8]", "- {dense: 8, bias_init: {init}}"),
}


def _supplied_example(geometry, tmp_path):
    path = tmp_path / "supplied.npy"
    np.save(path, np.arange(math.prod(geometry.shape), dtype=np.float64).reshape(geometry.shape))
    return {"path": str(path), "shape": tuple(geometry.shape)}


def _custom_example(geometry, tmp_path):
    return {"target": "example:f", "function": lambda shape, fan_in, fan_out, rng: rng.standard_normal(shape)}


# A required parameter's example value (or the params it resolves to), by parameter name.
PARAM_EXAMPLES = {
    "value": lambda geometry, tmp_path: {"value": 0.1},
    "path": _supplied_example,
    "target": _custom_example,
}


def contract_problems(name: str, scheme: schemes.Scheme) -> list[str]:
    """What entry `name` of SCHEMES fails to declare, one message per missing fact."""
    problems = []
    if not scheme.formula:
        problems.append(f"scheme '{name}' has no formula")
    if not scheme.roles:
        problems.append(f"scheme '{name}' declares no roles (roles=ROLES for any)")
    unknown = set(scheme.roles) - set(schemes.ROLES)
    if unknown:
        problems.append(f"scheme '{name}' declares roles not in ROLES: {sorted(unknown)}")
    if (scheme.build is None) == (scheme.affine is None):
        problems.append(f"scheme '{name}' needs exactly one of build (structured) or affine (variance-based)")
    if scheme.affine is not None and scheme.family not in schemes.FAMILY_SAMPLERS:
        problems.append(f"scheme '{name}' is variance-based but its family {scheme.family!r} is not one of "
                        f"{sorted(schemes.FAMILY_SAMPLERS)}")
    for key, default in scheme.params.items():
        if key not in schemes.PARAMETERS:
            problems.append(f"scheme '{name}' has parameter '{key}', which has no JSON Schema and meaning in schemes.PARAMETERS")
        if default is None and key not in PARAM_EXAMPLES:
            problems.append(f"scheme '{name}' requires parameter '{key}', which has no example in PARAM_EXAMPLES")
    return problems


def _params(scheme, geometry, tmp_path) -> dict:
    params = dict(scheme.params)
    for key, default in scheme.params.items():
        if default is None:
            params.update(PARAM_EXAMPLES[key](geometry, tmp_path))
    return params


CLAIMED = [(name, role) for name, scheme in schemes.SCHEMES.items() for role in scheme.roles]
UNCLAIMED = [(name, role) for name, scheme in schemes.SCHEMES.items() for role in schemes.ROLES
             if role not in scheme.roles]


# --- declared facts ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(schemes.SCHEMES))
def test_every_scheme_declares_its_facts(name):
    assert contract_problems(name, schemes.SCHEMES[name]) == []


def test_every_role_has_its_examples():
    assert not set(schemes.ROLES) - set(GEOMETRIES), f"roles without a GEOMETRIES example: {set(schemes.ROLES) - set(GEOMETRIES)}"
    assert not set(schemes.ROLES) - set(ROLE_LAYERS), f"roles without a ROLE_LAYERS example: {set(schemes.ROLES) - set(ROLE_LAYERS)}"
    for role, geometry in GEOMETRIES.items():
        assert geometry.role == role


# --- claimed roles: drawing works, with the declared shape and std --------------------------

@pytest.mark.parametrize("name, role", CLAIMED)
def test_a_claimed_role_draws_the_declared_shape(name, role, tmp_path):
    scheme, geometry = schemes.SCHEMES[name], GEOMETRIES[role]
    params = _params(scheme, geometry, tmp_path)
    assert schemes.problem(scheme, params, geometry) is None, f"{name} on the example {role} geometry"
    for dtype in (np.float32, np.float64):
        w = schemes.initial_weights(scheme, params, np.random.default_rng(3), geometry, dtype)
        assert w.shape == geometry.shape and w.dtype == dtype, f"{name} on {role}: {w.shape} {w.dtype}"
        assert np.isfinite(w).all()
    if scheme.affine is None:
        return
    x = schemes.initial_weights(scheme, params, np.random.default_rng(4), geometry, np.float64).ravel()
    std, mean = scheme.std(geometry.fans, params), scheme.mean(geometry.fans, params)
    kurtosis = {"normal": 3.0, "uniform": 1.8, "truncated_normal": 2.3655}[scheme.family]
    se_std = std * math.sqrt((kurtosis - 1) / (4 * x.size))
    assert abs(x.std() - std) <= Z * se_std, f"{name} on {role}: std {x.std():.6g}, declared {std:.6g}"
    assert abs(x.mean() - mean) <= Z * std / math.sqrt(x.size), f"{name} on {role}: mean {x.mean():.6g}, declared {mean:.6g}"


# --- unclaimed roles: one located error --------------------------------------------------------

@pytest.mark.parametrize("name, role", UNCLAIMED)
def test_an_unclaimed_role_is_refused_by_the_scheme(name, role, tmp_path):
    scheme, geometry = schemes.SCHEMES[name], GEOMETRIES[role]
    with pytest.raises(schemes.UnfitScheme, match=f"{name} cannot initialise"):
        schemes.initial_weights(scheme, _params(scheme, geometry, tmp_path), np.random.default_rng(0), geometry, np.float32)


def _role_spec(role: str, init: str) -> str:
    head, layer = ROLE_LAYERS[role]
    return (f"{head}\nbatch: 4\nloss: mse\nlayers:\n" + textwrap.indent(layer, "  ") + "\n").replace("{init}", init)


@pytest.mark.parametrize("name, role", [(name, role) for name, role in UNCLAIMED
                                        if None not in schemes.SCHEMES[name].params.values()])
def test_an_unclaimed_role_is_one_located_spec_problem(name, role):
    text = _role_spec(role, name)
    with pytest.raises(SpecErrors) as info:
        spec.parse(yamlsource.loads(text, "t.yaml"), base_dir=".", default_name="t")
    (problem,) = info.value.problems
    assert str(problem).startswith("t.yaml:"), str(problem)
    assert f"{name} cannot initialise" in str(problem)
    assert {"recurrent": ".recurrent_init", "vector": ".bias_init"}.get(role, ".init") in problem.path


@pytest.mark.parametrize("role", schemes.ROLES)
def test_each_role_layer_example_has_that_role(role):
    scheme = "normal" if role == "vector" else "xavier"  # a fan-scaled scheme takes matrices only
    net = spec.parse(yamlsource.loads(_role_spec(role, scheme), "t.yaml"), base_dir=".", default_name="t")
    layer = net.layers[-1]
    geometry = (weightgeometry.recurrent(layer) if role == "recurrent" else
                paramspec.vector_geometry(layer, "bias", (layer.units,)) if role == "vector" else weightgeometry.main(layer))
    assert geometry.role == role
    network.build(net)


def test_network_refuses_an_unfit_scheme_at_the_layers_init_when_the_spec_check_was_skipped():
    net = spec.parse(yamlsource.loads(_role_spec("dense", "xavier"), "t.yaml"), base_dir=".", default_name="t")
    layer = net.layers[0]
    unfit = layer.init._replace(scheme="delta_orthogonal", params={"gain": 1.0})
    with pytest.raises(SpecErrors) as info:
        network.build(net._replace(layers=(layer._replace(init=unfit),)))
    (problem,) = info.value.problems
    assert problem.path == "layers[0].init" and "delta_orthogonal cannot initialise dense matrices" in str(problem)
    assert str(problem).startswith("t.yaml:")


# --- meta: the contract names what an incomplete entry lacks -----------------------------------

@pytest.mark.parametrize("broken, fact", [
    (schemes.Scheme("no_roles", "x", build=lambda rng, g, p, d: None), "declares no roles"),
    (schemes.Scheme("odd_role", "x", build=lambda rng, g, p, d: None, roles=("dense", "matrix")), "not in ROLES"),
    (schemes.Scheme("no_draw", "x", roles=schemes.ROLES), "exactly one of build"),
    (schemes.Scheme("no_family", "x", affine=lambda fans, p: (0, 1), roles=schemes.ROLES), "family None"),
    (schemes.Scheme("no_formula", "", build=lambda rng, g, p, d: None, roles=schemes.ROLES), "no formula"),
    (schemes.Scheme("new_param", "x", {"radius": 1.0}, build=lambda rng, g, p, d: None, roles=schemes.ROLES),
     "'radius', which has no JSON Schema"),
    (schemes.Scheme("required_param", "x", {"mean": None}, build=lambda rng, g, p, d: None, roles=schemes.ROLES),
     "'mean', which has no example"),
])
def test_contract_names_the_missing_fact(monkeypatch, broken, fact):
    monkeypatch.setitem(schemes.SCHEMES, broken.name, broken)
    problems = [p for name, scheme in schemes.SCHEMES.items() for p in contract_problems(name, scheme)]
    assert len(problems) == 1 and f"scheme '{broken.name}'" in problems[0] and fact in problems[0], problems
