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
block's output equal to its input), unique layer names, an embedding first exactly when
input_distribution is tokens, cross_entropy on a flat output, uniform's low < high, that .npy files
exist and hold numbers, that custom inits need --allow-custom, and that numbers are finite (.inf).
"""

from __future__ import annotations

from initdiag import activations, checks, layers_attention, layers_conv, layers_norm, layers_recurrent, schemes, spec
from initdiag import speclayers

SCHEMA_ID = "https://initdiag.invalid/schema/spec.json"  # a name, not a download address
_NAME = {"type": "string", "pattern": r"\S"}  # a non-empty text
_POSITIVE = {"type": "integer", "minimum": 1}
_NUMBER = {"type": "number"}
_BOOL = {"type": "boolean"}


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
SCHEME_PARAMS = {  # parameter -> (schema, meaning)
    "gain": ({"type": "number", "exclusiveMinimum": 0}, "multiplies the standard deviation and the uniform bound"),
    "mean": (_NUMBER, "the mean"), "std": ({"type": "number", "exclusiveMinimum": 0}, "the standard deviation"),
    "low": (_NUMBER, "the lower bound"), "high": (_NUMBER, "the upper bound (above low)"),
    "value": (_NUMBER, "the value of every weight"),
    "path": (_NAME, "a .npy array of shape [fan_in, fan_out], relative to the spec's folder"),
    "target": ({"type": "string", "pattern": r"^\s*[^:\s][^:]*:.*\S"}, "'package.module:function' (needs --allow-custom)"),
}


def _scheme_params(scheme: schemes.Scheme) -> dict:
    props = {}
    for key, default in scheme.params.items():
        schema, meaning = SCHEME_PARAMS[key]
        props[key] = {**schema, "description": meaning + (f" (default {default})" if default is not None else "")}
    required = [key for key, default in scheme.params.items() if default is None]
    options = [{"type": "object", "properties": props, "additionalProperties": False, "required": required}]
    if scheme.positional:  # {constant: 0.1}, {supplied: w.npy}
        options.append(props[scheme.positional])
    if not required:  # {xavier: } reads as no parameters
        options.append({"type": "null"})
    return {"anyOf": options}


def _activation_params(cls) -> dict:
    props = {key: {**_NUMBER, "description": f"{key} (default {default})"} for key, default in cls.params.items()}
    return {"anyOf": [{"type": "object", "properties": props, "additionalProperties": False}, {"type": "null"}]}


def _describe_scheme(scheme) -> str:
    takes = ", ".join(scheme.params) or "no parameters"
    return f"{scheme.formula}; takes {takes}" + (f" ({scheme.positional} also as a bare value)" if scheme.positional else "")


def _describe_activation(cls) -> str:
    return f"{cls.formula}; takes {', '.join(cls.params) or 'no parameters'}"


# ------------------------------------------------------------------ layers
def _kind_tables() -> tuple[dict, dict]:
    """Each kind's own option keys and the required ones, from the layer modules."""
    keys, required = dict(layers_conv.CONFIG_KEYS), dict(layers_conv.REQUIRED_KEYS)
    keys.update(layers_norm.CONFIG_KEYS)
    required.update({kind: (layers_norm.CONFIG_KEYS[kind] if kind == "embedding" else ()) for kind in layers_norm.CONFIG_KEYS})
    keys.update(layers_attention.CONFIG_KEYS)
    required.update(layers_attention.REQUIRED_KEYS)
    for kind, cls in layers_recurrent.RECURRENT_LAYERS.items():
        keys[kind], required[kind] = cls.config_keys, ("units",)
    return keys, required


OPTION_DOCS = {  # a layer kind's own options (layers_*.CONFIG_KEYS): what they mean
    "filters": "output channels", "kernel": "the window: an int, or one per spatial axis",
    "stride": "the step: an int, or one per axis (default 1; pools: the kernel)",
    "padding": "valid (default), same, or an int / one per axis", "dilation": "spacing of the kernel taps (default 1)",
    "groups": "grouped convolution (default 1)", "bias": "false drops the bias (default true)",
    "eps": "added to the variance (default 1e-5)", "eval": "run as at inference (default false)",
    "p": "the drop probability (default 0.5)", "vocab": "the vocabulary size", "dim": "the model width",
    "heads": "attention heads (dim divisible by heads)", "ffn": "the feed-forward hidden width", "units": "the hidden width",
    "return_sequences": "output every step (default true), or only the last",
    "activation": "the nonlinearity inside the block (rnn: tanh; transformer: gelu)",
    "forget_bias": "added to the forget gate's bias (default 1.0; PyTorch has none: 0)",
    "norm": "layer norm before (pre, the default) or after (post) each sublayer",
}


def _option(kind: str, key: str) -> dict:
    ndim = layers_conv._SPATIAL_DIMS.get(kind, 1)
    positive = ("filters", "groups", "vocab", "dim", "heads", "ffn", "units")
    schema = (_POSITIVE if key in positive else _BOOL if key in ("bias", "eval", "return_sequences") else {
        "kernel": _ints(ndim, 1), "stride": _ints(ndim, 1), "dilation": _ints(ndim, 1),
        "padding": {"anyOf": [_choice(("valid", "same"), "padding", strip=True), _ints(ndim, 0)]},
        "eps": {"type": "number", "exclusiveMinimum": 0}, "p": {"type": "number", "minimum": 0, "maximum": 1},
        "activation": {"$ref": "#/$defs/elementwise_activation"}, "forget_bias": _NUMBER,
        "norm": _choice(layers_attention.NORM_ORDERS, "norm", strip=True),
    }[key])
    return {**schema, "description": OPTION_DOCS[key]}


