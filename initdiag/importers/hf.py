"""A Hugging Face `config.json` (model_type bert, gpt2, llama, vit) written as a spec, one template per type.

No weights are read and the transformers package is not needed: the file is read with `json`, and the initial
values are drawn as each family's `_init_weights` draws them (huggingface/transformers,
src/transformers/models/<type>/modeling_<type>.py, read for this module):
- GPT-2: nn.Linear/Conv1D and nn.Embedding weights normal_(0, initializer_range), biases zero_(), LayerNorm 1/0,
  then every parameter named `c_proj.weight` (attention and MLP output projections) normal_(0,
  initializer_range / sqrt(2 · n_layer));
- BERT and Llama: nn.Linear and nn.Embedding weights normal_(0, initializer_range) ("slightly different from the
  TF version which uses truncated_normal"), biases zero_(), LayerNorm / RMSNorm weight 1 (bias 0);
- ViT: nn.Linear and nn.Conv2d weights trunc_normal_(0, initializer_range) (torch's default cut at ±2, absolute),
  biases zero_(), LayerNorm 1/0, and ViTEmbeddings' position_embeddings and cls_token trunc_normal_(0,
  initializer_range) as well.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, NamedTuple

from initdiag.importers.base import ImportProblem
from initdiag.importers.draft import Draft, plain as _plain
from initdiag.importers.jsonfile import read_json

MODELING = "huggingface/transformers src/transformers/models/{0}/modeling_{0}.py"

# hidden_act / activation_function -> the spec's activation (None: exact; a text: what is approximated)
TANH_GELU = {"gelu": {"approximate": "tanh"}}
ACTIVATIONS = {
    "gelu": ("gelu", None),
    "gelu_new": (TANH_GELU, None),
    "gelu_pytorch_tanh": (TANH_GELU, None),
    "gelu_fast": (TANH_GELU, "gelu_fast (0.5x(1 + tanh(0.79788x(1 + 0.044715x²)))) is written as the tanh GELU, "
                             "the same function up to rounding"),
    "relu": ("relu", None),
    "silu": ("swish", None),
    "swish": ("swish", None),
    "tanh": ("tanh", None),
}


class Template(NamedTuple):
    title: str                # the Hugging Face class the spec stands for
    required: tuple           # keys the file must set
    defaults: dict            # the config class's defaults for keys the file may leave out
    init: str                 # what _init_weights draws, in words (the header says it)
    build: Callable           # (Config) -> (summary sentence, spec keys, layers)


# ------------------------------------------------------------------------------ reading the config


class Config:
    """The config's values with HF's defaults for absent optional keys; each read is checked and located."""

    def __init__(self, values: dict, template: Template, path: Path, steps: int | None, batch: int | None,
                 depth_cap: int | None):
        self.values, self.template, self.path = values, template, path
        self.steps, self.batch, self.depth_cap = steps, batch, depth_cap
        self.capped: tuple[int, int] | None = None  # (blocks written, blocks in the model) under --layers
        self.defaulted: list[str] = []     # optional keys the file left out (HF's default used)
        self.approximated: list[str] = []  # what the spec does not reproduce exactly

    def raw(self, key: str):
        if key in self.values and self.values[key] is not None:
            return self.values[key]
        if key in self.template.required or key not in self.template.defaults:
            raise ImportProblem(f"{self.path}: missing key '{key}' (a {self.values['model_type']} config needs it)")
        value = self.template.defaults[key]
        self.defaulted.append(f"{key} = {_plain(value)}")
        return value

    def count(self, key: str, default=None) -> int:
        if default is not None and self.values.get(key) is None:
            self.defaulted.append(f"{key} = {default}")
            value = default
        else:
            value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ImportProblem(f"{self.path}: {key}: expected a whole number ≥ 1, not {json.dumps(value)}")
        return value

    def number(self, key: str) -> float:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
            raise ImportProblem(f"{self.path}: {key}: expected a number > 0, not {json.dumps(value)}")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise ImportProblem(f"{self.path}: {key}: expected true or false, not {json.dumps(value)}")
        return value

    def activation(self, key: str):
        name = self.raw(key)
        if name not in ACTIVATIONS:
            raise ImportProblem(f"{self.path}: {key}: activation {json.dumps(name)} has no equivalent here; "
                                f"known: {', '.join(ACTIVATIONS)}")
        spec_name, note = ACTIVATIONS[name]
        if note:
            self.approximated.append(note)
        return spec_name

    def depth(self, key: str) -> int:
        blocks = self.count(key)
        if self.depth_cap and self.depth_cap < blocks:
            self.capped = (self.depth_cap, blocks)
            return self.depth_cap
        return blocks

    def init_std(self) -> float:
        return self.number("initializer_range")


# ------------------------------------------------------------------------------ the templates


def _eps(value: float, default: float) -> dict:
    """{'eps': value}, or nothing when it is the kind's own default."""
    return {} if value == default else {"eps": value}


