"""Exact initial values from files: a layer's `supplied: FILE.npz` (named arrays) or `supplied: FOLDER`
(one NAME.npy per parameter), each array named by the layer's parameter name and shaped as the built
layer holds it (layers.LayerKind.parameter_shapes: a dense matrix [fan_in, fan_out], torch's Linear weight
transposed; a conv kernel [in/groups · taps, filters]; an embedding table [vocab, dim], as nn.Embedding's;
biases and a norm's gamma and beta as vectors).

`read` opens and checks the file when the spec is parsed (names, shapes, numbers, finiteness: every problem
located with the spec's others); `apply` writes the values into the built layer's own arrays, so the layer
holds exactly them (cast to the spec's dtype): nothing is added afterwards (an LSTM's forget_bias is added to
a drawn bias, not to a supplied one).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np


class Supplied(NamedTuple):
    """The arrays a `supplied:` file gives one layer (validated: names and shapes are the layer's)."""

    written: str  # as the spec wrote it, for reports
    file: str  # the resolved .npz file or folder
    shapes: dict  # {parameter name: shape}

    def load(self, name: str) -> np.ndarray:
        if Path(self.file).is_dir():
            return np.load(Path(self.file) / f"{name}.npy", allow_pickle=False)
        with np.load(self.file, allow_pickle=False) as arrays:
            return arrays[name]

    def without(self, names) -> "Supplied | None":
        """The same file with `names` left out (None if nothing is left): `check --scheme` draws those."""
        shapes = {name: shape for name, shape in self.shapes.items() if name not in names}
        return self._replace(shapes=shapes) if shapes else None


def _arrays(file: Path):
    """(name, array) pairs of a .npz file or a folder of .npy files; OSError/ValueError if unreadable."""
    if file.is_dir():
        for path in sorted(file.glob("*.npy")):
            yield path.stem, np.load(path, allow_pickle=False)
        return
    arrays = np.load(file, allow_pickle=False)
    if not hasattr(arrays, "files"):
        raise ValueError("it holds one array, not named ones: give a .npz (np.savez) or a folder of NAME.npy")
    with arrays:
        for name in arrays.files:
            yield name, arrays[name]


def read(check, path: tuple, value, declared: dict, layer: str) -> Supplied | None:
    """The file `value` (relative to the spec) checked against `declared` ({name: shape}, the layer's
    parameters as it holds them); None, with located problems, if anything is wrong."""
    if not isinstance(value, str) or not value.strip():
        check.problem(path, f"expected the path of a .npz file or of a folder of NAME.npy files, not {check.show(value)}")
        return None
    file = check.resolve(value)
    if not file.exists():
        check.problem(path, f"no such file or folder '{value}' (looked for {file})")
        return None
    if not declared:
        check.problem(path, f"{layer} has no parameters to supply")
        return None
    shapes, before = {}, len(check.problems)
    try:
        for name, array in _arrays(file):
            _check_array(check, path, name, array, declared, layer, value)
            shapes[name] = tuple(array.shape)
    except (OSError, ValueError, EOFError) as err:
        check.problem(path, f"cannot read '{value}' ({getattr(err, 'strerror', None) or err}); expected a .npz of "
                      "named arrays or a folder of NAME.npy files (pickled objects are refused)")
        return None
    if len(check.problems) > before:
        return None
    if not shapes:
        check.problem(path, f"'{value}' holds no arrays (expected some of: {', '.join(declared)})")
        return None
    return Supplied(value, str(file), shapes)


def _check_array(check, path, name, array, declared, layer, value) -> None:
    if name not in declared:
        check.problem(path, f"'{value}' has an array '{name}', which is not a parameter of {layer} "
                      f"(its parameters: {', '.join(declared)})")
    elif tuple(array.shape) != tuple(declared[name]):
        check.problem(path, f"'{value}': array '{name}' has shape {list(array.shape)}, but {layer} holds "
                      f"{name} as {list(declared[name])}")
    elif array.dtype.kind not in "fiu":
        check.problem(path, f"'{value}': array '{name}' holds {array.dtype}, not numbers")
    elif not np.isfinite(array).all():
        check.problem(path, f"'{value}': array '{name}' holds NaN or infinite values")


def held(layer) -> dict:
    """{name: array} a built layer holds: its `params`, or a dense/conv/residual layer's weights and bias."""
    params = getattr(layer, "params", None)
    if isinstance(params, dict) and params:
        return params
    return {name: array for name, array in (("weights", getattr(layer, "weights", None)),
                                            ("bias", getattr(layer, "bias", None))) if array is not None}


def apply(layer, supplied: Supplied | None, skip: tuple = ()):
    """Write the supplied values (except the names in `skip`) into the built layer's arrays, in place: every
    sublayer that shares an array (a transformer's norms, an LSTM's cell) sees them. Returns the layer."""
    if supplied is None:
        return layer
    arrays = held(layer)
    for name in supplied.shapes:
        if name in skip:
            continue
        arrays[name][...] = supplied.load(name)
        main = getattr(layer, "main_param", None)
        weights = getattr(layer, "weights", None)
        if name == main and weights is not None and weights is not arrays[name]:
            # a lookup table: statistics read the matrix the scheme drew, (dim, rows), its transpose
            layer.weights = np.ascontiguousarray(arrays[name].T)
    return layer
