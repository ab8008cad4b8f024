"""Recommend a weight init per layer: the rules of thumb beside what measures best, with the evidence.

For every layer, two answers:

- the **rule of thumb**: the seed page's table, `activations.ACTIVATIONS[name].recommended`
  (its first entry where it offers two, "xavier or relu" for GELU/Swish/Mish, as `check`'s hint);
- the **measured best**: the layer's scheme in the candidate network chosen from a comparison run
  as `compare` runs it (same batch, targets and draws for all; ranked by compare's score: verdict,
  then distance of the activation and gradient profiles from flat, then dead and saturated units).

The candidates are whole-network assignments:

- *uniform*: each rule-of-thumb scheme of the spec's activations and each of compare's default
  families (xavier, relu, lecun_normal, orthogonal), on every layer: what `compare` runs;
- *rule-mix*: every layer its activation's rule-of-thumb scheme (named after the uniform candidate
  it equals, if any: an all-tanh network with an identity head is simply "xavier");
- *fit-mix*: a cheap per-layer search. From the first layer on, given the layers already chosen,
  a layer keeps its rule-of-thumb scheme while that keeps the layer's signal second moment (E[y²],
  the logits' for softmax: `stats.signal_second_moment`) within a factor NOISE = 2 of the input's;
  otherwise it takes the uniform candidates' scheme that brings it closest. One single-layer forward
  pass per scheme per layer, on exactly the weights `check` would draw. It is then run forward and
  backward and scored like every other candidate, so it wins only if the whole network measures better.

Choosing: the top-ranked candidate, except that among the candidates that measure the same as it
(its verdict, and a profile distance within log10(NOISE) of its: a typical layer no more than a factor
2 further from flat, which one batch's finite-width noise produces; Hanin & Rolnick 2018) the one
following the rules of thumb on most layers is kept: changing an init takes a measured reason.
`selection` in the result says when this happened. The factor 2 is the same in both places.

Gain calibration (LSUV, Mishkin & Matas 2016), `calibrate=True`: from the first layer on, the `gain`
of the layer's scheme is set so that the layer's signal second moment on the spec's batch reaches
`target`; the next layer then sees the calibrated output. Each step is g <- g*sqrt(target/m), rounded
to 4 significant digits *before* it is measured, repeated until within 1%, at most MAX_ITERATIONS
steps; at least one step is always taken, so a positively homogeneous layer (ReLU, identity, softmax
logits, without bias) lands within the rounding alone: (1 + 5e-4)^2 - 1 ~ 1e-3. `gain` multiplies
the weights' std (Scheme.std; orthogonal's matrix), and the weights measured are bitwise those `check`
draws for `{scheme: {gain: g}}` (same streams, same float32 products), so writing the gains and
re-running `check` reproduces the calibrated second moments. Two limits, reported per layer:

- bounded activations (tanh, sigmoid, softsign, hardtanh, hard_sigmoid) have E[phi(z)^2] < 1 at any
  scale (tanh gets to 0.99 only with |z| of order 100, all saturated). A gain may saturate at most
  SATURATION_SHARE (half) of `thresholds.saturation_warning` of the outputs (half, so another batch or
  seed does not tip the calibrated spec into a saturation warning); when the target lies beyond, the
  largest such gain (found by bisection) is kept and the layer is reported as not reaching the target;
- schemes without a `gain` parameter are left as they are, with a note. Every recommended scheme has
  one (candidates are xavier, relu, lecun_normal and orthogonal), so this only concerns direct
  callers of `calibrate()` with other inits (normal, uniform, ...): rather than guess an equivalent
  variance-scaling scheme, which would change what the user wrote, they are measured but not scaled.

Everything returned is plain, JSON-shaped data (dicts, lists, floats, strings; inf where a figure
overflowed, which the JSON reporter writes as null).
"""

from __future__ import annotations

import math

import numpy as np

from initdiag import activations, compare, initspec, network, pipeline, schemes, stats, weightgeometry
from initdiag.checks import Thresholds
from initdiag.numbers import compact
from initdiag.spec import NetworkSpec
from initdiag.specwriter import updated_text, write_spec  # noqa: F401  (part of this module's API)

