"""The LLaVA repository's own ``config.json`` (``LlavaLlamaForCausalLM`` and its Mistral / Qwen2 siblings):
HuatuoGPT-Vision-34B (``llava_llama``), HuatuoGPT-Vision-7B (``llava_qwen2``), LLaVA-Med v1.5 (``llava_mistral``).

The file is the LLM's own config plus the fields LLaVA's training code sets (``mm_*``, ``image_aspect_ratio``,
``tokenizer_*``; sources in /work/shared/families/llava.md: HuatuoGPT-Vision's ``llava_arch.py``, ``builder.py``,
``clip_encoder.py``). transformers has no class for these model_types, so the LLM fields go through the LLM's own
transformers config class and the shared decoder translation, and every LLaVA field is accounted for here: used,
inert (training bookkeeping), or checked against the one value implemented.

The CLIP tower's architecture is not in this file: LLaVA loads it from ``mm_vision_tower`` (a folder inside the
checkpoint such as ``./vit/clip_vit_large_patch14_336``, or a hub id). jaxprobe takes it from
- ``vision_config`` in config.json when present (a ``CLIPVisionConfig`` dict; jaxprobe's tiny checkpoints write it,
  LLaVA's code ignores it), else
- the OpenAI CLIP that ``mm_vision_tower`` names (``CLIP_TOWERS``),
and checks it against the tower folder's own config.json when the checkpoint ships one (``tower_check.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jaxprobe.errors import ConfigError
from jaxprobe.families.attributes import COMMON_INERT, Check, equals
from jaxprobe.families.llava.config import FAMILY, assemble, clip_vision, llm_config
from jaxprobe.models.config import VLMConfig

LLM_OF = {"llava_llama": "llama", "llava_mistral": "mistral", "llava_qwen2": "qwen2"}
SELECT_FEATURES = {"patch": True, "cls_patch": False}  # clip_encoder.py feature_select -> drop the CLS token
ASPECT_RATIOS = ("pad", "square", None)  # "pad": expand2square before CLIP; anything else: CLIP alone
REQUIRED = ("mm_vision_tower", "mm_hidden_size", "mm_vision_select_layer")
HANDLED = frozenset({*REQUIRED, "mm_vision_select_feature", "mm_projector_type", "image_aspect_ratio",
                     "tokenizer_model_max_length", "vision_config"})
INERT = frozenset({  # training bookkeeping that LLaVA's inference never reads
    "tokenizer_padding_side", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "mm_projector_lr",
    "mm_vision_tower_lr", "unfreeze_mm_vision_tower", "image_grid_pinpoints",  # pinpoints: read only for anyres
    "mm_use_im_patch_token",  # LLaVA's loader adds an <im_patch> token no prompt contains
})
CHECKS = {
    "use_mm_proj": equals(True),
    "mm_use_im_start_end": equals(False),  # True wraps the image in <im_start>/<im_end> tokens: not implemented
    "mm_patch_merge_type": equals("flat"),  # "spatial*": LLaVA-NeXT's anyres tiling
    "mm_projector_type": equals("mlp2x_gelu"),
    "mm_vision_select_feature": Check(lambda v: v in SELECT_FEATURES, f"one of {list(SELECT_FEATURES)}"),
    "image_aspect_ratio": Check(lambda v: v in ASPECT_RATIOS, f"one of {list(ASPECT_RATIOS)}"),
}
DEFAULTS = {"mm_projector_type": "linear", "mm_vision_select_feature": "patch"}  # LLaVA's getattr defaults
MULTIMODAL_KEY = re.compile(r"^(mm_|image_|img_|vision_|video_)")  # unknown fields like these may change it

_LARGE = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
              hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3)
CLIP_TOWERS = {  # the OpenAI CLIPs LLaVA checkpoints name (huggingface.co/openai/<name>/config.json)
    "clip-vit-large-patch14-336": dict(_LARGE, image_size=336),
    "clip-vit-large-patch14": dict(_LARGE, image_size=224),
}


def _check_fields(config_json: dict[str, Any]) -> None:
    """Refuse missing required fields, unsupported values, and multimodal fields nobody here knows."""
    missing = [name for name in REQUIRED if config_json.get(name) is None]
    if missing:
        raise ConfigError(f"config.json of this {config_json['model_type']} checkpoint lacks {missing}: it is not a "
                          "LLaVA multimodal checkpoint (a text-only LLM?)")
    for name, check in CHECKS.items():
        value = config_json.get(name, DEFAULTS.get(name))
        if (name in config_json or name in DEFAULTS) and not check.accepts(value):
            raise ConfigError(f"config.json {name}={value!r} is not implemented by jaxprobe's {FAMILY} models "
                              f"(supported: {check.supported}); this checkpoint would compute something else")
    known = HANDLED | INERT | frozenset(CHECKS) | COMMON_INERT
    unknown = sorted(k for k in config_json if MULTIMODAL_KEY.match(k) and k not in known)
    if unknown:
        raise ConfigError(f"config.json field(s) {unknown} are LLaVA-style settings jaxprobe's {FAMILY} translation "
                          "does not know; they may change the forward, so the checkpoint is refused. Report them "
                          "with the checkpoint's name")


def tower_name(mm_vision_tower: str) -> str:
    """``./vit/clip_vit_large_patch14_336`` and ``openai/clip-vit-large-patch14-336`` -> one table key."""
    return Path(str(mm_vision_tower)).name.lower().replace("_", "-")


def tower_config(config_json: dict[str, Any]) -> Any:
    """The CLIP tower's transformers ``CLIPVisionConfig`` (see the module docstring for where it comes from)."""
    from transformers import AutoConfig

    fields = config_json.get("vision_config")
    if fields is None:
        name = tower_name(config_json["mm_vision_tower"])
        if name not in CLIP_TOWERS:
            raise ConfigError(f"config.json mm_vision_tower={config_json['mm_vision_tower']!r} names a vision tower "
                              f"jaxprobe does not know (known: {sorted(CLIP_TOWERS)}); add its CLIPVisionConfig to "
                              "config.json as 'vision_config'")
        fields = CLIP_TOWERS[name]
    fields = dict(fields)
    kind = fields.pop("model_type", "clip_vision_model")
    if kind != "clip_vision_model":
        raise ConfigError(f"config.json vision_config.model_type={kind!r}: the LLaVA repository layout is "
                          "implemented with a CLIP tower ('clip_vision_model')")
    try:
        return AutoConfig.for_model(kind, **fields)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"config.json vision_config does not parse as a CLIPVisionConfig: {error}") from error


