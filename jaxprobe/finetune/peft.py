"""Export an adapter as PEFT writes one, so it loads in PyTorch: ``PeftModel.from_pretrained(model, DIR)``.

``adapter_model.safetensors`` holds ``base_model.model.<module>.lora_A.weight`` [r, in] and ``lora_B.weight``
[out, r] for every adapted layer (torch ``Linear`` layout: our [in, r] / [r, out] factors transposed), and
``adapter_config.json`` names the modules as transformers names them (``families.hf_names``), with
``lora_alpha / r`` equal to our scale. Stacked (scanned) layers are written one module per layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from jaxprobe.errors import CheckpointError
from jaxprobe.families.hf_names import module_names
from jaxprobe.finetune.lora import adapted_kernels, joined

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


def _rows(leaf: np.ndarray, layer: int | None) -> np.ndarray:
    return leaf if layer is None else leaf[layer]


def peft_tensors(lora: dict[str, Any], names: dict[tuple, str]) -> dict[str, np.ndarray]:
    """PEFT's state dict of ``lora`` given each kernel row's module name."""
    flat = traverse_util.flatten_dict(lora)
    tensors = {}
    for (kernel, layer), module in sorted(names.items(), key=lambda item: item[1]):
        a, b = (np.asarray(flat[(*kernel[:-1], name)], np.float32) for name in ("a", "b"))
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.ascontiguousarray(_rows(a, layer).T)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.ascontiguousarray(_rows(b, layer).T)
    return tensors


def peft_config(meta: dict[str, Any], modules: list[str], base: str) -> dict[str, Any]:
    return {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": base, "r": meta["rank"],
            "lora_alpha": meta["alpha"], "lora_dropout": meta["dropout"], "target_modules": sorted(modules),
            "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
            "init_lora_weights": True, "inference_mode": True, "modules_to_save": None, "layers_to_transform": None,
            "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "revision": None}


def export_peft(out_dir: str | Path, lora: dict[str, Any], meta: dict[str, Any], checkpoint_dir: str | Path,
                keymap: Any, base_name: str) -> Path:
    """Write ``lora`` (trained on the checkpoint at ``checkpoint_dir``) as a PEFT adapter into ``out_dir``."""
    scale = meta["alpha"] / meta["rank"]
    scales = np.concatenate([np.ravel(v) for path, v in traverse_util.flatten_dict(lora).items()
                             if path[-1] == "scale"])
    if not np.allclose(scales, scale, rtol=1e-6):
        raise CheckpointError(f"the adapter's scales {sorted(set(scales.tolist()))} are not alpha / r = {scale}; "
                              "PEFT has one scale per adapter")
    kernels = adapted_kernels(lora)
    names = module_names(checkpoint_dir, keymap, kernels)
    missing = [joined(kernel) for kernel in kernels if not any(row[0] == kernel for row in names)]
    if missing:
        raise CheckpointError(f"no checkpoint tensor fills {missing}: cannot name them for PEFT")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(peft_tensors(lora, names), out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    (out_dir / CONFIG_FILE).write_text(json.dumps(peft_config(meta, list(names.values()), base_name), indent=1))
    return out_dir
