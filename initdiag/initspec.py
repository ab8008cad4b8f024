"""A layer's weight init as written: a scheme name (or alias) and its validated parameters."""

from __future__ import annotations

from typing import NamedTuple

from initdiag import schemes
from initdiag.validate import Checker, format_path
from initdiag.yamlsource import Location


class InitSpec(NamedTuple):
    scheme: str  # canonical scheme name
    params: dict  # validated parameters, defaults filled in
    path: str = ""  # where it was written, e.g. "defaults.init"
    location: Location | None = None
    label: str = ""  # what tables show instead, where no scheme drew it: "supplied (f.npz)", "tied to embedding_0"

    @property
    def definition(self) -> schemes.Scheme:
        return schemes.SCHEMES[self.scheme]

    @property
    def display(self) -> str:
        """Short text for tables: the name plus the parameters that differ from the defaults."""
        if self.label:
            return self.label
        defaults = self.definition.params
        shown = {k: v for k, v in self.params.items() if k in defaults and v != defaults[k]}
        if not shown:
            return self.scheme
        positional = self.definition.positional
        if positional in shown and len(shown) == 1:
            return f"{self.scheme}({_short(shown[positional])})"
        return f"{self.scheme}({', '.join(f'{k}={_short(v)}' for k, v in shown.items())})"

    def shape_problem(self, geometry) -> str | None:
        """Why this init cannot fill `geometry` (a schemes.Geometry, or a bare (fan_in, fan_out) shape
        for a dense matrix), or None: the scheme's own answer (schemes.problem)."""
        if not isinstance(geometry, schemes.Geometry):
            geometry = schemes.dense(geometry)
        return schemes.problem(self.definition, self.params, geometry)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def parse(text: str, file: str, allow_custom: bool = False, base_dir=".") -> InitSpec:
    """Parse a scheme given outside a spec (e.g. `--scheme '{normal: {std: 0.01}}'`)."""
    from pathlib import Path

    from initdiag import yamlsource
    from initdiag.yamlsource import SpecErrors, SpecProblem

    try:
        doc = yamlsource.loads(text, file)
    except SpecProblem as problem:
        raise SpecErrors([problem]) from None
    check = Checker(doc, Path(base_dir), allow_custom)
    init = parse_init(check, (), doc.data)
    if check.problems:
        raise SpecErrors(check.problems)
    return init


def parse_init(check: Checker, path: tuple, value) -> InitSpec | None:
    """Validate `name` or `{name: params}` against the scheme catalogue; None (and a problem) if invalid."""
    found = check.registered(path, value, schemes.SCHEMES, schemes.ALIASES, "scheme")
    if found is None:
        return None
    scheme, raw, params_path = found
    if raw is not None and not isinstance(raw, dict):
        if scheme.positional is None:
            takes = ", ".join(scheme.params) or "no parameters"
            check.problem(params_path, f"{scheme.name} takes a mapping of parameters ({takes}), not {check.show(raw)}")
            return None
        raw = {scheme.positional: raw}
    params = dict(scheme.params)
    before = len(check.problems)
    for key, given in (raw or {}).items():
        if key not in scheme.params:
            what = f"{scheme.name} parameter" if scheme.params else f"parameter ({scheme.name} takes none)"
            check.unknown_key(params_path + (key,), key, scheme.params, what)
            continue
        params[key] = _param(check, params_path + (key,), scheme.name, key, given)
    missing = [key for key, default in scheme.params.items() if default is None and (raw or {}).get(key) is None]
    if missing and len(check.problems) == before:
        check.problem(path, f"{scheme.name} needs {' and '.join(missing)}, e.g. {{{scheme.name}: {_example(scheme.name)}}}")
    if len(check.problems) > before:
        return None
    if not _ranges_ok(check, params_path, scheme.name, params):
        return None
    if not _resolve_external(check, params_path, scheme.name, params):
        return None
    return InitSpec(scheme.name, params, format_path(path) or check.doc.file, check.doc.where(path))


def _example(name: str) -> str:
    return {"constant": "0.1", "supplied": "weights.npy", "custom": "'package.module:function'"}.get(name, "...")


def _param(check: Checker, path: tuple, scheme: str, key: str, given):
    if key in ("path", "target"):
        return check.string(path, given)
    if key == "truncated":
        return check.boolean(path, given)
    return check.number(path, given)


def _ranges_ok(check: Checker, path: tuple, scheme: str, params: dict) -> bool:
    ok = True
    for key in ("gain", "std"):
        if key in params and params[key] is not None and not params[key] > 0:
            check.problem(path + (key,), f"{key} must be positive, not {params[key]}")
            ok = False
    if scheme == "uniform" and not params["low"] < params["high"]:
        check.problem(path, f"uniform needs low < high, got low={params['low']}, high={params['high']}")
        ok = False
    return ok


def _resolve_external(check: Checker, path: tuple, scheme: str, params: dict) -> bool:
    """Load what a supplied or custom init points at, so problems surface with the spec's other errors."""
    if scheme == "supplied":
        array = check.npy(path + ("path",), params["path"])
        if array is None:
            return False
        if array.ndim != 2:
            check.problem(path + ("path",), f"the supplied array must be 2-D [fan_in, fan_out], not {list(array.shape)}")
            return False
        params["shape"] = array.shape
        params["path"] = str(check.resolve(params["path"]))
        return True
    if scheme == "custom":
        target = params["target"]
        module, _, function = target.partition(":")
        if not module or not function:
            check.problem(path + ("target",), f"expected 'package.module:function', not '{target}'")
            return False
        if not check.allow_custom:
            check.problem(path, f"custom init '{target}' would import and run your code; pass --allow-custom to allow it")
            return False
        import sys

        sys.path.insert(0, str(check.base_dir))
        try:
            params["function"] = schemes.import_custom(target)
        except Exception as err:  # any import-time failure of user code is the user's input problem
            check.problem(path + ("target",), f"cannot import '{target}' ({type(err).__name__}: {err})")
            return False
        finally:
            sys.path.remove(str(check.base_dir))
        return True
    return True

