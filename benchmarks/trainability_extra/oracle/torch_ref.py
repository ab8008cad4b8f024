"""torch_ref.py - RECONSTRUCTION (by the extra-labels helper) of the module trainlib.py imports as `torch_ref`.

The original was not present in /work/shared (trainlib.py expects it in ORACLE_DIR, default ..). This file
implements the interface trainlib uses (NAMED_SCHEMES, parse_scheme, init_weight_, ACTIVATIONS) from the scheme
table of initdiag's README (the product documentation), drawing with torch.nn.init / tensor methods.
Validated by re-labelling dev-set specs and comparing with /work/shared/trainability/labels.json.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_ALIASES = {
    "xavier": ("xavier", "glorot_normal", "xavier_normal"),
    "xavier_uniform": ("xavier_uniform", "glorot_uniform"),
    "relu": ("relu", "he_normal", "kaiming_normal"),
    "relu_uniform": ("relu_uniform", "he_uniform", "kaiming_uniform"),
    "lecun_normal": ("lecun_normal",),
    "lecun_uniform": ("lecun_uniform",),
    "var_scaling_normal_fan_in": ("var_scaling_normal_fan_in",),
    "var_scaling_normal_fan_out": ("var_scaling_normal_fan_out",),
    "var_scaling_normal_fan_avg": ("var_scaling_normal_fan_avg",),
    "var_scaling_uniform_fan_in": ("var_scaling_uniform_fan_in",),
    "var_scaling_uniform_fan_out": ("var_scaling_uniform_fan_out",),
    "var_scaling_uniform_fan_avg": ("var_scaling_uniform_fan_avg",),
    "sigmoid_uniform": ("sigmoid_uniform",),
    "xavier_fan_in": ("xavier_fan_in",),
    "xavier_legacy": ("xavier_legacy",),
    "normal": ("normal",),
    "uniform": ("uniform",),
    "truncated_normal": ("truncated_normal",),
    "zero": ("zero", "zeros"),
    "ones": ("ones",),
    "constant": ("constant",),
    "identity": ("identity", "eye"),
    "orthogonal": ("orthogonal",),
}
NAMED_SCHEMES = {a: k for k, al in _ALIASES.items() for a in al}

# (family, variance as a function of fans) for the variance-scaling schemes
_VS = {
    "xavier": ("n", lambda i, o: 2.0 / (i + o)),
    "xavier_uniform": ("u", lambda i, o: 2.0 / (i + o)),
    "relu": ("n", lambda i, o: 2.0 / i),
    "relu_uniform": ("u", lambda i, o: 2.0 / i),
    "lecun_normal": ("n", lambda i, o: 1.0 / i),
    "lecun_uniform": ("u", lambda i, o: 1.0 / i),
    "var_scaling_normal_fan_in": ("n", lambda i, o: 1.0 / i),
    "var_scaling_normal_fan_out": ("n", lambda i, o: 1.0 / o),
    "var_scaling_normal_fan_avg": ("n", lambda i, o: 2.0 / (i + o)),
    "var_scaling_uniform_fan_in": ("u", lambda i, o: 1.0 / i),
    "var_scaling_uniform_fan_out": ("u", lambda i, o: 1.0 / o),
    "var_scaling_uniform_fan_avg": ("u", lambda i, o: 2.0 / (i + o)),
    "sigmoid_uniform": ("u", lambda i, o: 16.0 * 2.0 / (i + o)),
    "xavier_fan_in": ("n", lambda i, o: 1.0 / i),
    "xavier_legacy": ("n", lambda i, o: 1.0 / (i + o)),
}
_PARAMS = {k: {"gain"} for k in _VS}
_PARAMS.update({"normal": {"mean", "std"}, "uniform": {"low", "high"}, "truncated_normal": {"mean", "std"},
                "zero": set(), "ones": set(), "constant": {"value"}, "identity": set(), "orthogonal": {"gain"}})


def parse_scheme(s):
    """(kind, params, None) for a scheme name or a one-key mapping {name: {param: value}} / {constant: c}."""
    if isinstance(s, str):
        k, params = s.strip().lower(), {}
    elif isinstance(s, dict) and len(s) == 1:
        (k, v), = s.items()
        k = str(k).strip().lower()
        if isinstance(v, (int, float)) and NAMED_SCHEMES.get(k) == "constant":
            params = {"value": float(v)}
        else:
            params = dict(v or {})
    else:
        raise ValueError(f"bad scheme {s!r}")
    kind = NAMED_SCHEMES.get(k)
    if kind is None:
        raise ValueError(f"unknown scheme {k!r}")
    extra = set(params) - _PARAMS[kind]
    if extra:
        raise ValueError(f"unknown parameters {sorted(extra)} for {kind}")
    return kind, params, None


def _fans(w):
    return torch.nn.init._calculate_fan_in_and_fan_out(w)


def draw_(w, kind, params, fan_in, fan_out):
    with torch.no_grad():
        if kind in _VS:
            fam, var = _VS[kind]
            sd = math.sqrt(var(fan_in, fan_out)) * float(params.get("gain", 1.0))
            if fam == "n":
                w.normal_(0.0, sd)
            else:
                b = math.sqrt(3.0) * sd
                w.uniform_(-b, b)
        elif kind == "normal":
            w.normal_(float(params.get("mean", 0.0)), float(params.get("std", 1.0)))
        elif kind == "uniform":
            w.uniform_(float(params.get("low", -1.0)), float(params.get("high", 1.0)))
        elif kind == "truncated_normal":
            m, sd = float(params.get("mean", 0.0)), float(params.get("std", 1.0))
            torch.nn.init.trunc_normal_(w, m, sd, m - 2 * sd, m + 2 * sd)
        elif kind == "zero":
            w.zero_()
        elif kind == "ones":
            w.fill_(1.0)
        elif kind == "constant":
            w.fill_(float(params.get("value", 0.0)))
        elif kind == "identity":
            if w.dim() == 2:
                if w.shape[0] != w.shape[1]:
                    raise ValueError("identity needs a square layer")
                torch.nn.init.eye_(w)
            else:
                torch.nn.init.dirac_(w)
        elif kind == "orthogonal":
            torch.nn.init.orthogonal_(w, gain=float(params.get("gain", 1.0)))
        else:
            raise ValueError(f"unsupported scheme {kind}")


def init_weight_(w, kind, params):
    """w: (fan_out, fan_in) as torch stores it."""
    fi, fo = _fans(w)
    draw_(w, kind, params, fi, fo)


ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "selu": torch.selu,
    "gelu": F.gelu,
    "swish": F.silu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "elu": F.elu,
    "softplus": F.softplus,
    "softsign": F.softsign,
}
