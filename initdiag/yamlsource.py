"""Load a YAML spec safely into plain Python data, keeping every value's line and column.

PyYAML composes the node tree (no object construction, no tags beyond the YAML core
schema); we build dicts, lists and scalars ourselves so that duplicate keys are an
error and every path (e.g. ``("layers", 2, "init")``) keeps where it was written.
"""

from __future__ import annotations

from typing import NamedTuple
from pathlib import Path

import re

import yaml

Path_ = tuple  # a path into the document: keys (str) and list indices (int)

# A spec is a few hundred nodes; this bounds alias expansion ("billion laughs").
MAX_NODES = 200_000
MAX_DEPTH = 64


class Location(NamedTuple):
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SpecProblem(Exception):
    """One problem with the user's input, located where it was written."""

    def __init__(self, location: Location | None, path: str, message: str, file: str = "<spec>"):
        self.location = location
        self.path = path
        self.message = message
        self.file = location.file if location else file
        super().__init__(str(self))

    def __reduce__(self):  # what crosses a process boundary (compare --jobs) keeps its parts
        return SpecProblem, (self.location, self.path, self.message, self.file)

    def __str__(self) -> str:
        where = str(self.location) if self.location else self.file
        what = f"{self.path}: " if self.path else ""
        return f"{where}: {what}{self.message}"


class SpecErrors(Exception):
    """Every independent problem found in one spec (reported together)."""

    def __init__(self, problems: list[SpecProblem], pending: tuple = ()):
        self.problems = problems
        # names the spec stage keeps as written and a later stage judges (validate.Written: threshold names,
        # finding codes), so that stage can add their problems to these and all come in one run
        self.pending = tuple(pending)
        super().__init__("\n".join(map(str, problems)))

    def __reduce__(self):
        return SpecErrors, (self.problems, self.pending)


class Document:
    """A loaded YAML document: its data and where each value and key was written."""

    def __init__(self, file: str, data: object):
        self.file = file
        self.data = data
        self.values: dict = {}  # path -> Location of the value
        self.keys: dict = {}  # path -> Location of the mapping key

    def where(self, path: Path_, key: bool = False) -> Location | None:
        """The location of `path`'s key (or value), else of its nearest located ancestor."""
        path = tuple(path)
        while True:
            table = self.keys if key and path in self.keys else self.values
            if path in table:
                return table[path]
            if not path:
                return None
            path = path[:-1]


class SpecLoader(yaml.SafeLoader):
    """The safe loader, reading floats as YAML 1.2 does: `1e-2` is a number, not text."""


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


def _written(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _location(file: str, mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader):
        self.file = file
        self.loader = loader
        self.doc = Document(file, None)
        self.count = 0

    def problem(self, node, message: str) -> SpecProblem:
        return SpecProblem(_location(self.file, node.start_mark), "", message)

    def build(self, node, path: Path_):
        self.count += 1
        if self.count > MAX_NODES or len(path) > MAX_DEPTH:
            raise self.problem(node, "document too large or too deeply nested (aliases expanding?)")
        self.doc.values[path] = _location(self.file, node.start_mark)
        if not isinstance(node, yaml.ScalarNode) and node.tag not in PLAIN_TAGS:
            raise self.problem(node, f"the YAML tag '{_written(node.tag)}' is not allowed: a spec holds plain data only")
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise self.problem(node, f"the YAML tag '{_written(node.tag)}' is not allowed: a spec holds plain data only") from None

    def mapping(self, node, path: Path_) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.problem(key_node, "mapping keys must be plain names")
            key = key_node.value
            if key in seen:
                raise self.problem(
                    key_node, f"duplicate key '{key}' (first written on line {seen[key]})"
                )
            seen[key] = key_node.start_mark.line + 1
        self.loader.flatten_mapping(node)  # YAML merge keys ("<<: *base")
        out: dict = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = "null" if key is None else str(key)
            self.doc.keys[path + (key,)] = _location(self.file, key_node.start_mark)
            out[key] = self.build(value_node, path + (key,))
        return out


def load(path: Path, shown_as: str | None = None) -> Document:
    """Parse `path` as YAML. Raises SpecProblem (located) on unreadable or malformed input."""
    shown = shown_as or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecProblem(None, "", "no such file", file=shown) from None
    except IsADirectoryError:
        raise SpecProblem(None, "", "is a directory, not a spec file", file=shown) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise SpecProblem(None, "", f"cannot read the file ({reason})", file=shown) from None
    return loads(text, shown)


def loads(text: str, file: str = "<spec>") -> Document:
    loader = SpecLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            where = _location(file, mark) if mark else None
            raise SpecProblem(where, "", f"malformed YAML: {err.problem or err.context}", file=file) from None
        except yaml.YAMLError as err:
            raise SpecProblem(None, "", f"malformed YAML: {err}", file=file) from None
        if node is None:
            raise SpecProblem(Location(file, 1, 1), "", "the file is empty; a spec is a mapping with 'input' and 'layers'")
        builder = _Builder(file, loader)
        builder.doc.data = builder.build(node, ())
        return builder.doc
    finally:
        loader.dispose()
