"""The torch modules the PyTorch importer writes as spec layers: one entry per class, each saying which spec
layer (kind and options) the module is and which of its parameters become supplied arrays in initdiag's layout
(a dense matrix [fan_in, fan_out]: nn.Linear's weight transposed; a conv kernel [in/groups · taps, filters];
norms' gamma and beta). torch is imported by the caller (torch_fx.py) before this module.

A converter takes (module, value) — `value` the input's Value (torch_fx.Value: the per-sample shape) — and
returns (layer mapping without its name, arrays) (a None layer: the identity), or a list of (layer, arrays,
suffix) written one after the other (the first named as the module, the others MODULE.suffix); it raises
Unsupported saying what the spec cannot express.
Modules are matched by exact class (a subclass may change forward: it is traced through instead), except the
ones listed in BY_NAME, matched by qualified class name without importing their packages.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from initdiag.layers import conv as conv_layers
from initdiag.layers import upsampling


class Unsupported(ValueError):
    """A module or op that has no spec equivalent (the importer adds the module path and the op)."""


def array(tensor) -> np.ndarray:
    """A parameter as numpy, in its own precision (float32 stays float32, float64 stays float64)."""
    return tensor.detach().cpu().numpy().copy()


def _pair(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def _one(value):
    """An int, or a list of per-axis values written as one int when they are equal."""
    if isinstance(value, (tuple, list)) and len(set(value)) == 1:
        return int(value[0])
    return [int(item) for item in value] if isinstance(value, (tuple, list)) else value


# ------------------------------------------------------------------ parameterised layers
def linear(module: nn.Linear, value):
    layer = {"dense": module.out_features}
    if module.bias is None:
        layer["bias"] = False
    return layer, _with_bias({"weights": array(module.weight).T}, module)


def pointwise_convolution(module: nn.Linear):
    """nn.Linear on a channels-last map: a 1x1 convolution of the channels-first map."""
    layer = {"conv2d": {"filters": module.out_features, "kernel": 1}}
    if module.bias is None:
        layer["conv2d"]["bias"] = False
    kernel = conv_layers.from_torch_layout(array(module.weight)[:, :, None, None])
    return layer, _with_bias({"weights": kernel}, module)


def _with_bias(arrays: dict, module) -> dict:
    if getattr(module, "bias", None) is not None:
        arrays["bias"] = array(module.bias)
    return arrays


def convolution(module, value):
    if module.padding_mode != "zeros":
        raise Unsupported(f"padding_mode='{module.padding_mode}' (the spec pads with zeros)")
    kind = f"conv{len(module.kernel_size)}d"
    options = {"filters": module.out_channels, "kernel": _one(module.kernel_size)}
    if _one(module.stride) != 1:
        options["stride"] = _one(module.stride)
    padding = module.padding if isinstance(module.padding, str) else _one(module.padding)
    if padding not in (0, "valid"):
        options["padding"] = padding
    if _one(module.dilation) != 1:
        options["dilation"] = _one(module.dilation)
    if module.groups != 1:
        options["groups"] = module.groups
    if module.bias is None:
        options["bias"] = False
    arrays = _with_bias({"weights": conv_layers.from_torch_layout(array(module.weight))}, module)
    return {kind: options}, arrays


def transposed_convolution(module, value):
    if module.padding_mode != "zeros":
        raise Unsupported(f"padding_mode='{module.padding_mode}' (the spec pads with zeros)")
    kind = f"conv_transpose{len(module.kernel_size)}d"
    options = {"filters": module.out_channels, "kernel": _one(module.kernel_size)}
    for key, default in (("stride", 1), ("padding", 0), ("output_padding", 0), ("dilation", 1), ("groups", 1)):
        written = _one(getattr(module, key))
        if written != default:
            options[key] = written
    if module.bias is None:
        options["bias"] = False
    arrays = _with_bias({"weights": upsampling.from_torch_layout(array(module.weight), module.groups)}, module)
    return {kind: options}, arrays


def _norm_arrays(module) -> dict:
    arrays = {}
    if getattr(module, "weight", None) is not None:
        arrays["gamma"] = array(module.weight)
    if getattr(module, "bias", None) is not None:
        arrays["beta"] = array(module.bias)
    return arrays


def batchnorm(module, value):
    return {"batchnorm": {"eps": float(module.eps)}}, _norm_arrays(module)


def layernorm(module: nn.LayerNorm, value):
    if len(module.normalized_shape) != 1 or module.normalized_shape[0] != value.shape[-1]:
        raise Unsupported(f"normalized_shape={list(module.normalized_shape)} on an input {list(value.shape)}: "
                          "the spec's layernorm normalises the last axis only")
    return {"layernorm": {"eps": float(module.eps)}}, _norm_arrays(module)


def rmsnorm(module, value):
    if len(module.normalized_shape) != 1:
        raise Unsupported(f"normalized_shape={list(module.normalized_shape)}: the spec's rmsnorm normalises the last axis")
    eps = module.eps if module.eps is not None else float(torch.finfo(torch.get_default_dtype()).eps)
    return {"rmsnorm": {"eps": float(eps)}}, _norm_arrays(module)


def embedding(module: nn.Embedding, value):
    if module.padding_idx is not None:
        raise Unsupported("padding_idx (a row kept at zero) has no spec equivalent")
    return {"embedding": {"vocab": module.num_embeddings, "dim": module.embedding_dim}}, {"weights": array(module.weight)}


def multihead_attention(module: nn.MultiheadAttention, value):
    if not module.batch_first:
        raise Unsupported("batch_first=False (the spec's sequences are [batch, steps, features])")
    if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
        raise Unsupported("separate key/value widths, bias_k/bias_v or add_zero_attn")
    dim = module.embed_dim
    weights = array(module.in_proj_weight)
    arrays = {f"{name}_weights": weights[i * dim:(i + 1) * dim].T for i, name in enumerate(("query", "key", "value"))}
    arrays["output_weights"] = array(module.out_proj.weight).T
    options = {"dim": dim, "heads": module.num_heads}
    if module.in_proj_bias is not None:
        biases = array(module.in_proj_bias)
        arrays.update({f"{name}_bias": biases[i * dim:(i + 1) * dim] for i, name in enumerate(("query", "key", "value"))})
        arrays["output_bias"] = array(module.out_proj.bias)
    else:
        options["bias"] = False
    return {"attention": options}, arrays


def timm_attention(module, value):
    """timm's vision-transformer Attention: a fused qkv Linear, heads, a proj Linear (q/k norms off)."""
    for norm in ("q_norm", "k_norm", "norm"):
        if not isinstance(getattr(module, norm, nn.Identity()), nn.Identity):
            raise Unsupported(f"{norm} (a norm on queries/keys) has no spec equivalent")
    dim = module.qkv.in_features
    weights = array(module.qkv.weight)
    arrays = {f"{name}_weights": weights[i * dim:(i + 1) * dim].T for i, name in enumerate(("query", "key", "value"))}
    arrays["output_weights"] = array(module.proj.weight).T
    options = {"dim": dim, "heads": module.num_heads}
    if module.qkv.bias is not None:
        biases = array(module.qkv.bias)
        arrays.update({f"{name}_bias": biases[i * dim:(i + 1) * dim] for i, name in enumerate(("query", "key", "value"))})
    if module.proj.bias is not None:
        arrays["output_bias"] = array(module.proj.bias)
    if module.qkv.bias is None and module.proj.bias is None:
        options["bias"] = False
    elif (module.qkv.bias is None) != (module.proj.bias is None):
        raise Unsupported("a bias on only some of the projections (the spec's attention has all or none)")
    return {"attention": options}, arrays


