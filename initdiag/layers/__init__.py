"""The layer kinds: one `LAYERS` registry, keyed by the spec key, built from the family modules.

Every module of this package except `declare` ends with `KINDS = (LayerKind(...), ...)` (see declare.py
for what a kind declares); the package imports each module it finds (pkgutil) and registers its
kinds, so adding a kind is adding (or extending) one module. `ALIASES` maps each declared alias to
its kind; `lookup(name)` accepts either, in any case, and suggests close matches.

Layers keep the CS231n contract: forward(x) -> (out, cache); backward(dout, cache) -> (dx, grads).
Dense weights are (fan_in, fan_out) and the layer computes x @ W + b; PyTorch's nn.Linear stores the
transpose, (out, in), and computes x @ W.T + b, with the same fans.
"""

from __future__ import annotations

import importlib
import pkgutil

from initdiag.layers.declare import BuildContext, LayerKind  # noqa: F401  (re-exported: the declaration type)
from initdiag.registry import canonical


def _discover() -> dict:
    kinds = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "declare":
            continue
        for kind in importlib.import_module(f"{__name__}.{module.name}").KINDS:
            if kind.key in kinds:
                raise ValueError(f"layer kind '{kind.key}' is declared twice")
            kinds[kind.key] = kind
    return kinds


LAYERS: dict[str, LayerKind] = _discover()
ALIASES: dict[str, str] = {alias: kind.key for kind in LAYERS.values() for alias in kind.aliases}


def lookup(name: str) -> str:
    """The kind `name` (any case, or an alias) stands for; UnknownNameError (a ValueError) with a close match."""
    return canonical(name, LAYERS, ALIASES, "layer kind")


def normalize_config(kind: str, raw) -> dict:
    """A kind's own options (`raw`: as written under its key) with defaults filled; ValueError names the problem."""
    from initdiag.validate import Checker

    class _Collect(Checker):  # parse() reports on a Checker; here its first problem becomes the error
        def __init__(self):
            self.problems = []

        def problem(self, path, message, key=False):
            self.problems.append(message)

    key = lookup(kind)
    check = _Collect()
    config = LAYERS[key].parse(check, (), raw)
    if config is None:
        raise ValueError(check.problems[0] if check.problems else f"{key}: bad options {raw!r}")
    return config


def layer_class(kind: str):
    """The class of a kind (a spec key or an alias)."""
    return LAYERS[lookup(kind)].cls


def make(layer_spec, weights, bias, activation, dtype=None, rng=None, eval=False, weights_rng=None):
    """The layer object for a validated LayerSpec and its drawn parameters (`rng`: dropout's masks;
    `eval`: dropout off and batchnorm on its initial running statistics; `weights_rng`: the layer's weight
    stream, for a value a kind draws itself, outside `init`: a class token's)."""
    import numpy as np

    context = BuildContext(np.dtype(np.float32 if dtype is None else dtype), rng, eval, weights_rng)
    return LAYERS[layer_spec.kind].build(layer_spec, weights, bias, activation, context)


def readme_table() -> str:
    """The README's table of layer kinds and their options, from the declarations."""
    rows = ["| kind | what it is | options (default) | also takes | aliases |", "|---|---|---|---|---|"]
    for kind in LAYERS.values():
        options = "; ".join(_option_doc(option) for option in kind.options) or "none"
        takes = ", ".join(key for key in kind.accepts if key not in ("name", "ignore")) or "-"
        aliases = ", ".join(kind.aliases) or "-"
        rows.append(f"| `{kind.key}` | {kind.summary} | {options} | {takes} | {aliases} |")
    return "\n".join(rows) + "\n"


def _option_doc(option) -> str:
    default = " (required)" if option.required else "" if option.default is None else f" ({option.default})"
    return f"`{option.name}`{default}: {option.doc}"