RULE_MIX = "rule-mix"
FIT_MIX = "fit-mix"
NOISE = 2.0  # a factor of the signal second moment that one batch's finite-width noise can produce
DISTANCE_MARGIN = math.log10(NOISE)  # compare-score distance within which candidates measure the same
CALIBRATION_TOLERANCE = 0.01  # |m/target - 1|
SATURATION_SHARE = 0.5  # a calibrated gain saturates at most this share of thresholds.saturation_warning
MAX_ITERATIONS = 10
GAIN_DIGITS = 4  # significant digits of a written gain
FLAT = 1.5  # a ratio within [1/FLAT, FLAT] of the input's second moment reads as "flat"
SQUASHING = ("tanh", "sigmoid", "hard_sigmoid", "hardtanh", "softsign")


# ------------------------------------------------------------------------------ helpers


def round_gain(gain: float) -> float:
    """A gain as written to a spec: 4 significant digits."""
    return float(f"{gain:.{GAIN_DIGITS}g}")


def with_inits(spec: NetworkSpec, inits) -> NetworkSpec:
    """`spec` with layer i initialised by inits[i]."""
    layers = tuple(layer._replace(init=init) for layer, init in zip(spec.layers, inits))
    return spec._replace(layers=layers, scheme_override=None)


def _named(name: str) -> initspec.InitSpec:
    return initspec.parse(name, "recommend")


def rule_options(layer) -> tuple:
    """The rules-of-thumb schemes for a layer's activation, e.g. ("xavier", "relu") for gelu."""
    return activations.ACTIVATIONS[layer.activation.name].recommended


def follows_rule(layer, init) -> bool:
    """Whether `init` targets the variance of a rule-of-thumb scheme of the layer (gains allowed)."""
    if init.scheme in ("supplied", "custom"):
        return False
    return any(schemes.same_variance_rule(init.scheme, name) for name in rule_options(layer))


def _signal(layer, cache) -> float:
    """The layer's signal second moment in a single-layer trial (stats.trial_signal_second_moment)."""
    return stats.trial_signal_second_moment(layer.activation.name, cache.z, cache.y)


class LayerDraws:
    """A layer's weights under any scheme, bitwise as `network.build` draws them for `check`.

    A family scheme scales its family's standard sample, drawn once per layer from the layer's
    weight stream (what `compare` shares as common random numbers); orthogonal is q·gain, so q is
    computed once (gain 1) and scaled exactly as the scheme does; anything else is drawn afresh
    from the layer's stream each time. Only the current layer's samples are kept.
    """

    def __init__(self, spec: NetworkSpec, known: dict | None = None):
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)
        self.index = None
        self.cache: dict = {}
        self.known = known if known is not None else {}  # (layer index, init display) -> weights drawn by a build

    def _rng(self, layer):
        return network.stream(self.spec.seed, network.STREAM_WEIGHTS, layer.index)

    def weights(self, layer, init) -> np.ndarray:
        if layer.index != self.index:
            self.cache.clear()
            self.index = layer.index
        definition = init.definition
        geometry = weightgeometry.main(layer)  # the shape, role and fans network.build draws with
        family = definition.family_of(init.params)
        if family is not None:
            standard = self.cache.get(family)
            if standard is None:
                standard = schemes.FAMILY_SAMPLERS[family](self._rng(layer), geometry.shape, self.dtype)
                self.cache[family] = standard
            return schemes.initial_weights(definition, init.params, None, geometry, self.dtype, standard)
        if init.scheme == "orthogonal":
            unit = self.cache.get("orthogonal", self.known.get((layer.index, "orthogonal")))
            if unit is None:
                unit = schemes.initial_weights(definition, {**init.params, "gain": 1.0}, self._rng(layer), geometry, self.dtype)
                self.cache["orthogonal"] = unit
            return np.ascontiguousarray(unit * self.dtype.type(init.params["gain"]), dtype=self.dtype)
        return schemes.initial_weights(definition, init.params, self._rng(layer), geometry, self.dtype)


