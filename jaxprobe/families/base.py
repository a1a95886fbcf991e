"""What a model family provides (``Family``), what it hands to capture (``ModelInputs``, ``Prompt``), and what it
tells scoring about its sites (``SiteLayout``).

Adding a family means one folder under ``families/`` implementing ``Family`` and one line in ``registry.py``;
capture, parity, the CLI and the conformance tests work through this interface only.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jaxprobe.errors import CheckpointError, ConfigError
from jaxprobe.models.config import VLMConfig
from jaxprobe.models.inputs import ModelInputs
from jaxprobe.models.layers import layer_name
from jaxprobe.weights.keymap import KeyMap

__all__ = ["Family", "FamilyProcessor", "ModelInputs", "Prompt", "Reference", "SiteLayout", "last_token_index",
           "option_token_ids", "question_text"]

DEFAULT_OPTION = "{letter}. {name}"


@dataclasses.dataclass(frozen=True)
class SiteLayout:
    """Where a model's sites sit, written to ``features/meta.json`` so scoring never imports model code.

    ``connector_source`` is the vision site whose output the connector reads: the last block for Qwen-VL, but
    layer -2 for LLaVA, so the connector verdict must compare that site, not simply the last one.
    """

    vision_depth: int
    llm_depth: int
    connector_source: str
    vision_pooling: str = "mean_patches"  # "mean_patches" | "cls": what ``vision.layer_NN`` holds
    vision_cls: bool = False  # the tower has a CLS token at position 0 (then patch means exclude it)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def reading_last_block(cls, config: VLMConfig) -> SiteLayout:
        """The layout of a model whose connector reads the tower's last block (Qwen-VL, Hulu-Med, Gemma 3)."""
        depth = config.vision.depth
        return cls(vision_depth=depth, llm_depth=config.text.num_layers,
                   connector_source=f"vision.{layer_name(depth - 1, depth)}")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A chat-templated classification prompt with one image, ending where the answer starts."""

    text: str
    option_token_ids: list[int]  # first token of each option letter, in class order
    letters: list[str]


def question_text(class_names: Sequence[str], question: str, option: str = DEFAULT_OPTION) -> str:
    """The question with the classes as lettered options (underscores in class names read as spaces)."""
    if len(class_names) > len(string.ascii_uppercase):
        raise ConfigError(f"{len(class_names)} classes exceed the {len(string.ascii_uppercase)} option letters")
    options = "\n".join(option.format(letter=string.ascii_uppercase[k], name=name.replace("_", " "))
                        for k, name in enumerate(class_names))
    return question.format(options=options)


def option_token_ids(tokenizer: Any, prompt_text: str, letters: Sequence[str]) -> list[int]:
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
        raise ConfigError(f"option letters {list(letters)} do not start with distinct tokens ({ids})")
    return ids


def last_token_index(attention_mask: np.ndarray) -> np.ndarray:
    """[B] index of each row's last real token, whether the batch is padded on the right or on the left."""
    mask = np.asarray(attention_mask).astype(bool)
    return (mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)).astype(np.int32)


class FamilyProcessor(Protocol):
    """A checkpoint's tokenizer + image processor, turning images and a prompt into ``ModelInputs``."""

    tokenizer: Any
    size_unit: int  # pixels per image-token side: the sizes the processor keeps as they are are multiples of it

    def native_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) this processor resizes an image to at its native resolution (aspect ratio kept
        within the checkpoint's pixel budget; fixed-size towers: their size). ``native_size`` of its own result
        is that result: extraction resizes to it first, so images of one size bucket share one patch grid."""
        ...

    def prompt(self, class_names: Sequence[str], question: str) -> Prompt:
        """The classification prompt from the checkpoint's own chat template."""
        ...

    def encode(self, prompt: Prompt, images: Sequence[np.ndarray]) -> ModelInputs:
        """Numpy ``ModelInputs`` for same-size uint8 RGB images [H, W, 3] (one image per row)."""
        ...


def load_tokenizer_and_image_processor(checkpoint_dir: Path, image_processor_class: Any) -> tuple[Any, Any]:
    """The checkpoint's tokenizer and its ``preprocessor_config.json`` through ``image_processor_class`` (a
    ``*ImageProcessorPil``: torchvision does not work beside this torch), or a ``CheckpointError`` naming what is
    missing."""
    from transformers import AutoTokenizer

    try:
        return (AutoTokenizer.from_pretrained(checkpoint_dir),
                image_processor_class.from_pretrained(checkpoint_dir))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{checkpoint_dir} lacks a usable tokenizer or preprocessor_config.json: "
                              f"{error}") from error


