"""initdiag's statistics against PyTorch computing the same ones on the same network.

Skipped where torch is not installed (it is not a test dependency: see README, "Verifying
against PyTorch"). Float64 throughout, so agreement is to rounding, not to sampling noise.
"""

import numpy as np
import pytest

from initdiag import losses, network, propagate, spec, yamlsource

torch = pytest.importorskip("torch")
F = torch.nn.functional

ACTIVATIONS = {
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu, "selu": F.selu,
    "swish": F.silu, "mish": F.mish, "softplus": F.softplus, "softsign": F.softsign, "elu": F.elu,
    "hardtanh": F.hardtanh, "hard_sigmoid": F.hardsigmoid, "identity": lambda z: z,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.2), "softmax": lambda z: torch.softmax(z, dim=-1),
    "relu6": F.relu6, "hardswish": F.hardswish, "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
}

SPECS = {
    "cross_entropy": ("relu", "tanh", "gelu", "leaky_relu", "softmax"),
    "mse": ("selu", "swish", "mish", "elu", "relu6", "hardswish", "gelu_tanh", "identity"),
    "binary_cross_entropy": ("softplus", "softsign", "hardtanh", "hard_sigmoid", "sigmoid"),
}


def _spec(activation_names, init="relu_uniform"):
    layers = "".join(
        f"  - dense: {7 if i == len(activation_names) - 1 else 33}\n    activation: "
        + ({"leaky_relu": "{leaky_relu: {alpha: 0.2}}", "gelu_tanh": "{gelu: {approximate: tanh}}"}.get(name, name) + "\n")
        for i, name in enumerate(activation_names)
    )
    text = f"input: [19]\nbatch: 64\nseed: 3\ndtype: float64\ndefaults: {{init: {init}, bias_init: 0.1}}\nlayers:\n{layers}"
    return spec.parse(yamlsource.loads(text, "ref.yaml"), base_dir=".", default_name="ref")


def _torch_stats(built, net_spec, targets, loss_name):
    x = torch.tensor(built.inputs)
    weights, outputs, preacts = [], [], []
    for layer, layer_spec in zip(built.layers, net_spec.layers):
        w = torch.tensor(layer.weights.T.copy(), requires_grad=True)  # PyTorch's (out, in) layout
        b = torch.tensor(layer.bias)
        z = F.linear(x, w, b)
        tanh_form = layer_spec.activation.params.get("approximate") == "tanh"
        y = ACTIVATIONS[layer_spec.activation.name + ("_tanh" if tanh_form else "")](z)
        y.retain_grad()
        weights.append(w), preacts.append(z), outputs.append(y)
        x = y
    t = torch.tensor(np.asarray(targets))  # cross-entropy targets are losses.OneHot (labels); np.asarray: the one-hot array
    logits = preacts[-1]
    logits.retain_grad()
    # The fused losses as PyTorch computes them, from the logits: the gradient that enters the network
    # there is dLoss/dz (initdiag's grad_var of the output layer), not dLoss/dp.
    if loss_name == "cross_entropy":
        loss = F.cross_entropy(logits, t.argmax(dim=1))
    elif loss_name == "binary_cross_entropy":
        loss = F.binary_cross_entropy_with_logits(logits, t)
    else:
        loss = F.mse_loss(x, t)
    loss.backward()
    var = lambda a: a.detach().var(unbiased=False).item()  # noqa: E731
    fused = loss_name in ("cross_entropy", "binary_cross_entropy")
    return [
        {"preact_var": var(z), "act_mean": y.detach().mean().item(), "act_var": var(y),
         "grad_var": var(z.grad if fused and z is logits else y.grad),
         "weight_grad_var": var(w.grad), "weight_std": w.detach().std(unbiased=False).item()}
        for w, z, y in zip(weights, preacts, outputs)
    ]


@pytest.mark.parametrize("loss_name", sorted(SPECS))
def test_statistics_match_pytorch(loss_name):
    net_spec = _spec(SPECS[loss_name])
    built = network.build(net_spec)
    run = propagate.run(built)
    assert run.loss == loss_name
    loss = losses.resolve("auto", net_spec.layers[-1].activation.name)
    final = built.inputs
    for layer in built.layers:
        final, _ = layer.forward(final)
    targets = loss.targets(network.stream(net_spec.seed, network.STREAM_TARGETS), final.shape, final.dtype)
    expected = _torch_stats(built, net_spec, targets, loss_name)
    # PyTorch's hardsigmoid backward multiplies by 1/6 as a float32 constant even in float64,
    # a relative error of up to 2^-24 that propagates to every earlier layer's gradients.
    tolerance = 2.0**-23 if "hard_sigmoid" in SPECS[loss_name] else 1e-9
    for ours, theirs in zip(run.layers, expected):
        for key, value in theirs.items():
            assert getattr(ours, key) == pytest.approx(value, rel=tolerance, abs=1e-300), (ours.name, key)
