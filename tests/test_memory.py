"""The memory estimate against what a run really holds, the refusal of a run that does not fit, and a
MemoryError during a run (exit 2 with the estimate, never a traceback).

The peak is measured with tracemalloc in this process: numpy reports every array's buffer to it, and the
Python objects a run makes count too (network.RUN_OVERHEAD allows for them). The convolutions' scratch buffers
outlive a run, so each measurement starts without them (conv.release_workspace), as a fresh process would.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

import initdiag
from conftest import SAMPLES, invoke, make_spec, write_spec
from initdiag import network, pipeline, probes, propagate, spec
from initdiag.layers import conv

# The heaviest samples run at a smaller batch (the estimate scales with the batch; their parameters, which do not,
# then weigh more): the test stays a few seconds each. Every other sample runs at its own batch.
SMALLER_BATCH = {"gpt2_small_like": 1, "llama_like": 1, "vgg11_batch16": 4, "resnet18_bn": 4, "vit_tiny": 2,
                 "mobilenet_v2": 4}
def measured_peak(network_spec) -> int:
    """Bytes a diagnose of `network_spec` allocates at its peak, above what was held before it started."""
    conv.release_workspace()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        pipeline.diagnose(network_spec, max_memory=10**13)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        conv.release_workspace()


@pytest.mark.parametrize("name", sorted(path.stem for path in SAMPLES.glob("*.yaml")))
def test_the_estimate_bounds_the_measured_peak_within_one_and_a_half(name):
    network_spec = spec.load(SAMPLES / f"{name}.yaml")
    network_spec = network_spec._replace(batch=SMALLER_BATCH.get(name, network_spec.batch))
    estimate = network.estimate_memory(network_spec).total
    peak = measured_peak(network_spec)
    assert peak <= estimate, f"{name}: measured {peak / 1e6:.1f} MB over the estimate {estimate / 1e6:.1f} MB"
    # a run of a few hundred KB is dominated by the fixed allowance for its Python objects
    assert estimate <= 1.5 * max(peak, network.RUN_OVERHEAD), \
        f"{name}: the estimate {estimate / 1e6:.1f} MB is {estimate / peak:.2f}x the measured {peak / 1e6:.1f} MB"


def test_the_estimate_reads_the_probes_own_figures():
    assert network.CONTRAST_SAMPLES == probes.CONTRAST_SAMPLES  # network, an earlier stage, cannot import probes
    for name in ("mnist_relu_he", "resnet18", "vit_tiny"):
        network_spec = spec.load(SAMPLES / f"{name}.yaml")
        weighted = [layer.index for layer in network_spec.layers
                    if layer.init is not None and not network.layer_kinds.LAYERS[layer.kind].block]
        assert probes.readout_index(network_spec) == weighted[-1]


TABLE = """
    input: [16]
    input_distribution: tokens
    batch: 64
    layers:
      - {embedding: {vocab: 20000, dim: 32}, name: table}
      - {dense: 64, activation: relu}
      - {dense: 10, activation: softmax}
"""


def refusal(text: str, limit: int) -> str:
    from initdiag.yamlsource import SpecErrors

    with pytest.raises(SpecErrors) as raised:
        network.check_memory(make_spec(text), limit)
    (problem,) = raised.value.problems
    return str(problem)


def test_the_refusal_names_the_largest_table_by_its_shape_and_the_batch_that_fits():
    table = make_spec(TABLE)
    limit = (network.estimate_memory(table._replace(batch=8)).total + network.estimate_memory(table._replace(batch=9)).total) // 2
    message = refusal(TABLE, limit)
    assert "'table' with 20000×32 parameters" in message, message
    assert "batch 8 fits (set batch: 8 in the spec)" in message and "--max-memory" in message, message
    assert network.fitting_batch(table, limit) == 8


def test_the_refusal_says_when_no_batch_fits():
    table = make_spec(TABLE)
    message = refusal(TABLE, network.estimate_memory(table._replace(batch=1)).total - 1)
    assert "even batch 1 needs about" in message and "--max-memory" in message, message


def test_the_estimate_counts_every_parameter_at_its_real_shape():
    """A transformer block holds 4·dim² + 2·dim·ffn weights, an embedding its vocab × dim table (twice: the drawn
    matrix and the transposed copy it looks up), and a tied head none of its own."""
    block = make_spec("""
        input: [8, 64]
        layers:
          - transformer: {dim: 64, heads: 4, ffn: 256}
    """)
    assert network._parameter_elements(block.layers[0]) >= 4 * 64 * 64 + 2 * 64 * 256
    tied = make_spec(TABLE.replace("- {dense: 10, activation: softmax}", "- {dense: 20000, tie: table, bias: false}")
                     .replace("{dense: 64, activation: relu}", "{dense: 32}"))
    assert network._parameter_elements(tied.layers[0]) == 2 * 20000 * 32
    assert network._parameter_elements(tied.layers[-1]) == 0


def test_compares_shared_draws_count_against_the_bound():
    mnist = spec.load(SAMPLES / "mnist_relu_he.yaml")
    estimate = network.estimate_memory(mnist).total
    network.check_memory(mnist, estimate)  # fits alone
    from initdiag.yamlsource import SpecErrors

    with pytest.raises(SpecErrors):
        network.check_memory(mnist, estimate, draws={})  # not with one family's draws beside it


def _out_of_memory(*args, **kwargs):
    raise MemoryError()


@pytest.mark.parametrize("command", [["check"], ["compare", "--schemes", "xavier,relu"], ["recommend"]])
def test_a_memory_error_during_a_run_is_exit_2_with_the_estimate(tmp_path, monkeypatch, command):
    monkeypatch.setattr(propagate, "run", _out_of_memory)
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, (SAMPLES / "mnist_relu_he.yaml").read_text(), "net.yaml")
    result = invoke(*command, "net.yaml")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("net.yaml: out of memory: this run needs about"), lines
    assert "batch" in lines[0] and "Traceback" not in result.output


def test_a_memory_error_through_the_api_is_a_spec_error(monkeypatch):
    monkeypatch.setattr(propagate, "run", _out_of_memory)
    with pytest.raises(initdiag.SpecError, match="out of memory: this run needs about"):
        initdiag.check(SAMPLES / "mnist_relu_he.yaml")