def llm_fields(config_json: dict[str, Any]) -> dict[str, Any]:
    """config.json without LLaVA's own fields: the LLM's config."""
    llava = HANDLED | INERT | frozenset(CHECKS) | {"model_type"}
    return {k: v for k, v in config_json.items() if k not in llava}


def text_hf_config(config_json: dict[str, Any]) -> Any:
    """The LLM's transformers config (``LlamaConfig``, ``MistralConfig`` or ``Qwen2Config``)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(LLM_OF[config_json["model_type"]], **llm_fields(config_json))
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"the LLM fields of this {config_json['model_type']} config.json do not parse: "
                          f"{error}") from error


def image_slot_id(vocab_size: int) -> int:
    """The id our inputs carry in the image-token slots of a repository-layout prompt.

    LLaVA's code splices the 576 image features where the sentinel ``IMAGE_TOKEN_INDEX = -200`` stands and embeds
    only the text around it; our ``ModelInputs`` instead hold one slot per image feature, marked by
    ``image_mask`` (the embedding at a slot is replaced, never read). The slots carry the last vocabulary id, and
    the parity reference loads the checkpoint as transformers' ``llava`` with this id as ``image_token_index``.
    """
    return vocab_size - 1


def parse_config(config_json: dict[str, Any]) -> VLMConfig:
    """Our ``VLMConfig`` for a repository-layout ``config.json``."""
    _check_fields(config_json)
    hf_text = text_hf_config(config_json)
    text = llm_config(hf_text, bool(hf_text.tie_word_embeddings))
    select = config_json.get("mm_vision_select_feature", DEFAULTS["mm_vision_select_feature"])
    vision = clip_vision(tower_config(config_json), config_json["mm_vision_select_layer"], SELECT_FEATURES[select],
                         "mm_vision_select_layer")
    if config_json["mm_hidden_size"] != vision.hidden_size:
        raise ConfigError(f"config.json mm_hidden_size={config_json['mm_hidden_size']} but the vision tower "
                          f"{config_json['mm_vision_tower']!r} is {vision.hidden_size} wide; config.json is "
                          "inconsistent")
    return assemble(vision, text, image_slot_id(text.vocab_size))


def tower_dir(checkpoint_dir: Path, config_json: dict[str, Any]) -> Path | None:
    """The tower folder LLaVA's builder loads (``mm_vision_tower`` relative to the checkpoint, as HuatuoGPT-Vision
    ships ``./vit/...``), or None when the checkpoint has no such folder (e.g. a hub id it downloads)."""
    root = Path(checkpoint_dir).resolve()
    candidate = (root / str(config_json["mm_vision_tower"])).resolve()
    if root not in candidate.parents or not candidate.is_dir():
        return None
    return candidate
