"""`ignore:` lists at work: the run's findings they cover are marked suppressed (shown, never counted),
an ignored code that matched nothing is an `unused-ignore` warning, and findings made after the run
(a baseline's) are marked the same way where they are made."""

from __future__ import annotations

from initdiag.checks import STAGE, Finding

UNUSED = "unused-ignore"


def _ignores(spec) -> list:
    """[(layer index or None for the spec, Ignore)], the layer's own first: it is the closer one."""
    own = [(layer.index, layer.ignore) for layer in spec.layers if getattr(layer, "ignore", None)]
    spec_ignore = getattr(spec, "ignore", None)
    return own + ([(None, spec_ignore)] if spec_ignore else [])


def _covering(code: str, layer_index, ignores):
    """(owner, Ignore) of the first ignore that covers a finding of `code` on `layer_index`, or None."""
    for owner, ignore in ignores:
        if owner in (layer_index, None) and code in ignore.codes:
            return owner, ignore
    return None


def suppress(findings: list, spec) -> list:
    """Mark the findings an `ignore:` covers (the layer's own, or the spec's for every layer), and add an
    `unused-ignore` warning for each ignored code that matched nothing, as ruff and mypy do. Codes made after
    the run (a baseline's) and `unused-ignore` itself are never called unused here: this run cannot tell."""
    ignores = _ignores(spec)
    used: set = set()
    marked = []
    for finding in findings:
        covering = _covering(finding.code, finding.layer_index, ignores)
        if covering:
            used.add((covering[0], finding.code))
            finding = finding._replace(suppressed=True, reason=covering[1].reason)
        marked.append(finding)
    for owner, ignore in sorted(ignores, key=lambda item: -1 if item[0] is None else item[0]):
        for code in ignore.codes:
            if (owner, code) in used or STAGE.get(code, "run") != "run":
                continue
            layer = spec.layers[owner] if owner is not None else None
            where = layer.name if layer is not None else "the spec"
            unused = Finding("warning", UNUSED, layer.name if layer else None,
                             f"{where}: ignore: {code} suppresses nothing", "remove it from the ignore list", owner)
            covering = _covering(UNUSED, owner, ignores)
            marked.append(unused._replace(suppressed=True, reason=covering[1].reason) if covering else unused)
    return marked


def suppress_later(findings: list[dict], spec, layer_indices: dict) -> list[dict]:
    """Findings made after the run (report-shaped dicts, e.g. a baseline's) with the ones an `ignore:` covers
    marked as the run's are: `"suppressed": true` and the ignore's reason. `layer_indices`: layer name -> index."""
    ignores = _ignores(spec)
    out = []
    for finding in findings:
        covering = _covering(finding["code"], layer_indices.get(finding.get("layer")), ignores)
        out.append({**finding, "suppressed": True, "reason": covering[1].reason} if covering else finding)
    return out
