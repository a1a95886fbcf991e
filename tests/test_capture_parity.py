"""Captured site vectors equal the same pooling applied to the PyTorch reference's activations."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprobe.capture.forward import PooledForward, sown_shapes
from jaxprobe.capture.sites import select_sites, sites_for
from jaxprobe.data.synthetic import SyntheticSpec, render_image
from jaxprobe.families.loading import load_model
from jaxprobe.families.registry import family_by_name

CLASSES = ["normal", "benign", "malignant"]
QUESTION = "Which of the following best describes this medical image?\n{options}\nAnswer with the option's letter."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    family = family_by_name("qwen_vl")
    directory = family.tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen2_5_vl", seed=1)
    processor = family.processor(directory)
    prompt = processor.prompt(CLASSES, QUESTION)
    spec = SyntheticSpec(image_size=48)
    inputs = processor.encode(prompt, [render_image(spec, i, i, i % 3) for i in range(3)])
    return family, directory, prompt, inputs


def test_sites_equal_pooled_reference_activations(setup):
    family, directory, prompt, inputs = setup
    loaded = load_model(directory, cache_dir=False)
    sites = select_sites(sites_for(sown_shapes(family, loaded.config)), ["*"])
    output = PooledForward(loaded, sites, answer=True, mesh=None)(inputs, prompt.option_token_ids)
    features = output.features
    reference = family.reference()
    expected = reference.run(reference.load(directory), inputs)
    for i in range(loaded.config.vision.depth):
        np.testing.assert_allclose(features[f"vision.layer_{i:02d}"], expected[f"vision.layer_{i:02d}"].mean(1),
                                   atol=1e-4)
    np.testing.assert_allclose(features["connector.output"], expected["connector.output"].mean(1), atol=1e-4)
    mask, last, rows = np.asarray(inputs.image_mask), np.asarray(inputs.last_index), np.arange(inputs.batch_size)
    for i in range(loaded.config.text.num_layers):
        hidden = expected[f"llm.layer_{i:02d}"]
        image_mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        np.testing.assert_allclose(features[f"llm.layer_{i:02d}.image_mean"], image_mean, atol=1e-4)
        np.testing.assert_allclose(features[f"llm.layer_{i:02d}.last_token"], hidden[rows, last], atol=1e-4)
    option_logits = expected["logits"][rows, last][:, prompt.option_token_ids]
    probs = np.exp(option_logits - option_logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(output.option_probs, probs, atol=1e-5)


def test_vision_only_selection_runs_only_the_needed_blocks(setup):
    """``vision.layer_00`` alone: one vision block, no connector, no LLM, no answer; same vector as a full run."""
    family, directory, prompt, inputs = setup
    loaded = load_model(directory, cache_dir=False)
    everything = sites_for(sown_shapes(family, loaded.config))
    first = PooledForward(loaded, select_sites(everything, ["vision.layer_00"]), answer=False, mesh=None)
    assert (first.plan.vision_layers, first.plan.text_layers, first.plan.connector) == (1, 0, False)
    full = PooledForward(loaded, everything, answer=True, mesh=None)(inputs, prompt.option_token_ids)
    alone = first(inputs)
    assert alone.option_probs is None and set(alone.features) == {"vision.layer_00"}
    np.testing.assert_allclose(alone.features["vision.layer_00"], full.features["vision.layer_00"], atol=1e-6)
