"""The llava family beyond the conformance suite: config translation of the real checkpoints and its refusals,
the repository layout's prompt as written down in PROMPT.md, its image padding against LLaVA's and transformers'
own implementations, the two tower copies, the documented renaming, and a study cell end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

from jaxprobe.errors import CheckpointError, ConfigError
from jaxprobe.families.llava import LlavaFamily
from jaxprobe.families.llava.keymap import keymap, to_llava_hf
from jaxprobe.families.llava.processor import expand2square
from jaxprobe.families.llava.reference import convert_repository
from jaxprobe.families.loading import load_model
from jaxprobe.families.registry import family_for_model_type
from jaxprobe.weights.reader import checkpoint_headers, read_config_json

FAMILY = LlavaFamily()
QUESTION = "Which?\n{options}\nAnswer with the letter."
HUATUOGPT_34B = {  # FreedomIntelligence/HuatuoGPT-Vision-34B config.json (llava.md B1)
    "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "hidden_size": 7168,
    "intermediate_size": 20480, "num_hidden_layers": 60, "num_attention_heads": 56, "num_key_value_heads": 8,
    "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 5000000.0, "rope_scaling": None,
    "max_position_embeddings": 4096, "attention_bias": False, "tie_word_embeddings": False, "vocab_size": 64000,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "pretraining_tp": 1,
    "mm_vision_tower": "./vit/clip_vit_large_patch14_336", "mm_hidden_size": 1024, "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
    "use_mm_proj": True, "tokenizer_model_max_length": 4096, "tokenizer_padding_side": "left",
    "torch_dtype": "bfloat16",
}


def test_huatuogpt_vision_34b_config_and_site_layout():
    config = FAMILY.parse_config(HUATUOGPT_34B)
    text, vision = config.text, config.vision
    assert (text.hidden_size, text.num_layers, text.num_heads, text.num_kv_heads, text.head_dim) == (7168, 60, 56, 8,
                                                                                                    128)
    assert text.rope_theta == 5e6 and not (text.qkv_bias or text.o_bias or text.mlp_bias or text.sliding_window)
    assert (vision.depth, vision.hidden_size, vision.num_heads, vision.intermediate_size) == (24, 1024, 16, 4096)
    assert (vision.image_size, vision.patch_size, vision.hidden_act, vision.norm_eps) == (336, 14, "quick_gelu", 1e-5)
    assert vision.class_token and vision.pre_norm and not vision.patch_bias and not vision.post_norm
    assert vision.feature_layer == 22 and vision.drop_cls  # hidden_states[-2] = block 23 of 24, CLS dropped
    assert (config.connector.kind, config.connector.in_size, config.connector.out_size) == ("mlp2x_gelu", 1024, 7168)
    assert config.image_token_id == 63999
    layout = FAMILY.site_layout(config)
    assert (layout.vision_depth, layout.llm_depth, layout.connector_source, layout.vision_cls) == (
        24, 60, "vision.layer_22", True)


def _repository(**changes):
    config = {key: value for key, value in HUATUOGPT_34B.items() if value is not None}
    config.update(changes)
    return {key: value for key, value in config.items() if value is not None}


def _hf(**changes):
    from jaxprobe.families.llava.tiny import tiny_config

    config = tiny_config("llava")
    config.update(changes)
    return config


REFUSALS = [
    (_repository(mm_projector_type="linear"), "mm_projector_type"),
    (_repository(mm_projector_type=None), "mm_projector_type='linear'"),  # LLaVA's default
    (_repository(mm_use_im_start_end=True), "mm_use_im_start_end"),
    (_repository(mm_vision_select_feature="cls"), "mm_vision_select_feature"),
    (_repository(image_aspect_ratio="anyres"), "image_aspect_ratio"),
    (_repository(mm_patch_merge_type="spatial_unpad"), "mm_patch_merge_type"),
    (_repository(mm_resampler_type="perceiver"), "mm_resampler_type"),
    (_repository(mm_vision_tower="./vit/siglip-so400m-patch14-384"), "does not know"),
    (_repository(mm_hidden_size=768), "mm_hidden_size"),
    (_repository(mm_vision_select_layer=0), "embeddings"),
    (_repository(mm_vision_select_layer=25), "must name"),
    (_repository(mm_vision_tower=None), "lacks"),
    (_repository(rope_scaling={"type": "dynamic", "factor": 2.0}), "rope"),
    (_repository(vision_config={"model_type": "siglip_vision_model"}), "CLIP"),
    (_hf(projector_hidden_act="relu"), "projector_hidden_act"),
    (_hf(multimodal_projector_bias=False), "multimodal_projector_bias"),
    (_hf(vision_feature_layer=[-2, -1]), "several layers"),
    (_hf(vision_config={"model_type": "siglip_vision_model"}), "clip_vision_model"),
    (_hf(text_config={"model_type": "gemma", "vocab_size": 512}), "llama, mistral, qwen2"),
    (_hf(image_token_index=4096), "outside the LLM's vocabulary"),
]


@pytest.mark.parametrize(("config_json", "match"), REFUSALS, ids=[match for _, match in REFUSALS])
def test_unsupported_settings_are_refused_by_name(config_json, match):
    with pytest.raises(ConfigError, match=match):
        FAMILY.parse_config(config_json)


def test_related_model_types_are_refused_with_a_reason():
    with pytest.raises(ConfigError, match="anyres"):
        family_for_model_type("llava_next")
    assert family_for_model_type("llava_qwen2") is family_for_model_type("llava") is family_for_model_type(
        "llava_mistral")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return FAMILY.tiny_checkpoint(tmp_path_factory.mktemp("repo"), "llava_llama", seed=2)


def test_repository_prompt_follows_the_written_down_format(repository):
    """PROMPT.md: <image>\\n before the question, HuatuoGPT-Vision's turns, chunks tokenized without BOS around
    one slot per image feature."""
    processor = FAMILY.processor(repository)
    prompt = processor.prompt(["benign", "malignant"], QUESTION)
    question = "Which?\nA. benign\nB. malignant\nAnswer with the letter."
    assert prompt.text == f"<|user|>\n<image>\n{question}\n<|assistant|>\n"
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)
    inputs = processor.encode(prompt, [image])
    tokenize = processor.tokenizer
    before = tokenize("<|user|>\n", add_special_tokens=False).input_ids
    after = tokenize(f"\n{question}\n<|assistant|>\n", add_special_tokens=False).input_ids
    slot = read_config_json(repository)["vocab_size"] - 1
    assert inputs.input_ids[0].tolist() == [*before, *[slot] * 16, *after]  # 4 x 4 patches, CLS dropped
    assert tokenize.bos_token_id not in inputs.input_ids[0].tolist()
    assert inputs.image_mask[0].tolist() == [False] * len(before) + [True] * 16 + [False] * len(after)
    np.testing.assert_array_equal(inputs.positions[0, 0], np.arange(inputs.input_ids.shape[1]))
    assert inputs.last_index.tolist() == [inputs.input_ids.shape[1] - 1]


def test_llava_med_prompt_starts_with_bos_and_inst(tmp_path):
    directory = FAMILY.tiny_checkpoint(tmp_path, "llava_mistral")
    processor = FAMILY.processor(directory)
    prompt = processor.prompt(["benign", "malignant"], QUESTION)
    assert prompt.text.startswith("[INST] <image>\nWhich?") and prompt.text.endswith(" [/INST]")
    ids = processor.encode(prompt, [np.zeros((8, 8, 3), np.uint8)]).input_ids[0].tolist()
    first = processor.tokenizer("[INST] ", add_special_tokens=False).input_ids
    assert ids[: 1 + len(first)] == [processor.tokenizer.bos_token_id, *first]


def test_prompts_of_different_lengths_are_padded_on_the_left(repository):
    processor = FAMILY.processor(repository)
    short, long = (processor.prompt(["a", "b"], question) for question in ("{options}", "Which one?\n{options}"))
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    inputs = processor.encode([short, long], images)
    mask = inputs.attention_mask
    assert mask[0, 0] == 0 and mask[1].all() and (inputs.image_mask.sum(1) == 16).all()
    alone = processor.encode(short, images[:1])
    assert inputs.input_ids[0, mask[0] == 1].tolist() == alone.input_ids[0].tolist()
    assert inputs.positions[0, 0, mask[0] == 1].tolist() == alone.positions[0, 0].tolist()


def llava_expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """LLaVA's expand2square (llava/mm_utils.py), with PIL as there."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return result