def _run(spec: NetworkSpec, name: str, thresholds: Thresholds, max_memory, draws, known: dict | None = None):
    """The check of `spec` as it is (per-layer inits), named `name`: pipeline.diagnose, as for check and compare
    (the spec's own thresholds included). Structured weights drawn on the way (orthogonal's QR) are kept in `known`."""
    built = network.build(spec, max_memory, draws)
    if known is not None:
        for layer_spec, layer in zip(spec.layers, built.layers):
            if layer_spec.init.definition.family is None:
                known.setdefault((layer_spec.index, layer_spec.init.display), layer.weights)
    return pipeline.diagnose(spec, thresholds, name, max_memory, built=built)


# ------------------------------------------------------------------------------ candidates


def uniform_candidates(spec: NetworkSpec) -> list[initspec.InitSpec]:
    """The rule-of-thumb schemes of the spec's activations, then compare's default families."""
    names = [name for layer in spec.layers for name in rule_options(layer)] + list(compare.DEFAULT_SCHEMES)
    return [_named(name) for name in dict.fromkeys(names)]


def rule_inits(spec: NetworkSpec) -> tuple:
    """Every layer's rule-of-thumb scheme (the table's first choice where it offers two)."""
    return tuple(_named(rule_options(layer)[0]) for layer in spec.layers)


def fit_mix(spec: NetworkSpec, choices, max_memory=None, known: dict | None = None) -> tuple:
    """Per layer, in order, given the layers already chosen: the layer's rule-of-thumb scheme while
    it keeps the layer's signal second moment within a factor NOISE of the input's, else the scheme
    among `choices` that brings it closest (log scale)."""
    rule = rule_inits(spec)
    built = network.build(with_inits(spec, rule), max_memory)  # biases, activations, input batch
    draws = LayerDraws(spec, known)
    mean, var = stats.mean_var(built.inputs)
    reference = var + mean**2
    x, picked = built.inputs, []
    with np.errstate(all="ignore"):
        for layer_spec, layer, rule_init in zip(spec.layers, built.layers, rule):
            trials = {}
            for init in {init.display: init for init in (rule_init, *choices)}.values():
                layer.weights = draws.weights(layer_spec, init)
                y, cache = layer.forward(x)
                m = _signal(layer, cache)
                off = abs(math.log10(m / reference)) if math.isfinite(m) and m > 0 and reference > 0 else math.inf
                trials[init.display] = (off, init, y)
            kept = trials[rule_init.display]
            best = kept if kept[0] <= DISTANCE_MARGIN else min(trials.values(), key=lambda trial: trial[0])
            picked.append(best[1])
            x = best[2]
    return tuple(picked)


# ------------------------------------------------------------------------------ calibration


def calibrate(spec: NetworkSpec, inits, target: float = 1.0, thresholds: Thresholds | None = None,
              max_memory=None, known: dict | None = None) -> list[dict]:
    """LSUV-style gains, layer by layer from the first (see the module's docstring): per layer a dict
    with scheme, start_gain, gain (None when the scheme has no gain), second_moment (the layer's
    signal second moment at that gain on the spec's batch), saturation, iterations, reached, note."""
    _check_target(target)
    thresholds = thresholds or Thresholds()
    cal_spec = with_inits(spec, inits)
    built = network.build(cal_spec, max_memory)
    known = dict(known or {})
    for layer_spec, layer in zip(cal_spec.layers, built.layers):
        known.setdefault((layer_spec.index, layer_spec.init.display), layer.weights)
    draws = LayerDraws(cal_spec, known)
    limit = thresholds.saturation_warning * SATURATION_SHARE
    x, results = built.inputs, []
    with np.errstate(all="ignore"):
        for layer_spec, layer in zip(cal_spec.layers, built.layers):
            result, x = _calibrate_layer(layer_spec, layer, draws, x, float(target), limit)
            results.append(result)
    return results


def _check_target(target) -> None:
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not (math.isfinite(target) and target > 0):
        raise ValueError(f"the calibration target must be a positive number, not {target!r}")


