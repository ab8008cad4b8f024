"""A spec's layers as a graph: which layers each one reads (`inputs: [a, b]`, by name; the layer above
by default), and the located problems of a graph: unknown names, a name written below the layer that
reads it (a cycle, when that layer reads back), a join of shapes that do not fit, an output nobody reads.

Spec order is run order: a layer reads only layers written above it (and `input`, the spec's input), so
the graph needs no sorting and the report's rows keep the order the user wrote.
"""

from __future__ import annotations

from initdiag.validate import Checker, format_path

INPUT = -1  # the spec's input, as a source
INPUT_NAME = "input"
GRAPH_KEYS = ("inputs",)  # keys every layer may carry


class Graph:
    """What the parser knows so far: each parsed layer's output (shape, layout), names → indices, and the
    references as written (for the problems only the whole spec shows)."""

    def __init__(self, input_shape):
        self.outputs = {INPUT: (input_shape, None)} if input_shape is not None else {}
        self.index_of: dict = {}  # name -> index (every named layer, parsed or not)
        self.paths: dict = {}  # index -> where it is written
        self.reads: dict = {}  # name -> the names it reads (as written, or the layer above), for cycles
        self.later: list = []  # (path, reader name, reader index, name) references to names not yet seen
        self.sources: dict = {}  # index -> resolved sources of a built layer

    def name_of(self, index: int) -> str:
        if index == INPUT:
            return INPUT_NAME
        return next((name for name, i in self.index_of.items() if i == index), f"layers[{index}]")

    def declare(self, index: int, name: str | None, path: tuple) -> None:
        self.paths[index] = format_path(path)
        if name is not None:
            self.index_of[name] = index

    def resolve(self, check: Checker, path: tuple, raw: dict, default, name: str | None, index: int):
        """The sources a layer reads: its `inputs:` (names) or `default` (the layer above). None when unknown."""
        if "inputs" not in raw:
            if name is not None:
                self.reads[name] = [self.name_of(default)] if default is not None else []
            return (default,) if default is not None else None
        written = raw["inputs"]
        names = [written] if isinstance(written, str) else written
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            check.problem(path + ("inputs",), f"expected a layer name or a list of them, e.g. [stem, branch_a], not {check.show(written)}")
            return None
        if name is not None:
            self.reads[name] = list(names)
        sources = []
        for position, ref in enumerate(names):
            where = path + ("inputs",) + ((position,) if isinstance(written, list) else ())
            if ref == INPUT_NAME:
                sources.append(INPUT)
            elif ref == name:
                check.problem(where, f"'{ref}' reads itself: a cycle")
                return None
            elif ref in self.index_of:
                sources.append(self.index_of[ref])
            else:
                self.later.append((where, name, index, ref))
                return None
        return tuple(sources)

    def input_of(self, check: Checker, path: tuple, kind, sources, named: bool) -> tuple:
        """(shape, layout, extra config) of what a layer of `kind` reads (`named`: its inputs are written); shape
        None when unknown or wrong."""
        if sources is None or any(source not in self.outputs for source in sources):
            return None, None, {}
        if len(sources) == 1 and not kind.joins:
            shape, layout = self.outputs[sources[0]]
            return shape, layout, {}
        if not kind.joins:
            check.problem(path + ("inputs",), f"a {kind.key} layer reads one input, not {len(sources)}: join them first "
                          "with add, concat or multiply")
            return None, None, {}
        if len(sources) < 2:
            check.problem(path + ("inputs",) if named else path,
                          f"{kind.key} joins two or more layers: name them, e.g. inputs: [stem, branch_a]")
            return None, None, {}
        layouts = {self.outputs[source][1] for source in sources} - {None}
        if len(layouts) > 1:
            check.problem(path + ("inputs",), f"{kind.key} joins a sequence [steps, features] with a feature map "
                          f"[channels, length]: {', '.join(self._described(sources))}")
            return None, None, {}
        shapes = [self.outputs[source][0] for source in sources]
        extra = {"shapes": [list(shape) for shape in shapes], "sources": [self.name_of(source) for source in sources]}
        return max(shapes, key=len), (layouts.pop() if layouts else None), extra

    def _described(self, sources) -> list:
        return [f"'{self.name_of(source)}' {list(self.outputs[source][0])}" for source in sources]

    def built(self, index: int, sources: tuple, output_shape, layout) -> None:
        self.outputs[index] = (output_shape, layout)
        self.sources[index] = sources

    def finish(self, check: Checker, layers: list, complete: bool) -> None:
        """The problems only the whole spec shows: names written below their reader (cycles among them),
        unknown names, and (when every layer parsed) outputs nobody reads."""
        for where, reader, reader_index, ref in self.later:
            if ref in self.index_of:
                cycle = self._path(ref, reader) if reader is not None else None
                if cycle:
                    check.problem(where, f"a cycle: {' → '.join([reader] + cycle)}; a layer reads only layers above it")
                else:
                    check.problem(where, f"'{ref}' is written below this layer ({self.paths[self.index_of[ref]]}): a layer "
                                  "reads only layers above it (spec order is run order)")
            else:
                known = [INPUT_NAME] + [name for name, i in self.index_of.items() if i < reader_index]
                check.unknown_key(where, ref, known, "layer name")
        if not complete or not layers:
            return
        read = {source for sources in self.sources.values() for source in sources}
        for layer in layers[:-1]:
            if layer.index not in read:
                check.problem(_path_tuple(layer), f"the output of '{layer.name}' is never used: name it in a later "
                              "layer's inputs (only the last layer is the network's output), or remove it")

    def _path(self, start: str, goal: str) -> list | None:
        """Names from `start` back to `goal` through what each reads, or None."""
        stack, seen = [(start, [start])], set()
        while stack:
            name, trail = stack.pop()
            if name == goal:
                return trail
            if name in seen:
                continue
            seen.add(name)
            stack.extend((ref, trail + [ref]) for ref in self.reads.get(name, ()))
        return None


def _path_tuple(layer) -> tuple:
    """The layer's place as a path tuple (("layers", 3) or ("layers", 2, "residual", 0))."""
    parts = []
    for piece in layer.path.replace("]", "").split("["):
        for part in piece.split("."):
            if part:
                parts.append(int(part) if part.isdigit() else part)
    return tuple(parts)
