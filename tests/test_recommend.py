"""`initdiag recommend`: rules of thumb vs measured best per layer, --write, and LSUV gain calibration.

What is pinned here (from the product's issue):
- the per-layer rule of thumb follows the seed's table for mixed activations;
- on the deep tanh sample the measured best departs from xavier and says why; on the MNIST ReLU
  sample both agree;
- --write keeps the file's comments and key order, reaches flow-mapping layers, never touches the
  input (unless in place, which keeps SPEC.bak), and writes specs `initdiag.spec.load` accepts;
- calibrated gains, written and re-run through spec.load -> network.build -> propagate.run, give back
  the calibrated second moments (bitwise: the same streams and float32 products) and hit the target
  within what the 4-significant-digit rounding (homogeneous layers) or the 1% iteration tolerance
  (tanh) allows;
- the text report stays whole in 80 columns; the JSON form is strict JSON.
"""

from __future__ import annotations

import json
import math
import textwrap
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import yaml

from initdiag import checks, network, propagate, recommend, spec
from initdiag.reporters import json_format, recommend_text

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_specs"

# Gains are written with 4 significant digits: a relative error of at most 5e-4, so a positively
# homogeneous layer (ReLU, identity, softmax logits; no bias) lands within (1 + 5e-4)² - 1 of the target.
ROUNDING = (1 + 5e-4) ** 2 - 1 + 1e-6  # + float32 noise of the statistics (~1e-7)

MIXED = """\
# every rule of the table once
name: mixed   # a name
input: [64]
batch: 256
defaults:
  init: xavier        # DL4J's default
  activation: relu
layers:
  - dense: 128        # relu by default
  - dense: 128
    activation: tanh
  # a full-line comment between layers
  - {dense: 96, activation: selu}   # a flow layer
  - dense: 96
    activation: gelu
    init: normal      # replaced by --write
  - dense: 64
    activation: identity
    bias: false
  - dense: 10
    activation: softmax
"""

TARGET = 0.4  # within tanh's reach: E[tanh(z)²] = 0.4 needs z of std about 1, saturating under 1%

CALIBRATION = """\
input: [64]
batch: 512
layers:
  - dense: 128
    activation: relu
  - {dense: 128, activation: tanh}
  - dense: 64
    activation: identity
  - dense: 10
    activation: softmax
"""


