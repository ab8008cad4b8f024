"""`initdiag schemes` and `initdiag activations`: the registries as tables that fold, never cut."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table


def _render(title: str, columns: list[str], rows: list[list[str]], color: bool, width: int, notes=()) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=color, no_color=not color, highlight=False, emoji=False, markup=False,
                      color_system="standard" if color else None)
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False, show_lines=False)
    for column, column_width in zip(columns, _widths(columns, rows, width)):
        table.add_column(column, overflow="fold", width=column_width)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if notes:
        console.print()
        for note in notes:
            console.print(note)
    return out.getvalue()


def _widths(columns: list[str], rows: list[list[str]], width: int) -> list[int]:
    """Content widths that fit `width` with rich's two spaces between columns: the name column keeps its
    longest name whole; each descriptive column gets its longest word (names stay whole where the width
    allows), then the rest in proportion to what its longest cell still lacks. Set explicitly because rich's
    own allocation with a minimum width can exceed the console's width, which crops folded lines."""
    cells = [[column] + [row[i] for row in rows] for i, column in enumerate(columns)]
    natural = [max(len(cell) for cell in column) for column in cells]
    words = [max(len(word) for cell in column for word in cell.split() or [""]) for column in cells]
    rest = width - 2 * (len(columns) - 1) - natural[0]
    if sum(natural[1:]) <= rest:
        return natural
    floors = [max(1, word) for word in words[1:]]
    if sum(floors) >= rest:  # not even the longest words fit: share by them, names fold
        shares = [max(1, rest * floor // sum(floors)) for floor in floors]
    else:
        lacking = [full - floor for full, floor in zip(natural[1:], floors)]
        spare = rest - sum(floors)
        shares = [floor + spare * lack // max(1, sum(lacking)) for floor, lack in zip(floors, lacking)]
    shares[-1] += rest - sum(shares)  # what rounding left
    return [natural[0]] + [max(1, share) for share in shares]


def _params(defaults: dict) -> str:
    return ", ".join(f"{name}={'required' if value is None else value}" for name, value in defaults.items())


def schemes(color: bool = False, width: int = 80) -> str:
    from initdiag.schemes import SCHEMES, aliases_of

    rows = [
        [name, ", ".join(aliases_of(name)), scheme.formula + (f"; {_params(scheme.params)}" if scheme.params else "")]
        for name, scheme in SCHEMES.items()
    ]
    notes = [f"{name}: {scheme.note}" for name, scheme in SCHEMES.items() if scheme.note]
    return _render("schemes (fan_in: inputs, fan_out: outputs; N(0, v) has variance v)",
                   ["scheme", "aliases", "weights; parameters"], rows, color, width, ["where frameworks differ:"] + notes)


def activations(color: bool = False, width: int = 80) -> str:
    from initdiag.activations import ACTIVATIONS, ALIASES

    rows = []
    for name, cls in ACTIVATIONS.items():
        aliases = ", ".join(alias for alias, target in ALIASES.items() if target == name)
        rows.append([name, aliases, cls.formula + (f" ({_params(cls.params)})" if cls.params else ""),
                     " or ".join(cls.recommended), cls.saturation_rule or "-"])
    return _render("activations (recommended scheme: the rules-of-thumb table)",
                   ["activation", "aliases", "formula", "recommended", "saturated when"], rows, color, width)
