"""Hulu-Med's processor, written from its documented behaviour: target sizes and token counts computed by hand
(square, wide, tall, banker's rounding, the token budget both ways, the PIL swap), the documented patch order, the
resize/rescale/normalise pipeline against transformers' image transforms, the prompt and its token expansion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from jaxprobe.errors import CheckpointError, ConfigError, DatasetError
from jaxprobe.families.hulumed.processor import HuluMedProcessor
from jaxprobe.families.hulumed.resize import ResizeRule, patchify
from jaxprobe.families.hulumed.tiny import write_tiny_checkpoint
from jaxprobe.families.registry import family_by_name
from jaxprobe.weights.reader import read_config_json

FAMILY = family_by_name("hulumed")
CLASSES = ["benign", "malignant"]
QUESTION = "Which?\n{options}\nAnswer."

# (height, width) -> (target height, target width, tokens) at patch 14, 16..16384 tokens (Hulu's defaults)
HAND_COMPUTED = {
    (512, 512): (518, 518, 1369),  # square: 36.57 -> 37 patches a side
    (300, 800): (294, 798, 1197),  # wide: 21.43 -> 21, 57.14 -> 57
    (1000, 200): (994, 196, 994),  # tall: 71.43 -> 71, 14.29 -> 14
    (287, 301): (280, 308, 440),  # banker's rounding: 20.5 -> 20 (half-up: 21), 21.5 -> 22
    (3000, 1500): (2534, 1260, 16290),  # 214 x 107 > 16384: beta = 1.18377, floor(181.02) = 181, floor(90.51) = 90
    (30, 10): (98, 42, 21),  # 2 x 1 < 16: beta = 3.23316, ceil(6.93) = 7, ceil(2.31) = 3
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint("hulumed_qwen2", tmp_path_factory.mktemp("hulu"), seed=0)


@pytest.fixture(scope="module")
def processor(checkpoint):
    return FAMILY.processor(checkpoint)


def _config(checkpoint):
    return FAMILY.parse_config(read_config_json(checkpoint))


@pytest.mark.parametrize(("size", "expected"), list(HAND_COMPUTED.items()), ids=lambda x: str(x))
def test_target_size_and_tokens_by_hand(size, expected):
    rule = ResizeRule(14)
    assert rule.target_size(*size) == expected[:2]
    assert rule.grid(*size) == (1, expected[0] // 14, expected[1] // 14)
    assert rule.tokens(*size) == expected[2]


@pytest.mark.parametrize(("size", "expected"), list(HAND_COMPUTED.items()), ids=lambda x: str(x))
def test_pil_swap_gives_the_transposed_target(size, expected):
    """Hulu reads PIL's (W, H) as (H, W): the target of the transposed image, applied as (h, w)."""
    swapped = ResizeRule(14, pil_swap=True)
    assert swapped.target_size(*size) == (expected[1], expected[0])
    assert swapped.tokens(*size) == expected[2]


def test_tiny_processor_grids_budget_and_swap_flag(checkpoint, processor):
    """The tiny checkpoint's budget (patch 8, 16..64 tokens) read from preprocessor_config.json."""
    assert processor.image_grid(48, 80) == (1, 6, 10) and processor.target_size(45, 83) == (48, 80)  # wide
    assert processor.image_grid(36, 36) == (1, 4, 4)  # 4.5 -> 4 (banker's), 16 tokens
    assert processor.image_grid(128, 128) == (1, 8, 8)  # 256 tokens shrink to the 64 allowed
    assert processor.image_grid(8, 8) == (1, 4, 4)  # 1 token grows to the 16 required
    swapped = HuluMedProcessor(checkpoint, _config(checkpoint), pil_swap=True)
    assert swapped.image_grid(48, 80) == (1, 10, 6) and swapped.image_grid(36, 36) == (1, 4, 4)


