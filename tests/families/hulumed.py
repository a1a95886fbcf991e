"""Conformance cases of the hulumed family: tiny Hulu-Med checkpoints whose weights come from transformers'
VideoLLaMA3 (PyTorch, random) renamed into Hulu's layouts, with unusual shapes, and processor-like inputs.

transformers has no Hulu-Med class, so a case is written as: Hulu's flat config.json (the family's tiny config with
overrides) -> the family reference's ``VideoLlama3Config`` -> a random ``VideoLlama3ForConditionalGeneration`` ->
its tensors under Hulu's names (the reference's renaming, inverted) in the hub's or the original layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprobe.families.base import ModelInputs, last_token_index
from jaxprobe.families.hulumed.keymap import ORIGINAL_VISION_PREFIX, VISION_PREFIX
from jaxprobe.families.hulumed.tiny import tiny_config
from jaxprobe.families.tiny import write_json

FAMILY = "hulumed"
STD = 0.1  # outputs must depend on the input for parity to mean anything
VOCAB = 512

# name -> (model_type, LLM overrides, vision overrides, patch grid (h, w), input options, key layout, dtype)
CASES = {
    "hulumed_qwen2-gqa2-square": ("hulumed_qwen2", {}, {}, (4, 4), {}, "hub", "float32"),
    "hulumed_qwen3-qknorm-hd24-tied-wide": ("hulumed_qwen3", {}, {}, (3, 5), {}, "hub", "float32"),
    "hulumed_qwen2-mqa-original-layout-tall": ("hulumed_qwen2", {"num_key_value_heads": 1},
                                               {"num_attention_heads": 4, "layer_norm_eps": 1e-5}, (6, 2), {},
                                               "original", "float32"),
    "hulumed_qwen3-lm-head-batch2-right-padded": ("hulumed_qwen3", {"tie_word_embeddings": False,
                                                                   "num_hidden_layers": 3}, {}, (4, 4),
                                                 {"batch": 2, "pad": 3}, "hub", "float32"),
    "hulumed_qwen2-batch3-left-padded-lengths": ("hulumed_qwen2", {}, {"num_hidden_layers": 3}, (4, 6),
                                                 {"batch": 3, "pad": 4, "left": True}, "hub", "float32"),
    "hulumed_qwen2-bfloat16-checkpoint": ("hulumed_qwen2", {}, {}, (4, 4), {}, "hub", "bfloat16"),
}
HULU_NAMES = {  # video_llama_3 prefix -> Hulu-Med prefix, per layout (the reference's renaming, inverted)
    "hub": (("model.vision_model.", VISION_PREFIX), ("model.projector.", "model.mm_projector."),
            ("model.language_model.", "model.")),
    "original": (("model.vision_model.", ORIGINAL_VISION_PREFIX), ("model.projector.", "model.mm_projector."),
                 ("model.language_model.", "model.")),
}


def hulu_name(native: str, layout: str) -> str:
    for prefix, hulu in HULU_NAMES[layout]:
        if native.startswith(prefix):
            return hulu + native[len(prefix):]
    return native


def save_hulu_checkpoint(out: Path, config_json: dict, layout: str = "hub", dtype: str = "float32",
                         seed: int = 0) -> Path:
    """A random VideoLLaMA3 of ``config_json``'s sizes saved under Hulu's names with Hulu's config.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import VideoLlama3ForConditionalGeneration

    from jaxprobe.families.hulumed.reference import video_llama_3_config

    torch.manual_seed(seed)
    config = video_llama_3_config(config_json)
    model = VideoLlama3ForConditionalGeneration(config).eval()
    tensors = {}
    with torch.no_grad():  # every tensor random (norm scales around 1), so each one's mapping is tested
        for name, param in model.named_parameters():
            noise = torch.randn_like(param) * STD
            param.copy_(noise + 1 if "norm" in name and name.endswith("weight") else noise)
            if not (name == "lm_head.weight" and config.tie_word_embeddings):
                tensors[hulu_name(name, layout)] = param.detach().to(getattr(torch, dtype)).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    write_json(out / "config.json", config_json)
    return out


def random_inputs(config_json: dict, grid_hw: tuple[int, int], batch: int = 1, seed: int = 0, pad: int = 0,
                  left: bool = False) -> ModelInputs:
    """Processor-like inputs: patches and ids with one image span per row, 1-D positions. With ``left``, rows have
    different prompt lengths (row k is ``k * pad`` tokens shorter), padded on the left as batched generation does."""
    rng = np.random.default_rng(seed)
    h, w = grid_hw
    image = config_json["image_token_index"]
    vision = config_json["vision_encoder_config"]
    text = [i for i in range(VOCAB) if i != image]
    rows = []
    for k in range(batch):
        before, after = rng.choice(text, 5), rng.choice(text, 6 + batch * pad)
        kept = len(after) - (k * pad if left else batch * pad)
        rows.append(np.concatenate([before, [image] * (h * w), after[:kept]]))
    width = max(len(r) for r in rows) + (0 if left else pad)
    ids, mask = np.zeros((batch, width), np.int32), np.zeros((batch, width), np.int32)
    for k, row in enumerate(rows):
        place = slice(width - len(row), width) if left else slice(0, len(row))
        ids[k, place], mask[k, place] = row, 1
    patch_dim = 3 * vision["patch_size"] ** 2
    return ModelInputs(input_ids=ids, attention_mask=mask,
                       positions=np.clip(mask.cumsum(1) - 1, 0, None)[:, None].astype(np.int32),
                       pixels=rng.normal(size=(batch, h * w, patch_dim)).astype(np.float32),
                       image_mask=ids == image, last_index=last_token_index(mask), image_grid=(1, h, w))


def case_config(case: str) -> dict:
    model_type, llm, vision, *_ = CASES[case]
    return tiny_config(model_type, {"vocab_size": VOCAB, **llm}, vision)


def build(case: str, tmp_path: Path) -> tuple[Path, ModelInputs]:
    """A checkpoint with transformers-made weights in Hulu's layout, and inputs for one conformance case."""
    _, _, _, grid, options, layout, dtype = CASES[case]
    config_json = case_config(case)
    directory = save_hulu_checkpoint(tmp_path / "ckpt", config_json, layout, dtype)
    return directory, random_inputs(config_json, grid, **options)


def depths(case: str) -> tuple[int, int]:
    """(vision blocks, decoder layers) of a case."""
    config_json = case_config(case)
    return config_json["vision_encoder_config"]["num_hidden_layers"], config_json["num_hidden_layers"]
