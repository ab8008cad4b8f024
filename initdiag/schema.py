"""A JSON Schema (draft 2020-12) of the spec format, for editors (the YAML language server) and other tools.

The keys, kinds, choices, schemes, activations, thresholds and finding codes come from initdiag's own
tables, so the schema follows the code; what only the checking code knows (an option's type, a key's
meaning) is in the tables below, and generation fails with a KeyError when the code gains a key they do
not describe. Names that initdiag reads case-insensitively (schemes, activations, dtype, loss, ...) are
matched by patterns that spell every letter as a class ("relu" -> [rR][eE][lL][uU]): ECMAScript, the
YAML language server's regex dialect, has no (?i) flag, and this form means the same in every dialect.

What a schema cannot say, and `initdiag check` still checks: shapes (a kernel larger than its padded
input, a dense layer on a non-flat input, identity on a non-square layer, a supplied array's shape,
dim divisible by heads, filters by groups, a transformer's dim equal to its input features, a residual
block's output equal to its input), a layer naming its kind twice in two spellings (dense and Dense), unique layer names, an embedding first exactly when
input_distribution is tokens, cross_entropy on a flat output, uniform's low < high, that .npy files
exist and hold numbers, that custom inits need --allow-custom, and that numbers are finite (.inf); the
parameter names of `inits:` and the arrays of a `supplied:` file (they depend on the layer's options), and
that a `tie:` names an embedding of the right shape.
"""

from __future__ import annotations

from initdiag import activations, checks, schemes, spec, speclayers
from initdiag.layers import LAYERS

SCHEMA_ID = "https://initdiag.invalid/schema/spec.json"  # a name, not a download address
_NAME = {"type": "string", "pattern": r"\S"}  # a non-empty text
_POSITIVE = {"type": "integer", "minimum": 1}
_NUMBER = {"type": "number"}
_BOOL = {"type": "boolean"}
_BIAS_INIT = {"anyOf": [_NUMBER, {"$ref": "#/$defs/vector_init"}]}  # a constant, or a scheme that fits a vector


def _anycase(names, strip: bool = False) -> str:
    """A pattern matching exactly one of `names` in any case (and surrounding blanks with `strip`)."""
    spell = lambda name: "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("\\" + c if c in ".-+" else c) for c in name)
    blank = r"\s*" if strip else ""
    return f"^{blank}(?:{'|'.join(spell(name) for name in names)}){blank}$"


def _choice(names, description: str, strip: bool = False) -> dict:
    return {"type": "string", "pattern": _anycase(names, strip), "examples": list(names),
            "description": f"{description}: {' | '.join(names)} (any case)"}


def _ints(ndim: int, minimum: int) -> dict:
    """An int, or a list of `ndim` ints (a spatial option: kernel, stride, ...)."""
    item = {"type": "integer", "minimum": minimum}
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": ndim, "maxItems": ndim}]}


def _registered(what: str, registry: dict, aliases: dict, params_of, describe, keep=lambda entry: True) -> dict:
    """A name (any case, or an alias) or a one-key mapping {name: params} from a registry."""
    names, by_name, by_pattern = [], {}, {}
    for name, entry in registry.items():
        if not keep(entry):
            continue
        spellings = [name] + [alias for alias, target in aliases.items() if target == name]
        names += spellings
        params = {"description": describe(entry), **params_of(entry)}
        by_name.update({spelling: params for spelling in spellings})
        by_pattern[_anycase(spellings, strip=True)] = params
    return {"description": f"{what}: a name, or a one-key mapping {{name: {{parameter: value}}}}", "anyOf": [
        {"type": "string", "pattern": _anycase(names, strip=True), "examples": [n for n in registry if n in names],
         "description": f"a {what} name (any case; aliases: {', '.join(a for a in aliases if a in names)})"},
        {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": by_name,
         "patternProperties": by_pattern, "additionalProperties": False}]}


# ------------------------------------------------------------------ inits and activations
def _scheme_params(scheme: schemes.Scheme) -> dict:
    props = {}
    for key, default in scheme.params.items():
        schema, meaning = schemes.PARAMETERS[key]
        props[key] = {**schema, "description": meaning + (f" (default {default})" if default is not None else "")}
    required = [key for key, default in scheme.params.items() if default is None]
    options = [{"type": "object", "properties": props, "additionalProperties": False, "required": required}]
    if scheme.positional:  # {constant: 0.1}, {supplied: w.npy}
        options.append(props[scheme.positional])
    if not required:  # {xavier: } reads as no parameters
        options.append({"type": "null"})
    return {"anyOf": options}