# ------------------------------------------------------------------ weightless layers
def _activation(name, **params):
    return lambda module, value: ({"activation": {name: params} if params else name}, None)


def leaky_relu(module, value):
    return {"activation": {"leaky_relu": {"alpha": float(module.negative_slope)}}}, None


def elu(module, value):
    return {"activation": {"elu": {"alpha": float(module.alpha)}}}, None


def gelu(module, value):
    return {"activation": "gelu" if module.approximate == "none" else {"gelu": {"approximate": "tanh"}}}, None


def softplus(module, value):
    if module.beta != 1:
        raise Unsupported(f"Softplus(beta={module.beta}) (the spec's softplus has beta 1)")
    return {"activation": "softplus"}, None


def hardtanh(module, value):
    if (module.min_val, module.max_val) == (0.0, 6.0):
        return {"activation": "relu6"}, None
    if (module.min_val, module.max_val) != (-1.0, 1.0):
        raise Unsupported(f"Hardtanh({module.min_val}, {module.max_val}) (the spec's hardtanh clips at ±1)")
    return {"activation": "hardtanh"}, None


def softmax(module, value):
    if module.dim not in (-1, len(value.shape)):
        raise Unsupported(f"Softmax(dim={module.dim}) (the spec's softmax is over the last axis)")
    return {"activation": "softmax"}, None