def _calibrate_layer(layer_spec, layer, draws: LayerDraws, x, target: float, saturation_limit: float):
    init = layer_spec.init
    bounded = bool(activations.ACTIVATIONS[layer_spec.activation.name].saturation_rule)

    def measure(gain):
        if gain is not None:
            layer.weights = draws.weights(layer_spec, init._replace(params={**init.params, "gain": gain}))
        y, cache = layer.forward(x)
        return _signal(layer, cache), layer.activation.saturation(cache.z, cache.y), y

    if "gain" not in init.params:
        m, saturation, y = measure(None)
        note = f"{init.scheme} has no gain parameter: left as it is"
        return _calibration(init, None, None, m, saturation, 0, False, note), y

    start = float(init.params["gain"])
    gain = round_gain(start)
    tried: dict = {}
    best = None  # (error, gain): the admissible gain closest to the target
    low = high = None  # bisection bracket: admissible and below the target / saturating too much
    steps, note = 0, None
    while True:
        m, saturation, _ = measure(gain)
        tried[gain] = m
        if not (math.isfinite(m) and m > 0):
            note = "no signal to scale (second moment 0 or not finite): gain left as it was"
            best = best or (math.inf, round_gain(start))
            break
        admissible = not bounded or saturation <= saturation_limit
        if admissible:
            error = abs(math.log(m / target))
            if best is None or error < best[0]:
                best = (error, gain)
            if steps > 0 and abs(m / target - 1) <= CALIBRATION_TOLERANCE:
                break
            if m < target:
                low = gain if low is None else max(low, gain)
        else:
            high = gain if high is None else min(high, gain)
        if steps == MAX_ITERATIONS:
            break
        proposal = gain * math.sqrt(target / m)
        if high is not None and proposal >= high:
            proposal = math.sqrt(low * high) if low is not None else high / 2
        proposal = round_gain(proposal)
        if proposal in tried:
            break  # 4 significant digits cannot get closer
        gain = proposal
        steps += 1
    if best is None:  # every gain tried saturated the layer beyond the limit
        note = f"every gain tried saturates more than {saturation_limit:.0%} of the outputs"
        best = (math.inf, min(tried))
    gain = best[1]
    m, saturation, y = measure(gain)
    reached = abs(m / target - 1) <= CALIBRATION_TOLERANCE
    if not reached and note is None:
        if high is not None and m < target:
            note = (f"target {target:g} out of reach: {layer_spec.activation.name} saturates before its output "
                    f"second moment gets there; kept the largest gain saturating at most {saturation_limit:.0%}")
        elif steps == MAX_ITERATIONS:
            note = f"not within {CALIBRATION_TOLERANCE:.0%} of the target after {MAX_ITERATIONS} steps"
        else:
            note = f"no {GAIN_DIGITS}-significant-digit gain gets within {CALIBRATION_TOLERANCE:.0%} of the target"
    return _calibration(init, start, gain, m, saturation, steps, reached, note), y


def _calibration(init, start, gain, m, saturation, steps, reached, note) -> dict:
    return {"scheme": init.scheme, "start_gain": start, "gain": gain, "second_moment": m, "saturation": saturation,
            "iterations": steps, "reached": reached, "note": note}


# ------------------------------------------------------------------------------ recommend


