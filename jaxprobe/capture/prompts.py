"""Classification prompts from the checkpoint's own processor and chat template, and their token bookkeeping.

The question lists the dataset's classes as lettered options; the model's answer is read as the scores of each
option letter's first token at the position after the prompt. Everything positional (image-token span, last
prompt token) comes from the processor's outputs, never from hand-counted offsets.
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from jaxprobe.errors import CheckpointError, ConfigError

DEFAULT_QUESTION = ("Which of the following best describes this medical image?\n{options}\n"
                    "Answer with the option's letter.")
DEFAULT_OPTION = "{letter}. {name}"


class ImageOnlyQwenVLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without its video processor.

    transformers 5 always builds the video processor, which needs torchvision; jaxprobe never feeds video, so
    this subclass takes only the image processor and tokenizer and otherwise behaves like the original.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def load_processor(checkpoint_dir: str | Path) -> ImageOnlyQwenVLProcessor:
    """The checkpoint's tokenizer (with its chat template) and image processor."""
    checkpoint_dir = Path(checkpoint_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(checkpoint_dir)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{checkpoint_dir} lacks a usable tokenizer or preprocessor_config.json: "
                              f"{error}") from error
    if not tokenizer.chat_template:
        raise CheckpointError(f"the tokenizer in {checkpoint_dir} has no chat template; jaxprobe builds prompts "
                              "with the checkpoint's own template")
    return ImageOnlyQwenVLProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template)


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str  # the full chat-templated prompt, with one image placeholder, ending where the answer starts
    option_token_ids: list[int]  # first token of each option letter, in class order
    letters: list[str]


def question_text(class_names: list[str], question: str = DEFAULT_QUESTION, option: str = DEFAULT_OPTION) -> str:
    if len(class_names) > len(string.ascii_uppercase):
        raise ConfigError(f"{len(class_names)} classes exceed the {len(string.ascii_uppercase)} option letters")
    options = "\n".join(option.format(letter=string.ascii_uppercase[k], name=name.replace("_", " "))
                        for k, name in enumerate(class_names))
    return question.format(options=options)


def option_token_ids(tokenizer, prompt_text: str, letters: list[str]) -> list[int]:
    """First token the model would emit for each letter right after the prompt (merges checked, not assumed)."""
    prefix = tokenizer(prompt_text, add_special_tokens=False).input_ids
    ids = []
    for letter in letters:
        full = tokenizer(prompt_text + letter, add_special_tokens=False).input_ids
        if full[: len(prefix)] != prefix or len(full) == len(prefix):
            raise ConfigError(f"the option letter {letter!r} merges with the end of the prompt; end the prompt "
                              "template with a newline or space")
        ids.append(full[len(prefix)])
    if len(set(ids)) != len(ids):
        raise ConfigError(f"option letters {letters} do not start with distinct tokens ({ids})")
    return ids


def build_prompt(processor: ImageOnlyQwenVLProcessor, class_names: list[str], question: str = DEFAULT_QUESTION,
                 option: str = DEFAULT_OPTION, answer_prefix: str = "") -> Prompt:
    """The chat-templated classification prompt and the token ids of its options."""
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": question_text(class_names, question, option)}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + answer_prefix
    letters = list(string.ascii_uppercase[: len(class_names)])
    return Prompt(text, option_token_ids(processor.tokenizer, text, letters), letters)


def encode(processor: ImageOnlyQwenVLProcessor, prompt: Prompt, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Processor outputs for a batch of same-size images, plus the bookkeeping the capture needs."""
    batch = processor(text=[prompt.text] * len(images), images=list(images), return_tensors="np")
    inputs = {key: np.asarray(value) for key, value in batch.items()}
    inputs["image_mask"] = inputs["input_ids"] == processor.image_token_id
    inputs["last_index"] = inputs["attention_mask"].sum(axis=1) - 1  # right-padded: last real token
    return inputs