def dropout(module, value):
    return {"dropout": float(module.p)}, None


def stochastic_depth(module, value):
    p = getattr(module, "p", getattr(module, "drop_prob", 0.0))
    mode = getattr(module, "mode", "row")
    return {"stochastic_depth": {"p": float(p), "mode": mode}}, None


def max_pool(module, value):
    if _one(module.dilation) != 1 or module.return_indices:
        raise Unsupported("dilation or return_indices on a max pool")
    return {"maxpool2d": _pool_options(module)}, None


def avg_pool(module, value):
    if not module.count_include_pad and _one(module.padding) != 0:
        raise Unsupported("count_include_pad=False with padding (the spec's average counts the zeros)")
    if module.divisor_override is not None:
        raise Unsupported("divisor_override")
    return {"avgpool2d": _pool_options(module)}, None


def _pool_options(module) -> dict:
    kernel = _one(module.kernel_size)
    options = {"kernel": kernel}
    stride = _one(module.stride) if module.stride is not None else kernel
    if stride != kernel:
        options["stride"] = stride
    if _one(module.padding) != 0:
        options["padding"] = _one(module.padding)
    if module.ceil_mode:
        options["ceil_mode"] = True
    return options


def adaptive_avg_pool(output_size, value):
    """nn.AdaptiveAvgPool2d(size) on this input as a spec layer: the identity (None), an average pool whose
    windows tile the input, a nearest upsample when each input position spreads over whole output bins, or
    else the general adaptive pool (overlapping windows)."""
    spatial = tuple(value.shape[1:])
    wanted = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * len(spatial)
    wanted = tuple(size if size is not None else have for size, have in zip(wanted, spatial))
    if len(spatial) != 2:
        raise Unsupported(f"an adaptive average pool on a {len(value.shape)}-axis input (the spec pools feature maps)")
    if wanted == spatial:
        return None, None
    if wanted == (1, 1):  # the [C] mean; the importer reads its [C, 1, 1] as pooled (torch_fx.pooled)
        return {"global_avgpool": {}}, None
    if all(have % want == 0 for have, want in zip(spatial, wanted)):
        kernel = _one([have // want for have, want in zip(spatial, wanted)])
        return {"avgpool2d": {"kernel": kernel}}, None
    if all(want % have == 0 for have, want in zip(spatial, wanted)):
        return {"upsample": {"scale": _one([want // have for have, want in zip(spatial, wanted)])}}, None
    return {"adaptive_avgpool2d": _one(list(wanted))}, None  # windows that overlap: VGG's 7x7 from 2x2


def pooled_conv(module):
    """A 1x1 conv (groups 1, no padding) on a globally pooled [C, 1, 1] map: a dense layer on the [C] mean
    (squeeze-excitation's fc1/fc2, MobileNetV3's conv head), with the kernel's matrix."""
    if any(size != 1 for size in module.kernel_size) or module.groups != 1 or any(module.padding) \
            if not isinstance(module.padding, str) else module.padding != "valid":
        raise Unsupported("a conv other than 1x1 (groups 1, no padding) on a globally pooled map")
    layer = {"dense": module.out_channels}
    if module.bias is None:
        layer["bias"] = False
    return layer, _with_bias({"weights": array(module.weight)[:, :, 0, 0].T}, module)


def adaptive_module(module, value):
    return adaptive_avg_pool(module.output_size, value)


def identity(module, value):
    return None, None


def flatten(module, value):
    if module.start_dim != 1 or module.end_dim != -1:
        raise Unsupported(f"Flatten(start_dim={module.start_dim}, end_dim={module.end_dim}) (the spec flattens "
                          "everything but the batch)")
    return ({"flatten": {}} if len(value.shape) > 1 else None), None


MODULES = {
    nn.Linear: linear,
    nn.Conv1d: convolution, nn.Conv2d: convolution,
    nn.ConvTranspose1d: transposed_convolution, nn.ConvTranspose2d: transposed_convolution,
    nn.BatchNorm1d: batchnorm, nn.BatchNorm2d: batchnorm,
    nn.LayerNorm: layernorm, nn.Embedding: embedding, nn.MultiheadAttention: multihead_attention,
    nn.ReLU: _activation("relu"), nn.ReLU6: _activation("relu6"), nn.SiLU: _activation("swish"),
    nn.Tanh: _activation("tanh"), nn.Sigmoid: _activation("sigmoid"), nn.Hardswish: _activation("hardswish"),
    nn.Hardsigmoid: _activation("hard_sigmoid"), nn.SELU: _activation("selu"), nn.Mish: _activation("mish"),
    nn.Softsign: _activation("softsign"), nn.GELU: gelu, nn.LeakyReLU: leaky_relu, nn.ELU: elu,
    nn.Softplus: softplus, nn.Hardtanh: hardtanh, nn.Softmax: softmax,
    nn.Dropout: dropout, nn.MaxPool2d: max_pool, nn.AvgPool2d: avg_pool,
    nn.AdaptiveAvgPool2d: adaptive_module, nn.Identity: identity, nn.Flatten: flatten,
}
if hasattr(nn, "RMSNorm"):
    MODULES[nn.RMSNorm] = rmsnorm

# classes of other packages, by qualified name (their packages are not imported here)
BY_NAME = {
    "torchvision.ops.misc.StochasticDepth": stochastic_depth,
    "torchvision.ops.stochastic_depth.StochasticDepth": stochastic_depth,
    "timm.layers.drop.DropPath": stochastic_depth,
    "timm.models.vision_transformer.Attention": timm_attention,
    "timm.layers.attention.Attention": timm_attention,
}


def batchnorm_act(module, value):
    """timm's BatchNormAct2d: batchnorm, then its `act` module (its `drop` must be the identity)."""
    if not isinstance(getattr(module, "drop", nn.Identity()), nn.Identity):
        raise Unsupported("a dropout inside BatchNormAct2d")
    layers = [batchnorm(module, value) + ("",)]
    act = getattr(module, "act", nn.Identity())
    act_converter = converter(act)
    if act_converter is None:
        raise Unsupported(f"its activation {type(act).__name__}")
    if act_converter is not identity:
        layers.append(act_converter(act, value) + ("act",))
    return layers


BY_NAME["timm.layers.norm_act.BatchNormAct2d"] = batchnorm_act


def channels_layernorm(module, value):
    """ConvNeXt's LayerNorm2d (torchvision's and timm's): nn.LayerNorm over the channels of each position."""
    if tuple(module.normalized_shape) != (value.shape[0],):
        raise Unsupported(f"normalized_shape={list(module.normalized_shape)} on a map {list(value.shape)}")
    return {"layernorm": {"eps": float(module.eps), "over": "channels"}}, _norm_arrays(module)


BY_NAME["torchvision.models.convnext.LayerNorm2d"] = channels_layernorm
BY_NAME["timm.layers.linear.Linear"] = linear  # nn.Linear with a TorchScript-only cast in forward
BY_NAME["timm.layers.norm.LayerNorm"] = layernorm  # nn.LayerNorm with an optional fused kernel
BY_NAME["timm.layers.norm.LayerNorm2d"] = channels_layernorm


def converter(module):
    """The converter of `module`'s class, or None (the module is traced through). A subclass of a known class
    that keeps its forward (timm's Linear) is converted as that class."""
    kind = type(module)
    found = BY_NAME.get(f"{kind.__module__}.{kind.__qualname__}")
    if found is not None:
        return found
    for base in kind.__mro__:
        if base in MODULES:
            return MODULES[base] if kind.forward is base.forward else None
    return None