def chat_template_prompt(hf_processor: Any, tokenizer: Any, class_names: Sequence[str], question: str) -> Prompt:
    """The prompt as the checkpoint's own chat template writes one user turn (the image, then the question with
    lettered options) and opens the assistant's turn."""
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": question_text(class_names, question)}]}]
    text = hf_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    letters = list(string.ascii_uppercase[: len(class_names)])
    return Prompt(text, option_token_ids(tokenizer, text, letters), letters)


def require_torch() -> None:
    """The PyTorch reference needs torch; say how to get it instead of an ImportError."""
    try:
        import torch  # noqa: F401
    except ImportError as error:
        raise CheckpointError("parity needs the PyTorch reference: pip install torch==2.13.0") from error


class Reference(Protocol):
    """The PyTorch model (transformers) and hooks that ``jaxprobe parity`` compares against (imports torch)."""

    def load(self, checkpoint_dir: Path, dtype: str = "float32") -> Any:
        """The transformers model in ``dtype`` ("float32" for parity, "bfloat16" for the bf16 comparison)."""
        ...

    def run(self, model: Any, inputs: ModelInputs) -> dict[str, np.ndarray]:
        """Activations keyed like ours: ``vision.layer_NN`` (as ``vision.layers`` rows), ``connector.output``,
        ``llm.layer_NN`` and ``logits`` [B, T, V]."""
        ...

    def generate(self, model: Any, inputs: ModelInputs, max_new_tokens: int) -> np.ndarray:
        """transformers' greedy ``generate`` (no EOS stop): the new tokens [B, max_new_tokens]."""
        ...


class Family(Protocol):
    """One checkpoint family: config translation, key map, processor, site layout, tiny checkpoints, reference.

    Optional: ``check_checkpoint(checkpoint_dir, config)``, which ``load_model`` calls before converting, for checks
    of the files a key map cannot make (llava: the repository layout's two copies of the vision tower).
    """

    name: str  # e.g. "qwen_vl"
    model_types: tuple[str, ...]  # config.json model_types it claims
    refused_model_types: dict[str, str]  # related model_types it refuses, with the reason (may be empty)
    converter_version: int  # bump when the key map or a module changes: it enters the params cache key

    def parse_config(self, config_json: dict[str, Any]) -> VLMConfig:
        """Our module config; any HF attribute the modules do not implement is refused with ``ConfigError``."""
        ...

    def keymap(self, config: VLMConfig) -> KeyMap: ...

    def sharding_rules(self, config: VLMConfig) -> list[tuple[str, tuple[str | None, ...]]]:
        """(param path regex, PartitionSpec entries) over the ``model`` mesh axis, first match wins."""
        ...

    def init_inputs(self, config: VLMConfig) -> ModelInputs:
        """Small inputs for ``jax.eval_shape`` (param shapes do not depend on sequence length or image size)."""
        ...

    def processor(self, checkpoint_dir: Path) -> FamilyProcessor: ...

    def synthetic_inputs(self, config: VLMConfig, batch: int = 1, seed: int = 0) -> ModelInputs:
        """Random but well-formed inputs (one image span per row, non-square grid) for checkpoints that ship no
        tokenizer or image processor, e.g. a bare ``save_pretrained`` of the model: parity still runs on them."""
        ...

    def site_layout(self, config: VLMConfig) -> SiteLayout: ...

    def tiny_checkpoint(self, out_dir: Path, model_type: str, seed: int = 0) -> Path:
        """A tiny random checkpoint in the hub's own layout, written offline without torch."""
        ...

    def reference(self) -> Reference: ...
