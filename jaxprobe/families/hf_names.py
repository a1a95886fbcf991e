"""transformers' module names of our kernels, for adapters PyTorch users load with PEFT.

A kernel row (param path, layer) is filled from one stored tensor, which the family's key map names; the key
map's aliases list the other names the same tensor goes by (hub layout, transformers 5's in-memory layout, ...).
PEFT matches adapter keys against the model's in-memory module names, so of those names we pick the one that
transformers' own checkpoint conversion (``transformers.conversion_mapping``) leaves unchanged, i.e. the
in-memory one; where transformers declares no conversion for the architecture, the stored name is the module
name. A kernel filled from part of a fused tensor (or from anything but a Linear weight) has no module of its
own to adapt, and is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jaxprobe.errors import CheckpointError
from jaxprobe.weights.keymap import KeyMap, ParamPath, TransposeLinear
from jaxprobe.weights.reader import checkpoint_headers, read_config_json

WEIGHT = ".weight"
Row = tuple[ParamPath, int | None]  # (kernel path, layer of a stacked kernel)


def _renamings(config_json: dict[str, Any]) -> list[Any]:
    """transformers' key renamings for this architecture (its loader applies them to stored names); [] when it
    declares none, or when this transformers' internals differ (then stored names are used as they are)."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import WeightRenaming
    except ImportError:
        return []
    for key in (*config_json.get("architectures", []), config_json.get("model_type")):
        mapping = get_checkpoint_conversion_mapping(key) if key else None
        if mapping:
            return [rule for rule in mapping if isinstance(rule, WeightRenaming)]
    return []


def _renamed(name: str, renamings: Sequence[Any]) -> str:
    for rule in renamings:
        name, _ = rule.rename_source_key(name)
    return name


def equivalent_names(keymap: KeyMap, name: str) -> list[str]:
    """``name`` and every other name of the same tensor that the key map's aliases accept."""
    canonical = keymap.canonical(name) if hasattr(keymap, "canonical") else name
    names = [name, canonical]
    for stored, target in getattr(keymap, "aliases", ()):
        if canonical.startswith(target):
            alias = stored + canonical[len(target):]
            if keymap.canonical(alias) == canonical:
                names.append(alias)
    return list(dict.fromkeys(names))


def in_memory_name(keymap: KeyMap, tensor: str, renamings: Sequence[Any]) -> str:
    """The module name transformers gives the Linear whose weight is stored as ``tensor``."""
    if not renamings:
        return tensor.removesuffix(WEIGHT)
    fixed = [name for name in equivalent_names(keymap, tensor) if _renamed(name, renamings) == name]
    chosen = max(fixed, key=lambda n: (n.count("."), n)) if fixed else _renamed(tensor, renamings)
    return chosen.removesuffix(WEIGHT)


def module_names(checkpoint_dir: str | Path, keymap: KeyMap, kernels: Iterable[ParamPath]) -> dict[Row, str]:
    """transformers' module name of every row of ``kernels`` (from the checkpoint's own tensor names)."""
    wanted, found = set(kernels), {}
    renamings = _renamings(read_config_json(checkpoint_dir))
    for header in checkpoint_headers(checkpoint_dir).values():
        for tensor in header:
            targets = keymap.targets(tensor) or []
            for target in (t for t in targets if t.path in wanted):
                if len(targets) != 1 or not isinstance(target.transform, TransposeLinear) or \
                        not tensor.endswith(WEIGHT):
                    raise CheckpointError(f"{'/'.join(target.path)} is filled from {tensor}, which is not one "
                                          "Linear weight (fused or converted), so PEFT cannot adapt it; leave it "
                                          "out of finetune.lora.targets to export a PEFT adapter")
                found[(target.path, target.layer)] = in_memory_name(keymap, tensor, renamings)
    return found
