"""Tiny random LLaVA checkpoints in both hub layouts, written offline and without torch.

- ``llava``: a llava-hf conversion (``LlavaForConditionalGeneration``; hub names ``language_model.model.*``,
  ``vision_tower.vision_model.*``, ``multi_modal_projector.*``), with the tokenizer, chat template, image
  processor and processor config transformers' ``LlavaProcessor`` reads. transformers loads it as is.
- ``llava_llama`` / ``llava_mistral`` / ``llava_qwen2``: the LLaVA repository's layout as HuatuoGPT-Vision ships
  it: config.json = the LLM's config + ``mm_*`` fields, one safetensors with ``model.*``, ``lm_head.weight``,
  ``model.mm_projector.{0,2}.*`` and the CLIP tower under ``model.vision_tower.vision_tower.vision_model.*``, the
  tokenizer at the root (no chat template: the prompt format is the model's own, see PROMPT.md), and the tower
  again as a folder ``vit/<name>/`` (a ``CLIPConfig`` config.json, its image processor, and the same tower
  weights, as safetensors). config.json also carries the tiny tower's ``vision_config`` (repository.py).

Sizes are data and can be overridden (conformance cases use unusual shapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.numpy import save_file

from jaxprobe.errors import CheckpointError
from jaxprobe.families.llava import repository
from jaxprobe.families.llava.config import HF_MODEL_TYPE
from jaxprobe.families.llava.keymap import to_llava_hf
from jaxprobe.families.tiny import Shapes, decoder_shapes, linear, norm, random_tensors, write_json, write_tokenizer
from jaxprobe.weights.reader import SINGLE_FILE

SPECIAL_TOKENS = ("<unk>", "<|startoftext|>", "<|endoftext|>", "<image>")  # Yi's ids: pad/unk 0, bos 1, eos 2
TOKEN_ID = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
REPOSITORY_TOWER = "model.vision_tower.vision_tower."  # + vision_model.*: the CLIPVisionModel inside LLaVA's tower
TOWER_FOLDER = "./vit/clip_vit_tiny_patch8_32"
ARCHITECTURES = {"llava_llama": "LlavaLlamaForCausalLM", "llava_mistral": "LlavaMistralForCausalLM",
                 "llava_qwen2": "LlavaQwen2ForCausalLM", HF_MODEL_TYPE: "LlavaForConditionalGeneration"}
LLM_OF = {**repository.LLM_OF, HF_MODEL_TYPE: "llama"}  # the -hf tiny: HuatuoGPT-Vision-34B-hf's Yi (a Llama)
TEXT = {  # Yi-1.5-like: GQA, rope theta 5e6, no biases; legacy rope fields as the real config.json has them
    "vocab_size": 512, "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 6, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6, "rope_theta": 5e6, "rope_scaling": None, "tie_word_embeddings": False,
    "bos_token_id": TOKEN_ID["<|startoftext|>"], "eos_token_id": TOKEN_ID["<|endoftext|>"],
    "pad_token_id": TOKEN_ID["<unk>"],
}
LLM_EXTRAS = {"llama": {"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1},
              "mistral": {"sliding_window": None}, "qwen2": {"use_sliding_window": False}}
VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
          "num_attention_heads": 4, "image_size": 32, "patch_size": 8, "num_channels": 3,
          "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 32}
MULTIMODAL = {  # HuatuoGPT-Vision-34B's mm_* fields (llava.md B1), pointing at the tiny tower folder
    "mm_vision_tower": TOWER_FOLDER, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad", "use_mm_proj": True,
    "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "tokenizer_model_max_length": 4096,
    "tokenizer_padding_side": "left", "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
    "mm_projector_lr": None,
}
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
CHAT_TEMPLATE = (  # HuatuoGPT-Vision's turns (cli.py); images render as <image>\n before the user's text
    "{% for message in messages %}{{ '<|user|>\\n' if message['role'] == 'user' else '<|assistant|>\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def text_config(llm: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {**TEXT, **LLM_EXTRAS[llm], **(overrides or {})}


def clip_shapes(vision: Mapping[str, Any], prefix: str) -> Shapes:
    """A ``CLIPVisionModel``'s tensors under ``prefix`` + ``vision_model.``."""
    width, inner, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    p = f"{prefix}vision_model."
    shapes: Shapes = {f"{p}embeddings.class_embedding": (width,),
                      f"{p}embeddings.patch_embedding.weight": (width, vision["num_channels"], patch, patch),
                      f"{p}embeddings.position_embedding.weight": ((vision["image_size"] // patch) ** 2 + 1, width)}
    shapes |= norm(f"{p}pre_layrnorm", width, bias=True) | norm(f"{p}post_layernorm", width, bias=True)
    for i in range(vision["num_hidden_layers"]):
        layer = f"{p}encoder.layers.{i}"
        shapes |= norm(f"{layer}.layer_norm1", width, bias=True) | norm(f"{layer}.layer_norm2", width, bias=True)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes |= linear(f"{layer}.self_attn.{proj}", width, width)
        shapes |= linear(f"{layer}.mlp.fc1", inner, width) | linear(f"{layer}.mlp.fc2", width, inner)
    return shapes


def repository_shapes(text: Mapping[str, Any], vision: Mapping[str, Any], llm: str) -> Shapes:
    projector = (linear("model.mm_projector.0", text["hidden_size"], vision["hidden_size"])
                 | linear("model.mm_projector.2", text["hidden_size"], text["hidden_size"]))
    return decoder_shapes(text, qkv_bias=llm == "qwen2") | clip_shapes(vision, REPOSITORY_TOWER) | projector


def image_processor_config(vision: Mapping[str, Any], processor_type: str) -> dict[str, Any]:
    """The OpenAI-CLIP preprocessing (resize shortest edge, centre crop, CLIP mean/std) at the tower's size."""
    size = vision["image_size"]
    return {"image_processor_type": processor_type, "do_resize": True, "size": {"shortest_edge": size},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD, "do_convert_rgb": True}


def tiny_config(model_type: str, text: Mapping[str, Any] | None = None, vision: Mapping[str, Any] | None = None,
                multimodal: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config.json of a tiny ``model_type`` checkpoint, with optional overrides."""
    if model_type not in ARCHITECTURES:
        raise CheckpointError(f"no tiny llava checkpoint for model_type {model_type!r}; choose one of "
                              f"{sorted(ARCHITECTURES)}")
    llm = LLM_OF[model_type]
    text_fields = text_config(llm, text)
    vision_fields = {**VISION, **(vision or {})}
    common = {"model_type": model_type, "architectures": [ARCHITECTURES[model_type]], "torch_dtype": "float32"}
    if model_type == HF_MODEL_TYPE:
        options = {"vision_feature_layer": -2, "vision_feature_select_strategy": "default", **(multimodal or {})}
        patches = (vision_fields["image_size"] // vision_fields["patch_size"]) ** 2
        return {**common, "text_config": {**text_fields, "model_type": llm}, "vision_config": vision_fields,
                "image_token_index": TOKEN_ID["<image>"], "projector_hidden_act": "gelu",
                "multimodal_projector_bias": True, "tie_word_embeddings": text_fields["tie_word_embeddings"],
                "image_seq_length": patches + (options["vision_feature_select_strategy"] == "full"), **options}
    return {**common, **text_fields, **MULTIMODAL, "mm_hidden_size": vision_fields["hidden_size"],
            "vision_config": vision_fields, **(multimodal or {})}


def _write_tokenizer(out_dir: Path, chat_template: str | None) -> None:
    from transformers import AutoTokenizer

    write_tokenizer(out_dir, SPECIAL_TOKENS, eos="<|endoftext|>", pad="<unk>", chat_template=chat_template)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)  # Yi's tokenizer names its BOS; the repository's prompts
    tokenizer.bos_token = "<|startoftext|>"  # skip it (add_special_tokens=False) but LLaVA-Med's need it
    tokenizer.save_pretrained(out_dir)


def _write_tower_folder(out_dir: Path, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
    """``vit/<name>/``: a CLIPConfig config.json, the CLIP image processor, and the tower's weights."""
    folder = out_dir / config["mm_vision_tower"]
    folder.mkdir(parents=True, exist_ok=True)
    vision = config["vision_config"]
    clip_text = {"model_type": "clip_text_model", "hidden_size": vision["hidden_size"], "num_hidden_layers": 1,
                 "num_attention_heads": vision["num_attention_heads"], "intermediate_size": vision["intermediate_size"],
                 "vocab_size": 64, "max_position_embeddings": 16}
    write_json(folder / "config.json", {"model_type": "clip", "architectures": ["CLIPModel"], "vision_config": vision,
                                        "text_config": clip_text, "projection_dim": vision["projection_dim"]})
    write_json(folder / "preprocessor_config.json", image_processor_config(vision, "CLIPImageProcessor"))
    tower = {name[len(REPOSITORY_TOWER):]: value for name, value in tensors.items()
             if name.startswith(REPOSITORY_TOWER)}
    save_file(tower, folder / SINGLE_FILE, metadata={"format": "pt"})


def write_tiny_checkpoint(model_type: str, out_dir: str | Path, seed: int = 0, text: Mapping[str, Any] | None = None,
                          vision: Mapping[str, Any] | None = None,
                          multimodal: Mapping[str, Any] | None = None) -> Path:
    """Write a tiny random checkpoint of ``model_type`` (either layout) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_config(model_type, text, vision, multimodal)
    hf = model_type == HF_MODEL_TYPE
    text_fields = config["text_config"] if hf else config
    tensors = random_tensors(repository_shapes(text_fields, config["vision_config"], LLM_OF[model_type]), seed)
    if hf:
        tensors = {to_llava_hf(name): value for name, value in tensors.items()}
    _write_tokenizer(out_dir, CHAT_TEMPLATE if hf else None)  # before config.json, which AutoTokenizer would read
    save_file(tensors, out_dir / SINGLE_FILE, metadata={"format": "pt"})
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "generation_config.json", {k: text_fields[k] for k in ("bos_token_id", "eos_token_id")})
    if hf:
        write_json(out_dir / "preprocessor_config.json", image_processor_config(config["vision_config"],
                                                                               "CLIPImageProcessor"))
        write_json(out_dir / "processor_config.json", {
            "processor_class": "LlavaProcessor", "patch_size": config["vision_config"]["patch_size"],
            "vision_feature_select_strategy": config["vision_feature_select_strategy"],
            "num_additional_image_tokens": 1, "image_token": "<image>"})
    else:
        _write_tower_folder(out_dir, config, tensors)
    return out_dir