@pytest.mark.parametrize("size", [(20, 33), (33, 20), (21, 21), (1, 8), (9, 2)])
def test_expand2square_is_llavas(size):
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), np.uint8)
    expected = np.asarray(llava_expand2square(Image.fromarray(image), (122, 116, 104)))
    np.testing.assert_array_equal(expand2square(image, (122, 116, 104)), expected)


def test_repository_pixels_equal_transformers_padded_clip_processing(repository):
    """Mean-colour padding then CLIP preprocessing, against transformers' own LLaVA image processor (do_pad)."""
    from transformers import LlavaImageProcessorPil

    processor = FAMILY.processor(repository)
    tower = repository / read_config_json(repository)["mm_vision_tower"]
    settings = json.loads((tower / "preprocessor_config.json").read_text())
    reference = LlavaImageProcessorPil(**{k: v for k, v in settings.items() if k != "image_processor_type"},
                                       do_pad=True)
    images = [np.random.default_rng(k).integers(0, 256, size, np.uint8) for k, size in
              enumerate([(40, 90, 3), (90, 41, 3)])]
    expected = reference(images=images, return_tensors="np")["pixel_values"]
    ours = processor.pixels(images)
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert processor.native_size(40, 90) == (14, 32) and processor.native_size(14, 32) == (14, 32)


