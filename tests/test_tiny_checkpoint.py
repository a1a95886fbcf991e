"""`write_tiny_checkpoint` output is a checkpoint transformers itself loads, named as its own save_pretrained names."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import transformers
from PIL import Image
from safetensors import safe_open

from jaxprobe.errors import CheckpointError
from jaxprobe.families.qwen_vl.tiny import SPECIAL_TOKENS, tiny_config, write_tiny_checkpoint
from jaxprobe.weights.reader import SINGLE_FILE, iter_tensors

MODEL_CLASSES = {
    "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
}
IMAGE_SPAN = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module", params=sorted(MODEL_CLASSES))
def tiny(request, tmp_path_factory):
    family = request.param
    return family, write_tiny_checkpoint(family, tmp_path_factory.mktemp(family), seed=3)


def shapes_of(path) -> dict[str, tuple[int, ...]]:
    with safe_open(path, framework="numpy") as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}


def module_name(saved: str) -> str:
    """transformers 5 modules live under ``model.language_model`` / ``model.visual``; the files keep the old names."""
    for old, new in (("model.", "model.language_model."), ("visual.", "model.visual.")):
        if saved.startswith(old):
            return new + saved.removeprefix(old)
    return saved


def test_transformers_loads_every_tensor(tiny):
    family, directory = tiny
    model, info = MODEL_CLASSES[family].from_pretrained(directory, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    state = model.state_dict()
    for name, _, array in iter_tensors(directory):
        np.testing.assert_array_equal(state[module_name(name)].numpy(), array)


def test_key_set_and_shapes_match_save_pretrained(tiny, tmp_path):
    family, directory = tiny
    config = transformers.AutoConfig.from_pretrained(directory)
    MODEL_CLASSES[family](config).save_pretrained(tmp_path)
    assert shapes_of(directory / SINGLE_FILE) == shapes_of(tmp_path / SINGLE_FILE)


def test_tokenizer_special_tokens_and_chat_template(tiny):
    _, directory = tiny
    config = json.loads((directory / "config.json").read_text())
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert ids[SPECIAL_TOKENS.index("<|image_pad|>")] == config["image_token_id"]
    assert ids[SPECIAL_TOKENS.index("<|vision_start|>")] == config["vision_start_token_id"]
    assert ids[SPECIAL_TOKENS.index("<|im_end|>")] == config["eos_token_id"]
    assert len(tokenizer) <= config["text_config"]["vocab_size"]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Benign or malignant?"}]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert IMAGE_SPAN in prompt and prompt.endswith("<|im_start|>assistant\n")
    encoded = tokenizer(prompt)["input_ids"]
    assert encoded.count(config["image_token_id"]) == 1
    assert tokenizer.decode(encoded) == prompt


def test_image_processor_matches_vision_config(tiny):
    _, directory = tiny
    config = json.loads((directory / "config.json").read_text())["vision_config"]
    processor = transformers.Qwen2VLImageProcessorPil.from_pretrained(directory)
    out = processor(images=[Image.new("RGB", (40, 56), "gray")], return_tensors="np")
    grid = out["image_grid_thw"][0]
    patch_values = config["in_channels"] * config["temporal_patch_size"] * config["patch_size"] ** 2
    assert out["pixel_values"].shape == (int(np.prod(grid)), patch_values)
    assert grid[1] % config["spatial_merge_size"] == 0 and grid[2] % config["spatial_merge_size"] == 0


def test_seed_determines_weights(tmp_path):
    first = write_tiny_checkpoint("qwen2_5_vl", tmp_path / "a", seed=1)
    again = write_tiny_checkpoint("qwen2_5_vl", tmp_path / "b", seed=1)
    other = write_tiny_checkpoint("qwen2_5_vl", tmp_path / "c", seed=2)
    assert (first / SINGLE_FILE).read_bytes() == (again / SINGLE_FILE).read_bytes()
    assert (first / SINGLE_FILE).read_bytes() != (other / SINGLE_FILE).read_bytes()
    assert (first / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()


def test_size_overrides_keep_the_merger_consistent():
    config = tiny_config("qwen2_5_vl", text={"hidden_size": 128}, vision={"depth": 3})
    assert config["vision_config"]["out_hidden_size"] == 128 and config["vision_config"]["depth"] == 3
    with pytest.raises(CheckpointError, match="qwen2_vl"):
        tiny_config("llava")


def test_writer_needs_no_torch(tmp_path):
    blocked = "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "
    write = f"from jaxprobe.families.qwen_vl.tiny import write_tiny_checkpoint as w; w('qwen2_vl', {str(tmp_path)!r})"
    subprocess.run([sys.executable, "-c", blocked + write], check=True, capture_output=True)
    assert (tmp_path / SINGLE_FILE).is_file() and (tmp_path / "tokenizer.json").is_file()
