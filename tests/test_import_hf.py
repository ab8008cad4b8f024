"""`initdiag import hf config.json`: a Hugging Face config (bert, gpt2, llama, vit) written as a spec.

Each family: a tiny config.json with the fields as Hugging Face names them is imported, the spec parses and
`initdiag check` runs on it (exit 0 or 1, never a traceback), and its structure carries the config's numbers
and the family's init rules. Then the real GPT-2 small config gives sample_specs/gpt2_small_like.yaml's layers;
errors are located lines with exit 2; the output is never written over the input or an existing file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from conftest import invoke
from initdiag import spec
from initdiag.importers import IMPORTERS, ImportProblem
from initdiag.importers import hf

ROOT = Path(__file__).resolve().parent.parent

GPT2 = {"model_type": "gpt2", "vocab_size": 97, "n_embd": 32, "n_layer": 3, "n_head": 4, "n_positions": 64,
        "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}
LLAMA = {"model_type": "llama", "vocab_size": 101, "hidden_size": 32, "intermediate_size": 88, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 256,
         "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "attention_bias": False, "initializer_range": 0.02,
         "tie_word_embeddings": True}
BERT = {"model_type": "bert", "vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "hidden_act": "gelu", "max_position_embeddings": 40, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": 0}
VIT = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
       "hidden_act": "gelu", "image_size": 16, "patch_size": 4, "num_channels": 3, "layer_norm_eps": 1e-12,
       "initializer_range": 0.02, "qkv_bias": True, "id2label": {"0": "cat", "1": "dog", "2": "bird"}}


def _config(tmp_path: Path, values: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(values, indent=2), encoding="utf-8")
    return path


def _import(tmp_path: Path, values: dict, *options) -> tuple[Path, dict]:
    """Import `values` through the CLI into model.yaml; the path and the spec as YAML data."""
    out = tmp_path / "model.yaml"
    result = invoke("import", "hf", _config(tmp_path, values), "-o", out, *options)
    assert result.exit_code == 0, result.stderr
    return out, yaml.safe_load(out.read_text(encoding="utf-8"))


def _checks(path: Path, healthy: bool = True) -> None:
    """The spec parses and `check` runs; the text models get the verdict that matches how they train (the
    issue's "healthy"); HF's ViT init really shrinks the patch embedding's output (N(0, 0.02²) on a fan_in of
    C·p²), a warning."""
    spec.load(path)  # parses: every layer known, every option valid
    result = invoke("check", path)
    assert result.exit_code in (0, 1), result.stderr
    assert "verdict: healthy" in result.stdout if healthy else "verdict:" in result.stdout


def _blocks(data: dict) -> list[dict]:
    return [layer for layer in data["layers"] if "transformer" in layer]


def test_gpt2_config_imports_with_scaled_projections_and_a_tied_head(tmp_path):
    path, data = _import(tmp_path, GPT2)
    blocks = _blocks(data)
    assert len(blocks) == 3 and data["input"] == [64] and data["input_distribution"] == "tokens"
    assert blocks[0]["transformer"] == {"dim": 32, "heads": 4, "ffn": 128, "activation": {"gelu": {"approximate": "tanh"}},
                                        "norm": "pre", "causal": True}
    std = 0.02 / math.sqrt(2 * 3)
    assert all(block["inits"] == {"attention.output_weights": {"normal": {"std": std}},
                                  "ffn.out_weights": {"normal": {"std": std}}} for block in blocks)
    assert data["defaults"]["init"] == {"normal": {"std": 0.02}}
    assert data["layers"][-1] == {"dense": 97, "tie": "wte", "bias": False, "name": "lm_head"}
    header = path.read_text(encoding="utf-8").split("\nname:")[0]
    assert "dropout" in header and "no weights were read" in header and "modeling_gpt2.py" in header
    _checks(path)


def test_llama_config_imports_with_gqa_rotary_and_rmsnorm(tmp_path):
    path, data = _import(tmp_path, LLAMA, "--steps", "16", "--batch", "2")
    blocks = _blocks(data)
    assert len(blocks) == 2 and data["input"] == [16] and data["batch"] == 2
    block = blocks[0]["transformer"]
    assert block["kv_heads"] == 2 and block["heads"] == 4 and block["ffn"] == 88
    assert block["rotary"] is True and block["rotary_base"] == 500000.0
    assert (block["ffn_kind"], block["norm_kind"], block["eps"], block["bias"], block["causal"]) == \
        ("swiglu", "rmsnorm", 1e-6, False, True)
    assert data["layers"][-2] == {"rmsnorm": {"eps": 1e-6}, "name": "norm"}
    assert data["layers"][-1] == {"dense": 101, "tie": "embed_tokens", "bias": False, "name": "lm_head"}
    _checks(path)


def test_an_untied_llama_head_has_its_own_matrix(tmp_path):
    _, data = _import(tmp_path, {**LLAMA, "tie_word_embeddings": False})
    assert data["layers"][-1] == {"dense": 101, "bias": False, "name": "lm_head"}
    assert data["input"] == [128]  # min(max_position_embeddings, 128)


def test_bert_config_imports_as_post_norm_encoder_with_its_pooler(tmp_path):
    path, data = _import(tmp_path, BERT)
    kinds = [next(iter(layer)) for layer in data["layers"]]
    assert kinds == ["embedding", "position_embedding", "layernorm", "transformer", "transformer", "select", "dense"]
    assert data["input"] == [40]  # max_position_embeddings below 128
    assert _blocks(data)[0]["transformer"] == {"dim": 32, "heads": 2, "ffn": 64, "activation": "gelu", "norm": "post",
                                               "eps": 1e-12}
    assert data["layers"][-1] == {"dense": 32, "activation": "tanh", "name": "pooler.dense"}
    header = path.read_text(encoding="utf-8").split("\nname:")[0]
    assert "token type embeddings" in header and "pad_token_id = 0" in header
    _checks(path)


def test_vit_config_imports_with_hf_truncated_normal_rules(tmp_path):
    path, data = _import(tmp_path, VIT)
    assert data["input"] == [3, 16, 16] and "input_distribution" not in data
    kinds = [next(iter(layer)) for layer in data["layers"]]
    assert kinds == ["patchify", "class_token", "position_embedding", "transformer", "transformer", "layernorm",
                     "select", "dense"]
    assert data["layers"][0]["patchify"] == {"patch": 4, "dim": 32}
    assert data["layers"][1]["class_token"] == {"std": 0.02}  # cls_token trunc_normal_(std=initializer_range)
    assert data["layers"][-1] == {"dense": 3, "name": "classifier"}  # len(id2label)
    assert data["defaults"]["init"] == {"normal": {"std": 0.02}}
    _checks(path, healthy=False)


def test_layers_caps_the_depth_and_says_so(tmp_path):
    path, data = _import(tmp_path, GPT2, "--layers", "1")
    assert len(_blocks(data)) == 1
    # the init keeps the full model's n_layer
    assert _blocks(data)[0]["inits"]["ffn.out_weights"]["normal"]["std"] == 0.02 / math.sqrt(6)
    assert "1 of the model's 3 blocks" in " ".join(path.read_text(encoding="utf-8").split("\n# "))


def test_real_gpt2_small_config_gives_the_sample_specs_layers(tmp_path):
    real = {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024,
            "n_ctx": 1024, "initializer_range": 0.02, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "architectures": ["GPT2LMHeadModel"], "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}
    text = hf.import_config(_config(tmp_path, real)).text()
    ours = yaml.safe_load(text)["layers"]
    sample = yaml.safe_load((ROOT / "sample_specs" / "gpt2_small_like.yaml").read_text(encoding="utf-8"))["layers"]
    assert len(ours) == len(sample)
    for mine, theirs in zip(ours, sample):
        assert mine["name"] == theirs["name"]
        assert {key: value for key, value in mine.items() if key != "inits"} == \
            {key: value for key, value in theirs.items() if key != "inits"}
        if "inits" in theirs:  # the sample rounds 0.02/sqrt(24) to 0.004082
            assert mine["inits"].keys() == theirs["inits"].keys()
            for name, scheme in mine["inits"].items():
                assert scheme["normal"]["std"] == pytest.approx(theirs["inits"][name]["normal"]["std"], abs=5e-7)


def test_without_output_the_spec_goes_to_stdout(tmp_path):
    result = invoke("import", "hf", _config(tmp_path, GPT2))
    assert result.exit_code == 0 and result.stdout.startswith("# GPT2LMHeadModel") and "\nlayers:\n" in result.stdout


def test_an_existing_output_is_kept_unless_forced(tmp_path):
    config, out = _config(tmp_path, GPT2), tmp_path / "model.yaml"
    out.write_text("mine\n", encoding="utf-8")
    result = invoke("import", "hf", config, "-o", out)
    assert result.exit_code == 2 and "exists; pass --force" in result.stderr
    assert out.read_text(encoding="utf-8") == "mine\n"
    assert invoke("import", "hf", config, "-o", out, "--force").exit_code == 0
    assert out.read_text(encoding="utf-8").startswith("# GPT2LMHeadModel")


def test_the_input_is_never_written(tmp_path):
    config = _config(tmp_path, GPT2)
    before = config.read_text(encoding="utf-8")
    for options in ((), ("--force",)):
        result = invoke("import", "hf", config, "-o", config, *options)
        assert result.exit_code == 2 and "input" in result.stderr
    assert config.read_text(encoding="utf-8") == before


@pytest.mark.parametrize("values, message", [
    ({**GPT2, "model_type": "mistral"}, "config.json: model_type \"mistral\" is not supported; supported: bert, gpt2, llama, vit"),
    ({key: value for key, value in GPT2.items() if key != "n_embd"}, "config.json: missing key 'n_embd' (a gpt2 config needs it)"),
    ({key: value for key, value in VIT.items() if key != "patch_size"}, "config.json: missing key 'patch_size' (a vit config needs it)"),
    ({key: value for key, value in GPT2.items() if key != "model_type"}, "config.json: missing key 'model_type' (supported: bert, gpt2, llama, vit)"),
    ({**LLAMA, "num_attention_heads": "four"}, "config.json: num_attention_heads: expected a whole number ≥ 1, not \"four\""),
    ({**BERT, "hidden_act": "quick_gelu"}, "config.json: hidden_act: activation \"quick_gelu\" has no equivalent here"),
])
def test_bad_configs_are_located_errors(tmp_path, values, message):
    result = invoke("import", "hf", _config(tmp_path, values))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(str(tmp_path / message.split(":")[0]) + ":" + message.split(":", 1)[1])


def test_steps_is_refused_for_an_image_model(tmp_path):
    result = invoke("import", "hf", _config(tmp_path, VIT), "--steps", "10")
    assert result.exit_code == 2 and result.stderr.startswith("--steps: a vit model's sequence is its patches")


def test_invalid_json_is_located(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "gpt2",\n  "n_embd": 32,,\n}\n', encoding="utf-8")
    result = invoke("import", "hf", path)
    assert result.exit_code == 2 and result.stderr.startswith(f"{path}:3:16: invalid JSON: Expecting property name")


def test_a_missing_file_and_an_unknown_source(tmp_path):
    result = invoke("import", "hf", tmp_path / "nope.json")
    assert result.exit_code == 2 and result.stderr.strip() == f"{tmp_path / 'nope.json'}: no such file"
    result = invoke("import", "onnx2", tmp_path / "nope.json")
    assert result.exit_code == 2 and "unknown source 'onnx2'; known: hf" in result.stderr


def test_the_registry_names_each_source_once():
    assert {"hf", "keras", "dl4j"} <= set(IMPORTERS) and set(hf.TEMPLATES) == {"bert", "gpt2", "llama", "vit"}
    with pytest.raises(ImportProblem):
        IMPORTERS["hf"].convert(Path("/nonexistent/config.json"))
