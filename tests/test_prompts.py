"""Prompts from a tiny checkpoint's own chat template and processor: options, image span, last token."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprobe.errors import CheckpointError
from jaxprobe.families.registry import family_by_name

QUESTION = "Which of the following best describes this medical image?\n{options}\nAnswer with the option's letter."


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    family = family_by_name("qwen_vl")
    return family.processor(family.tiny_checkpoint(tmp_path_factory.mktemp("tiny"), "qwen2_5_vl", seed=0))


@pytest.mark.parametrize("names", [["benign", "malignant"], ["CT_COVID", "CT_NonCOVID"],
                                   ["malignant", "normal, benign"],
                                   ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Podocytes"]])
def test_one_option_per_class_whatever_the_names(processor, names):
    prompt = processor.prompt(names, QUESTION)
    assert len(prompt.option_token_ids) == len(set(prompt.option_token_ids)) == len(names)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt.text
    assert prompt.text.endswith("<|im_start|>assistant\n")
    for letter, token in zip(prompt.letters, prompt.option_token_ids, strict=True):
        assert processor.tokenizer.decode([token]).strip() == letter


def test_encode_bookkeeping(processor):
    prompt = processor.prompt(["a", "b", "c"], QUESTION)
    images = [np.full((48, 80, 3), k * 40, np.uint8) for k in range(2)]
    inputs = processor.encode(prompt, images)
    t, h, w = inputs.image_grid
    assert inputs.image_mask.sum(1).tolist() == [t * h * w // processor.merge_size**2] * 2
    assert inputs.pixels.shape[:2] == (2, t * h * w)
    last = inputs.input_ids[0, inputs.last_index[0]]
    assert processor.tokenizer.decode([last]) == "\n"  # the newline after "assistant"
    first_image = int(np.argmax(inputs.image_mask[0]))
    assert inputs.positions.shape == (2, 3, inputs.input_ids.shape[1])
    assert inputs.positions[0, :, first_image].tolist() == [first_image] * 3  # (t, h, w) start where text left off


def test_missing_tokenizer_is_a_checkpoint_error(tmp_path):
    family = family_by_name("qwen_vl")
    directory = family.tiny_checkpoint(tmp_path / "ckpt", "qwen2_vl")
    (directory / "tokenizer.json").unlink()
    (directory / "tokenizer_config.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer"):
        family.processor(directory)
