"""Gemma 3 prompts and inputs: the checkpoint's chat template, tokenizer and ``Gemma3Processor`` -> ``ModelInputs``.

The processor expands each ``<start_of_image>`` of the templated prompt to ``\\n\\n<start_of_image>`` + one
``<image_soft_token>`` per pooled image token + ``<end_of_image>\\n\\n``, and marks those soft tokens in
``token_type_ids`` (where the decoder attends bidirectionally). Pan-and-scan (extra crops with their own image
spans) is not implemented and refused. Gemma's tokenizer prepends ``<bos>`` while its chat template already
writes one, so a templated prompt is tokenized without special tokens, as transformers' own
``apply_chat_template(tokenize=True)`` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.errors import CheckpointError, ConfigError
from jaxprobe.families.base import (
    ModelInputs,
    Prompt,
    chat_template_prompt,
    last_token_index,
    load_tokenizer_and_image_processor,
)
from jaxprobe.models.config import VLMConfig

PROCESSOR_CONFIG = "processor_config.json"


def one_d_positions(attention_mask: np.ndarray) -> np.ndarray:
    """[B, 1, T] rotary positions of a right- or left-padded batch: cumsum(mask) - 1, clipped at 0."""
    return np.clip(np.cumsum(attention_mask, axis=1) - 1, 0, None)[:, None].astype(np.int32)


def _pan_and_scan_requested(settings: Any) -> bool:
    """Whether ``do_pan_and_scan`` is true anywhere in a (nested) processor setting."""
    if isinstance(settings, dict):
        return bool(settings.get("do_pan_and_scan")) or any(map(_pan_and_scan_requested, settings.values()))
    return False


def _image_seq_length(checkpoint_dir: Path, tokens_per_image: int) -> int:
    """The processor's image-token count (processor_config.json), which must be what the projector emits; a
    processor config that turns pan-and-scan on is refused."""
    path = checkpoint_dir / PROCESSOR_CONFIG
    settings = json.loads(path.read_text()) if path.is_file() else {}
    if _pan_and_scan_requested(settings):
        raise ConfigError(f"{path} turns pan-and-scan on (do_pan_and_scan); jaxprobe implements one image span per "
                          "image: set it to false or remove it")
    stored = settings.get("image_seq_length")
    if stored is not None and stored != tokens_per_image:
        raise CheckpointError(f"{path} expands an image to {stored} tokens but config.json's mm_tokens_per_image is "
                              f"{tokens_per_image}: the processor files are from another model")
    return tokens_per_image


def _check_tokenizer(tokenizer, config: VLMConfig, checkpoint_dir: Path) -> None:
    """The tokenizer's image tokens are config.json's (else the image span would be misplaced or missing)."""
    if not tokenizer.chat_template:
        raise CheckpointError(f"the tokenizer in {checkpoint_dir} has no chat template; jaxprobe builds prompts with "
                              "the checkpoint's own template")
    for name in ("boi_token", "eoi_token", "image_token"):
        if getattr(tokenizer, name, None) is None:
            raise CheckpointError(f"the tokenizer in {checkpoint_dir} does not name Gemma 3's {name} "
                                  "(tokenizer_config.json); tokenizer files are missing or from another model")
    if tokenizer.image_token_id != config.image_token_id:
        raise CheckpointError(f"the tokenizer in {checkpoint_dir} maps {tokenizer.image_token} to "
                              f"{tokenizer.image_token_id} but config.json's image_token_index is "
                              f"{config.image_token_id}: tokenizer files are missing or from another model")


def _check_image_processor(image_processor, config: VLMConfig, checkpoint_dir: Path) -> None:
    if image_processor.do_pan_and_scan:
        raise ConfigError(f"{checkpoint_dir}/preprocessor_config.json turns pan-and-scan on (do_pan_and_scan); "
                          "jaxprobe implements one image span per image: set it to false or null")
    size = image_processor.size
    if (size.height, size.width) != (config.vision.image_size,) * 2:
        raise CheckpointError(f"the image processor in {checkpoint_dir} resizes to {size.height}x{size.width} but the "
                              f"vision tower takes {config.vision.image_size}x{config.vision.image_size} images")


class Gemma3Processor:
    """``FamilyProcessor`` of Gemma 3 checkpoints."""

    def __init__(self, checkpoint_dir: str | Path, config: VLMConfig, tokens_per_image: int):
        from transformers import Gemma3ImageProcessorPil
        from transformers import Gemma3Processor as HFGemma3Processor

        checkpoint_dir = Path(checkpoint_dir)
        tokenizer, image_processor = load_tokenizer_and_image_processor(checkpoint_dir, Gemma3ImageProcessorPil)
        _check_tokenizer(tokenizer, config, checkpoint_dir)
        _check_image_processor(image_processor, config, checkpoint_dir)
        self.hf = HFGemma3Processor(image_processor, tokenizer, chat_template=tokenizer.chat_template,
                                    image_seq_length=_image_seq_length(checkpoint_dir, tokens_per_image))
        tokenizer.padding_side = "left"  # prompts of different lengths (paraphrases) batch for generation
        self.tokenizer, self.image_token_id = tokenizer, config.image_token_id
        self.image_size = config.vision.image_size
        self.grid = (1, *(config.vision.image_size // config.vision.patch_size,) * 2)
        self.size_unit = config.vision.patch_size * config.connector.merge_size  # pixels per pooled token side

    def native_size(self, height: int, width: int) -> tuple[int, int]:
        """The tower's fixed square (896 px for Gemma 3): the processor squashes every image to it."""
        return self.image_size, self.image_size

    def prompt(self, class_names: Sequence[str], question: str) -> Prompt:
        return chat_template_prompt(self.hf, self.tokenizer, class_names, question)

    def encode(self, prompt: Prompt | Sequence[Prompt], images: Sequence[np.ndarray]) -> ModelInputs:
        """Inputs for one prompt per image (or one prompt for all), padded on the left if their lengths differ."""
        texts = [prompt.text] * len(images) if isinstance(prompt, Prompt) else [p.text for p in prompt]
        bos = self.tokenizer.bos_token
        templated = bool(bos) and all(text.startswith(bos) for text in texts)  # the template wrote the BOS
        batch = self.hf(text=texts, images=[[image] for image in images], return_tensors="np", padding=True,
                        do_pan_and_scan=False, add_special_tokens=not templated)
        ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
        image_mask = ids == self.image_token_id
        if not np.array_equal(np.asarray(batch["token_type_ids"]).astype(bool), image_mask):
            raise CheckpointError("the processor's token_type_ids do not mark exactly the image tokens; the tokenizer "
                                  "and config.json disagree on the image token")
        return ModelInputs(input_ids=ids.astype(np.int32), attention_mask=mask.astype(np.int32),
                           positions=one_d_positions(mask), pixels=np.asarray(batch["pixel_values"], np.float32),
                           image_mask=image_mask, last_index=last_token_index(mask), image_grid=self.grid)