def test_a_prompt_beyond_tokenizer_model_max_length_is_refused(repository, tmp_path):
    directory = tmp_path / "short"
    shutil.copytree(repository, directory)
    config = read_config_json(directory)
    (directory / "config.json").write_text(json.dumps({**config, "tokenizer_model_max_length": 20}))
    processor = FAMILY.processor(directory)
    with pytest.raises(ConfigError, match="tokenizer_model_max_length=20"):
        processor.encode(processor.prompt(["a", "b"], QUESTION), [np.zeros((8, 8, 3), np.uint8)])


def test_hf_processor_refuses_a_token_count_the_tower_does_not_emit(tmp_path):
    directory = FAMILY.tiny_checkpoint(tmp_path, "llava")
    settings = json.loads((directory / "processor_config.json").read_text())
    (directory / "processor_config.json").write_text(json.dumps({**settings, "num_additional_image_tokens": 0}))
    processor = FAMILY.processor(directory)
    with pytest.raises(CheckpointError, match=r"\[15\] image tokens .* emits 16"):
        processor.encode(processor.prompt(["a", "b"], QUESTION), [np.zeros((8, 8, 3), np.uint8)])


def _tower_file(directory):
    return directory / read_config_json(directory)["mm_vision_tower"] / "model.safetensors"


def test_a_tower_folder_that_differs_is_refused(repository, tmp_path):
    directory = tmp_path / "tampered"
    shutil.copytree(repository, directory)
    tensors = load_file(_tower_file(directory))
    tensors["vision_model.encoder.layers.1.mlp.fc2.bias"][3] += 1e-3
    save_file(tensors, _tower_file(directory))
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.1\.mlp\.fc2\.bias differs"):
        load_model(directory, cache_dir=False)
    folder_config = _tower_file(directory).with_name("config.json")
    clip = json.loads(folder_config.read_text())
    clip["vision_config"]["hidden_act"] = "gelu"
    folder_config.write_text(json.dumps(clip))
    with pytest.raises(CheckpointError, match="hidden_act is 'gelu'"):
        load_model(directory, cache_dir=False)


def test_a_pickled_tower_folder_is_never_read(repository, tmp_path):
    directory = tmp_path / "pickled"
    shutil.copytree(repository, directory)
    _tower_file(directory).unlink()
    _tower_file(directory).with_name("pytorch_model.bin").write_bytes(b"not a pickle: reading it would fail")
    assert load_model(directory, cache_dir=False).params["vision"]["pre_norm"]["scale"].shape == (32,)


def test_a_checkpoint_without_its_tower_names_the_missing_tensors(repository, tmp_path):
    directory = tmp_path / "towerless"
    shutil.copytree(repository, directory)
    tensors = load_file(directory / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if "vision_tower" not in k}, directory / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"no tensor named model\.vision_tower\.vision_tower\.vision_model\.\*"):
        load_model(directory, cache_dir=False)


def test_the_documented_renaming_loads_the_same_model(repository, tmp_path):
    """Every repository tensor maps where its llava-hf name maps, and the renamed checkpoint (the parity
    reference's input) loads into exactly the same params and config."""
    config = FAMILY.parse_config(read_config_json(repository))
    keys = keymap(config.text.tie_word_embeddings)
    names = [name for infos in checkpoint_headers(repository).values() for name in infos]
    assert {to_llava_hf(name).split(".")[0] for name in names} == {"language_model", "vision_tower",
                                                                   "multi_modal_projector"}
    for name in names:
        assert keys.targets(name) == keys.targets(to_llava_hf(name)), name
    renamed = convert_repository(repository, tmp_path / "hf")
    assert FAMILY.parse_config(read_config_json(renamed)) == config
    ours, theirs = load_model(repository, cache_dir=False).params, load_model(renamed, cache_dir=False).params
    for (path, mine), (_, other) in zip(_leaves(ours), _leaves(theirs), strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(other), err_msg=path)


