"""Name lookup shared by every registry (schemes, activations, layers, reporters).

A registry is a plain dict keyed by the user-facing name, with a separate alias table.
Names are case-insensitive; unknown names raise an error that lists close matches.
"""

from __future__ import annotations

from collections.abc import Mapping


class UnknownNameError(ValueError):
    """`what` named `name`, which is neither a registered name nor an alias."""

    def __init__(self, what: str, name: str, suggestion: str | None):
        self.what = what
        self.name = name
        self.suggestion = suggestion
        hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
        super().__init__(f"unknown {what} '{name}'{hint}")


def canonical(name: str, registry: Mapping[str, object], aliases: Mapping[str, str], what: str) -> str:
    """The registered name that `name` (any case, or an alias) stands for."""
    key = str(name).strip().lower()
    if key in registry:
        return key
    if key in aliases:
        return aliases[key]
    raise UnknownNameError(what, str(name), closest(key, list(registry) + list(aliases)))


def closest(name: str, choices) -> str | None:
    """The closest of `choices` to `name`, for 'did you mean' hints, or None."""
    import difflib  # only on the error path: it costs start-up time

    close = difflib.get_close_matches(str(name).lower(), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None
