"""Hulu-Med config translation (every key handled, inert or refused), both key layouts, the registry entry, and
the study cell end to end on a tiny checkpoint."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from flax import traverse_util

from jaxprobe.errors import ConfigError
from jaxprobe.families.hulumed.reference import video_llama_3_name
from jaxprobe.families.hulumed.tiny import tiny_config, write_tiny_checkpoint
from jaxprobe.families.loading import abstract_params
from jaxprobe.families.registry import family_by_name, family_for_model_type
from jaxprobe.weights.loader import load_params
from jaxprobe.weights.reader import checkpoint_headers

FAMILY = family_by_name("hulumed")
# Hulu-Med-4B's config.json as published (a third-party copy; ../shared/families/hulumed.md P4B), abridged to the
# keys that matter plus a sample of the transformers-4 boilerplate every such file carries.
HULU_4B = {
    "architectures": ["HulumedQwen3ForCausalLM"], "auto_map": {"AutoConfig": "configuration_hulumed_qwen3.X"},
    "vocab_size": 151936, "max_position_embeddings": 262144, "hidden_size": 2560, "intermediate_size": 9728,
    "num_hidden_layers": 36, "num_attention_heads": 32, "use_sliding_window": False, "sliding_window": None,
    "max_window_layers": 36, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
    "initializer_range": 0.02, "rms_norm_eps": 1e-06, "use_cache": True, "rope_theta": 5000000, "rope_scaling": None,
    "attention_bias": False, "attention_dropout": 0.0, "torchscript": False, "torch_dtype": "bfloat16",
    "tie_word_embeddings": True, "is_decoder": False, "max_length": 20, "top_k": 50, "bos_token_id": 151643,
    "eos_token_id": 151645, "_attn_implementation_autoset": True, "image_aspect_ratio": "avt", "image_size": -1,
    "image_token_index": 151669, "image_token_length": 1, "is_alignment": False,
    "vision_encoder_config": {"hidden_size": 1152, "intermediate_size": 4304, "model_type": "hulumed_vision_encoder",
                              "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14},
    "mm_projector_lr": 1e-05, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_feature": "patch",
    "mm_vision_select_layer": -1, "model_type": "hulumed_qwen3", "tokenizer_model_max_length": 32768,
    "tokenizer_padding_side": "right", "use_mm_proj": True, "use_token_compression": False,
}


def test_the_published_4b_config_translates():
    config = FAMILY.parse_config(copy.deepcopy(HULU_4B))
    text, vision = config.text, config.vision
    assert (text.num_layers, text.hidden_size, text.num_heads, text.num_kv_heads, text.head_dim) == (36, 2560, 32, 8,
                                                                                                     128)
    assert text.qk_norm and not text.qkv_bias and text.tie_word_embeddings and text.rope_theta == 5e6
    assert text.rope_kind == "default" and config.image_token_id == 151669
    assert (vision.tower, vision.depth, vision.hidden_size, vision.num_heads, vision.patch_size) == ("navit", 27, 1152,
                                                                                                    16, 14)
    assert vision.intermediate_size == 4304 and vision.hidden_act == "gelu_pytorch_tanh" and vision.merge_size == 1
    assert vision.post_norm and vision.patch_bias and vision.norm_eps == 1e-6 and vision.rope_theta == 1e4
    assert (config.connector.kind, config.connector.in_size, config.connector.out_size) == ("mlp2x_gelu", 1152, 2560)


def test_qwen2_variant_has_qkv_bias_and_no_qk_norm():
    config = FAMILY.parse_config(tiny_config("hulumed_qwen2"))
    assert config.text.qkv_bias and not config.text.qk_norm and not config.text.tie_word_embeddings
    assert family_for_model_type("hulumed_qwen2") is family_for_model_type("hulumed_qwen3")


@pytest.mark.parametrize(("change", "match"), [
    ({"use_token_compression": True}, "use_token_compression is true"),
    ({"use_token_compression": None}, "use_token_compression is true"),  # absent: Hulu's default is true
    ({"mm_projector_type": "linear"}, "mm_projector_type='linear'"),
    ({"vision_encoder": "openai/clip-vit-large-patch14"}, "vision_encoder="),
    ({"mm_token_reducer": "medical"}, "mm_token_reducer"),  # a key nobody accounts for
    ({"use_sliding_window": True}, "use_sliding_window"),  # refused by the shared Qwen translation
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_parameters"),
    ({"image_token_index": None}, "lacks image_token_index"),
    ({"vision_encoder_config": {"model_type": "siglip_vision_model"}}, "model_type='siglip_vision_model'"),
    ({"vision_encoder_config": {"hidden_size": 32, "num_attention_heads": 4, "rope_theta": 1.0}}, "rope_theta"),
    ({"vision_encoder_config": {"hidden_size": 36, "num_attention_heads": 6}}, "divisible by 4"),
])
def test_what_jaxprobe_does_not_implement_is_refused(change, match):
    config = copy.deepcopy(HULU_4B)
    for key, value in change.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    with pytest.raises(ConfigError, match=match):
        FAMILY.parse_config(config)


def test_both_key_layouts_load_the_same_params(tmp_path):
    """The hub's ``model.vision_encoder.*`` and the original ``model.vision_encoder.vision_encoder.*``."""
    hub = write_tiny_checkpoint("hulumed_qwen3", tmp_path / "hub", seed=5)
    original = write_tiny_checkpoint("hulumed_qwen3", tmp_path / "original", seed=5, layout="original")
    names = {name for infos in checkpoint_headers(original).values() for name in infos}
    assert "model.vision_encoder.vision_encoder.encoder.layers.1.self_attn.out_proj.weight" in names
    assert not any(name.startswith("model.vision_encoder.encoder") for name in names)
    config = FAMILY.parse_config(json.loads((hub / "config.json").read_text()))
    abstract = abstract_params(FAMILY, config)
    loaded = [traverse_util.flatten_dict(load_params(d, FAMILY.keymap(config), abstract)) for d in (hub, original)]
    assert loaded[0].keys() == loaded[1].keys()
    for path in loaded[0]:
        np.testing.assert_array_equal(np.asarray(loaded[0][path]), np.asarray(loaded[1][path]), err_msg=str(path))


