"""What the test modules share: specs from YAML text, spec files on disk, and the CLI run in process.

Test modules import these (`from conftest import make_spec, invoke, write_spec`): pytest puts this folder
on the import path, as it does for gradcheck.py.
"""

from __future__ import annotations

import textwrap
import traceback
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_specs"


def make_spec(text: str, seed: int | None = None, base_dir=".", allow_custom: bool = False):
    """The validated NetworkSpec of YAML `text` (dedented), named "t" as if read from t.yaml in `base_dir`."""
    from initdiag import spec, yamlsource

    parsed = spec.parse(yamlsource.loads(textwrap.dedent(text), "t.yaml"), base_dir=base_dir, default_name="t",
                        allow_custom=allow_custom)
    return parsed if seed is None else parsed.with_seed(seed)


class Passes(NamedTuple):
    built: object  # network.Network
    outputs: list  # per layer, its output
    gradients: list  # per layer, dLoss/d(output) (the last layer's: dLoss/d(logits) under a fused loss, as torch's)
    weight_grads: list  # per layer, its grads dict
    targets: object  # the loss targets drawn


def passes(parsed, max_memory: int | None = None) -> Passes:
    """One forward and backward pass of a parsed spec, keeping every layer's output and gradient (what tests
    compare with torch running the same network)."""
    from initdiag import losses, network, propagate

    built = network.build(parsed, max_memory=max_memory)
    caches, outputs = [], []
    for _, y, cache in propagate.forward_pass(built):
        caches.append(cache)
        outputs.append(y)
    loss = losses.resolve(parsed.loss, built.layers[-1].activation.name)
    targets = loss.targets(built.target_rng, outputs[-1].shape, outputs[-1].dtype)
    dz = loss.logit_gradient(outputs[-1], targets) if loss.fused else None
    gradients, weight_grads = [None] * len(outputs), [None] * len(outputs)
    for i, dy, grads, _ in propagate.backward_pass(built, caches, loss.output_gradient(outputs[-1], targets), dz):
        gradients[i] = dz if (i == len(outputs) - 1 and dz is not None) else dy
        weight_grads[i] = grads
    return Passes(built, outputs, gradients, weight_grads, targets)


def relative_error(mine, theirs) -> float:
    """The relative (Frobenius) error of `mine` against `theirs`."""
    import numpy as np

    return float(np.linalg.norm(mine - theirs) / max(np.linalg.norm(theirs), 1e-300))


def torch_loss(logits, targets, loss_name: str):
    """torch's loss on `logits` for initdiag's drawn `targets`: cross entropy on their argmax (per token on a
    sequence, mean), else the mean squared error."""
    import torch

    if loss_name == "cross_entropy":
        labels = torch.tensor(targets.argmax(axis=-1))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return torch.nn.functional.mse_loss(logits, torch.tensor(targets))


def write_spec(directory: Path, text: str, name: str = "net.yaml") -> Path:
    """Write YAML `text` (dedented) as `directory/name` and return its path."""
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _runner():
    from typer.testing import CliRunner

    try:  # Click < 8.2 mixes stderr into stdout unless told not to; newer runners always separate them
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def invoke(*args, env: dict | None = None, color: bool = False):
    """Run `initdiag ARGS` in process at 80 columns (NO_COLOR set unless `color`); fail the test on any
    exception other than the CLI's own exit, and on any traceback in the output."""
    from initdiag.cli import app

    full_env = {"COLUMNS": "80", "NO_COLOR": None if color else "1", **(env or {})}
    result = _runner().invoke(app, [str(arg) for arg in args], env=full_env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        detail = "".join(traceback.format_exception(*result.exc_info))
        pytest.fail(f"initdiag {' '.join(map(str, args))} raised instead of reporting:\n{detail}")
    assert "Traceback" not in result.output
    return result
