"""Qwen-VL prompts and inputs: the checkpoint's own chat template and image processor -> ``ModelInputs``.

Everything positional comes from the processor's outputs, never from hand-counted offsets: the image-token span,
the last prompt token, and the M-RoPE positions (text tokens count up on all three axes, image tokens get their
(t, h, w) grid position; transformers' ``get_rope_index`` for images), computed in numpy before the jitted
forward.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxprobe.errors import CheckpointError
from jaxprobe.families.base import (
    ModelInputs,
    Prompt,
    chat_template_prompt,
    last_token_index,
    load_tokenizer_and_image_processor,
)

IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"


def rope_index(input_ids: np.ndarray, attention_mask: np.ndarray, grid: Sequence[int], image_token_id: int,
               merge: int) -> np.ndarray:
    """M-RoPE positions [B, 3, T] for right- or left-padded ``input_ids`` [B, T] with one image of ``grid`` each
    (padding positions are 1, as transformers leaves them)."""
    positions = np.ones((input_ids.shape[0], 3, input_ids.shape[1]), np.int64)
    t, h, w = (int(g) for g in grid)
    for row, (ids, mask) in enumerate(zip(input_ids, attention_mask.astype(bool), strict=True)):
        pieces, current = [], 0
        for image, run in itertools.groupby(ids[mask] == image_token_id):
            length = len(list(run))
            if not image:
                pieces.append(np.arange(length)[None].repeat(3, 0) + current)
                current += length
                continue
            th, hh, ww = np.meshgrid(np.arange(t), np.arange(h // merge), np.arange(w // merge), indexing="ij")
            block = np.stack([th, hh, ww]).reshape(3, -1) + current
            if block.shape[1] != length:
                raise CheckpointError(f"row {row}: {length} image tokens but the grid {(t, h, w)} gives "
                                      f"{block.shape[1]}: the tokenizer and image processor disagree")
            pieces.append(block)
            current += max(h, w) // merge
        positions[row, :, mask] = np.concatenate(pieces, axis=1).T
    return positions


def _processor_class():
    """Qwen2-VL's processor without its video processor (built lazily: it imports transformers).

    transformers 5 always builds the video processor, which needs torchvision; jaxprobe never feeds video, so
    this subclass takes only the image processor and tokenizer and otherwise behaves like the original.
    """
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwenVLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = IMAGE_TOKEN, VIDEO_TOKEN
            self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
            self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwenVLProcessor


class QwenVLProcessor:
    """``FamilyProcessor`` of Qwen2-VL / Qwen2.5-VL checkpoints."""

    def __init__(self, checkpoint_dir: str | Path, merge_size: int, image_token_id: int):
        from transformers import Qwen2VLImageProcessorPil

        checkpoint_dir = Path(checkpoint_dir)
        tokenizer, image_processor = load_tokenizer_and_image_processor(checkpoint_dir, Qwen2VLImageProcessorPil)
        if not tokenizer.chat_template:
            raise CheckpointError(f"the tokenizer in {checkpoint_dir} has no chat template; jaxprobe builds prompts "
                                  "with the checkpoint's own template")
        if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != image_token_id:
            raise CheckpointError(f"the tokenizer in {checkpoint_dir} maps {IMAGE_TOKEN} to "
                                  f"{tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)!r} but config.json's image_token_id "
                                  f"is {image_token_id}: tokenizer files are missing or from another model")
        self.hf = _processor_class()(image_processor, tokenizer, chat_template=tokenizer.chat_template)
        tokenizer.padding_side = "left"  # prompts of different lengths (paraphrases) batch for generation
        self.tokenizer, self.merge_size = tokenizer, merge_size
        self.size_unit = image_processor.patch_size * merge_size
        self.pixel_budget = (image_processor.size.shortest_edge, image_processor.size.longest_edge)

    def native_size(self, height: int, width: int) -> tuple[int, int]:
        """Qwen-VL's ``smart_resize``: multiples of patch x merge, pixel count within [min_pixels, max_pixels]."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        if max(height, width) / min(height, width) > 200:
            raise CheckpointError(f"an image of {height} x {width} pixels is too elongated for Qwen-VL's processor "
                                  "(aspect ratio over 200)")
        low, high = self.pixel_budget
        return smart_resize(height, width, factor=self.size_unit, min_pixels=low, max_pixels=high)

    def prompt(self, class_names: Sequence[str], question: str) -> Prompt:
        return chat_template_prompt(self.hf, self.tokenizer, class_names, question)

    def encode(self, prompt: Prompt | Sequence[Prompt], images: Sequence[np.ndarray]) -> ModelInputs:
        """Inputs for one prompt per image (or one prompt for all), padded on the left if their lengths differ."""
        texts = [prompt.text] * len(images) if isinstance(prompt, Prompt) else [p.text for p in prompt]
        batch = self.hf(text=texts, images=list(images), return_tensors="np", padding=True)
        grids = np.asarray(batch["image_grid_thw"])
        if len({tuple(g) for g in grids.tolist()}) != 1:
            raise ValueError(f"one batch must share one image grid, got {grids.tolist()}")
        ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
        pixels = np.asarray(batch["pixel_values"], np.float32)
        return ModelInputs(
            input_ids=ids.astype(np.int32), attention_mask=mask.astype(np.int32),
            positions=rope_index(ids, mask, grids[0], self.hf.image_token_id, self.merge_size).astype(np.int32),
            pixels=pixels.reshape(len(images), -1, pixels.shape[-1]),
            image_mask=ids == self.hf.image_token_id,
            last_index=last_token_index(mask),
            image_grid=tuple(int(g) for g in grids[0]))
