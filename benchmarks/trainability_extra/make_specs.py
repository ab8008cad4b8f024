#!/usr/bin/env python3
"""Write the extra labelled specs (same families and YAML style as /work/shared/trainability/specs)."""
import math
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "specs")
HEAD_DENSE = "- dense: 10\n  activation: softmax\n  init: xavier\n  bias_init: 0.0\n"
specs = {}


def fmt_init(init):
    return init if isinstance(init, str) else init  # already a YAML string


def mlp(act, depth, init, init_name, width=128, tag=None, desc=None):
    name = f"mlp_{act}_d{depth}_{tag or init_name}"
    d = desc or f"init {init}"
    if width == 128:
        c = f"# digits MLP: {depth} hidden dense layers of {width}, {act}, {d}\n"
    else:
        c = f"# digits MLP: {depth} hidden dense layers of {width}, {act}, {d}\n"
    s = c + f"name: {name}\ninput: [64]\ndefaults:\n  init: {init}\n  activation: {act}\nlayers:\n"
    s += f"- dense: {width}\n" * depth + HEAD_DENSE
    specs[name] = s


def grid(sw, depth):
    g = round(math.sqrt(sw), 6)
    gs = f"{g:.6f}".rstrip("0").rstrip(".") if g != int(g) else f"{g:.1f}"
    sws = f"{sw:g}"
    name = f"grid_tanh_sw{sws}_d{depth}"
    s = (f"# Schoenholz et al. 2017 grid: tanh, sigma_w^2 = {sws} (weights N(0, sigma_w^2/fan_in)),\n"
         f"# sigma_b^2 = 0.05 as the constant bias 0.2236 in every hidden unit, {depth} hidden layers of 128\n"
         f"name: {name}\ninput: [64]\ndefaults:\n  init: {{lecun_normal: {{gain: {gs}}}}}\n  activation: tanh\n"
         f"  bias_init: 0.223607\nlayers:\n")
    s += "- dense: 128\n" * depth + HEAD_DENSE
    specs[name] = s


def res(act, blocks, init, init_name, scale, preln=False):
    sc = f"{scale:g}"
    name = f"res_{act}_b{blocks}_{init_name}_s{sc}" + ("_preln" if preln else "")
    f = ("layernorm, " if preln else "") + f"dense {act} ({init}), dense identity ({init})"
    s = (f"# residual MLP on digits: dense 128 (relu, He), {blocks} blocks y = x + {sc}*f(x),\n# f = {f}\n"
         f"name: {name}\ninput: [64]\ndefaults:\n  init: relu\n  activation: relu\nlayers:\n"
         f"- dense: 128\n  activation: relu\n  init: relu\n")
    blk = "- residual:\n"
    if preln:
        blk += "    - layernorm: {}\n"
    blk += (f"    - dense: 128\n      activation: {act}\n      init: {init}\n"
            f"    - dense: 128\n      activation: identity\n      init: {init}\n  scale: {float(scale)}\n")
    s += blk * blocks + HEAD_DENSE
    specs[name] = s


CONV = "{filters: 16, kernel: 3, padding: same}"


def cnn(depth, init, init_name):
    name = f"cnn{depth}_relu_{init_name}"
    s = (f"# plain deep CNN on digits 1x8x8: {depth} conv 3x3 of 16 channels, relu, init {init}; flatten, dense 10\n"
         f"name: {name}\ninput: [1, 8, 8]\ndefaults:\n  init: {init}\n  activation: relu\nlayers:\n")
    s += f"- conv2d: {CONV}\n" * depth + "- flatten: {}\n" + HEAD_DENSE
    specs[name] = s


def rescnn(blocks, init, init_name, scale, bn=False):
    sc = f"{scale:g}"
    name = f"rescnn{blocks}_{init_name}_s{sc}" + ("_bn" if bn else "")
    f = "conv relu bn conv identity bn" if bn else "conv relu conv identity"
    s = (f"# residual CNN on digits 1x8x8: conv16 then {blocks} blocks y = x + {sc}*f(x), f = {f}; init {init}; "
         f"flatten, dense 10\nname: {name}\ninput: [1, 8, 8]\ndefaults:\n  init: {init}\n  activation: relu\nlayers:\n"
         f"- conv2d: {CONV}\n")
    blk = "- residual:\n" + f"    - conv2d: {CONV}\n"
    if bn:
        blk += "    - batchnorm: {}\n"
    blk += f"    - conv2d: {CONV}\n      activation: identity\n"
    if bn:
        blk += "    - batchnorm: {}\n"
    blk += f"  scale: {float(scale)}\n"
    s += blk * blocks + "- flatten: {}\n" + HEAD_DENSE
    specs[name] = s