def _activation_params(cls) -> dict:
    props = {key: {**({"enum": list(cls.choices[key])} if key in cls.choices else _NUMBER),
                   "description": f"{key} (default {default})"} for key, default in cls.params.items()}
    return {"anyOf": [{"type": "object", "properties": props, "additionalProperties": False}, {"type": "null"}]}


def _describe_scheme(scheme) -> str:
    takes = ", ".join(scheme.params) or "no parameters"
    return f"{scheme.formula}; takes {takes}" + (f" ({scheme.positional} also as a bare value)" if scheme.positional else "")


def _describe_activation(cls) -> str:
    return f"{cls.formula}; takes {', '.join(cls.params) or 'no parameters'}"


# ------------------------------------------------------------------ layers
def _option(kind, option) -> dict:
    """An option's schema from its declaration (declare.Option)."""
    ndim = kind.extra.get("ndim", 1)
    bounds = {}
    if option.minimum is not None:
        bounds["exclusiveMinimum" if option.exclusive else "minimum"] = option.minimum
    if option.maximum is not None:
        bounds["exclusiveMaximum" if option.below_maximum else "maximum"] = option.maximum
    schema = {
        "int": lambda: {"type": "integer", **bounds}, "number": lambda: {"type": "number", **bounds},
        "bool": lambda: _BOOL, "ints": lambda: _ints(ndim, option.minimum),
        "numbers": lambda: {"type": "array", "minItems": 1, "items": {"type": "number", **bounds}},
        "padding": lambda: {"anyOf": [_choice(option.choices, option.name, strip=True), _ints(ndim, option.minimum)]},
        "choice": lambda: _choice(option.choices, option.name, strip=True),
        "activation": lambda: {"$ref": "#/$defs/elementwise_activation"},
        "any_activation": lambda: {"$ref": "#/$defs/activation"},
    }[option.type]()
    default = "" if option.required or option.default is None else f" (default {option.default})"
    return {**schema, "description": option.doc + default}


def _options(kind) -> dict:
    keys = tuple(option.name for option in kind.options)
    required = [option.name for option in kind.options if option.required]
    mapping = {"type": "object", "properties": {option.name: _option(kind, option) for option in kind.options},
               "required": required, "additionalProperties": False}
    options = [mapping]
    if kind.bare is not None:  # rnn: 64, dropout: 0.1
        options.append(_option(kind, next(option for option in kind.options if option.name == kind.bare)))
    if not required:  # `kind:` or `kind: true` read as no options
        options += [{"type": "null"}, {"const": True}]
    return {"anyOf": options, "description": f"a {kind.key} layer ({kind.summary}); options: {', '.join(keys) or 'none'}"
            + (f" (required: {', '.join(required)})" if required else "")}


LAYER_KEY_DOCS = {
    "name": "unique within the spec; default <kind>_<index>", "activation": "the activation (default: defaults.activation)",
    "init": "the weight init (default: defaults.init)", "recurrent_init": "the hidden-to-hidden weights' init (default orthogonal)",
    "bias_init": "every bias: a number, or a scheme that fits a vector (normal, uniform, torch_default, ...) (default: "
                 "defaults.bias_init, else 0)", "bias": "false drops the bias (default true)",
    "supplied": "exact values of named parameters: a .npz of arrays, or a folder of NAME.npy files, each shaped as the "
                "layer holds it", "inits": "a scheme per parameter, by name: {ffn.out_weights: zeros, ...}",
    "tie": "the name of an embedding layer: this dense layer's matrix is its table, transposed",
    "ignore": "finding codes to suppress on this layer", "scale": "α in y = shortcut(x) + α·f(x) (default 1)",
    "residual": "the block's inner layers f, any kinds",
    "shortcut": "project the skip path: dense (flat input), conv (strided 1x1), or a list of layers (a 1x1 conv and a batchnorm)",
    "inputs": "the layers it reads, by name ('input': the spec's input); default: the layer above",
}


