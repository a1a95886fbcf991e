"""Conformance cases of the gemma3 family: tiny Gemma 3 models written by transformers (PyTorch) with unusual
shapes (GQA / MQA / MHA, the global layer first, in the middle or repeated, sliding windows shorter than the image
span and the prompt, linear rope scaling on global layers, pooling kernels 1 to 3, untied heads), and
processor-like inputs for them (padded on either side)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe.families.base import ModelInputs, last_token_index
from jaxprobe.families.gemma3.processor import one_d_positions

FAMILY = "gemma3"
VOCAB, IMAGE, BOI, EOI = 1024, 1020, 1018, 1019
INIT_STD = 0.1  # outputs must depend on the input for parity to mean anything (hf_keys.md)
SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=48,
              patch_size=8, hidden_act="gelu_pytorch_tanh")
SLIDING, FULL = "sliding_attention", "full_attention"


def text_config(layers: tuple[str, ...] = (SLIDING, FULL, SLIDING), window: int = 5, heads: int = 4,
                kv_heads: int = 2, head_dim: int = 16, scaling: float = 8.0) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=len(layers),
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                query_pre_attn_scalar=24, sliding_window=window, layer_types=list(layers),
                max_position_embeddings=512, initializer_range=INIT_STD,
                rope_parameters={FULL: {"rope_type": "linear", "factor": scaling, "rope_theta": 1e6},
                                 SLIDING: {"rope_type": "default", "rope_theta": 1e4}})


# name -> (model_type, text config, vision config, top-level config, input options, checkpoint options)
CASES = {
    "gemma3-gqa2-tied-window5-global-middle": (
        "gemma3", text_config(), dict(SIGLIP, vision_use_head=True), dict(mm_tokens_per_image=9), {}, {}),
    "gemma3-mqa-untied-global-first-batch3-left-padded-lengths": (
        "gemma3", text_config((FULL, SLIDING, SLIDING, FULL), window=4, kv_heads=1),
        dict(SIGLIP, vision_use_head=False), dict(mm_tokens_per_image=4, tie_word_embeddings=False),
        {"batch": 3, "pad": 3, "left": True}, {}),
    "gemma3-mha-hd8-pool1-window3-batch2-right-padded": (
        "gemma3", text_config((SLIDING, SLIDING, FULL, SLIDING), window=3, heads=8, kv_heads=8, head_dim=8,
                              scaling=1.0),
        dict(SIGLIP, image_size=32, vision_use_head=False), dict(mm_tokens_per_image=16), {"batch": 2, "pad": 3}, {}),
    "gemma3-bfloat16-hub-layout": (
        "gemma3", text_config(), dict(SIGLIP, vision_use_head=False), dict(mm_tokens_per_image=9), {},
        {"dtype": "bfloat16", "hub_layout": True}),
}


def to_hub_layout(directory: Path) -> None:
    """Rename ``vision_tower.*`` to the hub checkpoints' ``vision_tower.vision_model.*`` (what save_pretrained of
    transformers 5 drops); both load in transformers, and both must load in jaxprobe."""
    from safetensors.numpy import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(path)
    renamed = {name.replace("vision_tower.", "vision_tower.vision_model.", 1): value for name, value in tensors.items()}
    assert renamed != tensors
    save_file(renamed, path, metadata={"format": "pt"})


def save_reference(out: Path, text: dict, vision: dict, top: dict, dtype: str = "float32", hub_layout: bool = False,
                   seed: int = 0) -> Path:
    """Build a random Gemma 3 from transformers' config classes and ``save_pretrained`` it."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    torch.manual_seed(seed)
    config = Gemma3Config(text_config=Gemma3TextConfig(**text),
                          vision_config=SiglipVisionConfig(**vision, initializer_range=INIT_STD),
                          image_token_index=IMAGE, boi_token_index=BOI, eoi_token_index=EOI,
                          initializer_range=INIT_STD, **top)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():  # norms start at 0 or 1, biases at 0, the projection at 0: perturb them so they count
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * INIT_STD)
            elif "mm_input_projection" in name:
                param.normal_(0.0, INIT_STD)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    if hub_layout:
        to_hub_layout(out)
    return out


def random_inputs(vision: dict, tokens: int, batch: int = 1, seed: int = 0, pad: int = 0,
                  left: bool = False) -> ModelInputs:
    """Processor-like inputs: ids with one ``BOI image* EOI`` span per row. With ``left``, rows have different
    prompt lengths (row k is ``k * pad`` tokens shorter), padded on the left as batched generation does."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(batch):
        before, after = rng.integers(0, BOI, 5), rng.integers(0, BOI, 6 + batch * pad)
        kept = len(after) - (k * pad if left else batch * pad)
        rows.append(np.concatenate([before, [BOI], [IMAGE] * tokens, [EOI], after[:kept]]))
    width = max(len(r) for r in rows) + (0 if left else pad)
    ids = np.zeros((batch, width), np.int32)
    mask = np.zeros((batch, width), np.int32)
    for k, row in enumerate(rows):
        place = slice(width - len(row), width) if left else slice(0, len(row))
        ids[k, place], mask[k, place] = row, 1
    size, side = vision["image_size"], vision["image_size"] // vision["patch_size"]
    return ModelInputs(input_ids=ids, attention_mask=mask, positions=one_d_positions(mask),
                       pixels=rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32), image_mask=ids == IMAGE,
                       last_index=last_token_index(mask), image_grid=(1, side, side))


def build(case: str, tmp_path: Path) -> tuple[Path, ModelInputs]:
    """A transformers-written checkpoint and inputs for one conformance case."""
    _, text, vision, top, options, saving = CASES[case]
    directory = save_reference(tmp_path / "ckpt", text, vision, top, **saving)
    return directory, random_inputs(vision, top["mm_tokens_per_image"], **options)


def depths(case: str) -> tuple[int, int]:
    """(vision blocks, decoder layers) of a case."""
    _, text, vision, *_ = CASES[case]
    return vision["num_hidden_layers"], text["num_hidden_layers"]
