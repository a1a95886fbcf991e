"""Captured site vectors equal the same pooling of transformers' activations; 1 and 8 devices agree."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoModelForImageTextToText

from jaxprobe.capture.forward import PooledForward, sown_names
from jaxprobe.capture.prompts import build_prompt, encode, load_processor
from jaxprobe.capture.sites import select_sites, sites_for
from jaxprobe.data.synthetic import SyntheticSpec, render_image
from jaxprobe.models.registry import load_model
from jaxprobe.parallel import data_mesh
from jaxprobe.parity import torch_forward
from jaxprobe.weights.tiny import write_tiny_checkpoint

CLASSES = ["normal", "benign", "malignant"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory = write_tiny_checkpoint("qwen2_5_vl", tmp_path_factory.mktemp("ckpt"), seed=1)
    processor = load_processor(directory)
    prompt = build_prompt(processor, CLASSES)
    spec = SyntheticSpec(image_size=48)
    images = [render_image(spec, i, i, i % 3) for i in range(3)]
    batch = encode(processor, prompt, images)
    return directory, prompt, batch


def test_sites_equal_pooled_transformers_activations(setup):
    directory, prompt, batch = setup
    loaded = load_model(directory)
    sites = select_sites(sites_for(sown_names(loaded.config)), ["*"])
    features, answers = PooledForward(loaded, sites, prompt.option_token_ids, None)(batch)
    reference = torch_forward(AutoModelForImageTextToText.from_pretrained(directory, dtype="float32").eval(),
                              {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values",
                                                     "image_grid_thw", "mm_token_type_ids")})
    count = len(batch["input_ids"])
    for i in range(loaded.config.vision.depth):
        expected = reference[f"vision{i}"].reshape(count, -1, reference[f"vision{i}"].shape[-1]).mean(1)
        np.testing.assert_allclose(features[f"vision.layer_{i:02d}"], expected, atol=1e-4)
    np.testing.assert_allclose(features["connector.output"], reference["merged"].reshape(count, -1, 64).mean(1),
                               atol=1e-4)
    mask, last = batch["image_mask"], batch["last_index"]
    rows = np.arange(count)
    for i in range(loaded.config.text.num_layers):
        hidden = reference[f"llm{i}"]
        image_mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        np.testing.assert_allclose(features[f"llm.layer_{i:02d}.image_mean"], image_mean, atol=1e-4)
        np.testing.assert_allclose(features[f"llm.layer_{i:02d}.last_token"], hidden[rows, last], atol=1e-4)
    option_logits = reference["logits"][rows, last][:, prompt.option_token_ids]
    expected = np.exp(option_logits - option_logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(answers[[f"answer_score_{k}" for k in range(3)]].to_numpy(), expected, atol=1e-5)
    assert (answers.answer_pred.to_numpy() == expected.argmax(1)).all()


def test_one_and_eight_devices_agree(setup):
    directory, prompt, batch = setup
    loaded = load_model(directory)
    sites = select_sites(sites_for(sown_names(loaded.config)), ["vision.*", "llm.*.last_token"])
    single, answers_1 = PooledForward(loaded, sites, prompt.option_token_ids, data_mesh(1))(batch)
    sharded, answers_8 = PooledForward(loaded, sites, prompt.option_token_ids, data_mesh(8))(batch)
    assert set(single) == {s.name for s in sites} and "connector.output" not in single
    for name in single:
        np.testing.assert_allclose(sharded[name], single[name], atol=1e-5)
    np.testing.assert_allclose(answers_8.answer_prob, answers_1.answer_prob, atol=1e-6)