def _text_input(config: Config, positions_key: str) -> dict:
    positions = config.count(positions_key)
    steps = config.steps or min(positions, 128)
    if steps > positions:
        raise ImportProblem(f"{config.path}: --steps {steps} is more than {positions_key} = {positions}, "
                            "the longest sequence the model has positions for")
    return {"input": [steps], "input_distribution": "tokens", "batch": config.batch or 4, "loss": "cross_entropy"}


def _gpt2(config: Config):
    dim, heads, vocab, blocks = config.count("n_embd"), config.count("n_head"), config.count("vocab_size"), config.count("n_layer")
    ffn = config.count("n_inner", default=4 * dim)
    eps, std = config.number("layer_norm_epsilon"), config.init_std()
    scaled = {"normal": {"std": std / math.sqrt(2 * blocks)}}
    block = {"dim": dim, "heads": heads, "ffn": ffn, "activation": config.activation("activation_function"),
             "norm": "pre", **_eps(eps, 1e-5), "causal": True}
    head = {"dense": vocab, "tie": "wte", "bias": False} if config.flag("tie_word_embeddings") else {"dense": vocab, "bias": False}
    layers = [{"embedding": {"vocab": vocab, "dim": dim}, "name": "wte"},
              {"position_embedding": {}, "name": "wpe"},
              *({"transformer": block, "inits": {"attention.output_weights": scaled, "ffn.out_weights": scaled},
                 "name": f"h.{index}"} for index in range(config.depth("n_layer"))),
              {"layernorm": _eps(eps, 1e-5), "name": "ln_f"},
              {**head, "name": "lm_head"}]
    summary = (f"token and position embeddings, {blocks} pre-norm causal blocks ({dim} wide, {heads} heads, "
               f"MLP {ffn}), a final layernorm and the language-model head"
               + (" tied to the token embedding" if "tie" in head else ""))
    return summary, _text_input(config, "n_positions"), layers


def _llama(config: Config):
    dim, heads, vocab = config.count("hidden_size"), config.count("num_attention_heads"), config.count("vocab_size")
    kv_heads, ffn = config.count("num_key_value_heads", default=heads), config.count("intermediate_size")
    blocks, eps = config.count("num_hidden_layers"), config.number("rms_norm_eps")
    gate = config.raw("hidden_act")
    if gate not in ("silu", "swish", "gelu"):
        raise ImportProblem(f"{config.path}: hidden_act: the gated FFN has no kind with a {json.dumps(gate)} gate; "
                            "known: silu (swiglu), gelu (geglu)")
    attention_bias, mlp_bias = config.flag("attention_bias"), config.flag("mlp_bias")
    if attention_bias != mlp_bias:
        config.approximated.append(f"attention_bias {str(attention_bias).lower()} and mlp_bias "
                                   f"{str(mlp_bias).lower()}: one bias flag covers both (biases start at 0, so the "
                                   "forward pass is the same)")
    head_dim = config.values.get("head_dim")
    if head_dim is not None and head_dim != dim // heads:
        raise ImportProblem(f"{config.path}: head_dim: {head_dim} is not hidden_size / num_attention_heads "
                            f"({dim // heads}); the transformer kind has no separate head size")
    if config.values.get("rope_scaling"):
        config.approximated.append("rope_scaling is ignored (plain RoPE at positions 0 … steps−1; the scaling "
                                   "matters beyond the original context only)")
    block = {"dim": dim, "heads": heads, "kv_heads": kv_heads, "ffn": ffn,
             "ffn_kind": "swiglu" if gate in ("silu", "swish") else "geglu", "norm": "pre", "norm_kind": "rmsnorm",
             "eps": eps, "bias": attention_bias or mlp_bias, "rotary": True,
             "rotary_base": config.number("rope_theta"), "causal": True}
    tied = config.flag("tie_word_embeddings")
    layers = [{"embedding": {"vocab": vocab, "dim": dim}, "name": "embed_tokens"},
              *({"transformer": block, "name": f"layers.{index}"} for index in range(config.depth("num_hidden_layers"))),
              {"rmsnorm": {"eps": eps}, "name": "norm"},
              {"dense": vocab, **({"tie": "embed_tokens"} if tied else {}), "bias": False, "name": "lm_head"}]
    summary = (f"a token embedding, {blocks} pre-norm causal blocks with RMSNorm ({dim} wide, {heads} query heads "
               f"sharing {kv_heads} key/value heads, rotary embeddings base {_plain(block['rotary_base'])}, SwiGLU "
               f"FFN {ffn}), a final RMSNorm and the language-model head" + (" tied to the embedding" if tied else ""))
    return summary, _text_input(config, "max_position_embeddings"), layers