def write(directory: Path, text: str, name: str = "net.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@lru_cache(maxsize=None)
def sample_recommendation(stem: str) -> dict:
    """One calibrated recommendation per sample, shared by the tests (calibration changes no measurement)."""
    return recommend.recommend(spec.load(SAMPLES / f"{stem}.yaml"), calibrate=True)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    path = write(tmp_path_factory.mktemp("mixed"), MIXED, "mixed.yaml")
    return path, recommend.recommend(spec.load(path))


def signal_moments(path) -> list[float]:
    """Each layer's signal second moment as `check` measures it on the written spec."""
    run = propagate.run(network.build(spec.load(path)))
    return [layer.signal_second_moment for layer in run.layers]


# --------------------------------------------------------------------------- rules of thumb vs measured


def test_rule_of_thumb_per_layer_for_mixed_activations(mixed):
    _, rec = mixed
    layers = rec["layers"]
    assert [layer["activation"] for layer in layers] == ["relu", "tanh", "selu", "gelu", "identity", "softmax"]
    assert [layer["rule"] for layer in layers] == ["relu", "xavier", "lecun_normal", "xavier", "xavier", "xavier"]
    assert layers[3]["rule_options"] == ["xavier", "relu"]  # GELU: "xavier or relu"
    # the rules-of-thumb candidate is exactly that assignment, and was run and scored
    assert rec["candidates"][rec["rule_candidate"]] == ["relu", "xavier", "lecun_normal", "xavier", "xavier", "xavier"]
    assert rec["rule_candidate"] in rec["scores"]
    # agreement is by variance rule, so relu on the GELU layer agrees, relu on the tanh layer does not
    layer = spec.load(mixed[0]).layers
    assert recommend.follows_rule(layer[3], recommend.initspec.parse("he_normal", "t"))
    assert not recommend.follows_rule(layer[1], recommend.initspec.parse("relu", "t"))
    assert recommend.follows_rule(layer[2], recommend.initspec.parse("var_scaling_normal_fan_in", "t"))


def test_deep_tanh_measured_best_departs_from_xavier_and_says_why():
    rec = sample_recommendation("deep_tanh_xavier")
    tanh_layers = [layer for layer in rec["layers"] if layer["activation"] == "tanh"]
    assert len(tanh_layers) == 9
    scores = rec["scores"]
    assert scores[rec["rule_candidate"]]["verdict"] == "warning"  # xavier: the slow tanh shrinkage
    assert scores[rec["measured_best"]]["verdict"] == "healthy"
    for layer in tanh_layers:
        assert layer["rule"] == "xavier" and not layer["agree"]
        assert layer["measured"] not in ("xavier", "xavier_uniform")
        # the evidence: the measured best keeps the signal closer to the input's than xavier does
        assert abs(math.log(layer["measured_signal"])) < abs(math.log(layer["rule_signal"]))
        assert "tanh under xavier shrinks with depth" in layer["reason"]
        assert recommend.ratio_text(layer["rule_signal"]) in layer["reason"]
        assert recommend.ratio_text(layer["measured_signal"]) in layer["reason"]
    # the shrinkage compounds: by the last tanh layer xavier has lost more than 10x
    assert tanh_layers[-1]["rule_signal"] < 0.1 < tanh_layers[-1]["measured_signal"]
    head = rec["layers"][-1]
    assert head["activation"] == "identity" and head["agree"] and head["reason"] is None


def test_mnist_relu_sample_agrees_with_the_rules_of_thumb():
    rec = sample_recommendation("mnist_relu_he")
    assert rec["agree"]
    assert [layer["measured"] for layer in rec["layers"]] == ["relu", "relu", "xavier"]
    assert [layer["rule"] for layer in rec["layers"]] == ["relu", "relu", "xavier"]
    assert rec["measured_best"] == rec["rule_candidate"] == rec["top_ranked"]
    assert all(layer["reason"] is None for layer in rec["layers"])


def test_a_marginal_win_does_not_overturn_the_rules_of_thumb():
    """zero_init's fit-mix (lecun_normal on the softmax head) ranks first by a hair's profile
    distance; the rules of thumb measure within the noise margin, so they are kept, and said so."""
    rec = sample_recommendation("zero_init")
    scores, top, chosen = rec["scores"], rec["top_ranked"], rec["measured_best"]
    assert top != chosen == rec["rule_candidate"]
    assert scores[chosen]["verdict"] == scores[top]["verdict"]
    assert scores[chosen]["distance"] - scores[top]["distance"] <= recommend.DISTANCE_MARGIN
    assert top in rec["selection"] and chosen in rec["selection"]
    assert rec["agree"]


def test_every_candidate_report_is_compares_run_of_the_same_assignment(mixed):
    """The measured figures are compare's: a uniform candidate's score equals compare's own run."""
    from initdiag import compare

    path, rec = mixed
    net_spec = spec.load(path)
    reports = compare.run_all(net_spec, [recommend.initspec.parse("relu", "t")], False, checks.Thresholds())
    assert compare.summary(reports[0])["distance"] == pytest.approx(rec["scores"]["relu"]["distance"], rel=1e-12)


# --------------------------------------------------------------------------- --write


def _comment(line: str) -> str | None:
    return line[line.index("#"):].strip() if "#" in line else None


def test_write_keeps_comments_key_order_and_sets_every_init(mixed, tmp_path):
    path, rec = mixed
    original = path.read_bytes()
    out = recommend.write_spec(path, rec, tmp_path / "out.yaml")
    assert out == tmp_path / "out.yaml"
    assert path.read_bytes() == original  # the input is untouched

    written = out.read_text(encoding="utf-8")
    loaded = spec.load(out)  # valid, and initdiag accepts it
    for layer, entry in zip(loaded.layers, rec["layers"]):
        assert layer.init.display == entry["measured"]
        assert layer.init.path.startswith("layers")  # written on the layer itself

    before, after = original.decode().splitlines(), written.splitlines()
    # every comment survives, in order
    assert [c for c in map(_comment, before) if c] == [c for c in map(_comment, after) if c]
    # every line without an init or a flow layer is kept verbatim, in order
    kept = [line for line in before if "init:" not in line and "{dense" not in line]
    iterator = iter(after)
    assert all(any(line == other for other in iterator) for line in kept), written
    # key order of every layer: the original keys in their order, plus init
    old_layers = yaml.safe_load(original)["layers"]
    new_layers = yaml.safe_load(written)["layers"]
    for old, new in zip(old_layers, new_layers):
        if "init" in old:
            assert list(new) == list(old)  # replaced where it was
        else:
            assert [key for key in new if key != "init"] == list(old) and "init" in new
    # the flow layer got the key and stayed a flow mapping on its line
    flow = next(line for line in after if "{dense: 96" in line)
    assert f"init: {rec['layers'][2]['write']['measured']}" in flow
    assert flow.lstrip().startswith("- {") and flow.rstrip().endswith("# a flow layer")
    # the comment between layers still precedes the layer it introduced
    assert after[after.index("  # a full-line comment between layers") + 1] == flow


def test_write_chooses_the_rule_or_the_measured_inits(tmp_path):
    source = SAMPLES / "deep_tanh_xavier.yaml"
    rec = sample_recommendation("deep_tanh_xavier")
    measured = spec.load(recommend.write_spec(source, rec, tmp_path / "measured.yaml"))
    rule = spec.load(recommend.write_spec(source, rec, tmp_path / "rule.yaml", choice="rule"))
    for written, choice in ((measured, "measured"), (rule, "rule")):
        expected = [(entry["calibration"][choice]["scheme"], entry["calibration"][choice]["gain"]) for entry in rec["layers"]]
        assert [(layer.init.scheme, layer.init.params["gain"]) for layer in written.layers] == expected
    assert [layer.init.scheme for layer in measured.layers] == [entry["measured"] for entry in rec["layers"]]
    assert [layer.init.scheme for layer in rule.layers] == ["xavier"] * 10
    assert measured.layers[0].init.scheme == "relu"
    with pytest.raises(ValueError, match="choice"):
        recommend.write_spec(source, rec, tmp_path / "x.yaml", choice="best")


def test_write_refuses_the_input_path_without_in_place(mixed, tmp_path):
    path, rec = mixed
    original = path.read_bytes()
    for spelled in (path, path.parent / ".." / path.parent.name / path.name):
        with pytest.raises(ValueError, match="refusing to write over the input spec"):
            recommend.write_spec(spelled, rec, path)
        with pytest.raises(ValueError, match="refusing to write over the input spec"):
            recommend.write_spec(path, rec, spelled)
    assert path.read_bytes() == original
    assert not path.with_name(path.name + ".bak").exists()


def test_in_place_keeps_a_backup_and_replaces_atomically(tmp_path):
    path = write(tmp_path, MIXED, "net.yaml")
    original = path.read_bytes()
    rec = recommend.recommend(spec.load(path))
    assert recommend.write_spec(path, rec, in_place=True) == path
    assert (tmp_path / "net.yaml.bak").read_bytes() == original
    assert path.read_bytes() != original
    assert [layer.init.display for layer in spec.load(path).layers] == [entry["measured"] for entry in rec["layers"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.yaml", "net.yaml.bak"]  # no temporary left


def test_write_refuses_a_recommendation_for_another_spec(tmp_path):
    rec = sample_recommendation("mnist_relu_he")  # 3 layers
    with pytest.raises(ValueError, match="another spec"):
        recommend.write_spec(SAMPLES / "deep_tanh_xavier.yaml", rec, tmp_path / "out.yaml")
    assert not (tmp_path / "out.yaml").exists()


def test_write_follows_the_files_indentation():
    text = "input: [8]\ndefaults:\n    activation: relu\nlayers:\n- dense: 4\n  name: a   # x\n- {dense: 2}\n"
    rec = {"layers": [{"write": {"measured": "relu"}}, {"write": {"measured": {"xavier": {"gain": 1.5}}}}]}
    assert recommend.updated_text(text, rec) == (
        "input: [8]\ndefaults:\n    activation: relu\nlayers:\n- dense: 4\n  name: a   # x\n  init: relu\n"
        "- {dense: 2, init: {xavier: {gain: 1.5}}}\n"
    )


# --------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    directory = tmp_path_factory.mktemp("calibrated")
    path = write(directory, CALIBRATION, "net.yaml")
    rec = recommend.recommend(spec.load(path), calibrate=True, target=TARGET)
    out = recommend.write_spec(path, rec, directory / "calibrated.yaml")
    return rec, out


def test_calibrated_gains_are_written_and_reproduce_on_rerun(calibrated):
    rec, out = calibrated
    loaded = spec.load(out)
    results = [entry["calibration"]["measured"] for entry in rec["layers"]]
    for layer, result in zip(loaded.layers, results):
        assert layer.init.scheme == result["scheme"]
        assert layer.init.params["gain"] == result["gain"] == float(f"{result['gain']:.4g}")
    moments = signal_moments(out)
    for entry, result, moment in zip(rec["layers"], results, moments):
        # the same seed, batch, streams and float32 products: the calibration's own figure comes back
        assert moment == pytest.approx(result["second_moment"], rel=1e-6), entry["name"]
        assert result["reached"], (entry["name"], result)
        tolerance = recommend.CALIBRATION_TOLERANCE if entry["activation"] == "tanh" else ROUNDING
        assert abs(moment / TARGET - 1) <= tolerance, (entry["name"], moment)


def test_calibration_moves_the_second_moments_to_the_target(calibrated):
    """Not vacuous: before calibration the first layer was far from the target (relu under He keeps about 1)."""
    rec, _ = calibrated
    first = rec["layers"][0]
    assert first["measured"] == "relu" and first["measured_signal"] == pytest.approx(1, rel=0.1)
    assert first["calibration"]["measured"]["gain"] == pytest.approx(math.sqrt(TARGET), rel=0.05)


def test_a_homogeneous_layer_already_near_the_target_still_takes_a_step(tmp_path):
    """At least one step is always taken, so ReLU lands within the rounding, not just within 1%."""
    path = write(tmp_path, "input: [64]\nbatch: 512\nlayers:\n  - dense: 64\n    activation: relu\n    init: relu\n")
    net_spec = spec.load(path)
    target = signal_moments(path)[0] * 1.008  # already within the 1% tolerance
    (result,) = recommend.calibrate(net_spec, [net_spec.layers[0].init], target=target)
    assert result["iterations"] >= 1 and result["gain"] == 1.004  # sqrt(1.008), to 4 digits
    assert result["reached"] and abs(result["second_moment"] / target - 1) <= ROUNDING


def test_tanh_out_of_reach_target_is_capped_below_saturation(tmp_path):
    """E[tanh(z)²] < 1 at any scale: target 1 cannot be reached; the gain stops where at most half the
    saturation-warning fraction of outputs saturate, and the re-run check raises no saturation finding."""
    path = write(tmp_path, "input: [128]\ndefaults: {activation: tanh, init: xavier}\nlayers:\n"
                           + "  - dense: 128\n" * 3, "tanh.yaml")
    net_spec = spec.load(path)
    inits = [recommend.initspec.parse("xavier", "t")] * 3
    results = recommend.calibrate(net_spec, inits, target=1.0)
    limit = checks.Thresholds().saturation_warning * recommend.SATURATION_SHARE
    for result in results:
        assert not result["reached"] and "out of reach" in result["note"]
        assert result["gain"] > 1 and 0.3 < result["second_moment"] < 1
        assert result["saturation"] <= limit
    rec = {"layers": [{"write": {"measured": recommend.init_value(init, result)}} for init, result in zip(inits, results)]}
    out = tmp_path / "out.yaml"
    out.write_text(recommend.updated_text(path.read_text(), rec), encoding="utf-8")
    rerun = propagate.run(network.build(spec.load(out)))
    assert not [f for f in checks.find(rerun, spec.load(out)) if f.code == "saturation"]
    assert [layer.signal_second_moment for layer in rerun.layers] == pytest.approx(
        [result["second_moment"] for result in results], rel=1e-6)


def test_scheme_without_gain_is_measured_but_left_alone(tmp_path):
    path = write(tmp_path, "input: [32]\nlayers:\n  - dense: 16\n    activation: relu\n    init: {normal: {std: 0.1}}\n")
    net_spec = spec.load(path)
    (result,) = recommend.calibrate(net_spec, [layer.init for layer in net_spec.layers])
    assert result["gain"] is None and not result["reached"] and "no gain parameter" in result["note"]
    assert result["second_moment"] == pytest.approx(signal_moments(path)[0], rel=1e-6)
    assert recommend.init_value(net_spec.layers[0].init, result) == {"normal": {"std": 0.1}}
    with pytest.raises(ValueError, match="positive"):
        recommend.calibrate(net_spec, [recommend.initspec.parse("relu", "t")], target=0)


@pytest.mark.parametrize("scheme", ["{relu: {gain: 0.7071}}", "{xavier: {gain: 1.6667}}", "{orthogonal: {gain: 1.3}}",
                                    "{lecun_normal: {gain: 2.5}}", "orthogonal"])
def test_layer_draws_are_bitwise_what_check_draws(tmp_path, scheme):
    """The calibration measures exactly the weights `check` will draw for the written gain."""
    path = write(tmp_path, f"input: [48]\ndefaults: {{init: {scheme}}}\nlayers:\n  - dense: 32\n  - dense: 48\n")
    net_spec = spec.load(path)
    built = network.build(net_spec)
    draws = recommend.LayerDraws(net_spec)
    for layer_spec, layer in zip(net_spec.layers, built.layers):
        assert np.array_equal(draws.weights(layer_spec, layer_spec.init), layer.weights)
        assert np.array_equal(draws.weights(layer_spec, layer_spec.init), layer.weights)  # from the cached sample


# --------------------------------------------------------------------------- reports


@pytest.mark.parametrize("stem", ["deep_tanh_xavier", "mnist_relu_he"])
def test_text_report_fits_80_columns_without_cuts(stem):
    rec = sample_recommendation(stem)
    text = recommend_text.render(rec, width=80)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert "…" not in text and "..." not in text.replace("..dense", "")
    for entry in rec["layers"]:
        assert entry["name"] in text
        assert f"{entry['calibration']['measured']['gain']:.4g}" in text  # every gain, whole
    assert f"measured best: {rec['measured_best']}" in text
    if not rec["agree"]:
        assert "where they differ" in text and "tanh under xavier shrinks with depth" in " ".join(text.split())


def test_text_report_of_a_mixed_spec_fits_and_names_every_layer(mixed):
    _, rec = mixed
    text = recommend_text.render(rec, width=80)
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    for entry in rec["layers"]:
        assert entry["name"] in text and "/".join(entry["rule_options"]) in text


def test_json_form_is_strict_and_complete():
    rec = sample_recommendation("deep_tanh_xavier")
    data = json.loads(json_format.render(rec), parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
    assert data["measured_best"] in data["ranking"] and data["calibrated"] and data["target"] == 1.0
    layer = data["layers"][0]
    for key in ("rule", "measured", "agree", "rule_signal", "measured_signal", "reason", "calibration", "write"):
        assert key in layer
    assert set(layer["calibration"]) == {"measured", "rule"}


# --------------------------------------------------------------------------- one pipeline


def test_recommend_honours_the_specs_own_thresholds_as_check_and_compare_do(tmp_path):
    """Issue 9: recommend ran its own copy of the pipeline, which ignored a spec's `thresholds:` block, so it
    said warning where check and compare said healthy on the same spec and scheme. All three now go through
    pipeline.diagnose."""
    from typer.testing import CliRunner

    from initdiag.cli import app

    text = (SAMPLES / "deep_tanh_xavier.yaml").read_text(encoding="utf-8")
    path = tmp_path / "relaxed.yaml"
    path.write_text(text + "thresholds:\n  drift_warning: 1000000\n", encoding="utf-8")

    def verdicts(*args):
        result = CliRunner().invoke(app, [*args, "--format", "json"])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return json.loads(result.stdout)

    assert verdicts("check", str(SAMPLES / "deep_tanh_xavier.yaml"))["verdict"] == "warning"  # the premise
    checked = verdicts("check", str(path), "--scheme", "xavier")["verdict"]
    compared = verdicts("compare", str(path), "--schemes", "xavier")["reports"][0]["verdict"]
    recommended = verdicts("recommend", str(path))["scores"]["xavier"]["verdict"]
    assert (checked, compared, recommended) == ("healthy", "healthy", "healthy")