def recommend(spec: NetworkSpec, thresholds: Thresholds | None = None, max_memory: int | None = None,
              calibrate: bool = False, target: float = 1.0) -> dict:
    """The recommendation (JSON-shaped): per layer the rule of thumb, the measured best, the evidence,
    and with `calibrate` the LSUV gains of both. Raises SpecErrors when a run would not fit in
    memory, ValueError for a target that is not a positive number."""
    from initdiag import __version__

    if calibrate:
        _check_target(target)
    other = next((layer for layer in spec.layers if layer.kind != "dense"), None)
    if other is not None:
        from initdiag.yamlsource import SpecErrors, SpecProblem

        raise SpecErrors([SpecProblem(other.location, other.path, f"recommend handles dense networks only so far; "
                                      f"this layer is {'an' if other.kind[0] in 'aeiou' else 'a'} {other.kind} (check and compare handle it)", file=spec.file)])
    thresholds = thresholds or Thresholds()
    network.check_memory(spec, max_memory)
    count = len(spec.layers)

    draws: dict = {}  # common random numbers across every run, as compare.run_all
    known: dict = {}  # orthogonal's QR, once per layer
    uniform = uniform_candidates(spec)
    assignments: dict[str, tuple] = {init.display: (init,) * count for init in uniform}
    reports = {name: _run(with_inits(spec, inits), name, thresholds, max_memory, draws, known)
               for name, inits in assignments.items()}
    rule = rule_inits(spec)
    for name, inits in ((RULE_MIX, rule), (FIT_MIX, None)):
        if inits is None:
            inits = fit_mix(spec, uniform, max_memory, known)
        if _key(inits) not in {_key(other) for other in assignments.values()}:
            assignments[name] = inits
            reports[name] = _run(with_inits(spec, inits), name, thresholds, max_memory, draws, known)
    rule_name = next(name for name, inits in assignments.items() if _key(inits) == _key(rule))
    current = _run(spec, "as written", thresholds, max_memory, draws)
    ranked = compare.build(spec, list(reports.values()))
    scores, ranking = ranked["scores"], ranked["ranking"]

    chosen, selection = _choose(spec, assignments, scores, ranking)
    chosen_inits = assignments[chosen]
    calibrations = {}
    if calibrate:
        calibrations["measured"] = calibrate_layers(spec, chosen_inits, target, thresholds, max_memory, known)
        calibrations["rule"] = (calibrations["measured"] if _key(rule) == _key(chosen_inits)
                                else calibrate_layers(spec, rule, target, thresholds, max_memory, known))

    rule_run, best_run = reports[rule_name], reports[chosen]
    rule_profile, best_profile = compare.activation_profile(rule_run), compare.activation_profile(best_run)
    layers = []
    for i, layer in enumerate(spec.layers):
        measured, rule_init = chosen_inits[i], rule[i]
        rule_layer, best_layer = rule_run.run.layers[i], best_run.run.layers[i]
        layers.append({
            "index": layer.index,
            "name": layer.name,
            "activation": layer.activation.display,
            "fan_in": layer.fan_in,
            "fan_out": layer.units,
            "current": layer.init.display,
            "rule": rule_init.display,
            "rule_options": list(rule_options(layer)),
            "measured": measured.display,
            "agree": follows_rule(layer, measured),
            "rule_signal": _power(rule_profile[i]),
            "measured_signal": _power(best_profile[i]),
            "rule_saturation": rule_layer.saturation,
            "measured_saturation": best_layer.saturation,
            "rule_dead_fraction": rule_layer.dead_fraction,
            "measured_dead_fraction": best_layer.dead_fraction,
            "rule_weight_std": rule_layer.weight_std_expected,
            "measured_weight_std": best_layer.weight_std_expected,
            "reason": None,
            "calibration": {choice: results[i] for choice, results in calibrations.items()} or None,
            "write": {
                "measured": init_value(measured, calibrations["measured"][i] if calibrate else None),
                "rule": init_value(rule_init, calibrations["rule"][i] if calibrate else None),
            },
        })
    result = {
        "initdiag_version": __version__,
        "spec": spec.file,
        "name": spec.name,
        "seed": spec.seed,
        "batch": spec.batch,
        "dtype": spec.dtype,
        "measured_best": chosen,
        "top_ranked": ranking[0],
        "rule_candidate": rule_name,
        "selection": selection,
        "candidates": {name: [init.display for init in assignments[name]] for name in ranking},
        "ranking": ranking,
        "scores": scores,
        "current": compare.summary(current),
        "agree": all(entry["agree"] for entry in layers),
        "calibrated": bool(calibrate),
        "target": float(target) if calibrate else None,
        "calibration_tolerance": CALIBRATION_TOLERANCE if calibrate else None,
        "layers": layers,
    }
    for entry in layers:
        if not entry["agree"]:
            entry["reason"] = reason(entry, result)
    return result


calibrate_layers = calibrate  # `recommend` has a parameter named `calibrate`


def _key(inits) -> tuple:
    return tuple(init.display for init in inits)


def _power(log_ratio: float) -> float:
    return 10**log_ratio if math.isfinite(log_ratio) else (math.inf if log_ratio > 0 else 0.0)


