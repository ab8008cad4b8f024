"""What the JSON importers (hf, keras, dl4j) share: reading the file, `--input`, and a scheme's gain re-scaled to other fans.

A framework that computes a parameter's fans differently from PyTorch (Keras' embedding table, DL4J's LSTM) draws
another variance from the same scheme name; `refanned` keeps the name and multiplies its gain so that the spec,
whose fans are PyTorch's, draws what the framework draws.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from initdiag import schemes
from initdiag.importers.base import ImportProblem


def read_json(path, what: str):
    """The JSON value in the file at `path`; ImportProblem (located: FILE:LINE:COL for a syntax error) if the file
    cannot be read or is not JSON, or (`what` naming the expected content) is not an object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImportProblem(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ImportProblem(f"{path}: cannot read it: {getattr(err, 'strerror', None) or err}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ImportProblem(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    if not isinstance(value, dict):
        raise ImportProblem(f"{path}: expected a JSON object ({what}), not {type(value).__name__}")
    return value


def parse_shape(text: str | None) -> tuple | None:
    """`--input 28,28,1` as (28, 28, 1); None when not given. ImportProblem unless 1 to 3 whole numbers ≥ 1."""
    if text is None:
        return None
    parts = [part.strip() for part in str(text).replace("x", ",").split(",") if part.strip()]
    if not 1 <= len(parts) <= 3 or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise ImportProblem(f"--input: expected 1 to 3 whole numbers ≥ 1 separated by commas (e.g. 28,28,1), not {text!r}")
    return tuple(int(part) for part in parts)


def spec_init(name: str, params: dict | None = None):
    """A scheme as the spec writes it: its name, or {name: {param: value}} when it has parameters."""
    return {name: dict(params)} if params else name


def refanned(init, ours: tuple, theirs: tuple):
    """`init` (a spec scheme) re-scaled so that, drawn with PyTorch's fans `ours` = (fan_in, fan_out), it has the
    variance it has with the framework's fans `theirs`: a variance-scaling scheme's gain times sqrt(fan(ours) /
    fan(theirs)) for its mode (fan_in, fan_out or fan_avg); any other scheme as it is."""
    name, params = (init, {}) if isinstance(init, str) else next(iter(init.items()))
    scheme = schemes.lookup(name)
    if scheme.rule is None:
        return init
    mode = scheme.rule[0]
    ratio = schemes.Fans(*ours).of(mode) / schemes.Fans(*theirs).of(mode)
    if ratio == 1:
        return init
    return spec_init(name, {**params, "gain": params.get("gain", 1.0) * math.sqrt(ratio)})


def emit(layers: list, written: list, name: str, reads: list) -> None:
    """Append the spec layers `written` for one imported layer called `name` (the last one takes the name, earlier
    ones NAME.0, NAME.1, ...) reading the spec layers `reads` ("input": the spec's input): the first one names its
    inputs unless it reads the layer written just above it (or the input, first)."""
    for position, spec_layer in enumerate(written):
        spec_layer["name"] = name if position == len(written) - 1 else f"{name}.{position}"
        if position == 0:
            follows = layers[-1]["name"] == reads[0] if layers else reads[0] == "input"
            if len(reads) > 1 or not follows:
                spec_layer["inputs"] = list(reads) if len(reads) > 1 else reads[0]
        layers.append(spec_layer)
