"""The gemma3 family beyond the conformance suite: MedGemma's real config.json translates to the right modules and
sites, what is not implemented is refused by name (text-only Gemma 3, pan-and-scan, softcapping, ...), the
processor builds Gemma 3 prompts from the checkpoint (one BOS, the image span expanded), and a study cell runs end
to end on a tiny checkpoint."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

from jaxprobe.capture.forward import sown_shapes
from jaxprobe.errors import CheckpointError, ConfigError
from jaxprobe.families import decoder_config
from jaxprobe.families.attributes import declared_attributes
from jaxprobe.families.gemma3 import config as gemma3
from jaxprobe.families.gemma3.tiny import TOKEN_ID, tiny_config
from jaxprobe.families.registry import family_by_name, family_for_model_type

QUESTION = "Which of the following best describes this medical image?\n{options}\nAnswer with the option's letter."
MEDGEMMA_4B = {  # google/medgemma-4b-it's config.json (legacy rope keys, as published)
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
    "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 256,
    "model_type": "gemma3", "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "text_config": {"attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None,
                    "cache_implementation": "hybrid", "final_logit_softcapping": None, "head_dim": 256,
                    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2560, "initializer_range": 0.02,
                    "intermediate_size": 10240, "max_position_embeddings": 131072, "model_type": "gemma3_text",
                    "num_attention_heads": 8, "num_hidden_layers": 34, "num_key_value_heads": 4,
                    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "rope_theta": 1000000.0,
                    "sliding_window": 1024, "sliding_window_pattern": 6, "use_cache": True, "vocab_size": 262208},
    "vision_config": {"attention_dropout": 0.0, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152,
                      "image_size": 896, "intermediate_size": 4304, "layer_norm_eps": 1e-06,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_channels": 3,
                      "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False},
}
FAMILY = family_by_name("gemma3")


@pytest.mark.parametrize(("config_class", "rules"), [(Gemma3Config, gemma3.TOP_RULES),
                                                     (SiglipVisionConfig, gemma3.VISION_RULES),
                                                     (Gemma3TextConfig, decoder_config.RULES["gemma3_text"])],
                         ids=["top", "vision", "text"])
def test_every_declared_attribute_is_accounted_for(config_class, rules):
    assert declared_attributes(config_class) - rules.accounted() == set()


def test_medgemma_4b_translates_to_the_published_architecture():
    config = gemma3.parse_config(MEDGEMMA_4B)
    vision, text, connector = config.vision, config.text, config.connector
    assert (vision.depth, vision.image_size, vision.patch_size, vision.post_norm) == (27, 896, 14, True)
    assert (connector.kind, connector.merge_size, gemma3.mm_tokens_per_image(config)) == ("avg_pool", 4, 256)
    assert (connector.in_size, connector.out_size) == (1152, 2560)
    assert text.layer_types == (("sliding_attention",) * 5 + ("full_attention",)) * 5 + ("sliding_attention",) * 4
    assert (text.rope_theta, text.rope_scaling, text.local_rope_theta) == (1e6, 8.0, 1e4)
    assert text.attention_scale == 256**-0.5 and text.sliding_window == 1024
    assert text.tie_word_embeddings and text.bidirectional_image_attention and text.norm_scale_offset
    assert config.image_token_id == 262144
    layout = FAMILY.site_layout(config)
    assert (layout.vision_depth, layout.llm_depth, layout.connector_source) == (27, 34, "vision.layer_26")
    assert not layout.vision_cls
    shapes = sown_shapes(FAMILY, config)  # abstract: the 4B model's sites without any weights
    assert shapes["connector.output"][1:] == (256, 2560) and shapes["vision.layers"][0] == 27


def _with(section: str, **changes) -> dict:
    config = copy.deepcopy(MEDGEMMA_4B)
    (config[section] if section else config).update(changes)
    return config


@pytest.mark.parametrize(("section", "changes", "named"), [
    ("text_config", {"final_logit_softcapping": 30.0}, "final_logit_softcapping"),
    ("text_config", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ("text_config", {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    ("text_config", {"rope_scaling": {"rope_type": "yarn", "factor": 8.0}}, "rope_parameters"),
    ("vision_config", {"hidden_act": "relu6"}, "hidden_act"),
    ("", {"mm_tokens_per_image": 200}, "mm_tokens_per_image"),  # not a square
    ("", {"mm_tokens_per_image": 25}, "mm_tokens_per_image"),  # 5 does not divide 64 patches per side
    ("", {"vision_config": {"model_type": "clip_vision_model"}}, "vision_config.model_type"),
])
def test_unimplemented_values_are_refused_by_name(section, changes, named):
    with pytest.raises(ConfigError, match=named):
        gemma3.parse_config(_with(section, **changes))


def test_text_only_gemma3_is_refused_with_the_reason():
    for refuse in (lambda: family_for_model_type("gemma3_text"),
                   lambda: gemma3.parse_config({"model_type": "gemma3_text"})):
        with pytest.raises(ConfigError, match=r"gemma3_text.*needs the vision tower"):
            refuse()
    with pytest.raises(ConfigError, match="not a gemma3 model"):
        gemma3.parse_config({"model_type": "paligemma"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return FAMILY.tiny_checkpoint(tmp_path_factory.mktemp("gemma3"), "gemma3", seed=0)


def test_prompt_and_inputs_from_the_checkpoint(tiny):
    processor = FAMILY.processor(tiny)
    prompt = processor.prompt(["benign", "malignant", "normal"], QUESTION)
    assert prompt.text.startswith("<bos><start_of_turn>user\n<start_of_image>Which")
    assert prompt.text.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert [processor.tokenizer.decode([t]) for t in prompt.option_token_ids] == ["A", "B", "C"]
    images = [np.full((30, 70, 3), 60 * k, np.uint8) for k in range(2)]  # not square: resized to the tower's 48
    inputs = processor.encode(prompt, images)
    ids = inputs.input_ids
    assert (ids == TOKEN_ID["<bos>"]).sum(1).tolist() == [1, 1] and (ids[:, 0] == TOKEN_ID["<bos>"]).all()
    start = int(np.argmax(inputs.image_mask[0]))
    tokens = tiny_config()["mm_tokens_per_image"]
    assert inputs.image_mask.sum(1).tolist() == [tokens] * 2
    assert inputs.image_mask[0, start: start + tokens].all()  # one contiguous span ...
    assert ids[0, start - 1] == TOKEN_ID["<start_of_image>"] and ids[0, start + tokens] == TOKEN_ID["<end_of_image>"]
    assert inputs.pixels.shape == (2, 3, 48, 48) and inputs.image_grid == (1, 6, 6)
    assert inputs.positions.tolist() == [[list(range(ids.shape[1]))]] * 2
    assert processor.tokenizer.decode([ids[0, inputs.last_index[0]]]) == "\n"  # after "model"
    np.testing.assert_array_equal(inputs.pixels[0], -1.0)  # black image, rescaled and normalised by 0.5 / 0.5


def test_in_memory_names_fill_the_same_leaves_as_the_hub_layout(tiny):
    """transformers 5's in-memory names (``model.language_model.*``, ``model.vision_tower.*``, ``lm_head``) and the
    hub's (``vision_tower.vision_model.*``, what the tiny writer stores) map to the same param leaves."""
    from transformers import Gemma3ForConditionalGeneration

    from jaxprobe.weights.reader import checkpoint_headers

    keymap = FAMILY.keymap(FAMILY.parse_config(json.loads((tiny / "config.json").read_text())))

    def targets(names) -> set:
        found = [keymap.targets(name) for name in names]
        assert None not in found
        return {(t.path, t.layer) for ts in found for t in ts}

    stored = {name for infos in checkpoint_headers(tiny).values() for name in infos}
    assert any(name.startswith("vision_tower.vision_model.") for name in stored)
    in_memory = Gemma3ForConditionalGeneration.from_pretrained(tiny).state_dict()
    assert any(name.startswith("model.language_model.") for name in in_memory)
    assert targets(in_memory) == targets(stored)


