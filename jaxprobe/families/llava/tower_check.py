"""A repository-layout checkpoint's CLIP tower: read from its safetensors, checked against the tower folder.

HuatuoGPT-Vision ships the tower twice: inside the model safetensors under
``model.vision_tower.vision_tower.vision_model.*`` and as the folder ``mm_vision_tower`` names (``vit/<name>/``: a
``CLIPConfig`` config.json and weights). Its ``cli.py`` builds the tower from the folder and then loads the
checkpoint over it, so the safetensors' copy is what runs; jaxprobe loads that copy and, before converting, checks
- that the safetensors hold the tower at all (else an error naming what is missing and where LLaVA looks);
- that the folder's config.json, when present, describes the tower config.json implies;
- that the folder's weights, when stored as safetensors, equal the checkpoint's (the folder's copy rounded to the
  checkpoint's dtype when they differ). Pickled ``.bin`` weights are never read: then only the architecture is
  compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxprobe.errors import CheckpointError
from jaxprobe.families.llava.config import is_repository_layout
from jaxprobe.families.llava.repository import tower_dir
from jaxprobe.models.config import VisionConfig, VLMConfig
from jaxprobe.weights.reader import INDEX_FILE, SINGLE_FILE, checkpoint_headers, read_config_json, read_slice

TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
FOLDER_PREFIX = "vision_model."  # a CLIPModel's (or CLIPVisionModel's) own names
ARCHITECTURE = {  # CLIPVisionConfig field -> (our VisionConfig field, transformers' default)
    "hidden_size": ("hidden_size", 768), "intermediate_size": ("intermediate_size", 3072),
    "num_hidden_layers": ("depth", 12), "num_attention_heads": ("num_heads", 12), "patch_size": ("patch_size", 32),
    "image_size": ("image_size", 224), "hidden_act": ("hidden_act", "quick_gelu"),
    "layer_norm_eps": ("norm_eps", 1e-5), "num_channels": ("in_channels", 3),
}


def _tower_tensors(checkpoint_dir: Path) -> dict[str, tuple[Path, Any]]:
    """{name after ``vision_model.``: (file, header info)} of the tower inside the checkpoint's safetensors."""
    return {name[len(TOWER_PREFIX):]: (file, info) for file, infos in checkpoint_headers(checkpoint_dir).items()
            for name, info in infos.items() if name.startswith(TOWER_PREFIX)}


def check_folder_config(folder: Path, vision: VisionConfig) -> None:
    """The tower folder's config.json (a ``CLIPConfig`` or ``CLIPVisionConfig``) must describe ``vision``."""
    path = folder / "config.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text())
    fields = (data.get("vision_config") or {}) if data.get("model_type") == "clip" else data
    if data.get("model_type") not in ("clip", "clip_vision_model"):
        raise CheckpointError(f"{path} is a {data.get('model_type')!r} config; LLaVA's tower folder holds a CLIP "
                              "config ('clip' or 'clip_vision_model')")
    for name, (ours, default) in ARCHITECTURE.items():
        found, expected = fields.get(name, default), getattr(vision, ours)
        if found != expected:
            raise CheckpointError(f"{path} says the tower's {name} is {found!r} but config.json implies "
                                  f"{expected!r}: the checkpoint's tower and its vision_config / mm_vision_tower "
                                  "disagree")


def check_folder_weights(folder: Path, tower: dict[str, tuple[Path, Any]]) -> None:
    """Every tower tensor of the checkpoint equals the folder's copy (when the folder stores safetensors)."""
    if not ((folder / SINGLE_FILE).is_file() or (folder / INDEX_FILE).is_file()):
        return  # e.g. HuatuoGPT's vit/ holds pytorch_model.bin: never unpickled, so nothing to compare
    copies = {name[len(FOLDER_PREFIX):]: (file, info) for file, infos in checkpoint_headers(folder).items()
              for name, info in infos.items() if name.startswith(FOLDER_PREFIX)}
    for name, (file, info) in sorted(tower.items()):
        if name not in copies:
            raise CheckpointError(f"the checkpoint's tower tensor {TOWER_PREFIX}{name} has no copy "
                                  f"{FOLDER_PREFIX}{name} in {folder}: the two towers differ")
        mine = read_slice(file, info)
        theirs = read_slice(*copies[name], dtype=info.dtype)
        if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
            raise CheckpointError(f"the checkpoint's {TOWER_PREFIX}{name} differs from {FOLDER_PREFIX}{name} in "
                                  f"{folder}: the safetensors' tower (which LLaVA runs) is not the one the tower "
                                  "folder ships; check which the model was trained with")


def check_checkpoint(checkpoint_dir: str | Path, config: VLMConfig) -> None:
    """Before converting a repository-layout checkpoint: its tower is in the safetensors and agrees with the
    tower folder (no-op for the llava-hf layout, whose tower transformers itself loads from the safetensors)."""
    checkpoint_dir = Path(checkpoint_dir)
    config_json = read_config_json(checkpoint_dir)
    if not is_repository_layout(config_json):
        return
    tower, folder = _tower_tensors(checkpoint_dir), tower_dir(checkpoint_dir, config_json)
    if not tower:
        where = (f"the folder {folder} holds one, but jaxprobe reads the tower from the checkpoint's safetensors only"
                 if folder else "the checkpoint has no such folder either")
        raise CheckpointError(f"{checkpoint_dir}'s safetensors hold no CLIP vision tower (no tensor named "
                              f"{TOWER_PREFIX}*); LLaVA's code builds it from mm_vision_tower="
                              f"{config_json['mm_vision_tower']!r} and {where}. Add the tower's vision_model.* "
                              f"tensors to the safetensors under {TOWER_PREFIX}")
    if folder is not None:
        check_folder_config(folder, config.vision)
        check_folder_weights(folder, tower)