def _leaves(tree):
    from flax import traverse_util

    return sorted(traverse_util.flatten_dict(tree).items())


def test_study_cell_switches_on_at_native_resolution():
    from jaxprobe.config import load_config

    config = load_config("study:huatuogpt_vision_34b:busi")
    assert config.model.family == "llava_llama" and config.capture.resolution == "native"
    assert family_for_model_type(config.model.family).name == "llava"


def test_study_cell_end_to_end_on_a_tiny_repository_checkpoint(repository, tmp_path):
    """`jaxprobe run study:huatuogpt_vision_34b:busi` on a tiny repository-layout checkpoint: every CLIP block a
    site with both poolings, and the connector verdict compares layer -2 (the connector's input) with the
    connector output."""
    from jaxprobe.cli import main
    from jaxprobe.features import FeatureStore

    workdir = tmp_path / "run"
    overrides = [f"model.checkpoint={repository}", "model.dtype=float32", "data.name=synthetic_lesions",
                 "data.config=small", f"workdir={workdir}", "probe.folds=2", "probe.permutations=0",
                 "probe.bootstrap=10", "probe.logistic_lambdas=(1.0,)", "probe.kinds=('logistic',)",
                 "capture.chunk_rows=32", "capture.generate.max_new_tokens=4"]
    assert main(["run", "study:huatuogpt_vision_34b:busi", *[a for o in overrides for a in ("--set", o)]]) == 0
    store = FeatureStore.open(workdir / "features")
    assert store.site_layout == {"vision_depth": 3, "llm_depth": 2, "connector_source": "vision.layer_01",
                                 "vision_pooling": "mean_patches", "vision_cls": True}
    assert {"vision.layer_00", "vision.layer_00.cls", "vision.layer_02.cls", "connector.output"} <= set(store.sites)
    scores = json.loads((workdir / "scores.json").read_text())
    verdict = next(v for v in scores["diagnosis"] if v["mode"] == "connector projection fidelity")
    assert verdict["sites"] == ["vision.layer_01", "connector.output"]
    assert scores["unplaced_sites"] == []  # the .cls sites are known names, probed but off the curve
    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["stages"]["extract"]["family"] == "llava"


LAYOUTS = {  # one tensor in each layout the key map accepts: llava-hf hub, transformers 5 (saved / in memory),
    # the LLaVA repository
    "decoder": ["language_model.model.layers.1.mlp.up_proj.weight", "model.language_model.layers.1.mlp.up_proj.weight",
                "model.layers.1.mlp.up_proj.weight"],
    "tower": ["vision_tower.vision_model.encoder.layers.2.self_attn.q_proj.weight",
              "vision_tower.encoder.layers.2.self_attn.q_proj.weight",
              "model.vision_tower.vision_model.encoder.layers.2.self_attn.q_proj.weight",
              "model.vision_tower.encoder.layers.2.self_attn.q_proj.weight",
              "model.vision_tower.vision_tower.vision_model.encoder.layers.2.self_attn.q_proj.weight"],
    "projector": ["multi_modal_projector.linear_2.bias", "model.multi_modal_projector.linear_2.bias",
                  "model.mm_projector.2.bias"],
    "head": ["language_model.lm_head.weight", "lm_head.weight"],
}


@pytest.mark.parametrize("part", list(LAYOUTS))
def test_every_layout_names_the_same_parameter(part):
    keys = keymap(tie_word_embeddings=False)
    targets = [keys.targets(name) for name in LAYOUTS[part]]
    assert targets[0] and all(target == targets[0] for target in targets), targets
    assert keys.targets("model.vision_tower.vision_tower.vision_model.post_layernorm.weight") == []  # unused


def test_hf_processor_without_processor_config_takes_its_settings_from_config_json(tmp_path):
    directory = FAMILY.tiny_checkpoint(tmp_path, "llava")
    (directory / "processor_config.json").unlink()
    processor = FAMILY.processor(directory)
    inputs = processor.encode(processor.prompt(["a", "b"], QUESTION), [np.zeros((8, 8, 3), np.uint8)])
    assert inputs.image_mask.sum() == 16