def rnn(kind, name_tail, init, rec, extra="", desc_extra=""):
    name = f"rnn_{name_tail}"
    s = (f"# {kind} (64 units) on the memory task (remember the first of 10 symbols): input weights {init}, "
         f"recurrent {rec}{desc_extra}\nname: {name}\ninput: [10, 16]\ndefaults:\n  init: xavier\nlayers:\n"
         f"- {kind}: {{units: 64, return_sequences: false{extra}}}\n  init: {init}\n  recurrent_init: {rec}\n"
         f"- dense: 8\n  activation: softmax\n  init: xavier\n  bias_init: 0.0\n")
    specs[name] = s


def tf(blocks, norm, init, init_name):
    name = f"tf{blocks}_{norm}_{init_name}"
    final = norm == "pre"
    s = (f"# transformer encoder, {blocks} {norm}-norm blocks (dim 32, 4 heads, ffn 64, gelu), init {init}, "
         + ("final layernorm, " if final else "") + "flatten, dense 4; pair task\n"
         f"name: {name}\ninput: [12, 32]\ndefaults:\n  init: {init}\nlayers:\n")
    s += f"- transformer: {{heads: 4, dim: 32, ffn: 64, activation: gelu, norm: {norm}}}\n" * blocks
    if final:
        s += "- layernorm: {}\n"
    s += "- flatten: {}\n- dense: 4\n  activation: softmax\n  init: xavier\n  bias_init: 0.0\n"
    specs[name] = s


# --- plain MLPs ---------------------------------------------------------------------------------------------------
mlp("relu", 30, "relu", "he")
mlp("relu", 50, "relu", "he")
mlp("relu", 70, "relu", "he", width=64)
mlp("relu", 20, "xavier", "xavier")
mlp("relu", 30, "xavier", "xavier", width=64)
TD = "PyTorch's own nn.Linear init (weights and biases U(+-1/sqrt(fan_in)))"
mlp("relu", 5, "torch_default", "torch_default", desc=TD)
mlp("relu", 20, "torch_default", "torch_default", width=64, desc=TD)
mlp("tanh", 30, "xavier", "xavier")
mlp("tanh", 5, "{normal: {std: 0.05}}", None, tag="std0.05")
mlp("tanh", 10, "{normal: {std: 0.3}}", None, tag="std0.3")
mlp("tanh", 10, "normal", "normal")
mlp("sigmoid", 5, "xavier", "xavier")
mlp("sigmoid", 10, "xavier", "xavier")
mlp("gelu", 20, "relu", "he")
mlp("selu", 20, "lecun_normal", "lecun")
mlp("selu", 5, "normal", "normal")
# --- Schoenholz grid (tanh, sigma_b^2 = 0.05, width 128) ---------------------------------------------------------
grid(1, 30)
grid(1.2, 40)
grid(2.5, 40)
grid(3, 20)
grid(3.5, 40)
# --- residual MLPs ------------------------------------------------------------------------------------------------
res("relu", 5, "relu", "he", 1.0)
res("relu", 20, "relu", "he", 0.2)
res("relu", 10, "relu", "he", 1.0, preln=True)
res("tanh", 10, "xavier", "xavier", 1.0)
# --- CNNs ---------------------------------------------------------------------------------------------------------
cnn(6, "relu", "he")
cnn(6, "normal", "normal")
cnn(18, "relu", "he")
cnn(18, "xavier", "xavier")
rescnn(4, "normal", "normal", 1.0)
rescnn(8, "relu", "he", 0.5, bn=True)
# --- recurrent (memory task) --------------------------------------------------------------------------------------
rnn("rnn", "tanh_rec_normal", "xavier", "normal")
rnn("rnn", "tanh_rec_std0.1", "xavier", "{normal: {std: 0.1}}")
rnn("rnn", "relu_orth", "xavier", "orthogonal", extra=", activation: relu", desc_extra=", relu activation")
rnn("lstm", "lstm_nofb_rec_std0.1", "xavier", "{normal: {std: 0.1}}", extra=", forget_bias: 0.0",
    desc_extra=", forget_bias 0")
rnn("lstm", "lstm_rec_std0.5", "xavier", "{normal: {std: 0.5}}")
rnn("gru", "gru_rec_small", "xavier", "{normal: {std: 0.01}}")
# --- transformers (pair task) -------------------------------------------------------------------------------------
tf(4, "post", "xavier", "xavier")
tf(8, "pre", "xavier", "xavier")
tf(2, "pre", "{normal: {std: 0.02}}", "normal0.02")
tf(4, "post", "{normal: {std: 0.02}}", "normal0.02")

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, text in specs.items():
        with open(os.path.join(OUT, name + ".yaml"), "w") as f:
            f.write(text)
    print(len(specs), "specs written to", OUT)
