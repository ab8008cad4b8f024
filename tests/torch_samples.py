"""The sample networks of issue 10 written in PyTorch, with the module names the sample specs use (torchvision's
for ResNet-18, MobileNetV2 and GoogLeNet; timm's, Hugging Face's for ViT, GPT-2 and Llama), so that a spec layer
and the torch module it stands for share one name. torch is imported by the test that uses this module.

Each builder returns an nn.Module whose forward takes the batch initdiag drew (images, or token ids).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


# ------------------------------------------------------------------ convolutional networks
class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision.models.resnet18's structure and names."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, inplanes = (64, 128, 256, 512), 64
        for stage, width in enumerate(widths, start=1):
            blocks = []
            for block in range(2):
                blocks.append(BasicBlock(inplanes, width, 2 if stage > 1 and block == 0 else 1))
                inplanes = width
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _conv_bn_relu6(inp: int, out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6())


class InvertedResidual(nn.Module):
    """torchvision.models.mobilenetv2.InvertedResidual."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == oup
        layers = [_conv_bn_relu6(inp, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2's structure and names (width 1.0)."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        features = [_conv_bn_relu6(3, 32, 3, 2)]
        channels = 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                features.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        features.append(_conv_bn_relu6(channels, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class BasicConv2d(nn.Module):
    """torchvision.models.googlenet.BasicConv2d: conv (no bias), batchnorm eps 0.001, ReLU."""

    def __init__(self, inp: int, out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(inp, out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """torchvision.models.googlenet.Inception (its "5x5" branch is a 3x3, as torchvision's)."""

    def __init__(self, inp, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        self.branch1 = BasicConv2d(inp, c1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(inp, c3r, 1), BasicConv2d(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(inp, c5r, 1), BasicConv2d(c5r, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(inp, pool, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionStart(nn.Module):
    """GoogLeNet's stem and inception blocks 3a and 3b (torchvision's names), the mean and a 1000-way fc."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(480, classes)

    def forward(self, x):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.inception3b(self.inception3a(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ConvBnRelu(nn.Module):
    def __init__(self, inp: int, out: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inp, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)
        self.conv2, self.bn2 = nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)
        self.relu1 = nn.ReLU()

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class UNetLike(nn.Module):
    """sample_specs/unet_like.yaml: two encoder stages, a bottleneck, two decoder stages with concat skips."""

    def __init__(self):
        super().__init__()
        self.enc1, self.pool1 = ConvBnRelu(3, 16), nn.MaxPool2d(2)
        self.enc2, self.pool2 = ConvBnRelu(16, 32), nn.MaxPool2d(2)
        self.bottleneck = ConvBnRelu(32, 64)
        self.up2, self.dec2 = nn.ConvTranspose2d(64, 32, 2, 2), ConvBnRelu(64, 32)
        self.up1, self.dec1 = nn.ConvTranspose2d(32, 16, 2, 2), ConvBnRelu(32, 16)
        self.out = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        enc1 = self.enc1(x)
        enc2 = self.enc2(self.pool1(enc1))
        bottom = self.bottleneck(self.pool2(enc2))
        dec2 = self.dec2(torch.cat([self.up2(bottom), enc2], 1))
        dec1 = self.dec1(torch.cat([self.up1(dec2), enc1], 1))
        return self.out(dec1)


# ------------------------------------------------------------------ transformers
def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rope(x, base: float):
    """Hugging Face Llama's rotary embedding on (batch, heads, steps, head_dim)."""
    steps, dim = x.shape[-2], x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, dim, 2, dtype=x.dtype) / dim)
    angles = torch.outer(torch.arange(steps, dtype=x.dtype), inv)
    emb = torch.cat([angles, angles], dim=-1)
    return x * emb.cos() + rotate_half(x) * emb.sin()


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_heads, bias, rotary_base, causal):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.rotary_base, self.causal = rotary_base, causal
        self.query = nn.Linear(dim, dim, bias=bias)
        self.key = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.value = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.output = nn.Linear(dim, dim, bias=bias)

    def forward(self, x):
        batch, steps, _ = x.shape
        split = lambda t, h: t.view(batch, steps, h, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x), self.heads), split(self.key(x), self.kv_heads), split(self.value(x), self.kv_heads)
        if self.rotary_base:
            q, k = rope(q, self.rotary_base), rope(k, self.rotary_base)
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.output(out.transpose(1, 2).reshape(batch, steps, -1))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, kind, activation, bias):
        super().__init__()
        self.kind, self.activation = kind, activation
        setattr(self, "in", nn.Linear(dim, hidden, bias=bias))
        if kind != "mlp":
            self.gate = nn.Linear(dim, hidden, bias=bias)
        self.out = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x):
        up = getattr(self, "in")(x)
        if self.kind == "mlp":
            return self.out(self.activation(up))
        gate = F.silu(self.gate(x)) if self.kind == "swiglu" else F.gelu(self.gate(x))
        return self.out(gate * up)


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm1(x)), then + ffn(norm2(·))."""

    def __init__(self, dim, heads, ffn, *, kv_heads=None, bias=True, eps=1e-5, norm_kind="layernorm", ffn_kind="mlp",
                 activation=F.gelu, rotary_base=0.0, causal=False):
        super().__init__()
        norm = (lambda: nn.LayerNorm(dim, eps=eps)) if norm_kind == "layernorm" else (lambda: nn.RMSNorm(dim, eps=eps))
        self.norm1, self.norm2 = norm(), norm()
        self.attention = Attention(dim, heads, kv_heads or heads, bias, rotary_base, causal)
        self.ffn = FeedForward(dim, ffn, ffn_kind, activation, bias)

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class ViTTiny(nn.Module):
    """timm's vit_tiny_patch16_224 structure and names (patch_embed, cls_token, pos_embed, blocks, norm, head)."""

    def __init__(self, blocks: int = 12, dim: int = 192, classes: int = 1000, patch: int = 16, size: int = 224):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (size // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, 3, 4 * dim, eps=1e-6) for _ in range(blocks)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class GPT2Like(nn.Module):
    """GPT-2 small's structure (Hugging Face's names wte, wpe, h, ln_f, lm_head), the head tied to wte."""

    def __init__(self, blocks: int = 12, dim: int = 768, vocab: int = 50257, steps: int = 64):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Parameter(torch.zeros(steps, dim))
        gelu = lambda z: F.gelu(z, approximate="tanh")  # noqa: E731
        self.h = nn.Sequential(*(Block(dim, 12, 4 * dim, activation=gelu, causal=True) for _ in range(blocks)))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, tokens):
        return self.lm_head(self.ln_f(self.h(self.wte(tokens) + self.wpe)))


class LlamaLike(nn.Module):
    """sample_specs/llama_like.yaml (Hugging Face's names embed_tokens, layers, norm, lm_head)."""

    def __init__(self, blocks: int = 8, dim: int = 512, vocab: int = 32000):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.Sequential(*(Block(dim, 8, 1376, kv_heads=2, bias=False, eps=1e-6, norm_kind="rmsnorm",
                                            ffn_kind="swiglu", rotary_base=10000.0, causal=True) for _ in range(blocks)))
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens):
        return self.lm_head(self.norm(self.layers(self.embed_tokens(tokens))))


MODELS = {
    "resnet18.yaml": ResNet18, "mobilenet_v2.yaml": MobileNetV2, "unet_like.yaml": UNetLike,
    "inception_like.yaml": InceptionStart, "vit_tiny.yaml": ViTTiny, "gpt2_small_like.yaml": GPT2Like,
    "llama_like.yaml": LlamaLike,
}