def _choose(spec, assignments: dict, scores: dict, ranking: list) -> tuple[str, str | None]:
    """The top-ranked candidate; but among the candidates measuring the same (the top one's verdict,
    a profile distance within DISTANCE_MARGIN of its), the one following the rules of thumb on most
    layers, so that changing an init takes a measured reason."""
    top = ranking[0]

    def agreements(name):
        return sum(follows_rule(layer, init) for layer, init in zip(spec.layers, assignments[name]))

    near = [name for name in ranking
            if scores[name]["verdict"] == scores[top]["verdict"]
            and scores[name]["distance"] <= scores[top]["distance"] + DISTANCE_MARGIN]
    chosen = max(near, key=lambda name: (agreements(name), -ranking.index(name)))
    if chosen == top:
        return top, None
    return chosen, (
        f"{top} ranks first, but {chosen} measures the same (also {scores[chosen]['verdict']}, profile distance "
        f"{scores[chosen]['distance']:.2f} vs {scores[top]['distance']:.2f}, within log10({NOISE:g})) and follows "
        f"the rules of thumb on {agreements(chosen)} of {len(spec.layers)} layers, {top} on {agreements(top)}"
    )


def init_value(init: initspec.InitSpec, calibration: dict | None = None):
    """What to write as a layer's `init:`: the name, or {name: {param: value}} for non-default
    parameters, with a calibrated gain."""
    defaults = init.definition.params
    params = {key: value for key, value in init.params.items() if key in defaults and value != defaults[key]}
    if calibration is not None and calibration.get("gain") is not None:
        params["gain"] = calibration["gain"]
    return {init.scheme: params} if params else init.scheme


# ------------------------------------------------------------------------------ reasons


def ratio_text(ratio: float) -> str:
    """1.02x, 1/11, 0, inf: a factor of the input's second moment."""
    if not math.isfinite(ratio):
        return "inf"
    if ratio <= 0:
        return "0"
    return f"{compact(ratio)}x" if ratio >= 1 else f"1/{compact(1 / ratio)}"


def _level(ratio: float) -> str:
    if 1 / FLAT <= ratio <= FLAT:
        return f"flat ({ratio_text(ratio)})"
    return f"at {ratio_text(ratio)} of the input's" if ratio < 1 else f"at {ratio_text(ratio)} the input's"


def _move(ratio: float) -> str:
    if 1 / FLAT <= ratio <= FLAT:
        return f"stays flat ({ratio_text(ratio)})"
    return f"shrinks to {ratio_text(ratio)}" if ratio < 1 else f"grows to {ratio_text(ratio)}"


def reason(entry: dict, result: dict) -> str:
    """Why the measured best differs from the rule of thumb at this layer, from the two runs' figures."""
    rule, best = entry["rule"], entry["measured"]
    activation = entry["activation"].split("(")[0]
    r_rule, r_best = entry["rule_signal"], entry["measured_signal"]
    scores = result["scores"]
    whole = (f"whole network: {result['measured_best']} {scores[result['measured_best']]['verdict']} "
             f"(health {scores[result['measured_best']]['health']:.0f}) vs {result['rule_candidate']} "
             f"{scores[result['rule_candidate']]['verdict']} (health {scores[result['rule_candidate']]['health']:.0f})")
    variance = None
    if entry["rule_weight_std"] and entry["measured_weight_std"]:
        variance = (entry["measured_weight_std"] / entry["rule_weight_std"]) ** 2
    same_here = r_rule > 0 and r_best > 0 and math.isfinite(r_rule) and math.isfinite(r_best) \
        and abs(math.log10(r_best / r_rule)) < math.log10(1.25)
    if same_here:
        return (f"this layer's signal is about the same under both ({ratio_text(r_best)} vs {ratio_text(r_rule)} "
                f"of the input's second moment); {best} wins on the {whole}")
    what = "logits' second moment" if activation == "softmax" else "activation second moment"
    text = f"measured best {best} keeps the {what} {_level(r_best)} where the rule of thumb's {rule} {_move(r_rule)}"
    why = []
    if activation in SQUASHING and r_rule < r_best and r_rule < 1:
        why.append(f"{activation} under {rule} shrinks with depth ({activation} squashes, E[{activation}(z)²] < E[z²], "
                   f"and {rule} keeps only a linear layer's variance)")
    if variance is not None and abs(math.log10(variance)) > 0.01:
        why.append(f"{best}'s weights have {compact(variance)}x {rule}'s variance here "
                   f"({entry['fan_in']}→{entry['fan_out']})")
    return text + (": " + "; ".join(why) if why else "") + f"; {whole}"