def _bert(config: Config):
    dim, heads, vocab = config.count("hidden_size"), config.count("num_attention_heads"), config.count("vocab_size")
    ffn, blocks, eps = config.count("intermediate_size"), config.count("num_hidden_layers"), config.number("layer_norm_eps")
    if config.raw("position_embedding_type") != "absolute":
        raise ImportProblem(f"{config.path}: position_embedding_type: only 'absolute' has an equivalent here, "
                            f"not {json.dumps(config.raw('position_embedding_type'))}")
    config.approximated.append("the token type embeddings (type_vocab_size rows) are left out: with every "
                               "token_type_id 0 they add one N(0, initializer_range²) vector to every token "
                               "before the embedding layernorm")
    block = {"dim": dim, "heads": heads, "ffn": ffn, "activation": config.activation("hidden_act"), "norm": "post",
             **_eps(eps, 1e-5)}
    layers = [{"embedding": {"vocab": vocab, "dim": dim}, "name": "embeddings.word_embeddings"},
              {"position_embedding": {}, "name": "embeddings.position_embeddings"},
              {"layernorm": _eps(eps, 1e-5), "name": "embeddings.LayerNorm"},
              *({"transformer": block, "name": f"encoder.layer.{index}"} for index in range(config.depth("num_hidden_layers"))),
              {"select": 0, "name": "pooler.first_token"},
              {"dense": dim, "activation": "tanh", "name": "pooler.dense"}]
    summary = (f"word and position embeddings and their layernorm, {blocks} post-norm blocks ({dim} wide, {heads} "
               f"heads, FFN {ffn}), and the pooler: the first token's features through a dense tanh layer")
    spec_keys = _text_input(config, "max_position_embeddings")
    spec_keys.pop("loss")  # the pooled features feed a task head: the default loss
    return summary, spec_keys, layers


def _pair(config: Config, key: str) -> tuple[int, int]:
    value = config.raw(key)
    pair = value if isinstance(value, list) and len(value) == 2 else [value, value]
    for item in pair:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ImportProblem(f"{config.path}: {key}: expected a whole number ≥ 1 or two of them, not {json.dumps(value)}")
    return pair[0], pair[1]


def _vit(config: Config):
    if config.steps:
        raise ImportProblem(f"--steps: a vit model's sequence is its patches (image_size / patch_size squared, "
                            f"plus the class token); {config.path} sets them")
    dim, heads, ffn = config.count("hidden_size"), config.count("num_attention_heads"), config.count("intermediate_size")
    blocks, eps, std = config.count("num_hidden_layers"), config.number("layer_norm_eps"), config.init_std()
    image, patch, channels = _pair(config, "image_size"), _pair(config, "patch_size"), config.count("num_channels")
    labels = len(config.values["id2label"]) if isinstance(config.values.get("id2label"), dict) else config.count("num_labels")
    if not config.flag("qkv_bias"):
        config.approximated.append("qkv_bias false: the block's one bias flag keeps the query/key/value biases "
                                   "(they start at 0, so the forward pass is the same)")
    if std > 0.2:
        config.approximated.append(f"trunc_normal_(std={_plain(std)}) cuts at ±2 (absolute), {2 / std:.1f}σ: "
                                   "written as the untruncated N(0, std²)")
    block = {"dim": dim, "heads": heads, "ffn": ffn, "activation": config.activation("hidden_act"), "norm": "pre",
             **_eps(eps, 1e-5)}
    layers = [{"patchify": {"patch": patch[0] if patch[0] == patch[1] else list(patch), "dim": dim},
               "name": "embeddings.patch_embeddings"},
              {"class_token": {"std": std}, "name": "embeddings.cls_token"},
              {"position_embedding": {}, "name": "embeddings.position_embeddings"},
              *({"transformer": block, "name": f"encoder.layer.{index}"} for index in range(config.depth("num_hidden_layers"))),
              {"layernorm": _eps(eps, 1e-5), "name": "layernorm"},
              {"select": 0, "name": "cls"},
              {"dense": labels, "name": "classifier"}]
    summary = (f"{patch[0]}x{patch[1]} patches embedded to {dim} features, a class token and position embedding, "
               f"{blocks} pre-norm blocks ({heads} heads, MLP {ffn}), a final layernorm, the class token's features "
               f"and a {labels}-way classifier")
    spec_keys = {"input": [channels, *image], "batch": config.batch or 8, "loss": "cross_entropy"}
    return summary, spec_keys, layers


