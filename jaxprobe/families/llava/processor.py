"""LLaVA prompts and inputs -> ``ModelInputs``, for both layouts.

- ``llava`` (-hf conversions): transformers' ``LlavaProcessor`` with the checkpoint's own chat template; it
  expands ``<image>`` into one image token per connector output.
- repository layout (``llava_llama`` ...): no HF processor exists; the prompt is built as the model's own code
  builds it (PROMPT.md, with sources): the image padded to a square with the CLIP mean colour, CLIP preprocessing
  from the tower folder's ``preprocessor_config.json``, ``<image>\\n`` before the question, the model's
  conversation format, text chunks tokenized around the image, which fills one slot per image feature.

LLaVA's positions are plain 1-D: cumsum(mask) - 1 over real tokens (as transformers computes them for left-padded
batches), with one image feature per token slot.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.errors import CheckpointError, ConfigError
from jaxprobe.families.base import ModelInputs, Prompt, last_token_index, option_token_ids, question_text
from jaxprobe.families.llava import repository
from jaxprobe.families.llava.config import image_tokens, is_repository_layout
from jaxprobe.models.config import VLMConfig
from jaxprobe.weights.reader import read_config_json

IMAGE_PLACEHOLDER = "<image>"  # LLaVA's DEFAULT_IMAGE_TOKEN: where the image goes in the prompt text


@dataclasses.dataclass(frozen=True)
class Conversation:
    """One model's single-turn prompt: ``user`` with ``{text}`` = the user's text, then ``generation`` (what opens
    the assistant's answer); ``bos``: the token ids start with the tokenizer's BOS."""

    user: str
    generation: str
    bos: bool
    source: str


HUATUOGPT_VISION = Conversation("<|user|>\n{text}\n", "<|assistant|>\n", bos=False,
                                source="FreedomIntelligence/HuatuoGPT-Vision cli.py (a6476ac): chunks tokenized "
                                       "with add_special_tokens=False")
MISTRAL_INSTRUCT = Conversation("[INST] {text} [/INST]", "", bos=True,
                                source="LLaVA conversation.py conv_mistral_instruct (LLaVA-Med v1.5's conv mode), "
                                       "tokenizer_image_token keeps the first chunk's BOS")
CONVERSATIONS = {"llava_llama": HUATUOGPT_VISION, "llava_qwen2": HUATUOGPT_VISION, "llava_mistral": MISTRAL_INSTRUCT}


def one_d_positions(attention_mask: np.ndarray) -> np.ndarray:
    """[B, 1, T] positions of real tokens counted from 0 (padding at 0), for 1-D rotary embeddings."""
    return np.clip(np.cumsum(attention_mask, axis=1) - 1, 0, None)[:, None, :].astype(np.int32)


def expand2square(image: np.ndarray, background: Sequence[int]) -> np.ndarray:
    """LLaVA's ``expand2square``: the image centred on a square canvas of ``background`` colour, its side the
    longer edge (offsets rounded down, as PIL's paste at ``(side - edge) // 2``)."""
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    canvas = np.empty((side, side, image.shape[2]), image.dtype)
    canvas[...] = np.asarray(background, image.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top:top + height, left:left + width] = image
    return canvas


def fixed_tower_size(height: int, width: int, side: int, pad_square: bool) -> tuple[int, int]:
    """The native size of an image for a fixed-size tower: aspect ratio kept, with the edge the processor maps onto
    ``side`` already at ``side`` (padding to a square: the longer edge; CLIP's resize + centre crop: the shorter),
    so the processor's own padding or cropping still sees the image's real shape."""
    edge = max(height, width) if pad_square else min(height, width)
    return max(1, round(height * side / edge)), max(1, round(width * side / edge))


def prompt_texts(prompt: Prompt | Sequence[Prompt], count: int) -> list[str]:
    """One prompt text per image (a single prompt serves every image)."""
    texts = [prompt.text] * count if isinstance(prompt, Prompt) else [p.text for p in prompt]
    if len(texts) != count:
        raise ConfigError(f"{len(texts)} prompts for {count} images: give one prompt, or one per image")
    return texts


def _letters(class_names: Sequence[str]) -> list[str]:
    return list(string.ascii_uppercase[: len(class_names)])


def _check_pixels(pixels: np.ndarray, config: VLMConfig, source: str) -> np.ndarray:
    size = config.vision.image_size
    if pixels.ndim != 4 or pixels.shape[1:] != (config.vision.in_channels, size, size):
        raise CheckpointError(f"{source} gives pixels of shape {pixels.shape[1:]} per image but the CLIP tower takes "
                              f"{(config.vision.in_channels, size, size)}: the image processor's size/crop_size "
                              "disagrees with the tower's image_size")
    return pixels.astype(np.float32)


class LlavaHFProcessor:
    """``FamilyProcessor`` of llava-hf checkpoints (transformers' ``LlavaProcessor``)."""

    def __init__(self, checkpoint_dir: Path, config: VLMConfig):
        from transformers import LlavaProcessor

        try:
            self.hf = LlavaProcessor.from_pretrained(checkpoint_dir)
        except (OSError, ValueError, TypeError) as error:
            raise CheckpointError(f"{checkpoint_dir} lacks a usable tokenizer, preprocessor_config.json or "
                                  f"processor_config.json: {error}") from error
        if not (checkpoint_dir / "processor_config.json").is_file():
            self._settings_from(config)
        self.tokenizer, self.config = self.hf.tokenizer, config
        self.tokenizer.padding_side = "left"  # prompts of different lengths (paraphrases) batch for generation
        self.size_unit = config.vision.patch_size
        self.pad_square = bool(getattr(self.hf.image_processor, "do_pad", False))
        if not (self.hf.chat_template or self.tokenizer.chat_template):
            raise CheckpointError(f"{checkpoint_dir} has no chat template; jaxprobe builds prompts with the "
                                  "checkpoint's own template")
        if self.hf.image_token_id != config.image_token_id:
            raise CheckpointError(f"the tokenizer in {checkpoint_dir} maps {self.hf.image_token!r} to "
                                  f"{self.hf.image_token_id} but config.json's image_token_index is "
                                  f"{config.image_token_id}: tokenizer files are missing or from another model")

    def _settings_from(self, config: VLMConfig) -> None:
        """Without processor_config.json, ``LlavaProcessor`` knows neither the patch size nor that CLIP's CLS token
        counts: take them from config.json (what the llava-hf conversions write there)."""
        self.hf.patch_size = config.vision.patch_size
        self.hf.vision_feature_select_strategy = "default" if config.vision.drop_cls else "full"
        self.hf.num_additional_image_tokens = 1

    def native_size(self, height: int, width: int) -> tuple[int, int]:
        return fixed_tower_size(height, width, self.config.vision.image_size, self.pad_square)

    def prompt(self, class_names: Sequence[str], question: str) -> Prompt:
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": question_text(class_names, question)}]}]
        template = self.hf.chat_template or self.tokenizer.chat_template
        text = self.hf.apply_chat_template(messages, chat_template=template, tokenize=False,
                                           add_generation_prompt=True)
        letters = _letters(class_names)
        return Prompt(text, option_token_ids(self.tokenizer, text, letters), letters)

    def encode(self, prompt: Prompt | Sequence[Prompt], images: Sequence[np.ndarray]) -> ModelInputs:
        """Inputs for one prompt per image (or one prompt for all), padded on the left if their lengths differ."""
        batch = self.hf(text=prompt_texts(prompt, len(images)), images=list(images), return_tensors="np",
                        padding=True)
        ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
        image_mask = ids == self.config.image_token_id
        expected = image_tokens(self.config.vision)
        if (image_mask.sum(1) != expected).any():
            raise CheckpointError(f"the processor gives {sorted(set(image_mask.sum(1).tolist()))} image tokens per "
                                  f"image but the connector emits {expected}: processor_config.json's patch_size, "
                                  "vision_feature_select_strategy or num_additional_image_tokens disagree with "
                                  "config.json")
        return ModelInputs(input_ids=ids.astype(np.int32), attention_mask=mask.astype(np.int32),
                           positions=one_d_positions(mask),
                           pixels=_check_pixels(np.asarray(batch["pixel_values"]), self.config, "the image processor"),
                           image_mask=image_mask, last_index=last_token_index(mask))


class RepositoryProcessor:
    """``FamilyProcessor`` of repository-layout checkpoints: the prompt as the model's own code builds it."""

    def __init__(self, checkpoint_dir: Path, config: VLMConfig):
        from transformers import AutoTokenizer, CLIPImageProcessorPil

        config_json = read_config_json(checkpoint_dir)
        tower = repository.tower_dir(checkpoint_dir, config_json)
        if tower is None or not (tower / "preprocessor_config.json").is_file():
            raise CheckpointError(f"LLaVA preprocesses images with the CLIP image processor of mm_vision_tower="
                                  f"{config_json['mm_vision_tower']!r}, but {checkpoint_dir} has no "
                                  f"{config_json['mm_vision_tower']}/preprocessor_config.json; put the tower's "
                                  "preprocessor_config.json there")
        try:
            # the LLM's config picks the tokenizer class if tokenizer_config.json names none (llava_* is unknown)
            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir,
                                                           config=repository.text_hf_config(config_json))
            self.image_processor = CLIPImageProcessorPil.from_pretrained(tower)
        except (OSError, ValueError, TypeError) as error:
            raise CheckpointError(f"{checkpoint_dir} lacks a usable tokenizer or {tower}/preprocessor_config.json: "
                                  f"{error}") from error
        self.config, self.conversation = config, CONVERSATIONS[config_json["model_type"]]
        self.pad_square = config_json.get("image_aspect_ratio") == "pad"
        self.size_unit = config.vision.patch_size
        self.max_length = int(config_json.get("tokenizer_model_max_length") or 0)
        if self.conversation.bos and self.tokenizer.bos_token_id is None:
            raise CheckpointError(f"the tokenizer in {checkpoint_dir} has no BOS token, which this model's prompts "
                                  "start with")

    def native_size(self, height: int, width: int) -> tuple[int, int]:
        return fixed_tower_size(height, width, self.config.vision.image_size, self.pad_square)

    def prompt(self, class_names: Sequence[str], question: str) -> Prompt:
        user = f"{IMAGE_PLACEHOLDER}\n{question_text(class_names, question)}"
        text = self.conversation.user.format(text=user) + self.conversation.generation
        letters = _letters(class_names)
        return Prompt(text, option_token_ids(self.tokenizer, text, letters), letters)

    def token_ids(self, text: str) -> tuple[list[int], int]:
        """The prompt's ids with the image's slots (``image_slot_id``), and where the slots start."""
        chunks = text.split(IMAGE_PLACEHOLDER)
        if len(chunks) != 2:
            raise ConfigError(f"a LLaVA prompt holds exactly one {IMAGE_PLACEHOLDER}, found {len(chunks) - 1}")
        before, after = (self.tokenizer(chunk, add_special_tokens=False).input_ids for chunk in chunks)
        if self.conversation.bos:
            before = [self.tokenizer.bos_token_id, *before]
        ids = [*before, *[self.config.image_token_id] * image_tokens(self.config.vision), *after]
        if self.max_length and len(ids) > self.max_length:
            raise ConfigError(f"the prompt is {len(ids)} tokens with the image, above config.json's "
                              f"tokenizer_model_max_length={self.max_length}, where LLaVA would cut it; shorten the "
                              "question")
        return ids, len(before)

    def pixels(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[B, 3, S, S]: each image padded to a square with the CLIP mean colour (``image_aspect_ratio: pad``),
        then the tower's CLIP preprocessing."""
        if self.pad_square:
            background = tuple(int(x * 255) for x in self.image_processor.image_mean)
            images = [expand2square(np.asarray(image), background) for image in images]
        batch = self.image_processor(images=list(images), return_tensors="np")
        return _check_pixels(np.asarray(batch["pixel_values"]), self.config, "the tower's image processor")

    def encode(self, prompt: Prompt | Sequence[Prompt], images: Sequence[np.ndarray]) -> ModelInputs:
        """Inputs for one prompt per image (or one prompt for all), padded on the left if their lengths differ."""
        rows = [self.token_ids(text) for text in prompt_texts(prompt, len(images))]
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = np.full((len(rows), width), pad, np.int32)
        mask, image_mask = np.zeros_like(input_ids), np.zeros(input_ids.shape, bool)
        for row, (ids, start) in enumerate(rows):
            offset = width - len(ids)
            input_ids[row, offset:], mask[row, offset:] = ids, 1
            image_mask[row, offset + start:offset + start + image_tokens(self.config.vision)] = True
        return ModelInputs(input_ids=input_ids, attention_mask=mask, positions=one_d_positions(mask),
                           pixels=self.pixels(images), image_mask=image_mask, last_index=last_token_index(mask))


def make_processor(checkpoint_dir: str | Path, config: VLMConfig) -> Any:
    checkpoint_dir = Path(checkpoint_dir)
    if is_repository_layout(read_config_json(checkpoint_dir)):
        return RepositoryProcessor(checkpoint_dir, config)
    return LlavaHFProcessor(checkpoint_dir, config)
