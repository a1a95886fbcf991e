"""Answer-token SFT examples: the prompt extraction asks with, followed by the answer generation parses.

The prompt is the family processor's own (``processor.prompt(class_names, capture.question)``: the checkpoint's
chat template, the classes as lettered options), the image goes where the template puts it, and the target is
the answer ("B", or "B. benign") followed by the token that ends the model's turn in that template. The loss
reads only the target tokens, so the model learns to answer, not to echo the question.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import struct

from jaxprobe.capture.answers import parse_answer
from jaxprobe.errors import CheckpointError
from jaxprobe.families.base import ModelInputs, Prompt, last_token_index


@dataclasses.dataclass(frozen=True)
class AnswerTargets:
    """Per class: the answer text taught (with the end-of-turn token) and its token ids (the loss's targets)."""

    prompt: Prompt
    texts: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]
    end_of_turn: int

    @property
    def longest(self) -> int:
        return max(len(ids) for ids in self.ids)


@struct.dataclass
class SFTBatch:
    """One batch of prompt + answer sequences (numpy, or placed on the mesh)."""

    inputs: ModelInputs  # prompt + target tokens, padded as the processor pads
    target_ids: Any  # [B, K] int32: the answer's tokens (then padding)
    target_index: Any  # [B, K] int32: the positions whose logits predict them (the first is the prompt's last)
    target_mask: Any  # [B, K] float32: 1 for real target tokens
    labels: Any  # [B] int32 class of each row
    weights: Any  # [B] float32: 0 for rows that only pad the batch to the mesh


def answer_text(letters: Sequence[str], class_names: Sequence[str], label: int, form: str) -> str:
    """The reply taught for class ``label``: its option letter, or letter and class name."""
    if form == "letter":
        return letters[label]
    return f"{letters[label]}. {class_names[label].replace('_', ' ')}"


def end_of_turn(tokenizer: Any, prompt_text: str, eos: Sequence[int]) -> tuple[int, str]:
    """(id, text) of the stop token that ends a turn in this chat template: the first of generation's EOS ids whose
    text closes the user's turn in the prompt (Qwen's <|im_end|>, Gemma's <end_of_turn>), else the first EOS id
    (LLaVA/Vicuna's </s>, which no turn of the prompt shows)."""
    if not eos:
        raise CheckpointError("the checkpoint declares no EOS token (generation_config.json / config.json "
                              "eos_token_id), so no end of turn can be taught; add eos_token_id")
    for token_id in eos:
        text = tokenizer.convert_ids_to_tokens(int(token_id))
        if text and text in prompt_text:
            return int(token_id), text
    return int(eos[0]), tokenizer.convert_ids_to_tokens(int(eos[0]))


def answer_targets(processor: Any, prompt: Prompt, class_names: Sequence[str], form: str, eos: Sequence[int],
                   image: np.ndarray) -> AnswerTargets:
    """Each class's target tokens, read off the processor's own encoding of prompt + answer (so image-token
    expansion and special tokens are the processor's); refused if the answer merges into the prompt's tokens or
    does not parse back to its class."""
    eot_id, eot_text = end_of_turn(processor.tokenizer, prompt.text, eos)
    prompt_ids = np.asarray(processor.encode(prompt, [image]).input_ids[0])
    texts, ids = [], []
    for label in range(len(class_names)):
        answer = answer_text(prompt.letters, class_names, label, form)
        if parse_answer(answer, prompt.letters, class_names).prediction != label:
            raise CheckpointError(f"the taught answer {answer!r} does not parse back to class {label}")
        text = answer + eot_text
        full = np.asarray(processor.encode(dataclasses.replace(prompt, text=prompt.text + text), [image]).input_ids[0])
        if len(full) <= len(prompt_ids) or not (full[: len(prompt_ids)] == prompt_ids).all() or full[-1] != eot_id:
            raise CheckpointError(f"the answer {text!r} does not tokenize as a continuation of the prompt ending in "
                                  f"token {eot_id}; end the question template with a newline or space")
        texts.append(text)
        ids.append(tuple(int(t) for t in full[len(prompt_ids):]))
    return AnswerTargets(prompt, tuple(texts), tuple(ids), eot_id)


def target_positions(attention_mask: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """[B] index of each row's first target token: the targets are the row's last ``length`` real tokens."""
    return last_token_index(attention_mask) - np.asarray(lengths) + 1


def sft_batch(processor: Any, targets: AnswerTargets, images: Sequence[np.ndarray], labels: Sequence[int],
              weights: Sequence[float]) -> SFTBatch:
    """Prompt + answer sequences of one batch (one image size), with where each answer token is predicted."""
    prompts = [dataclasses.replace(targets.prompt, text=targets.prompt.text + targets.texts[k]) for k in labels]
    inputs = processor.encode(prompts, images)
    ids = np.asarray(inputs.input_ids)
    lengths = [len(targets.ids[k]) for k in labels]
    starts = target_positions(np.asarray(inputs.attention_mask), lengths)
    width = targets.longest
    target_ids, index, mask = (np.zeros((len(labels), width), np.int32) for _ in range(3))
    for row, (label, start, length) in enumerate(zip(labels, starts, lengths, strict=True)):
        found = ids[row, start:start + length]
        if list(found) != list(targets.ids[label]):
            raise CheckpointError(f"row {row}: the batch encodes the answer as {list(found)}, expected "
                                  f"{list(targets.ids[label])}; the processor tokenizes prompts inconsistently")
        target_ids[row, :length] = targets.ids[label]
        index[row, :length] = np.arange(start - 1, start + length - 1)
        mask[row, :length] = 1
    return SFTBatch(inputs, target_ids, index, mask.astype(np.float32), np.asarray(labels, np.int32),
                    np.asarray(weights, np.float32))
