"""Prompts from a tiny checkpoint's own chat template and processor: options, image span, last token."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprobe.capture.prompts import build_prompt, encode, load_processor
from jaxprobe.errors import CheckpointError
from jaxprobe.weights.tiny import write_tiny_checkpoint


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return load_processor(write_tiny_checkpoint("qwen2_5_vl", tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.mark.parametrize("names", [["benign", "malignant"], ["CT_COVID", "CT_NonCOVID"],
                                   ["malignant", "normal, benign"],
                                   ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Podocytes"]])
def test_one_option_per_class_whatever_the_names(processor, names):
    prompt = build_prompt(processor, names)
    assert len(prompt.option_token_ids) == len(set(prompt.option_token_ids)) == len(names)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt.text
    assert prompt.text.endswith("<|im_start|>assistant\n")
    for letter, token in zip(prompt.letters, prompt.option_token_ids, strict=True):
        assert processor.tokenizer.decode([token]).strip() == letter


def test_encode_bookkeeping(processor):
    prompt = build_prompt(processor, ["a", "b", "c"])
    images = [np.full((48, 80, 3), k * 40, np.uint8) for k in range(2)]
    inputs = encode(processor, prompt, images)
    grid = inputs["image_grid_thw"][0]
    merge = processor.image_processor.merge_size
    assert inputs["image_mask"].sum(1).tolist() == [int(grid.prod()) // merge**2] * 2
    assert (inputs["mm_token_type_ids"] == inputs["image_mask"]).all()
    last = inputs["input_ids"][0, inputs["last_index"][0]]
    assert processor.tokenizer.decode([last]) == "\n"  # the newline after "assistant"


def test_missing_tokenizer_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_processor(tmp_path)