def documented_patches(image: np.ndarray, patch: int, merge: int) -> np.ndarray:
    """Hulu's order spelled out: merge blocks row-major, patches row-major inside a block, each (C, y, x)."""
    _, height, width = image.shape
    rows = []
    for block_row in range(height // patch // merge):
        for block_col in range(width // patch // merge):
            for i in range(merge):
                for j in range(merge):
                    y, x = (block_row * merge + i) * patch, (block_col * merge + j) * patch
                    rows.append(image[:, y:y + patch, x:x + patch].reshape(-1))
    return np.stack(rows)


@pytest.mark.parametrize("merge", [1, 2])
def test_patchify_follows_the_documented_order(merge):
    image = np.random.default_rng(0).normal(size=(3, 4 * 8, 6 * 8))
    np.testing.assert_array_equal(patchify(image, 8, merge), documented_patches(image, 8, merge))


def _documented_pixels(image: np.ndarray, size: tuple[int, int], mean, std) -> np.ndarray:
    """Hulu's _preprocess with transformers' own transforms: resize (PIL bicubic), rescale, normalise, CHW."""
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    resized = resize(image, size, resample=PILImageResampling.BICUBIC, input_data_format=ChannelDimension.LAST)
    normalised = normalize(rescale(resized, 1 / 255, input_data_format=ChannelDimension.LAST), mean, std,
                           input_data_format=ChannelDimension.LAST)
    return documented_patches(normalised.transpose(2, 0, 1), 8, 1)


def test_pixels_follow_the_documented_pipeline(checkpoint, processor):
    image = np.random.default_rng(1).integers(0, 256, (45, 83, 3), dtype=np.uint8)
    expected = _documented_pixels(image, (48, 80), [0.5] * 3, [0.5] * 3)  # 5.6 -> 6, 10.4 -> 10 patches
    np.testing.assert_allclose(processor.pixels(image), expected, atol=1e-6)
    swapped = HuluMedProcessor(checkpoint, _config(checkpoint), pil_swap=True)
    height, width = Image.fromarray(image).size  # the reference's swap, literally: (83, 45)
    assert (height, width) == (83, 45)
    np.testing.assert_allclose(swapped.pixels(image), _documented_pixels(image, (80, 48), [0.5] * 3, [0.5] * 3),
                               atol=1e-6)


def test_normalisation_comes_from_preprocessor_config(tmp_path):
    directory = write_tiny_checkpoint("hulumed_qwen2", tmp_path, seed=0)
    white = np.full((32, 32, 3), 255, np.uint8)
    np.testing.assert_allclose(FAMILY.processor(directory).pixels(white), 1.0, atol=1e-6)  # (1 - 0.5) / 0.5
    settings = json.loads((directory / "preprocessor_config.json").read_text())
    for key in ("image_mean", "image_std"):
        settings.pop(key)
    (directory / "preprocessor_config.json").write_text(json.dumps(settings))
    clip = FAMILY.processor(directory).pixels(white).reshape(-1, 3, 64)  # Hulu's fallback: OpenAI-CLIP statistics
    np.testing.assert_allclose(clip[:, 0], (1 - 0.48145466) / 0.26862954, rtol=1e-6)
    np.testing.assert_allclose(clip[:, 2], (1 - 0.40821073) / 0.27577711, rtol=1e-6)


def test_prompt_is_chatml_with_one_image_token_per_visual_token(processor):
    prompt = processor.prompt(CLASSES, QUESTION)
    assert prompt.text == ("<|im_start|>user\n<image>\nWhich?\nA. benign\nB. malignant\nAnswer.<|im_end|>\n"
                           "<|im_start|>assistant\n")
    images = [np.zeros((48, 80, 3), np.uint8), np.full((47, 81, 3), 9, np.uint8)]  # two sizes, one grid
    inputs = processor.encode(prompt, images)
    assert inputs.image_grid == (1, 6, 10) and inputs.pixels.shape == (2, 60, 3 * 8 * 8)
    assert (inputs.image_mask.sum(1) == 60).all()
    expanded = prompt.text.replace("<image>", "<image>" * 60)
    np.testing.assert_array_equal(inputs.input_ids[0], processor.tokenizer(expanded).input_ids)
    np.testing.assert_array_equal(inputs.positions[:, 0], np.arange(inputs.input_ids.shape[1])[None].repeat(2, 0))
    assert (inputs.last_index == inputs.input_ids.shape[1] - 1).all()


def test_prompts_of_different_lengths_pad_on_the_left(processor):
    short, long = processor.prompt(CLASSES, QUESTION), processor.prompt(CLASSES, "Look closely. " + QUESTION)
    image = np.zeros((48, 48, 3), np.uint8)
    inputs = processor.encode([long, short], [image, image])
    alone = processor.encode(short, [image])
    pad = inputs.input_ids.shape[1] - alone.input_ids.shape[1]
    assert pad > 0 and inputs.attention_mask[1, :pad].sum() == 0 and inputs.attention_mask[0].all()
    np.testing.assert_array_equal(inputs.input_ids[1, pad:], alone.input_ids[0])
    np.testing.assert_array_equal(inputs.positions[1, 0, pad:], alone.positions[0, 0])
    assert (inputs.image_mask.sum(1) == 36).all() and not inputs.image_mask[1, :pad].any()
    assert (inputs.last_index == inputs.input_ids.shape[1] - 1).all()


def test_native_size_is_a_fixed_point_and_the_swap_happens_at_encoding(checkpoint, processor):
    """Extraction resizes to ``native_size`` first; with the swap flag, encoding then squashes to the transpose."""
    assert processor.size_unit == 8
    for size in ((45, 83), (300, 20), (36, 36), (500, 700)):
        native = processor.native_size(*size)
        assert processor.native_size(*native) == native and native[0] % 8 == 0 and native[1] % 8 == 0
    swapped = HuluMedProcessor(checkpoint, _config(checkpoint), pil_swap=True)
    assert swapped.native_size(45, 83) == (48, 80) and swapped.image_grid(48, 80) == (1, 10, 6)
    assert swapped.encode(swapped.prompt(CLASSES, QUESTION), [np.zeros((48, 80, 3), np.uint8)]).image_grid == (1, 10,
                                                                                                               6)


def test_one_call_encodes_one_grid(processor):
    prompt = processor.prompt(CLASSES, QUESTION)
    with pytest.raises(DatasetError, match="one patch grid"):
        processor.encode(prompt, [np.zeros((48, 80, 3), np.uint8), np.zeros((80, 48, 3), np.uint8)])
    with pytest.raises(DatasetError, match="uint8 RGB"):
        processor.pixels(np.zeros((48, 80), np.uint8))


def test_the_checkpoints_chat_template_json_is_used(tmp_path):
    directory = write_tiny_checkpoint("hulumed_qwen3", tmp_path, seed=0)
    ours = json.loads((directory / "chat_template.json").read_text())["chat_template"]
    template = "{%- if add_system_prompt %}<|im_start|>system\nBe a radiologist.<|im_end|>\n{% endif %}" + ours
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    text = FAMILY.processor(directory).prompt(CLASSES, QUESTION).text
    assert text.startswith("<|im_start|>system\nBe a radiologist.<|im_end|>\n<|im_start|>user\n<image>\n")
    (directory / "chat_template.json").unlink()  # then our copy of the documented template
    assert FAMILY.processor(directory).prompt(CLASSES, QUESTION).text.startswith("<|im_start|>user\n<image>\n")


def test_processor_files_that_disagree_are_refused(tmp_path, processor):
    directory = write_tiny_checkpoint("hulumed_qwen2", tmp_path, seed=0)
    settings = json.loads((directory / "preprocessor_config.json").read_text())
    path = directory / "preprocessor_config.json"
    for change, match in ((dict(patch_size=14), "patch_size=14"), (dict(max_pixels=1), "unknown key 'max_pixels'"),
                          (dict(do_resize=False), "do_resize=false")):
        path.write_text(json.dumps({**settings, **change}))
        with pytest.raises(CheckpointError, match=match):
            FAMILY.processor(directory)
    path.write_text(json.dumps(settings))
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "image_token_index": 2}))
    with pytest.raises(CheckpointError, match="maps <image> to 3"):
        FAMILY.processor(directory)
    with pytest.raises(ConfigError, match="<image> markers"):
        processor.prompt(["<image>", "b"], QUESTION)