def _layer_key(kind, key: str) -> dict:
    schema = {"name": _NAME, "init": {"$ref": "#/$defs/init"}, "recurrent_init": {"$ref": "#/$defs/init"}, "bias_init": _BIAS_INIT,
              "supplied": _NAME, "inits": {"type": "object", "minProperties": 1, "additionalProperties": {"$ref": "#/$defs/init"}},
              "tie": _NAME, "bias": _BOOL, "ignore": {"$ref": "#/$defs/ignore"}, "scale": _NUMBER,
              "activation": {"$ref": "#/$defs/" + ("elementwise_activation" if kind.elementwise_activation else "activation")},
              "residual": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/layer"}},
              "shortcut": {"anyOf": [_choice(speclayers.SHORTCUTS, "shortcut"),
                                     {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/layer"}}]},
              "inputs": {"anyOf": [_NAME, {"type": "array", "minItems": 1, "items": _NAME}]}}[key]
    return {**schema, "description": LAYER_KEY_DOCS[key]}


def _layer(kind) -> dict:
    """A layer of `kind` (a LayerKind) under its key or any alias (any case, as the parser reads them)."""
    if kind.bare is not None and len(kind.options) == 1 and kind.options[0].required:  # dense: 256 (select: 0 or {index: 0})
        own = {**_option(kind, kind.options[0]), "description": f"a {kind.key} layer ({kind.summary}): its {kind.bare}"}
    else:
        own = _options(kind)
    spellings = (kind.key,) + kind.aliases
    layer = {"type": "object", "minProperties": 1, "additionalProperties": False,
             "properties": {key: _layer_key(kind, key) for key in _plus_ignore(kind.accepts, *speclayers.GRAPH_KEYS)},
             "patternProperties": {_anycase(spellings, strip=True): own},
             "description": f"a {kind.key} layer" + (f" (aliases: {', '.join(kind.aliases)})" if kind.aliases else "")}
    layer["not"] = {"propertyNames": {"enum": list(layer["properties"])}}  # one key is the kind's (no common key names one)
    no_bias = {"properties": {"bias": {"const": False}}, "required": ["bias"]}
    if "bias" in kind.takes:  # bias_init on a layer without a bias is an error
        layer["if"], layer["then"] = no_bias, {"not": {"required": ["bias_init"]}}
    elif any(option.name == "bias" for option in kind.options) and "bias_init" in kind.takes and not kind.params_dict:
        layer["if"] = {"properties": {kind.key: no_bias}, "required": [kind.key]}
        layer["then"] = {"not": {"required": ["bias_init"]}}
    return layer


def _plus_ignore(keys, *more) -> tuple:
    """`keys` with the CI gate's keys, whether or not the code's table has them yet."""
    return tuple(dict.fromkeys(tuple(keys) + more + ("ignore",)))


# ------------------------------------------------------------------ the spec
TOP_DOCS = {
    "name": ("shown in reports; default: the file's stem", _NAME),
    "input": ("the shape of one sample: [features], [channels, length], [channels, height, width], [steps, features] or [steps]",
              {"type": "array", "items": _POSITIVE, "minItems": 1, "maxItems": 3}),
    "batch": ("samples per random batch (default 256, or the .npy batch's length)", _POSITIVE),
    "seed": ("every random number derives from it (default 0)", {"type": "integer", "minimum": 0}),
    "dtype": ("the arithmetic of the whole run (default float32)", _choice(spec.DTYPES, "dtype")),
    "input_distribution": ("normal = N(0,1) (default), uniform = U(-1,1), tokens (integer ids for an embedding), or a .npy batch",
                           {"anyOf": [_choice(spec.INPUT_DISTRIBUTIONS, "input distribution"), {"type": "string", "pattern": r"\.npy$"}]}),
    "loss": ("what starts the backward pass (default auto)", _choice(spec.LOSSES, "loss")),
    "fans": ("whose conv fans the schemes read: torch (default; PyTorch's and Keras') or dl4j (Deeplearning4j's: "
             "fan_out = filters · kernel area / stride area)", _choice(spec.FANS, "fans")),
    "defaults": ("global defaults, overridden per layer", None),
    "layers": ("the layers, input to output", {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/layer"}}),
    "thresholds": ("this spec's threshold overrides (they win over config files and flags)", None),
    "ignore": ("finding codes to suppress everywhere in this spec", {"$ref": "#/$defs/ignore"}),
}
DEFAULT_DOCS = {"init": "weight init of every layer that does not set init (default xavier)",
                "activation": "activation of every layer that does not set activation (default identity)",
                "bias_init": "bias of every layer that does not set bias_init: a number or a scheme that fits a vector (default 0)"}
THRESHOLD_DOCS = {threshold.name: threshold.doc for threshold in checks.THRESHOLDS}  # declared by each check


def _thresholds() -> dict:
    fields = checks.Thresholds._fields
    props = {}
    for field in fields:
        severity = field.rsplit("_", 1)[1]
        props[field] = {"type": "number", "minimum": 0, "default": checks.Thresholds._field_defaults[field],
                        "description": f"{severity} {THRESHOLD_DOCS[field]}"}
    return {"type": "object", "properties": props, "additionalProperties": False,
            "patternProperties": {f"^(?:{'|'.join(f.replace('_', '-') for f in fields)})$": {"type": "number", "minimum": 0}}}


def _ignore() -> dict:
    codes = [{"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/finding_code"}}, {"$ref": "#/$defs/finding_code"}]
    return {"description": "finding codes to suppress: a list, or {codes: [...], reason: text}", "anyOf": codes + [
        {"type": "object", "required": ["codes"], "additionalProperties": False, "properties": {
            "codes": {"anyOf": codes, "description": "the finding codes"},
            "reason": {"type": ["string", "null"], "description": "why they are suppressed"}}}]}


def spec_schema() -> dict:
    """The JSON Schema (draft 2020-12) of an initdiag spec, as a plain dict (json.dumps it to save it)."""
    top = {}
    for key in _plus_ignore(spec.TOP_KEYS, "thresholds"):
        meaning, schema = TOP_DOCS[key]
        top[key] = {**(schema or {"$ref": f"#/$defs/{key}"}), "description": meaning}
    defaults = {"init": {"$ref": "#/$defs/init"}, "activation": {"$ref": "#/$defs/activation"}, "bias_init": _BIAS_INIT}
    defs = {
        "defaults": {"type": "object", "additionalProperties": False,
                     "properties": {key: {**defaults[key], "description": DEFAULT_DOCS[key]} for key in spec.DEFAULT_KEYS}},
        "thresholds": _thresholds(),
        "ignore": _ignore(),
        "finding_code": {"enum": list(checks.CHECKS), "description": "a finding code"},
        "init": _registered("weight init", schemes.SCHEMES, schemes.ALIASES, _scheme_params, _describe_scheme),
        "vector_init": _registered("bias init", schemes.SCHEMES, schemes.ALIASES, _scheme_params, _describe_scheme,
                                   keep=lambda scheme: "vector" in scheme.roles),
        "activation": _registered("activation", activations.ACTIVATIONS, activations.ALIASES, _activation_params, _describe_activation),
        "elementwise_activation": _registered("elementwise activation", activations.ACTIVATIONS, activations.ALIASES,
                                              _activation_params, _describe_activation, keep=lambda cls: cls.elementwise),
        "layer": {"description": "a layer: exactly one kind key with its options, or a residual block",
                  "oneOf": [{"$ref": f"#/$defs/{key}_layer"} for key in speclayers.KIND_NAMES + ("residual",)]},
        "residual_layer": {"type": "object", "required": ["residual"], "additionalProperties": False,
                           "description": "y = shortcut(x) + scale·f(x)",
                           "properties": {key: _layer_key(LAYERS["residual"], key) for key in _plus_ignore(speclayers.RESIDUAL_KEYS)}},
    }
    defs.update({f"{key}_layer": _layer(LAYERS[key]) for key in speclayers.KIND_NAMES})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, "title": "initdiag spec",
            "description": "A network for initdiag to check: input shape, defaults and layers (see the README, 'The spec')",
            "type": "object", "required": ["input", "layers"], "additionalProperties": False, "properties": top, "$defs": defs}


if __name__ == "__main__":
    import json

    print(json.dumps(spec_schema(), indent=2, ensure_ascii=False))