def _edit_json(path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(("file", "changes", "error", "message"), [
    ("preprocessor_config.json", {"do_pan_and_scan": True}, ConfigError, "pan-and-scan"),
    ("preprocessor_config.json", {"size": {"height": 64, "width": 64}}, CheckpointError, "resizes to 64x64"),
    ("processor_config.json", {"image_seq_length": 16}, CheckpointError, "16 tokens"),
    ("processor_config.json", {"images_kwargs": {"do_pan_and_scan": True}}, ConfigError, "pan-and-scan"),
    ("config.json", {"image_token_index": TOKEN_ID["<end_of_image>"]}, CheckpointError, "image_token_index"),
])
def test_inconsistent_processor_files_are_refused(tmp_path, tiny, file, changes, error, message):
    import shutil

    directory = tmp_path / "ckpt"
    shutil.copytree(tiny, directory)
    _edit_json(directory / file, **changes)
    with pytest.raises(error, match=message):
        FAMILY.processor(directory)


def test_study_cells_run_at_the_towers_image_size(tiny):
    """The study's native resolution is the tower's fixed square for Gemma 3 (896 px; the tiny tower's 48), a
    fixed point of every size bucket."""
    from jaxprobe.capture.images import bucket_size, target_sizes
    from jaxprobe.config import load_config
    from jaxprobe.families.registry import models_table

    covered = next(entry for entry in models_table() if entry["family"] == "gemma3")["study_models"]
    assert covered == ["medgemma_4b", "medgemma_27b", "medgemma_1_5_4b", "gemma_3_4b"]
    for model in covered:
        config = load_config(f"study:{model}:chest_xray")
        assert config.model.family == "gemma3" and config.capture.resolution == "native"
    processor = FAMILY.processor(tiny)
    assert processor.size_unit == 16  # patch 8 x pooling kernel 2: the pixels behind one image token's side
    sizes = np.array([(30, 70), (48, 48), (500, 90), (7, 7)])
    assert target_sizes("native", processor, sizes, 4) == [(48, 48)] * len(sizes)
    assert all(bucket_size(processor, h, w, step) == (48, 48) for h, w in sizes for step in (1, 3))


def test_prompts_of_different_lengths_pad_on_the_left(tiny):
    processor = FAMILY.processor(tiny)
    short = processor.prompt(["a", "b"], QUESTION)
    long = processor.prompt(["a", "b"], "Look closely at the lesion margins.\n" + QUESTION)
    images = [np.zeros((48, 48, 3), np.uint8)] * 2
    inputs = processor.encode([short, long], images)
    alone = processor.encode(short, images[:1])
    pad = inputs.input_ids.shape[1] - alone.input_ids.shape[1]
    assert pad > 0 and inputs.attention_mask[0, :pad].sum() == 0 and inputs.attention_mask[1].all()
    np.testing.assert_array_equal(inputs.input_ids[0, pad:], alone.input_ids[0])
    np.testing.assert_array_equal(inputs.positions[0, :, pad:], alone.positions[0])
    assert inputs.last_index.tolist() == [inputs.input_ids.shape[1] - 1] * 2
    assert inputs.image_mask.sum(1).tolist() == [tiny_config()["mm_tokens_per_image"]] * 2


def test_study_cell_runs_end_to_end_on_a_tiny_checkpoint(tiny, tmp_path):
    """``jaxprobe run study:medgemma_4b:busi`` on the tiny checkpoint and synthetic data: every stage completes,
    and the store tells scoring that the connector reads SigLIP's last block."""
    from jaxprobe.cli import main
    from jaxprobe.features import FeatureStore

    overrides = [f"workdir={tmp_path}", f"model.checkpoint={tiny}", "data.name=synthetic_lesions",
                 "data.config=small", "capture.generate.max_new_tokens=4",
                 "probe.kinds=('logistic',)", "probe.control_task=False", "probe.folds=3", "probe.permutations=0",
                 "probe.bootstrap=10", "probe.logistic_lambdas=(1.0,)"]
    assert main(["run", "study:medgemma_4b:busi", *[a for o in overrides for a in ("--set", o)]]) == 0
    store = FeatureStore.open(tmp_path / "features")
    assert store.site_layout == {"vision_depth": 2, "llm_depth": 3, "connector_source": "vision.layer_01",
                                 "vision_pooling": "mean_patches", "vision_cls": False}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    extract = manifest["stages"]["extract"]
    assert extract["family"] == "gemma3" and manifest["config"]["model"]["dtype"] == "bfloat16"
    assert manifest["config"]["capture"]["resolution"] == "native" and extract["size_buckets"] == {"48x48": 120}
    assert (tmp_path / "report.html").is_file() and "connector.output" in store.sites
    diagnosis = json.loads((tmp_path / "scores.json").read_text())["diagnosis"]
    connector = next(mode for mode in diagnosis if mode["mode"].startswith("connector"))
    assert connector["sites"] == ["vision.layer_01", "connector.output"]
