"""Write a spec back with new inits, keeping the user's comments, key order and indentation.

Round-trips the YAML with ruamel.yaml (imported only here: start-up time is measured), never
over the input unless asked to rewrite it in place, and then only after keeping SPEC.bak.
"""

from __future__ import annotations

from pathlib import Path

CHOICES = ("measured", "rule")  # which of a recommendation's two answers to write


# ------------------------------------------------------------------------------ writing


def write_spec(spec_path, recommendation: dict, out_path=None, in_place: bool = False, choice: str = "measured") -> Path:
    """Write a copy of the spec with every layer's `init:` set to the recommendation (`choice`:
    "measured" or "rule"; with calibrated gains when the recommendation has them), keeping the
    file's comments, key order and indentation (ruamel.yaml round trip). Returns the written path.

    Never over the input unless `in_place`: then SPEC.bak first receives a copy of the original,
    and the spec is replaced atomically (temporary file + os.replace). Raises ValueError for a
    refused or impossible write."""
    import shutil

    from initdiag import outputs

    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
    source = Path(spec_path)
    if in_place:
        if out_path is not None and Path(out_path).resolve() != source.resolve():
            raise ValueError(f"in_place rewrites {source} itself; do not also give another output ({out_path})")
        target = source
    else:
        if out_path is None:
            raise ValueError("give an output path, or in_place=True to rewrite the spec (keeping SPEC.bak)")
        target = Path(out_path)
        if target.resolve() == source.resolve():
            raise ValueError(f"refusing to write over the input spec {source}; write to another file, "
                             f"or rewrite it in place (the original is kept as {source.name}.bak)")
    original = source.read_text(encoding="utf-8")
    text = updated_text(original, recommendation, choice)
    if in_place:
        backup = source.with_name(source.name + ".bak")
        shutil.copy2(source, backup)
        outputs.write_atomic(source, text)
        shutil.copymode(backup, source)
    else:
        outputs.write_atomic(target, text, protected=[source])
    return target


def updated_text(original: str, recommendation: dict, choice: str = "measured") -> str:
    """The spec's text with each layer's `init:` set (ruamel.yaml round trip, imported only here)."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()  # round-trip: comments, key order, flow style and quoting survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    mapping, sequence, offset = indentation(original)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    data = yaml.load(original)
    layers = data.get("layers") if isinstance(data, dict) else None
    wanted = recommendation["layers"]
    if not isinstance(layers, list) or len(layers) != len(wanted):
        found = len(layers) if isinstance(layers, list) else 0
        raise ValueError(f"the spec has {found} layers but the recommendation is for {len(wanted)}: "
                         "it was made for another spec")
    for item, entry in zip(layers, wanted):
        value = entry["write"][choice]
        if isinstance(value, dict):
            flow = CommentedMap()
            for scheme, params in value.items():
                inner = CommentedMap(params)
                inner.fa.set_flow_style()
                flow[scheme] = inner
            flow.fa.set_flow_style()
            value = flow
        _set_init(item, value)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _set_init(item, value) -> None:
    """Set item["init"]: in place where it is written, else after `activation`, else last; when it
    goes last, the full-line comments that followed the layer (ruamel keeps them on its last entry)
    move below it, so they stay with what they introduce."""
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    if "init" in item:
        item["init"] = value
        return
    keys = list(item.keys())
    position = keys.index("activation") + 1 if "activation" in item else len(keys)
    trailing = _trailing_comment(item) if position == len(keys) and not item.fa.flow_style() else None
    item.insert(position, "init", value)
    if trailing is None:
        return
    token = trailing
    text = token.value
    newline = text.find("\n")
    if newline >= 0 and text[newline + 1:]:
        token.value = text[:newline + 1]
        item.ca.items["init"] = [None, None, CommentToken("\n" + text[newline + 1:], CommentMark(0)), None]


def _trailing_comment(node):
    """The comment token after the last entry of a block mapping or sequence (nested: the deepest
    last entry's), where ruamel keeps the full-line comments that follow the node."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    while True:
        if isinstance(node, CommentedMap) and len(node) and not node.fa.flow_style():
            key, slot = list(node.keys())[-1], 2
        elif isinstance(node, CommentedSeq) and len(node) and not node.fa.flow_style():
            key, slot = len(node) - 1, 0
        else:
            return None
        entry = node.ca.items.get(key)
        if entry and len(entry) > slot and entry[slot] is not None:
            return entry[slot]
        node = node[key]


def indentation(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) indentation as written, for ruamel's `indent()`: the first nested
    block mapping's indent, and the first block sequence's dash offset and content indent."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    mapping = sequence = offset = None
    for line, following in zip(lines, lines[1:]):
        stripped = line.strip()
        if stripped.startswith("- ") or not stripped.split("#")[0].rstrip().endswith(":"):
            continue
        parent = len(line) - len(line.lstrip())
        child = len(following) - len(following.lstrip())
        if following.lstrip().startswith("-"):
            if offset is None and child >= parent:
                offset = child - parent
                after_dash = following.lstrip()[1:]
                sequence = offset + 1 + (len(after_dash) - len(after_dash.lstrip()))
        elif mapping is None and child > parent:
            mapping = child - parent
    mapping = mapping or 2
    if offset is None:
        offset, sequence = 2, 4  # initdiag's own samples' style
    return mapping, max(sequence, offset + 2), offset