def test_renaming_into_video_llama_3():
    assert video_llama_3_name("model.vision_encoder.vision_encoder.post_layernorm.bias") == \
        "model.vision_model.post_layernorm.bias"
    assert video_llama_3_name("model.vision_encoder.encoder.layers.3.mlp.fc1.weight") == \
        "model.vision_model.encoder.layers.3.mlp.fc1.weight"
    assert video_llama_3_name("model.mm_projector.readout.2.bias") == "model.projector.readout.2.bias"
    assert video_llama_3_name("model.layers.0.self_attn.q_norm.weight") == \
        "model.language_model.layers.0.self_attn.q_norm.weight"
    assert video_llama_3_name("lm_head.weight") == "lm_head.weight"


STUDY_FAST = ["probe.folds=3", "probe.permutations=3", "probe.bootstrap=100", "probe.logistic_lambdas=(1.0, 0.01)",
              "probe.ridge_lambdas=(100.0, 1.0)", "data.name=synthetic_lesions", "data.config=small",
              "capture.chunk_rows=64", "capture.batch_size=8",
              "capture.generate.max_new_tokens=4", "split.strategy=grouped"]


def test_study_cell_runs_end_to_end_on_a_tiny_checkpoint(tmp_path):
    """``jaxprobe run study:hulu_med_7b:busi`` on a tiny hulumed_qwen2 checkpoint and the synthetic dataset, at the
    study's native resolution (the 64 x 64 images fill the tiny budget exactly: 8 x 8 patches)."""
    from jaxprobe.cli import main
    from jaxprobe.features import FeatureStore

    one_width = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}  # one probe width group
    checkpoint = write_tiny_checkpoint("hulumed_qwen2", tmp_path / "ckpt", seed=0, vision=one_width)
    workdir = tmp_path / "run"
    overrides = [*STUDY_FAST, f"model.checkpoint={checkpoint}", f"workdir={workdir}",
                 f"model.cache_dir={tmp_path / 'cache'}"]
    assert main(["run", "study:hulu_med_7b:busi", *[a for o in overrides for a in ("--set", o)]]) == 0
    store = FeatureStore.open(workdir / "features")
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["stages"]["extract"]["family"] == "hulumed"
    assert manifest["config"]["capture"]["resolution"] == "native"
    assert manifest["stages"]["extract"]["size_buckets"] == {"64x64": 120}
    assert manifest["config"]["model"]["family"] == "hulumed_qwen2"
    assert "<|im_start|>user\n<image>\n" in manifest["stages"]["extract"]["prompt"]
    assert store.site_layout["connector_source"] == "vision.layer_01" and len(store.index) == 120
    assert store.load("connector.output").shape == (120, 64) and (workdir / "report.html").is_file()
