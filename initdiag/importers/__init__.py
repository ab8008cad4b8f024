"""Importers: a model described elsewhere (a Hugging Face config.json, ...) written as a spec.

An importer reads a model and returns a Draft (importers/draft.py): the spec (YAML with a header comment saying
where it came from and what was approximated or left out) and the model's own initial values, which are written
beside the spec as supplied arrays. It never downloads weights. One entry per source, keyed by the name the
command line takes: `initdiag import SOURCE MODEL -o spec.yaml`; `takes` names the command-line options it
reads (any other one given is refused).
"""

from __future__ import annotations

from typing import NamedTuple

from initdiag.importers import dl4j, hf, keras, onnx_graph
from initdiag.importers.base import ImportProblem
from initdiag.importers.draft import Draft


def _torch_import(reference, **options):
    from initdiag.importers import torch_fx  # imports torch only when asked for

    return torch_fx.import_module(reference, **options)


class Importer(NamedTuple):
    describe: str     # what it reads, for --help and errors
    convert: object   # (model, **options named in takes) -> Draft; raises ImportProblem
    takes: tuple = ()  # the options it reads, as the command line spells them


IMPORTERS = {
    "hf": Importer("a Hugging Face config.json (model_type " + ", ".join(hf.TEMPLATES) + ")", hf.import_config,
                   ("steps", "batch", "layers")),
    "torch": Importer("a PyTorch module built by package.module:factory, traced with torch.fx (needs torch)",
                      _torch_import, ("input", "arg", "batch")),
    "onnx": Importer("an ONNX model file (.onnx), its initializers kept as supplied arrays", onnx_graph.import_model,
                     ("input", "batch")),
    "keras": Importer("a Keras model.to_json() (Sequential or Functional, Keras 2 or 3)", keras.import_keras,
                      ("input", "batch")),
    "dl4j": Importer("a Deeplearning4j MultiLayerConfiguration or ComputationGraphConfiguration toJson()",
                     dl4j.import_dl4j, ("input", "batch", "fans")),
}

__all__ = ["IMPORTERS", "Draft", "ImportProblem", "Importer"]
