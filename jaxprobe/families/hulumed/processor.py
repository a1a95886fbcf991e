"""Hulu-Med prompts and inputs, written from the documented behaviour of its processor (never the hub's code).

- Prompt: the checkpoint's ``chat_template.json`` when present (rendered with ``add_system_prompt=True`` and
  ``image_token="<image>"``, as Hulu's README calls it), else our copy of Hulu's documented ChatML template
  (``chat_template.jinja``: ``<|im_start|>user\\n<image>\\n{question}<|im_end|>\\n<|im_start|>assistant\\n``).
- The one ``<image>`` of the prompt becomes one ``<image>`` id per visual token (``ResizeRule.tokens``), in order.
- Pixels: resized with PIL (bicubic, the size from ``resize.ResizeRule``), times ``rescale_factor``, normalised
  with the mean/std of ``preprocessor_config.json`` (Hulu's code falls back to the OpenAI-CLIP statistics only
  when the file sets none), channel-first, then patchified in Hulu's order (``resize.patchify``, merge 1).
- Positions are plain 1-D (cumsum of the mask - 1): Hulu's LLM is an ordinary Qwen2/Qwen3 decoder.

One ``encode`` call takes images that share one patch grid (the model's grid is static); ``image_grid(h, w)`` says
an image's grid before encoding, and ``native_size``/``size_unit`` are what ``capture.resolution="native"`` buckets
images by.
"""

from __future__ import annotations

import dataclasses
import json
import string
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxprobe.errors import CheckpointError, ConfigError, DatasetError
from jaxprobe.families.base import ModelInputs, Prompt, last_token_index, option_token_ids, question_text
from jaxprobe.families.hulumed.resize import DEFAULT_MAX_TOKENS, DEFAULT_MIN_TOKENS, ResizeRule, patchify
from jaxprobe.models.config import VLMConfig

IMAGE_TOKEN = "<image>"
CHAT_TEMPLATE_FILE = "chat_template.json"  # the hub's processor template: {"chat_template": "..."}
OUR_TEMPLATE = "chat_template.jinja"
PREPROCESSOR_FILE = "preprocessor_config.json"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # Hulu's fallback when the file sets no statistics
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_KEYS = frozenset({  # every key HulumedImageProcessor reads, and files' bookkeeping keys
    "image_mean", "image_std", "rescale_factor", "do_rescale", "do_normalize", "do_resize", "resample",
    "min_tokens", "max_tokens", "patch_size", "do_convert_rgb",
    "image_processor_type", "processor_class", "auto_map", "feature_extractor_type",
    "merge_size",  # a fallback the processor never uses for images: it always passes merge size 1
})


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """Rescale and mean/std of ``preprocessor_config.json`` (transformers' numerics: float64 rescale, float32)."""

    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    do_rescale: bool = True
    do_normalize: bool = True

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [H, W, C] -> float32 [C, H, W]."""
        x = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32) if self.do_rescale else \
            pixels.astype(np.float32)
        if self.do_normalize:
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return x.transpose(2, 0, 1)


def read_preprocessor(checkpoint_dir: Path, patch_size: int, pil_swap: bool) -> tuple[ResizeRule, Normalisation,
                                                                                     Image.Resampling]:
    """The resize rule, normalisation and resampling filter of ``preprocessor_config.json`` (every key checked)."""
    path = checkpoint_dir / PREPROCESSOR_FILE
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is missing or not JSON ({error}); Hulu-Med's normalisation and token budget "
                              "come from it: download the checkpoint's preprocessor_config.json") from error
    unknown = sorted(set(values) - PREPROCESSOR_KEYS)
    if unknown or not values.get("do_resize", True):
        what = f"the unknown key {unknown[0]!r}" if unknown else "do_resize=false"
        raise CheckpointError(f"{path} has {what}; jaxprobe's Hulu-Med processor implements the documented "
                              "HulumedImageProcessor (resize on) and refuses what it does not know")
    if values.get("patch_size", 14) != patch_size:
        raise CheckpointError(f"{path} patch_size={values.get('patch_size', 14)} but config.json's vision encoder "
                              f"uses {patch_size}; the processor files belong to another model")
    rule = ResizeRule(patch_size, 1, int(values.get("min_tokens", DEFAULT_MIN_TOKENS)),
                      int(values.get("max_tokens", DEFAULT_MAX_TOKENS)), pil_swap)
    normalise = Normalisation(tuple(values.get("image_mean") or OPENAI_CLIP_MEAN),
                              tuple(values.get("image_std") or OPENAI_CLIP_STD),
                              float(values.get("rescale_factor", 1 / 255)), bool(values.get("do_rescale", True)),
                              bool(values.get("do_normalize", True)))
    return rule, normalise, Image.Resampling(int(values.get("resample", Image.Resampling.BICUBIC)))


def chat_template(checkpoint_dir: Path) -> str:
    """The checkpoint's ``chat_template.json`` template when present, else our documented ChatML template."""
    path = checkpoint_dir / CHAT_TEMPLATE_FILE
    if not path.is_file():
        return resources.files("jaxprobe.families.hulumed").joinpath(OUR_TEMPLATE).read_text()
    try:
        return json.loads(path.read_text())["chat_template"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} should be JSON with a 'chat_template' string ({error}); download it "
                              "again") from error


