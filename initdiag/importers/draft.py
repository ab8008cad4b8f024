"""A spec an importer is writing: header sentences, top-level keys, flat layers, and the initial values it keeps.

Every importer builds a Draft; `text()` renders it as YAML (a comment header, then one flow line per layer, as a
person would write it) and `write()` puts it next to a folder of the model's own initial values: `NAME.yaml`
and `NAME.init/LAYER.npz`, each layer with arrays reading its file through `supplied:` (arrays named and shaped
as the layer holds them: supplied.py). Nothing the user has is overwritten without `force`, and then only after
the new files were written completely (temporary names, then os.replace).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from initdiag.importers.base import ImportProblem


class Draft:
    """What an importer found: `header` sentences (source, init, what was approximated or left out), `keys`
    (name, input, batch, loss, ..., in the order written), `layers` (spec mappings, each with its `name`) and
    `arrays` ({layer name: {parameter: array in initdiag's layout}})."""

    def __init__(self, name: str):
        self.header: list[str] = []
        self.keys: dict = {"name": name}
        self.layers: list[dict] = []
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        self.left_out: list[str] = []  # parts of the model the spec does not hold (auxiliary heads): said in reports
        self.origins: dict[str, str] = {}  # layer -> the source's node it stands for (tests compare them)
        self.source = None  # what the importer read (a traced torch module), for those comparisons

    def add(self, layer: dict, arrays: dict | None = None) -> str:
        """Append `layer` (a mapping with a unique `name`) and the initial values it keeps; returns its name."""
        name = layer["name"]
        if arrays:
            self.arrays[name] = {key: np.asarray(value) for key, value in arrays.items()}
        self.layers.append(layer)
        return name

    def text(self, folder: str | None = None) -> str:
        """The spec's YAML; layers with arrays read `FOLDER/LAYER.npz` (`folder` relative to the spec)."""
        lines = ["# " + line for item in self.header for line in textwrap.wrap(item, 110)]
        lines += [f"{key}: {flow(value)}" for key, value in self.keys.items()]
        lines.append("layers:")
        for layer in self.layers:
            if folder is not None and layer["name"] in self.arrays:
                layer = {**layer, "supplied": f"{folder}/{file_name(layer['name'])}.npz"}
            lines.append(f"  - {flow(layer)}")
        return "\n".join(lines) + "\n"

    def write(self, spec_path, *, force: bool = False, protected=()) -> list[Path]:
        """Write the spec at `spec_path` and, if any layer keeps arrays, the folder `STEM.init` beside it.
        Refuses (ImportProblem) to replace an existing file or folder unless `force`, and never replaces a
        `protected` path (the model file read). Returns the paths written."""
        spec_path = Path(spec_path)
        folder = spec_path.with_name(spec_path.stem + ".init")
        targets = [spec_path] + ([folder] if self.arrays else [])
        for target in targets:
            if any(Path(other).resolve() == target.resolve() for other in protected):
                raise ImportProblem(f"{target}: refusing to write over the input file")
            if target.exists() and not force:
                raise ImportProblem(f"{target} exists; pass --force to overwrite it")
            if target.exists() and target.is_dir() != (target == folder):
                raise ImportProblem(f"{target}: is a {'folder' if target.is_dir() else 'file'}; "
                                    "refusing to replace it")
        if not spec_path.parent.is_dir():
            raise ImportProblem(f"{spec_path}: no folder {spec_path.parent}")
        if self.arrays:
            _replace_folder(folder, self.arrays)
        from initdiag import outputs

        outputs.write_atomic(spec_path, self.text(folder.name if self.arrays else None), protected=protected)
        return targets

    def written_to_temporary(self) -> tuple[Path, tempfile.TemporaryDirectory]:
        """The spec and its arrays in a fresh temporary folder (for `check --torch`); keep the handle alive."""
        holder = tempfile.TemporaryDirectory(prefix="initdiag-import-")
        path = Path(holder.name) / "model.yaml"
        self.write(path)
        return path, holder


def _replace_folder(folder: Path, arrays: dict) -> None:
    """Write every layer's .npz into a temporary sibling folder, then swap it in for `folder`."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for layer, values in arrays.items():
            np.savez(staging / f"{file_name(layer)}.npz", **values)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_name(name: str) -> str:
    """A layer name as a file name: characters other than letters, digits, '.', '_' and '-' become '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    return cleaned or "layer"


# ------------------------------------------------------------------------------ YAML, one flow line per layer


def plain(value) -> str:
    """A scalar as YAML reads it back (1e-06 is written 1.0e-06: YAML 1.1 reads the former as text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if exponent and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
        return text
    return str(value)


def flow(value) -> str:
    """`value` in YAML flow style (mappings in their order, lists, quoted strings where plain ones would not do)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flow(key)}: {flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    if isinstance(value, str):
        plain_text = value[:1].isalpha() and value.replace("_", "").replace(".", "").replace("-", "").isalnum()
        reserved = value.lower() in ("true", "false", "null", "yes", "no", "on", "off", "y", "n")
        return value if plain_text and not reserved else json.dumps(value)
    if isinstance(value, (np.integer, np.floating)):
        return plain(value.item())
    return plain(value)
