"""Conformance cases of the llava family.

- ``llava`` (transformers' layout): tiny ``LlavaForConditionalGeneration`` models written by transformers
  (``save_pretrained``, or its in-memory transformers-5 names) with unusual shapes.
- repository layout (``llava_llama`` / ``llava_mistral`` / ``llava_qwen2``): transformers has no class for it, so
  the checkpoint is written by our tiny writer with unusual shapes, and the reference loads it in transformers'
  ``llava`` classes after the documented renaming (``jaxprobe.families.llava.keymap.REPOSITORY_TO_HF``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe.families.base import ModelInputs, last_token_index
from jaxprobe.families.llava.repository import image_slot_id
from jaxprobe.families.llava.tiny import write_tiny_checkpoint

FAMILY = "llava"
VOCAB, IMAGE, TEXT_IDS = 1024, 1020, 1000
INIT_STD = 0.1  # outputs must depend on the input for parity to mean anything (hf_keys.md)
CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32,
            patch_size=8, projection_dim=32, hidden_act="quick_gelu")
ODD_CLIP = dict(CLIP, hidden_size=24, num_attention_heads=2, num_hidden_layers=4, image_size=40)  # 5 x 5 patches


def text_config(heads: int = 6, kv_heads: int = 2, hidden: int = 48, layers: int = 2, tie: bool = False,
                **extra) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                tie_word_embeddings=tie, initializer_range=INIT_STD, **extra)


YI = text_config(heads=14, kv_heads=2, hidden=56, rope_theta=5e6)  # Yi-1.5-34B's 7 query heads per KV head
# name -> (model_type, LLM, text config, vision config, (feature layer, keep CLS), input options, how it is written)
CASES = {
    "llava-llama-gqa7-theta5e6": ("llava", "llama", YI, CLIP, (-2, False), {}, "save_pretrained"),
    "llava-mistral-window8-full-layer1": ("llava", "mistral", text_config(sliding_window=8), ODD_CLIP, (1, True),
                                          {"batch": 2}, "save_pretrained"),
    "llava-qwen2-mqa-tied-batch3-left-padded": ("llava", "qwen2", text_config(kv_heads=1, tie=True), CLIP,
                                                (-2, False), {"batch": 3, "pad": 4}, "save_pretrained"),
    "llava-llama-transformers5-names-bfloat16": ("llava", "llama", text_config(layers=3), CLIP, (-1, False), {},
                                                 "in-memory-bfloat16"),
    "llava_llama-repository-gqa7-batch2-left-padded": ("llava_llama", "llama", YI, CLIP, (-2, False),
                                                       {"batch": 2, "pad": 3}, "repository"),
    "llava_mistral-repository-cls_patch-layer-3": ("llava_mistral", "mistral", text_config(kv_heads=3), ODD_CLIP,
                                                   (-3, True), {}, "repository"),
    "llava_qwen2-repository-mha-layer2": ("llava_qwen2", "qwen2", text_config(heads=4, kv_heads=4, hidden=32),
                                          CLIP, (2, False), {"batch": 2}, "repository"),
}


def save_reference(out: Path, llm: str, text: dict, vision: dict, select: tuple[int, bool], how: str,
                   seed: int = 0) -> Path:
    """Build a random ``LlavaForConditionalGeneration`` from transformers' config classes and save it."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    layer, keep_cls = select
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    config = LlavaConfig(vision_config=AutoConfig.for_model("clip_vision_model", **vision, initializer_range=INIT_STD),
                         text_config=AutoConfig.for_model(llm, **text), image_token_index=IMAGE,
                         vision_feature_layer=layer, vision_feature_select_strategy="full" if keep_cls else "default",
                         image_seq_length=patches + keep_cls, tie_word_embeddings=text["tie_word_embeddings"])
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # norms start at 1 and biases at 0; perturb them so their mapping is tested too
        for name, param in model.named_parameters():
            if "norm" in name or "layrnorm" in name or name.endswith("bias") or "class_embedding" in name:
                param.add_(torch.randn_like(param) * INIT_STD)
    if how == "save_pretrained":
        model.save_pretrained(out)
        return out
    model.save_pretrained(out)  # config and the rest; the weights again under transformers 5's in-memory names
    state = {name: value.to(torch.bfloat16).contiguous() for name, value in model.state_dict().items()
             if not (config.tie_word_embeddings and name == "lm_head.weight")}
    for file in out.glob("*.safetensors"):
        file.unlink()
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


def random_inputs(vision: dict, keep_cls: bool, image_id: int, batch: int = 1, seed: int = 0,
                  pad: int = 0) -> ModelInputs:
    """Processor-like inputs: one image span per row; with ``pad``, row k is ``k * pad`` tokens shorter, padded on
    the left as batched generation does."""
    rng = np.random.default_rng(seed)
    size = vision["image_size"]
    tokens = (size // vision["patch_size"]) ** 2 + keep_cls
    rows = []
    for k in range(batch):
        before, after = rng.integers(0, TEXT_IDS, 4 + batch * pad), rng.integers(0, TEXT_IDS, 5)
        rows.append(np.concatenate([before[k * pad:], [image_id] * tokens, after]))
    width = max(len(row) for row in rows)
    ids, mask = np.zeros((batch, width), np.int32), np.zeros((batch, width), np.int32)
    for k, row in enumerate(rows):
        ids[k, width - len(row):], mask[k, width - len(row):] = row, 1
    return ModelInputs(input_ids=ids, attention_mask=mask,
                       positions=np.clip(mask.cumsum(1) - 1, 0, None)[:, None, :].astype(np.int32),
                       pixels=rng.normal(size=(batch, 3, size, size)).astype(np.float32),
                       image_mask=ids == image_id, last_index=last_token_index(mask))


def build(case: str, tmp_path: Path) -> tuple[Path, ModelInputs]:
    """A checkpoint (transformers-written, or our repository-layout writer's) and inputs for one case."""
    model_type, llm, text, vision, select, options, how = CASES[case]
    directory = tmp_path / "ckpt"
    if how == "repository":
        layer, keep_cls = select
        multimodal = {"mm_vision_select_layer": layer, "mm_vision_select_feature": "cls_patch" if keep_cls else "patch"}
        write_tiny_checkpoint(model_type, directory, seed=0, text=text, vision=vision, multimodal=multimodal)
        image_id = image_slot_id(text["vocab_size"])
    else:
        save_reference(directory, llm, text, vision, select, how)
        image_id = IMAGE
    return directory, random_inputs(vision, select[1], image_id, **options)


def depths(case: str) -> tuple[int, int]:
    """(vision blocks, decoder layers) of a case."""
    _, _, text, vision, *_ = CASES[case]
    return vision["num_hidden_layers"], text["num_hidden_layers"]