_NORMAL = "every nn.Linear and nn.Embedding weight normal_(0, initializer_range), biases 0, norms' weights 1"
TEMPLATES = {
    "bert": Template("BertModel with its pooler",
                     ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
                     {"hidden_act": "gelu", "max_position_embeddings": 512, "layer_norm_eps": 1e-12,
                      "initializer_range": 0.02, "position_embedding_type": "absolute"},
                     _NORMAL, _bert),
    "gpt2": Template("GPT2LMHeadModel", ("vocab_size", "n_embd", "n_layer", "n_head"),
                     {"n_positions": 1024, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
                      "initializer_range": 0.02, "tie_word_embeddings": True},
                     _NORMAL + "; then each block's two residual projections (attn.c_proj, mlp.c_proj) "
                     "normal_(0, initializer_range / sqrt(2 · n_layer)): the `inits:` below", _gpt2),
    "llama": Template("LlamaForCausalLM",
                      ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"),
                      {"hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
                       "rope_theta": 10000.0, "attention_bias": False, "mlp_bias": False,
                       "initializer_range": 0.02, "tie_word_embeddings": False},
                      _NORMAL, _llama),
    "vit": Template("ViTForImageClassification",
                    ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                     "patch_size"),
                    {"num_channels": 3, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
                     "qkv_bias": True, "num_labels": 1000},
                    "every nn.Linear and nn.Conv2d weight trunc_normal_(0, initializer_range) (cut at ±2, absolute: "
                    "at std 0.02 that is ±100σ, a draw is never cut, so N(0, std²) is the same distribution), biases 0, "
                    "layernorms 1/0, the cls token and position embeddings trunc_normal_(0, initializer_range) too",
                    _vit),
}


DROPOUTS = ("embd_pdrop", "resid_pdrop", "attn_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob",
            "attention_dropout")


def _common_notes(config: Config, model_type: str) -> None:
    """What every template leaves out: dropout, and the padding token's zeroed embedding row."""
    rates = [f"{key} = {_plain(config.values[key])}" for key in DROPOUTS
             if isinstance(config.values.get(key), (int, float)) and config.values[key] > 0]
    if rates:
        config.approximated.append(f"dropout ({', '.join(rates)}) is left out: the blocks run as in evaluation")
    pad = config.values.get("pad_token_id", 0 if model_type == "bert" else None)
    if model_type in ("bert", "llama") and pad is not None:
        config.approximated.append(f"the embedding row of the padding token (pad_token_id = {pad}), zeroed by "
                                   "nn.Embedding(padding_idx=...), is drawn like the others")


# ------------------------------------------------------------------------------ the import


def read_config(path) -> dict:
    """The config file's JSON object; ImportProblem (located) if it cannot be read or is not one."""
    return read_json(path, "a Hugging Face config.json")


def import_config(path, *, steps: int | None = None, batch: int | None = None, layers: int | None = None) -> Draft:
    """The spec for the Hugging Face config at `path`: a header comment (source, init rules, what was
    approximated or defaulted), then the spec. `steps` sets a text model's sequence length (default
    min(positions, 128)), `batch` the batch, `layers` caps the number of blocks. Raises ImportProblem."""
    path = Path(path)
    values = read_config(path)
    model_type = values.get("model_type")
    if model_type is None:
        raise ImportProblem(f"{path}: missing key 'model_type' (supported: {', '.join(TEMPLATES)})")
    if model_type not in TEMPLATES:
        raise ImportProblem(f"{path}: model_type {json.dumps(model_type)} is not supported; "
                            f"supported: {', '.join(TEMPLATES)}")
    template = TEMPLATES[model_type]
    config = Config(values, template, path, steps, batch, layers)
    summary, spec_keys, spec_layers = template.build(config)
    _common_notes(config, model_type)
    std = config.init_std()
    header = [f"{template.title} (model_type {model_type}), imported by `initdiag import hf` from {path}; no weights were read.",
              f"Architecture: {summary}.",
              f"Init as Hugging Face's _init_weights ({MODELING.format(model_type)}): {template.init}; "
              f"initializer_range = {_plain(std)}."]
    if config.capped:
        header.append(f"Depth capped for a quick check (--layers {layers}): {config.capped[0]} of the model's "
                      f"{config.capped[1]} blocks are written (the init keeps the full model's numbers).")
    header.append("Approximated: " + ("; ".join(config.approximated) if config.approximated else "nothing") + ".")
    if config.defaulted:
        header.append("Not in the file, so Hugging Face's defaults: " + ", ".join(dict.fromkeys(config.defaulted)) + ".")
    draft = Draft(values.get("_name_or_path") or f"hf-{model_type}")
    draft.header = header
    draft.keys.update(spec_keys)
    draft.keys["defaults"] = {"init": {"normal": {"std": std}}}
    for layer in spec_layers:
        draft.add(layer)
    return draft