def _options(kind: str, keys: tuple, required: tuple) -> dict:
    mapping = {"type": "object", "properties": {key: _option(kind, key) for key in keys},
               "required": list(required), "additionalProperties": False}
    options = [mapping]
    if kind in speclayers.RECURRENT_KINDS:
        options.append(_option(kind, "units"))  # rnn: 64
    if kind == "dropout":
        options.append(_option(kind, "p"))  # dropout: 0.1
    if not required:  # `kind:` or `kind: true` read as no options
        options += [{"type": "null"}, {"const": True}]
    return {"anyOf": options, "description": f"a {kind} layer; options: {', '.join(keys) or 'none'}"
            + (f" (required: {', '.join(required)})" if required else "")}


LAYER_KEY_DOCS = {
    "name": "unique within the spec; default <kind>_<index>", "activation": "the activation (default: defaults.activation)",
    "init": "the weight init (default: defaults.init)", "recurrent_init": "the hidden-to-hidden weights' init (default orthogonal)",
    "bias_init": "the constant every bias starts at (default: defaults.bias_init, else 0)", "bias": "false drops the bias (default true)",
    "ignore": "finding codes to suppress on this layer", "scale": "α in y = shortcut(x) + α·f(x) (default 1)",
    "residual": "the block's inner layers f, any kinds", "shortcut": "project the skip path: dense (flat input) or conv (strided 1x1)",
}


def _layer_key(kind: str, key: str) -> dict:
    schema = {"name": _NAME, "init": {"$ref": "#/$defs/init"}, "recurrent_init": {"$ref": "#/$defs/init"}, "bias_init": _NUMBER,
              "bias": _BOOL, "ignore": {"$ref": "#/$defs/ignore"}, "scale": _NUMBER,
              "activation": {"$ref": "#/$defs/" + ("elementwise_activation" if kind in speclayers.CONV_KINDS else "activation")},
              "residual": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/layer"}},
              "shortcut": _choice(speclayers.SHORTCUTS, "shortcut")}[key]
    return {**schema, "description": LAYER_KEY_DOCS[key]}


def _layer(kind: str, keys: dict, required: dict) -> dict:
    if kind == "dense":
        own = {**_POSITIVE, "description": "a fully connected layer of this many units"}
    else:
        own = _options(kind, keys[kind], required[kind])
    layer = {"type": "object", "required": [kind], "additionalProperties": False,
             "properties": {kind: own, **{key: _layer_key(kind, key) for key in _plus_ignore(speclayers.KIND_KEYS[kind])}}}
    no_bias = {"properties": {"bias": {"const": False}}, "required": ["bias"]}
    if kind == "dense" or kind in speclayers.CONV_KINDS:  # bias_init on a layer without a bias is an error
        layer["if"] = no_bias if kind == "dense" else {"properties": {kind: no_bias}, "required": [kind]}
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
    "defaults": ("global defaults, overridden per layer", None),
    "layers": ("the layers, input to output", {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/layer"}}),
    "thresholds": ("this spec's threshold overrides (they win over config files and flags)", None),
    "ignore": ("finding codes to suppress everywhere in this spec", {"$ref": "#/$defs/ignore"}),
}
DEFAULT_DOCS = {"init": "weight init of every layer that does not set init (default xavier)",
                "activation": "activation of every layer that does not set activation (default identity)",
                "bias_init": "bias of every layer that does not set bias_init (default 0)"}
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
    keys, required = _kind_tables()
    top = {}
    for key in _plus_ignore(spec.TOP_KEYS, "thresholds"):
        meaning, schema = TOP_DOCS[key]
        top[key] = {**(schema or {"$ref": f"#/$defs/{key}"}), "description": meaning}
    defaults = {"init": {"$ref": "#/$defs/init"}, "activation": {"$ref": "#/$defs/activation"}, "bias_init": _NUMBER}
    defs = {
        "defaults": {"type": "object", "additionalProperties": False,
                     "properties": {key: {**defaults[key], "description": DEFAULT_DOCS[key]} for key in spec.DEFAULT_KEYS}},
        "thresholds": _thresholds(),
        "ignore": _ignore(),
        "finding_code": {"enum": list(checks.CHECKS), "description": "a finding code"},
        "init": _registered("weight init", schemes.SCHEMES, schemes.ALIASES, _scheme_params, _describe_scheme),
        "activation": _registered("activation", activations.ACTIVATIONS, activations.ALIASES, _activation_params, _describe_activation),
        "elementwise_activation": _registered("elementwise activation", activations.ACTIVATIONS, activations.ALIASES,
                                              _activation_params, _describe_activation, keep=lambda cls: cls.elementwise),
        "layer": {"description": "a layer: exactly one kind key with its options, or a residual block",
                  "oneOf": [{"$ref": f"#/$defs/{kind}_layer"} for kind in speclayers.LAYER_KINDS + ("residual",)]},
        "residual_layer": {"type": "object", "required": ["residual"], "additionalProperties": False,
                           "description": "y = shortcut(x) + scale·f(x)",
                           "properties": {key: _layer_key("residual", key) for key in _plus_ignore(speclayers.RESIDUAL_KEYS)}},
    }
    defs.update({f"{kind}_layer": _layer(kind, keys, required) for kind in speclayers.LAYER_KINDS})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, "title": "initdiag spec",
            "description": "A network for initdiag to check: input shape, defaults and layers (see the README, 'The spec')",
            "type": "object", "required": ["input", "layers"], "additionalProperties": False, "properties": top, "$defs": defs}


if __name__ == "__main__":
    import json

    print(json.dumps(spec_schema(), indent=2, ensure_ascii=False))