def load_tokenizer(checkpoint_dir: Path) -> Any:
    """The checkpoint's tokenizer, never its remote code (config.json's ``auto_map`` names Hulu's modules).
    transformers reads config.json on the way and warns that it does not know the ``hulumed_*`` model_type and
    that ``rope_scaling`` is deprecated: both expected, so silenced."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return AutoTokenizer.from_pretrained(checkpoint_dir, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{checkpoint_dir} lacks a usable tokenizer: {error}") from error
    finally:
        hf_logging.set_verbosity(verbosity)


class HuluMedProcessor:
    """``FamilyProcessor`` of Hulu-Med checkpoints (``pil_swap``: see ``resize``)."""

    def __init__(self, checkpoint_dir: str | Path, config: VLMConfig, pil_swap: bool = False):
        checkpoint_dir = Path(checkpoint_dir)
        self.tokenizer: Any = load_tokenizer(checkpoint_dir)
        found = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if found != config.image_token_id:
            raise CheckpointError(f"the tokenizer in {checkpoint_dir} maps {IMAGE_TOKEN} to {found!r} but "
                                  f"config.json's image_token_index is {config.image_token_id}: tokenizer files are "
                                  "missing or from another model")
        self.rule, self.normalise, self.resample = read_preprocessor(checkpoint_dir, config.vision.patch_size,
                                                                     pil_swap)
        self.template, self.image_token_id = chat_template(checkpoint_dir), config.image_token_id

    @property
    def size_unit(self) -> int:
        return self.rule.unit

    def native_size(self, height: int, width: int) -> tuple[int, int]:
        """Hulu's target size, aspect ratio kept (``capture.resolution="native"`` resizes to it first). With
        ``pil_swap`` the processor then squashes that image to the transposed size, as the reference does to a
        file-loaded image: its grid is ``image_grid`` of the native size."""
        return self.rule.native_size(height, width)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) in pixels an image of ``height`` x ``width`` is resized to."""
        return self.rule.target_size(height, width)

    def image_grid(self, height: int, width: int) -> tuple[int, int, int]:
        """The (1, h, w) patch grid an image of ``height`` x ``width`` pixels gets: its bucket."""
        return self.rule.grid(height, width)

    def prompt(self, class_names: Sequence[str], question: str) -> Prompt:
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": question_text(class_names, question)}]}]
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=True, add_system_prompt=True,
                                                  image_token=IMAGE_TOKEN)
        if text.count(IMAGE_TOKEN) != 1:
            raise ConfigError(f"the prompt holds {text.count(IMAGE_TOKEN)} {IMAGE_TOKEN} markers, expected the "
                              f"image's one; keep {IMAGE_TOKEN} out of the question and class names")
        letters = list(string.ascii_uppercase[: len(class_names)])
        return Prompt(text, option_token_ids(self.tokenizer, text, letters), letters)

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """One uint8 RGB image [H, W, 3] -> its patches [N, 3*P*P] (float32, Hulu's order)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
            raise DatasetError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
        height, width = self.rule.target_size(*image.shape[:2])
        resized = np.asarray(Image.fromarray(image).resize((width, height), self.resample))
        return patchify(self.normalise(resized), self.rule.patch_size, self.rule.merge_size)

    def _ids(self, prompt: Prompt, tokens: int) -> np.ndarray:
        """The prompt's ids with its one ``<image>`` id repeated ``tokens`` times (``<image>`` is an added token,
        so this equals tokenising the expanded text, as Hulu's processor does)."""
        ids = np.asarray(self.tokenizer(prompt.text).input_ids)
        at = np.flatnonzero(ids == self.image_token_id)
        if len(at) != 1:
            raise CheckpointError(f"the tokenizer splits {IMAGE_TOKEN} into pieces ({len(at)} image ids in the "
                                  "prompt); it must be one added token")
        return np.concatenate([ids[: at[0]], np.full(tokens, self.image_token_id), ids[at[0] + 1:]])

    def encode(self, prompt: Prompt | Sequence[Prompt], images: Sequence[np.ndarray]) -> ModelInputs:
        """Inputs for one prompt per image (or one prompt for all), padded on the left if their lengths differ;
        the images must share one patch grid."""
        prompts = [prompt] * len(images) if isinstance(prompt, Prompt) else list(prompt)
        grids = {self.image_grid(*np.shape(image)[:2]) for image in images}
        if len(grids) != 1 or len(prompts) != len(images):
            raise DatasetError(f"one batch takes one prompt per image ({len(prompts)} for {len(images)}) and one "
                               f"patch grid, got {sorted(grids)}; group images by processor.image_grid(height, "
                               "width) first")
        grid = grids.pop()
        rows = [self._ids(p, grid[1] * grid[2]) for p in prompts]
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), self.tokenizer.pad_token_id or 0, np.int32)
        mask = np.zeros_like(ids)
        for k, row in enumerate(rows):
            ids[k, width - len(row):], mask[k, width - len(row):] = row, 1
        return ModelInputs(input_ids=ids, attention_mask=mask,
                           positions=np.clip(mask.cumsum(1) - 1, 0, None)[:, None].astype(np.int32),
                           pixels=np.stack([self.pixels(np.asarray(image)) for image in images]),
                           image_mask=(ids == self.image_token_id) & (mask == 1), last_index=last_token_index(mask),
                           image_grid=grid)
